// Domains at the engine: names are per domain, quotas refuse and change nothing, a domain that holds
// anything cannot be deleted (nor the default one ever), and the pools policy places new volumes.

import Foundation
import TesseraCore
import Testing

@testable import TesseraCatalog
@testable import TesseraEngine

@Suite struct DomainEngineTests {
    @Test func theSameNameInTwoDomainsIsTwoVolumes() throws {
        let t = try TestData()
        let cs = Int(t.chunkSize)
        try t.withEngine { e in
            try e.createDomain("team")
            let mine = try e.createVolumes(name: "a", size: UInt64(cs))[0]
            let theirs = try e.createVolumes(name: "a", size: UInt64(2 * cs), domain: "team")[0]
            #expect(mine.id != theirs.id)
            try theirs.write(.pattern(cs, seed: 7), at: 0)
            #expect(try mine.contents() == .zeros(cs))
            #expect(e.volume(named: "a") === mine)
            #expect(e.volume(named: "a", domainID: try e.domainID("team")) === theirs)
            #expect(e.volumeInfos().map { "\($0.name) \($0.size)" } == ["a \(cs)"])
            #expect(try e.volumeInfos(domain: "team").map { "\($0.name) \($0.domain ?? "")" } == ["a team"])
            expectCode(.exists) { _ = try e.createVolumes(name: "a", size: UInt64(cs), domain: "team") }
            expectCode(.notFound) { _ = try e.createVolumes(name: "b", size: UInt64(cs), domain: "nowhere") }
            expectCode(.notFound) { _ = try e.volumeInfo("b", domain: "team") }

            // Snapshots, clones and schedules resolve names in their domain.
            try e.createSnapshot(name: "s", volumes: ["a"], domain: "team")
            try e.createSnapshot(name: "s", volumes: ["a"])
            #expect(try e.snapshotInfos(domain: "team").map { "\($0.name) \($0.volumes)" } == ["s [\"a\"]"])
            let img = try #require(e.snapshotImages("s", domainID: try e.domainID("team"))?.first)
            #expect(img.volume === theirs)
            let c = try e.clone("s/a", as: "c", domain: "team")
            #expect(c.record.domainId == (try e.domainID("team")) && c.size == UInt64(2 * cs))
            try e.createSnapshot(name: "t", volumes: ["a"], domain: "team")
            expectCode(.notFound, "a snapshot of another domain") { _ = try e.clone("t/a", as: "c2") }
            try e.setSchedule(target: "a", every: 3600, keep: 2, domain: "team")
            #expect(try e.scheduleInfos().isEmpty)
            #expect(try e.scheduleInfos(domain: "team").map(\.target) == ["a"])
            try e.renameVolume("c", to: "d", domain: "team")
            #expect(e.volume(named: "d") == nil)
            try e.deleteVolume("d", domain: "team")
            try e.deleteSnapshot("s", domain: "team")
            #expect(e.snapshotInfos().map(\.name) == ["s"])
        }
        // All of it after a reopen.
        try t.withEngine { e in
            let team = try e.domainID("team")
            #expect(
                Array(try #require(e.volume(named: "a", domainID: team)).contents().prefix(cs)) == .pattern(cs, seed: 7)
            )
            #expect(try e.domainInfo("team").volumes == 1 && e.domainInfo("team").schedules == 1)
        }
    }

    @Test func schedulesRunInTheirDomain() throws {
        let t = try TestData()
        try t.withEngine { e in
            try e.createDomain("team", DomainSettings(quotaSnapshots: 2))
            _ = try e.createVolumes(name: "a", size: t.chunkSize)
            _ = try e.createVolumes(name: "a", size: t.chunkSize, domain: "team")
            try e.setSchedule(target: "a", every: 60, keep: 5, domain: "team")
            let start = Date()
            for minute in 0..<4 { e.runDueSchedules(now: start.addingTimeInterval(Double(minute * 61))) }
            #expect(e.snapshotInfos().isEmpty, "the default domain's a has no schedule")
            let taken = try e.snapshotInfos(domain: "team")
            #expect(taken.count == 2, "the snapshot quota stops the schedule: \(taken.map(\.name))")
            #expect(taken.allSatisfy { $0.volumes == ["a"] && $0.domain == "team" && $0.scheduled })
        }
    }

    @Test func quotasRefuseAndChangeNothing() throws {
        let t = try TestData()
        let cs = UInt64(t.chunkSize)
        try t.withEngine { e in
            try e.createDomain("q", DomainSettings(quotaVolumes: 3, quotaSize: 4 * cs, quotaSnapshots: 1))
            _ = try e.createVolumes(name: "a", size: cs, domain: "q")
            expectCode(.quota, "a count that would pass the volume quota") {
                _ = try e.createVolumes(name: "m", count: 3, size: cs, domain: "q")
            }
            expectCode(.quota, "more size than the quota") {
                _ = try e.createVolumes(name: "b", size: 4 * cs, domain: "q")
            }
            let b = try e.createVolumes(name: "b", size: cs, domain: "q")[0]
            expectCode(.quota) { try e.resizeVolume("b", to: 4 * cs, domain: "q") }
            expectCode(.quota, "growth by a write or truncate") { try e.checkGrowth(b, to: 3 * cs + 1) }
            try e.checkGrowth(b, to: 3 * cs)
            try e.resize(b, to: 3 * cs)
            expectCode(.quota, "a clone adds its size") { _ = try e.clone("a", as: "c", domain: "q") }
            try e.resize(b, to: 2 * cs)
            _ = try e.clone("a", as: "c", domain: "q")
            expectCode(.quota, "the fourth volume") { _ = try e.createVolumes(name: "d", size: 512, domain: "q") }
            try e.createSnapshot(name: "s1", volumes: [], all: true, domain: "q")
            expectCode(.quota) { try e.createSnapshot(name: "s2", volumes: ["a"], domain: "q") }
            let info = try e.domainInfo("q")
            #expect(info.volumes == 3 && info.provisioned == 4 * cs && info.snapshots == 1)
            #expect(try e.volumeInfos(domain: "q").map(\.name) == ["a", "b", "c"])
            #expect(b.size == 2 * cs)
            // The default domain has no quota; clearing one lifts it.
            _ = try e.createVolumes(name: "big", count: 5, size: 16 * cs)
            try e.setDomain("q", DomainSettings(clear: [.quotaVolumes, .quotaSnapshots]))
            _ = try e.createVolumes(name: "d", size: 0, domain: "q", allowZeroSize: true)
            try e.createSnapshot(name: "s2", volumes: ["a"], domain: "q")
        }
    }

