// Placement units at the engine: a data directory of the previous release (schema v5, store.json
// without a unit) keeps its volumes, snapshots and clones, hands out no chunk ID twice, and records
// each store's unit; new stores get units of their own; a rebuild from stores of either release
// restores the units their chunks name.

import Foundation
import GRDB
import TesseraCore
import TesseraTestSupport
import Testing

@testable import TesseraCatalog
@testable import TesseraEngine

@Suite struct UnitEngineTests {
    /// Pool p with directory stores d1 and d2, volume a on it (with a snapshot and a clone), and
    /// volume b in the default pool. Returns every volume's and the snapshot's contents.
    static func populate(_ t: TestData) throws -> [[UInt8]] {
        let cs = Int(t.chunkSize)
        return try t.withEngine { e in
            try e.createPool(name: "p", chunkSize: t.chunkSize)
            for name in ["d1", "d2"] {
                let dir = t.dir.path + "/" + name
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                try e.addStore(StoreSpec(name: name, pool: "p", kind: .dir, location: dir))
            }
            let a = try e.createVolumes(name: "a", size: UInt64(8 * cs), pool: "p")[0]
            try a.write(.pattern(8 * cs, seed: 1), at: 0)
            try a.flush()
            try e.createSnapshot(name: "s1", volumes: ["a"])
            try a.write(.pattern(2 * cs, seed: 2), at: UInt64(cs))
            let c = try e.clone("s1/a", as: "c")
            try c.write(.pattern(cs, seed: 3), at: 0)
            let b = try e.createVolumes(name: "b", size: UInt64(2 * cs))[0]
            try b.write(.pattern(2 * cs, seed: 4), at: 0)
            try e.flushAll()
            return try Self.contents(e)
        }
    }

    static func contents(_ e: Engine) throws -> [[UInt8]] {
        let img = try #require(e.snapshotImages("s1")?.first)
        return try ["a", "b", "c"].map { try #require(e.volume(named: $0)).contents() } + [
            try img.volume.read(at: 0, count: Int(img.size), epoch: img.epoch, viewSize: img.size)
        ]
    }

    static func storeRoots(_ t: TestData) -> [String] {
        [t.data.defaultStorePath, t.dir.path + "/d1", t.dir.path + "/d2"]
    }

    /// store.json as the previous release wrote it: no unit.
    static func forgetUnits(_ t: TestData) throws {
        for root in storeRoots(t) {
            var m = try #require(Manifests.readStore(root: root))
            m.unitID = nil
            try Manifests.writeStore(m, root: root)
        }
    }

    static func chunkIDs(_ e: Engine) throws -> Set<ChunkID> {
        var all = Set<ChunkID>()
        for layer in e.poolLayers() { all.formUnion(try layer.allChunks()) }
        return all
    }

    @Test func aDataDirectoryOfThePreviousReleaseKeepsWorking() throws {
        let t = try TestData()
        let cs = Int(t.chunkSize)
        let before = try Self.populate(t)
        let serials = try t.withEngine { e in try e.catalog.units().map { "\($0.id!):\($0.nextSerial)" } }
        try t.rewriteCatalog(asOf: "v5-domains")
        try Self.forgetUnits(t)
        let q = try DatabaseQueue(path: t.data.catalogPath)
        #expect(try q.read { db in try db.tableExists("unit") } == false, "the fixture is of the previous schema")
        try q.close()

        try t.withEngine { e in
            #expect(try Self.contents(e) == before)
            #expect(try e.catalog.units().map { "\($0.id!):\($0.nextSerial)" } == serials)
            #expect(try e.catalog.unitMembers().map { "\($0.storeId)→\($0.unitId)" } == ["1→1", "2→2", "3→3"])
            // Every store.json names its unit again.
            #expect(Self.storeRoots(t).map { Manifests.readStore(root: $0)?.unitID } == [1, 2, 3])
            // New data never reuses a chunk ID, and lands on the units of its pool.
            let old = try Self.chunkIDs(e)
            let a = try #require(e.volume(named: "a"))
            try e.resize(a, to: UInt64(12 * cs))
            try a.write(.pattern(4 * cs, seed: 5), at: UInt64(8 * cs))
            try e.flushAll()
            let fresh = try Self.chunkIDs(e).subtracting(old)
            #expect(fresh.count == 4)
            #expect(Set(fresh.map(\.unit)).isSubset(of: [UnitID(2), UnitID(3)]))
            // A store added now is the first member of a new unit.
            let dir = t.dir.path + "/d3"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try e.addStore(StoreSpec(name: "d3", pool: "p", kind: .dir, location: dir))
            #expect(Manifests.readStore(root: dir)?.unitID == 4)
            #expect(try e.storeInfos().first { $0.name == "d3" }?.freeChunks ?? 0 > 0, "placement sees its unit")
        }
        #expect(try t.withEngine { try $0.fsck(repair: false) }.clean)
    }

