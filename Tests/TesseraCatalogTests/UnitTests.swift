// Placement units: the upgrade of a catalog of the previous schema (v5) makes each store the one member
// of a unit with the store's own id, so every chunk ID already written names its unit unchanged, and
// moves the serial counter and gcFloor from the store to the unit; new stores get units of their own.

import Foundation
import GRDB
import TesseraCore
import Testing

@testable import TesseraCatalog

@Suite("Placement units")
struct UnitTests {
    /// A catalog as the previous release (schema v5) left it: pool p with stores a (id 1) and c (id 3;
    /// store 2 was removed, so ids have a gap), each with its own serial counter and gcFloor, and a
    /// volume whose map names chunks of both.
    static func previousRelease(at path: String) throws {
        let q = try DatabaseQueue(path: path)
        try Schema.migrator.migrate(q, upTo: "v5-domains")
        try q.write { db in
            for sql in [
                "INSERT INTO pool(name, chunkSize, createdAt) VALUES ('p', 4096, 1)",
                "INSERT INTO store(poolId, name, kind, path, nextSerial, gcFloor, createdAt) "
                    + "VALUES (1, 'a', 'dir', '/a', 42, 40, 1), (1, 'b', 'dir', '/b', 1, 1, 2), "
                    + "(1, 'c', 'dir', '/c', 7, 5, 3)",
                "DELETE FROM store WHERE name = 'b'",
                "INSERT INTO volume(name, poolId, size, chunkSize, uid, gid, mode, mtime, createdAt) "
                    + "VALUES ('v', 1, 8192, 4096, 0, 0, 384, 5, 1)",
                "INSERT INTO chunk_map(volumeId, idx, chunk, birth) VALUES (1, 0, ?, 1), (1, 1, ?, 1)",
            ] {
                let chunks = [
                    Int64(bitPattern: ChunkID(unit: UnitID(1), serial: 41).rawValue),
                    Int64(bitPattern: ChunkID(unit: UnitID(3), serial: 6).rawValue),
                ]
                try db.execute(sql: sql, arguments: sql.contains("?") ? StatementArguments(chunks) : [])
            }
        }
        try q.close()
    }

    @Test func upgradeMakesEachStoreTheUnitOfItsOwnID() throws {
        let dir = ScratchDirectory()
        try Self.previousRelease(at: dir.catalogPath)
        let c = try Catalog.open(at: dir.catalogPath)
        #expect(
            try c.units().map { "\($0.id!) pool \($0.poolId) next \($0.nextSerial) floor \($0.gcFloor)" } == [
                "1 pool 1 next 42 floor 40", "3 pool 1 next 7 floor 5",
            ])
        #expect(
            try c.unitMembers().map { "\($0.storeId)→\($0.unitId) \($0.role.rawValue)" } == [
                "1→1 primary", "3→3 primary",
            ])
        #expect(try c.stores().map(\.name) == ["a", "c"])
        #expect(try c.gcFloors() == [UnitID(1): 40, UnitID(3): 5])
        // The map is untouched: its chunk IDs name units 1 and 3 now.
        #expect(
            try c.chunkMap(of: VolumeID(1)).map { ChunkID(UInt64(bitPattern: $0.chunk)).unit } == [
                UnitID(1), UnitID(3),
            ])
        let q = try DatabaseQueue(path: dir.catalogPath)
        try q.read { (db: Database) throws in
            #expect(try db.columns(in: "store").map(\.name).contains("nextSerial") == false)
            #expect(try Row.fetchAll(db, sql: "PRAGMA foreign_key_check").isEmpty)
            #expect(try Int.fetchAll(db, sql: "SELECT seq FROM sqlite_sequence WHERE name = 'unit'") == [3])
        }
        try q.close()

        // Serials rise on the unit; a new store gets the next unit id, which no chunk has ever named.
        try c.updateSerials([UnitID(3): 9, UnitID(1): 10])
        #expect(try c.units().map(\.nextSerial) == [42, 9])
        let (d, unit) = try c.insertStore(StoreRecord(poolId: 1, name: "d", kind: "dir", path: "/d", createdAt: 4))
        #expect(d.id == 4 && unit == UnitID(4))
        #expect(try c.units().last?.nextSerial == 1)
        // Opening again runs no migration twice.
        _ = try Catalog.open(at: dir.catalogPath)
    }

    @Test func aRebuiltStoreJoinsTheUnitItsManifestNames() throws {
        let f = try Fixture()
        var r = StoreRecord(poolId: f.pool.id!, name: "t", kind: "dir", path: "/t", createdAt: 2)
        r.id = 9
        let (t, unit) = try f.catalog.insertStore(r, unit: UnitID(12))
        #expect(t.id == 9 && unit == UnitID(12))
        #expect(
            try f.catalog.unitMembers().map { "\($0.storeId)→\($0.unitId)" } == [
                "\(f.store.id!)→\(f.unitID.rawValue)", "9→12",
            ])
        // The next unit made without one goes on past it.
        let (_, next) = try f.catalog.insertStore(
            StoreRecord(poolId: f.pool.id!, name: "u", kind: "dir", path: "/u", createdAt: 3))
        #expect(next == UnitID(13))
    }

    @Test func unitIDsRunOutWithAClearErrorAndNoChange() throws {
        let f = try Fixture()
        let q = try DatabaseQueue(path: f.dir.catalogPath)
        try q.write { db in
            try db.execute(sql: "UPDATE sqlite_sequence SET seq = ? WHERE name = 'unit'", arguments: [UnitID.limit - 1])
        }
        try q.close()
        expectCode(.noSpace) {
            _ = try f.catalog.insertStore(
                StoreRecord(poolId: f.pool.id!, name: "x", kind: "dir", path: "/y", createdAt: 2))
        }
        #expect(try f.catalog.stores().map(\.name) == ["s"])
        #expect(try f.catalog.units().count == 1)
    }
}
