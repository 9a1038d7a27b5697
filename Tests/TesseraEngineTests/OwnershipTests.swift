// The catalog and its stores know each other (identity, migration of a previous-schema data directory),
// garbage collection removes only proven orphans within its limit, and a rebuild restores volumes,
// snapshots, clones and schedules — or says what it could not.

import Foundation
import GRDB
import TesseraCatalog
import TesseraCore
import TesseraTestSupport
import Testing

@testable import TesseraEngine

@Suite struct OwnershipTests {
    /// Turns the catalog and store.json of `t` back into what the previous release wrote (schema v3,
    /// no identity, no gcFloor, no freed list; store.json without catalogID and options).
    static func downgrade(_ t: TestData) throws {
        try t.rewriteCatalog(asOf: "v3-store-options")
        let q = try DatabaseQueue(path: t.data.catalogPath)
        try q.write { db in try db.execute(sql: "DELETE FROM tessera_meta WHERE key = 'catalog-id'") }
        try q.close()
        let old =
            #"{"format":"tessera-store-1","storeID":1,"storeName":"default","kind":"dir","poolID":1,"poolName":"default","chunkSize":\#(t.chunkSize)}"#
        try Data(old.utf8).write(to: URL(fileURLWithPath: t.data.defaultStorePath + "/store.json"))
    }

    static func chunkFiles(_ t: TestData) -> Int { DataDirectory.chunkFileCount(t.data.defaultStorePath) }

