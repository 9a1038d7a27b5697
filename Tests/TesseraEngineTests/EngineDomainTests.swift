// Names per domain at the engine: a data directory of the previous release (catalog schema v4) keeps
// its volumes, snapshots, clones and schedules; volumes of another domain are kept but not named; a
// rebuild from the stores restores the domains and what is in each.

import Foundation
import GRDB
import TesseraCore
import TesseraTestSupport
import Testing

@testable import TesseraCatalog
@testable import TesseraEngine

@Suite struct EngineDomainTests {
    static let lostDomain = "domain #2: no manifest; its name and settings are lost (rebuilt as recovered-domain-2)"

    @Test func aDataDirectoryOfThePreviousReleaseKeepsWorking() throws {
        let t = try TestData()
        let cs = Int(t.chunkSize)
        let before = try t.withEngine { e in
            let a = try e.createVolumes(name: "a", size: UInt64(4 * cs))[0]
            try a.write(.pattern(4 * cs, seed: 3), at: 0)
            try a.flush()
            try e.createSnapshot(name: "s1", volumes: ["a"])
            try a.write(.pattern(cs, seed: 4), at: 0)
            let c = try e.clone("s1/a", as: "c")
            try c.write(.pattern(cs, seed: 5), at: UInt64(cs))
            try e.flushAll()
            try e.setSchedule(target: "a", every: 3600, keep: 4)
            _ = try e.createVolumes(name: "gone", size: UInt64(cs))
            try e.deleteVolume("gone")
            let img = try #require(e.snapshotImages("s1")?.first)
            return [
                try a.contents(), try img.volume.read(at: 0, count: 4 * cs, epoch: img.epoch, viewSize: img.size),
                try c.contents(),
            ]
        }
        try t.rewriteCatalog(asOf: "v4-catalog-identity")
        let q = try DatabaseQueue(path: t.data.catalogPath)
        #expect(try q.read { db in try db.tableExists("domain") } == false, "the fixture is of the previous schema")
        try q.close()

        try t.withEngine { e in
            let a = try #require(e.volume(named: "a"))
            let c = try #require(e.volume(named: "c"))
            let img = try #require(e.snapshotImages("s1")?.first)
            #expect(
                [
                    try a.contents(), try img.volume.read(at: 0, count: 4 * cs, epoch: img.epoch, viewSize: img.size),
                    try c.contents(),
                ] == before)
            #expect(c.parent === a)
            #expect(try e.scheduleInfos().map { "\($0.target) \($0.everySeconds)" } == ["a 3600"])
            #expect(try e.catalog.volumes().allSatisfy { $0.domainId == DomainRecord.defaultID })
            // The deleted volume's id (3) stays spent.
            #expect(try e.createVolumes(name: "d", size: UInt64(cs))[0].id == VolumeID(4))
            try e.setSchedule(target: "a", every: 7200, keep: 4)
            #expect(try e.scheduleInfos().map { "\($0.target) \($0.everySeconds)" } == ["a 7200"])
        }
        #expect(try t.withEngine { try $0.fsck(repair: false) }.clean)
    }

    /// Without domains.json (lost, or never written), a domain comes back under a recovered name, and says so.
    @Test(arguments: [true, false])
    func rebuildRestoresDomainsAndWhatIsInThem(withManifest: Bool) throws {
        let t = try TestData()
        let cs = Int(t.chunkSize)
        // Volume a, snapshot s1 and a schedule, moved into domain "team" by hand (nothing else can put
        // them there yet); then a, s1 and a schedule again in the default domain.
        try t.withEngine { e in
            let v = try e.createVolumes(name: "a", size: UInt64(2 * cs))[0]
            try v.write(.pattern(2 * cs, seed: 1), at: 0)
            try v.flush()
            try e.createSnapshot(name: "s1", volumes: ["a"])
            try e.setSchedule(target: "a", every: 3600, keep: 2)
        }
        let q = try DatabaseQueue(path: t.data.catalogPath)
        try q.write { db in
            try db.execute(sql: "INSERT INTO domain(id, name, createdAt, quotaVolumes) VALUES (2, 'team', 5, 10)")
            for table in ["volume", "snapshot", "schedule"] { try db.execute(sql: "UPDATE \(table) SET domainId = 2") }
        }
        try q.close()
        let (team, mine) = try t.withEngine { e in
            #expect(e.volume(named: "a") == nil, "the engine names the default domain only")
            #expect(e.snapshotImages("s1") == nil)
            let v = try e.createVolumes(name: "a", size: UInt64(cs))[0]
            try v.write(.pattern(cs, seed: 2), at: 0)
            try v.flush()
            try e.createSnapshot(name: "s1", volumes: ["a"])
            try e.setSchedule(target: "a", every: 7200, keep: 3)
            e.recordAllManifests()
            return (try #require(e.volume(id: VolumeID(1))).contents(), try v.contents())
        }
        #expect(team != mine)

        if !withManifest { try FileManager.default.removeItem(atPath: Manifests.domainsFile(t.data.defaultStorePath)) }
        OwnershipTests.removeCatalog(t)
        let report = try CatalogRebuild.rebuild(t.data, extraStores: [])
        #expect(report.domains == 1 && report.volumes == 2 && report.snapshots.count == 2 && report.schedules == 2)
        #expect(report.lost == (withManifest ? [] : [Self.lostDomain]), "\(report.lost)")
        try t.withEngine { e throws in
            #expect(
                try e.catalog.domains().map { "\($0.id!) \($0.name) \($0.quotaVolumes ?? 0)" } == [
                    "1 default 0", withManifest ? "2 team 10" : "2 recovered-domain-2 0",
                ])
            #expect(try e.catalog.volumes().map { "\($0.id!) \($0.domainId) \($0.name)" } == ["1 2 a", "2 1 a"])
            #expect(try e.catalog.snapshots().map { "\($0.domainId) \($0.name)" }.sorted() == ["1 s1", "2 s1"])
            #expect(
                try e.catalog.schedules().map { "\($0.domainId) \($0.target) \($0.every)" } == ["2 a 3600", "1 a 7200"])
            #expect(try #require(e.volume(named: "a")).contents() == mine)
            #expect(try #require(e.volume(id: VolumeID(1))).contents() == team)
        }
        #expect(try t.withEngine { try $0.fsck(repair: false) }.clean)
    }
}