    @Test func deletingADomainIsRefusedWhileItHoldsAnything() throws {
        let t = try TestData()
        try t.withEngine { e in
            expectCode(.invalid) { try e.deleteDomain("default") }
            expectCode(.notFound) { try e.deleteDomain("nowhere") }
            try e.createDomain("d")
            expectCode(.exists) { try e.createDomain("d") }
            expectCode(.exists) { try e.createDomain("default") }
            for bad in ["", ".hidden", "x.img", "a/b", "..", "tab\t"] {
                expectCode(.invalid, "\(bad)") { try e.createDomain(bad) }
            }
            _ = try e.createVolumes(name: "v", size: t.chunkSize, domain: "d")
            try e.createSnapshot(name: "s", volumes: ["v"], domain: "d")
            try e.setSchedule(target: "*", every: 60, keep: 1, domain: "d")
            expectCode(.busy) { try e.deleteDomain("d") }
            try e.removeSchedule(target: "*", domain: "d")
            try e.deleteSnapshot("s", domain: "d")
            expectCode(.busy) { try e.deleteDomain("d") }
            try e.deleteVolume("v", domain: "d")
            try e.deleteDomain("d")
            #expect(try e.domainInfos().map(\.name) == ["default"])
        }
        try t.withEngine { e throws in #expect(try e.catalog.domains().map(\.name) == ["default"]) }
    }

    @Test func aRebuildRestoresQuotasAndPolicy() throws {
        let t = try TestData()
        try t.withEngine { e in
            try e.createDomain("team", DomainSettings(quotaVolumes: 4, quotaSize: 1 << 30, pools: ["default"]))
            _ = try e.createVolumes(name: "a", size: t.chunkSize, domain: "team")
        }
        OwnershipTests.removeCatalog(t)
        let report = try CatalogRebuild.rebuild(t.data, extraStores: [])
        #expect(report.domains == 1 && report.lost.isEmpty, "\(report.lost)")
        try t.withEngine { e in
            let d = try e.domainInfo("team")
            #expect(d.quotaVolumes == 4 && d.quotaSize == 1 << 30 && d.pools == ["default"] && d.volumes == 1)
        }
    }

    @Test func thePoolsPolicyPlacesNewVolumes() throws {
        let t = try TestData()
        try t.withEngine { e in
            try e.createPool(name: "empty", chunkSize: t.chunkSize)
            try e.createPool(name: "other", chunkSize: t.chunkSize)
            try FileManager.default.createDirectory(atPath: t.dir.path + "/other", withIntermediateDirectories: true)
            var small = StoreOptions()
            small.size = 16 * t.chunkSize
            try e.addStore(
                StoreSpec(name: "o", pool: "other", kind: .dir, location: t.dir.path + "/other", options: small))
            expectCode(.notFound) { try e.createDomain("x", DomainSettings(pools: ["nowhere"])) }
            try e.createDomain("p", DomainSettings(pools: ["empty", "other", "default"]))
            #expect(
                try e.createVolumes(name: "z", size: t.chunkSize, domain: "p")[0].poolName == "default",
                "the allowed pool with the most free room (other has a quota of 16 chunks)")
            try e.setDomain("p", DomainSettings(pools: ["empty", "other"]))
            #expect(try e.createVolumes(name: "a", size: t.chunkSize, domain: "p")[0].poolName == "other")
            expectCode(.invalid, "a pool outside the policy") {
                _ = try e.createVolumes(name: "b", size: t.chunkSize, pool: "default", domain: "p")
            }
            #expect(
                try e.createVolumes(name: "b", size: t.chunkSize, pool: "other", domain: "p")[0].poolName == "other")
            try e.setDomain("p", DomainSettings(pools: ["empty"]))
            expectCode(.invalid, "no allowed pool has a store") {
                _ = try e.createVolumes(name: "c", size: t.chunkSize, domain: "p")
            }
            try e.setDomain("p", DomainSettings(clear: [.pools]))
            #expect(try e.createVolumes(name: "c", size: t.chunkSize, domain: "p")[0].poolName == "default")
            expectCode(.notFound) {
                _ = try e.createVolumes(name: "d", size: t.chunkSize, pool: "nowhere", domain: "p")
            }
            #expect(try e.domainInfo("p").pools == nil)
        }
    }
}