    @Test(arguments: [true, false])
    func rebuildRestoresTheUnits(previousRelease: Bool) throws {
        let t = try TestData()
        let before = try Self.populate(t)
        if previousRelease { try Self.forgetUnits(t) }
        OwnershipTests.removeCatalog(t)
        let report = try CatalogRebuild.rebuild(t.data, extraStores: [t.dir.path + "/d1", t.dir.path + "/d2"])
        #expect(report.stores.count == 3 && report.volumes == 3, "\(report)")
        try t.withEngine { e in
            #expect(try e.catalog.unitMembers().map { "\($0.storeId)→\($0.unitId)" } == ["1→1", "2→2", "3→3"])
            #expect(try Self.contents(e) == before)
            let next = try e.catalog.units().map(\.nextSerial)
            for c in try Self.chunkIDs(e) {
                #expect(Int64(c.serial) < next[Int(c.unit.rawValue) - 1], "\(c) is below its unit's counter")
            }
        }
        #expect(try t.withEngine { try $0.fsck(repair: false) }.clean)
    }

    static func makeStore(_ e: Engine, _ t: TestData, _ name: String, pool: String) throws -> String {
        let dir = t.dir.path + "/" + name
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try e.addStore(StoreSpec(name: name, pool: pool, kind: .dir, location: dir))
        return dir
    }

    @Test func anEmptyStoreIsRemovedAndAStoreWithChunksStays() throws {
        let t = try TestData()
        let cs = Int(t.chunkSize)
        let before = try Self.populate(t)
        let d3 = try t.withEngine { e in
            let d3 = try Self.makeStore(e, t, "d3", pool: "p")
            let units = try e.catalog.units().count
            try e.removeStore("d3")
            #expect(try e.catalog.stores().map(\.name) == ["default", "d1", "d2"])
            #expect(try e.catalog.units().count == units - 1)
            #expect(!DataDirectory.looksLikeStore(d3), "no manifest is left behind")
            expectCode(.notFound) { try e.removeStore("d3") }
            // A store with chunks stays, and keeps taking new ones.
            let d1 = try #require(try e.storeInfos().first { $0.name == "d1" }?.chunks)
            expectCode(.busy) { try e.removeStore("d1") }
            let a = try #require(e.volume(named: "a"))
            try e.resize(a, to: UInt64(16 * cs))
            try a.write(.pattern(8 * cs, seed: 9), at: UInt64(8 * cs))
            try e.flushAll()
            #expect(try #require(try e.storeInfos().first { $0.name == "d1" }?.chunks) > d1)
            // The last store of a pool with volumes stays; of an empty pool it goes.
            try e.createPool(name: "q", chunkSize: t.chunkSize)
            _ = try Self.makeStore(e, t, "e1", pool: "q")
            _ = try e.createVolumes(name: "x", size: UInt64(cs), pool: "q")
            expectCode(.busy) { try e.removeStore("e1") }
            try e.deleteVolume("x")
            try e.removeStore("e1")
            return d3
        }
        try t.withEngine { e in
            #expect(try e.catalog.stores().map(\.name) == ["default", "d1", "d2"])
            #expect(Array(try Self.contents(e)[1...]) == Array(before[1...]))
            // The removed store's directory can join again, as a new unit.
            try e.addStore(StoreSpec(name: "d3", pool: "p", kind: .dir, location: d3))
            #expect(try e.catalog.primaryUnits()[4] == nil && Manifests.readStore(root: d3)?.unitID == 6)
        }
        #expect(try t.withEngine { try $0.fsck(repair: false) }.clean)
    }

    /// A store added and removed again and again while a writer fills new chunks of a volume in its
    /// pool: each removal either finds the store empty or refuses, and no write is lost.
    @Test func removingAStoreUnderWritesLosesNothing() throws {
        let t = try TestData()
        let cs = Int(t.chunkSize)
        let chunks = 96
        try t.withEngine { e in
            try e.createPool(name: "p", chunkSize: t.chunkSize)
            _ = try Self.makeStore(e, t, "base", pool: "p")
            let v = try e.createVolumes(name: "v", size: UInt64(chunks * cs), pool: "p")[0]
            let expected = [UInt8].pattern(chunks * cs, seed: 11)
            let failure = Locked<String?>(nil)
            let writer = Thread {
                do {
                    for i in 0..<chunks {
                        try expected[(i * cs)..<((i + 1) * cs)].withUnsafeBytes {
                            try v.write(at: UInt64(i * cs), from: $0)
                        }
                    }
                } catch { failure.withLock { $0 = "\(error)" } }
            }
            writer.start()
            var outcomes: [String] = []
            for round in 0..<12 {
                let name = "s\(round)"
                _ = try Self.makeStore(e, t, name, pool: "p")
                do {
                    try e.removeStore(name)
                    outcomes.append("removed")
                } catch let error as TesseraError where error.code == .busy {
                    outcomes.append("kept")
                }
            }
            while !writer.isFinished { Thread.sleep(forTimeInterval: 0.01) }
            #expect(failure.withLock { $0 } == nil)
            try e.flushAll()
            #expect(try v.contents() == expected)
            let listed = Set(try e.storeInfos().map(\.name))
            for (round, outcome) in outcomes.enumerated() {
                #expect(listed.contains("s\(round)") == (outcome == "kept"))
            }
        }
        #expect(try t.withEngine { try $0.fsck(repair: false) }.clean)
    }
}