    static func removeCatalog(_ t: TestData) {
        for s in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: t.data.catalogPath + s) }
    }

    @Test func previousSchemaDataDirectoryGetsItsIdentity() throws {
        let t = try TestData()
        let cs = Int(t.chunkSize)
        let data = [UInt8].pattern(3 * cs, seed: 1)
        var nextSerial: Int64 = 0
        try t.withEngine { e in
            let v = try e.createVolumes(name: "a", size: UInt64(4 * cs))[0]
            try v.write(data, at: 0)
            try v.flush()
            try e.createSnapshot(name: "s1", volumes: ["a"])
            nextSerial = try e.catalog.units()[0].nextSerial
        }
        try Self.downgrade(t)
        #expect(Manifests.readStore(root: t.data.defaultStorePath)?.catalogID == nil)
        let files = Self.chunkFiles(t)

        try t.withEngine { e in
            #expect(e.catalogID.count == 36)
            // The store now names this catalog; the floor starts at the committed high-water mark.
            let m = Manifests.readStore(root: t.data.defaultStorePath)
            #expect(m?.catalogID == e.catalogID)
            #expect(m?.options == "{}")
            // The older release recorded no snapshot manifests: the first open writes them.
            #expect(Manifests.readSnapshots(root: t.data.defaultStorePath).map(\.name) == ["s1"])
            #expect(try e.catalog.units()[0].gcFloor >= nextSerial)
            let v = try #require(e.volume(named: "a"))
            #expect(try v.read(at: 0, count: 3 * cs) == data)
            #expect(e.snapshotNames() == ["s1"])
        }
        #expect(Self.chunkFiles(t) == files)
        // Opening again keeps the same identity.
        let first = try t.withEngine { $0.catalogID }
        #expect(try t.withEngine { $0.catalogID } == first)
    }

    @Test func initAndOpenPointAtTheRebuildWhenStoresAreLeft() throws {
        let t = try TestData()
        try t.withEngine { e in
            let v = try e.createVolumes(name: "a", size: t.chunkSize * 2)[0]
            try v.write(.pattern(Int(t.chunkSize), seed: 2), at: 0)
            try v.flush()
        }
        Self.removeCatalog(t)
        let files = Self.chunkFiles(t)
        #expect(files > 0)
        let open = #expect(throws: TesseraError.self) { _ = try Engine(t.data) }
        #expect(open?.code == .catalog)
        #expect(open?.message.contains("tessera fsck --rebuild-catalog") == true)
        let initialize = #expect(throws: TesseraError.self) { try Engine.initialize(t.data) }
        #expect(initialize?.code == .exists)
        #expect(initialize?.message.contains("tessera fsck --rebuild-catalog") == true)
        #expect(!FileManager.default.fileExists(atPath: t.data.catalogPath))
        #expect(Self.chunkFiles(t) == files)
    }

    @Test func aStoreOfAnotherCatalogIsRefused() throws {
        let a = try TestData()
        let b = try TestData()
        try FileManager.default.removeItem(atPath: b.data.defaultStorePath + "/store.json")
        try FileManager.default.copyItem(
            atPath: a.data.defaultStorePath + "/store.json", toPath: b.data.defaultStorePath + "/store.json")
        let e = #expect(throws: TesseraError.self) { _ = try Engine(b.data) }
        #expect(e?.message.contains("belongs to another catalog") == true)
    }

    @Test func crashOrphansGoButAnOlderCatalogsSweepIsRefused() throws {
        let t = try TestData()
        let cs = Int(t.chunkSize)
        try t.withEngine { e in _ = try e.createVolumes(name: "a", size: UInt64(200 * cs)) }
        let backup = t.dir.path + "/backup.db"
        try t.withEngine { _ in }  // a clean open and close checkpoints the WAL
        for s in ["", "-wal"] where FileManager.default.fileExists(atPath: t.data.catalogPath + s) {
            try FileManager.default.copyItem(atPath: t.data.catalogPath + s, toPath: backup + s)
        }
        // A run that wrote 100 chunks and committed, then 3 more it never committed (a crash).
        try t.withEngine { e in
            let v = try #require(e.volume(named: "a"))
            try v.write(.pattern(100 * cs, seed: 3), at: 0)
            try v.flush()
            try v.write(.pattern(3 * cs, seed: 4), at: UInt64(150 * cs))
        }
        #expect(Self.chunkFiles(t) == 103)
        try t.withEngine { (e: Engine) throws in
            let v = try #require(e.volume(named: "a"))
            #expect(try v.read(at: 0, count: cs) == Array([UInt8].pattern(100 * cs, seed: 3)[0..<cs]))
        }
        #expect(Self.chunkFiles(t) == 100)  // the crash's orphans are gone, nothing else
        // The older catalog put back: all 100 chunks look like its orphans; the sweep refuses.
        Self.removeCatalog(t)
        for s in ["", "-wal"] where FileManager.default.fileExists(atPath: backup + s) {
            try FileManager.default.copyItem(atPath: backup + s, toPath: t.data.catalogPath + s)
        }
        try t.withEngine { _ in }
        #expect(Self.chunkFiles(t) == 100)
        let report = try t.withEngine { try $0.fsck(repair: true) }
        #expect(report.unreferenced == 100 && report.repaired == 0 && !report.clean)
        #expect(Self.chunkFiles(t) == 100)
    }

    @Test func rebuildRestoresSnapshotsClonesAndSchedules() throws {
        let t = try TestData()
        let cs = Int(t.chunkSize)
        let (live, snap, clone) = try t.withEngine { e in
            let v = try e.createVolumes(name: "a", size: UInt64(8 * cs))[0]
            try v.write(.pattern(6 * cs, seed: 5), at: 0)
            try v.flush()
            try e.createSnapshot(name: "s1", volumes: ["a"])
            try v.write(.pattern(2 * cs, seed: 6), at: UInt64(cs))
            let c = try e.clone("s1/a", as: "c")
            try c.write(.pattern(cs, seed: 7), at: 0)
            try e.flushAll()
            try e.setSchedule(target: "a", every: 3600, keep: 4)
            let img = try #require(e.snapshotImages("s1")?.first)
            return (
                try v.contents(), try img.volume.read(at: 0, count: 8 * cs, epoch: img.epoch, viewSize: img.size),
                try c.contents()
            )
        }
        #expect(live != snap)
        Self.removeCatalog(t)
        let report = try CatalogRebuild.rebuild(t.data, extraStores: [])
        #expect(report.volumes == 2 && report.clones == 1 && report.snapshots == ["s1"] && report.schedules == 1)
        #expect(report.lost.isEmpty, "\(report.lost)")
        try t.withEngine { e in
            #expect(try e.volume(named: "a")!.contents() == live)
            let img = try #require(e.snapshotImages("s1")?.first)
            #expect(try img.volume.read(at: 0, count: 8 * cs, epoch: img.epoch, viewSize: img.size) == snap)
            #expect(try e.volume(named: "c")!.contents() == clone)
            #expect(try e.scheduleInfos().map { "\($0.target) \($0.everySeconds) \($0.keep)" } == ["a 3600 4"])
            // New writes are born after the snapshot: it keeps its data.
            try e.volume(named: "a")!.write(.pattern(cs, seed: 8), at: 0)
            try e.flushAll()
            #expect(try img.volume.read(at: 0, count: 8 * cs, epoch: img.epoch, viewSize: img.size) == snap)
        }
        #expect(try t.withEngine { try $0.fsck(repair: false) }.clean)
    }

    @Test func rebuildOfAnOlderReleaseKeepsOldVersionsAndSaysWhatIsLost() throws {
        let t = try TestData()
        let cs = Int(t.chunkSize)
        let (live, snap) = try t.withEngine { e in
            let v = try e.createVolumes(name: "a", size: UInt64(4 * cs))[0]
            try v.write(.pattern(4 * cs, seed: 9), at: 0)
            try v.flush()
            try e.createSnapshot(name: "s1", volumes: ["a"])
            try v.write(.pattern(cs, seed: 10), at: 0)
            try v.flush()
            try e.setSchedule(target: "a", every: 3600, keep: 4)
            let img = try #require(e.snapshotImages("s1")?.first)
            return (try v.contents(), try img.volume.read(at: 0, count: 4 * cs, epoch: img.epoch, viewSize: img.size))
        }
        // What the previous release left: no snapshot or schedule manifests, volume manifests without epochs.
        let root = t.data.defaultStorePath
        try FileManager.default.removeItem(atPath: root + "/snapshots")
        try FileManager.default.removeItem(atPath: root + "/schedules.json")
        try Self.downgrade(t)
        let manifest = try #require(Manifests.readVolumes(root: root).first)
        let old =
            #"{"id":\#(manifest.id),"name":"a","poolID":1,"size":\#(4 * cs),"uid":0,"gid":0,"mode":384,"createdAt":0}"#
        try Data(old.utf8).write(to: URL(fileURLWithPath: root + "/volumes/\(manifest.id).json"))
        Self.removeCatalog(t)

        let report = try CatalogRebuild.rebuild(t.data, extraStores: [])
        #expect(report.snapshots == ["recovered-a-e1"])
        #expect(report.lost.contains { $0.hasPrefix("schedules:") })
        #expect(report.lost.contains { $0.hasPrefix("snapshot names") })
        #expect(report.lost.contains { $0.hasPrefix("settings of store default") })
        try t.withEngine { e in
            #expect(try e.volume(named: "a")!.contents() == live)
            let img = try #require(e.snapshotImages("recovered-a-e1")?.first)
            #expect(try img.volume.read(at: 0, count: 4 * cs, epoch: img.epoch, viewSize: img.size) == snap)
        }
    }
}
