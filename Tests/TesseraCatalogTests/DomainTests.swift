// Names per domain: the upgrade of a catalog of the previous schema (v4) keeps every row, id, sequence
// and relation and puts it in the default domain; afterwards a name may be used once per domain.

import Foundation
import GRDB
import TesseraCore
import Testing

@testable import TesseraCatalog

@Suite("Domains")
struct DomainTests {
    /// Tables whose rows the upgrade must keep, with the order that lists them.
    static let tables = [
        "pool": "id", "store": "id", "volume": "id", "chunk_map": "volumeId, idx",
        "chunk_retained": "volumeId, idx, birth", "chunk_share": "chunk", "chunk_free": "chunk",
        "volume_xattr": "volumeId, name", "schedule": "id", "snapshot": "id",
        "snapshot_member": "snapshotId, volumeId", "tessera_meta": "key",
    ]

    /// Columns this upgrade adds (domainId), a later one moves elsewhere (a store's serial counter and
    /// gcFloor went to its placement unit in v6, checked by UnitTests) or a later one adds (a snapshot
    /// member's CDP bounds, v12, empty for every older snapshot: checked by CDPCatalogTests).
    static let movedLater: Set<String> = ["domainId", "nextSerial", "gcFloor", "cdpFrom", "cdpTo"]

    /// Every row of the tables above, without those columns, and the AUTOINCREMENT sequences.
    static func contents(_ db: Database) throws -> [String: [[String: DatabaseValue]]] {
        var out: [String: [[String: DatabaseValue]]] = [:]
        for (table, order) in tables {
            out[table] = try Row.fetchAll(db, sql: "SELECT * FROM \(table) ORDER BY \(order)").map { row in
                var values: [String: DatabaseValue] = [:]
                for column in row.columnNames where !Self.movedLater.contains(column) { values[column] = row[column] }
                return values
            }
        }
        out["sqlite_sequence"] = try Row.fetchAll(
            db, sql: "SELECT * FROM sqlite_sequence WHERE name NOT IN ('domain', 'unit') ORDER BY name"
        )
        .map { ["name": $0["name"], "seq": $0["seq"]] }
        return out
    }

    /// A catalog as the previous release (schema v4) left it: volumes a and b, clone c of a, volume d
    /// deleted (so the volume sequence is past every id), maps, a retained version, a shared and a
    /// freed chunk, an xattr, a schedule of a, its snapshot s1 of a and b, and a deleted snapshot.
    static func previousRelease(at path: String) throws -> [String: [[String: DatabaseValue]]] {
        let q = try DatabaseQueue(path: path)
        try Schema.migrator.migrate(q, upTo: "v4-catalog-identity")
        let before = try q.write { db in
            for sql in [
                "INSERT INTO pool(name, chunkSize, createdAt) VALUES ('default', 4096, 1)",
                "INSERT INTO store(poolId, name, kind, path, nextSerial, gcFloor, createdAt) "
                    + "VALUES (1, 'default', 'dir', '/d', 42, 40, 1)",
                "INSERT INTO volume(name, poolId, size, chunkSize, uid, gid, mode, mtime, createdAt, epoch) "
                    + "VALUES ('a', 1, 8192, 4096, 107, 107, 416, 5, 1, 3)",
                "INSERT INTO volume(name, poolId, size, chunkSize, uid, gid, mode, mtime, createdAt) "
                    + "VALUES ('b', 1, 4096, 4096, 0, 0, 384, 5, 1)",
                "INSERT INTO volume(name, poolId, size, chunkSize, uid, gid, mode, mtime, createdAt, parentId, "
                    + "parentEpoch) "
                    + "VALUES ('c', 1, 8192, 4096, 0, 0, 384, 5, 2, 1, 2)",
                "INSERT INTO volume(name, poolId, size, chunkSize, uid, gid, mode, mtime, createdAt) "
                    + "VALUES ('d', 1, 4096, 4096, 0, 0, 384, 5, 3)",
                "DELETE FROM volume WHERE name = 'd'",
                "INSERT INTO chunk_map(volumeId, idx, chunk, birth) "
                    + "VALUES (1, 0, 11, 1), (1, 1, 12, 2), (2, 0, 13, 1), (3, 0, 14, 3)",
                "INSERT INTO chunk_retained(volumeId, idx, birth, chunk, death) VALUES (1, 1, 1, 10, 2)",
                "INSERT INTO chunk_share(chunk, extra) VALUES (11, 1)",
                "INSERT INTO chunk_free(chunk) VALUES (9)",
                "INSERT INTO volume_xattr(volumeId, name, value) "
                    + "VALUES (1, 'trusted.libvirt.security.dac', x'2B3130373A2B313037')",
                "INSERT INTO schedule(target, every, keep, lastRun) VALUES ('a', 3600, 4, 7)",
                "INSERT INTO snapshot(name, createdAt) VALUES ('gone', 2)",
                "DELETE FROM snapshot WHERE name = 'gone'",
                "INSERT INTO snapshot(name, createdAt, scheduleId) VALUES ('s1', 3, 1)",
                "INSERT INTO snapshot_member(snapshotId, volumeId, epoch, size) "
                    + "VALUES (2, 1, 2, 8192), (2, 2, 1, 4096)",
            ] {
                try db.execute(sql: sql)
            }
            return try contents(db)
        }
        try q.close()
        return before
    }

    @Test func upgradeKeepsEveryRowIdSequenceAndRelation() throws {
        let dir = ScratchDirectory()
        let before = try Self.previousRelease(at: dir.catalogPath)
        #expect(before["sqlite_sequence"]?.count == 5)
        let c = try Catalog.open(at: dir.catalogPath)
        let q = try DatabaseQueue(path: dir.catalogPath)
        defer { try? q.close() }
        try q.read { db in
            #expect(try Self.contents(db) == before)
            for table in ["volume", "snapshot", "schedule"] {
                #expect(try Int.fetchOne(db, sql: "SELECT count(*) FROM \(table) WHERE domainId != 1") == 0, "\(table)")
            }
            // The indexes the old tables had, and foreign keys that all hold.
            let indexes = try String.fetchAll(
                db, sql: "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
            #expect(Set(indexes).isSuperset(of: ["store_on_poolId", "volume_on_poolId", "snapshot_on_scheduleId"]))
            #expect(try Row.fetchAll(db, sql: "PRAGMA foreign_key_check").isEmpty)
            #expect(
                try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE name LIKE 'redefined_%'").isEmpty)
        }
        #expect(try c.domains().map { "\($0.id!) \($0.name)" } == ["1 default"])
        #expect(try c.volumes().map(\.name) == ["a", "b", "c"])
        #expect(try c.schedule(target: "a")?.id == 1)
        #expect(try c.snapshots().map { "\($0.id!) \($0.name) \($0.scheduleId ?? 0)" } == ["2 s1 1"])

        // Relations still act: a parent with a clone cannot go, a deleted volume takes its map, xattrs and
        // snapshot memberships along, and a deleted schedule leaves its snapshots without one.
        #expect(throws: TesseraError.self) { try c.deleteVolume(VolumeID(1)) }
        try c.deleteVolume(VolumeID(2))
        #expect(try c.chunkMap(of: VolumeID(2)).isEmpty)
        #expect(try c.snapshotMembers().map(\.volumeId) == [1])
        try c.deleteSchedule(1)
        #expect(try c.snapshots().map(\.scheduleId) == [nil])
        // Ids are never reused: d (4) and the deleted snapshot (1) stay spent.
        let e = try c.insertVolumes([VolumeRecord(name: "e", poolId: 1, size: 4096, chunkSize: 4096, now: 9)])[0]
        #expect(e.id == 5)
        #expect(try c.maxVolumeIDEver() == 5)
        let s = try c.insertSnapshot(SnapshotRecord(name: "s2", createdAt: 9), members: [VolumeID(1): (3, 8192)])
        #expect(s.id == 3)
        // Opening again runs no migration twice.
        _ = try Catalog.open(at: dir.catalogPath)
    }

    @Test func aNameIsUsedOncePerDomain() throws {
        let f = try Fixture()
        let team = try f.catalog.saveDomain(DomainRecord(name: "team", createdAt: 1))
        let teamID = try #require(team.id)
        #expect(teamID == 2)
        expectCode(.exists) { _ = try f.catalog.saveDomain(DomainRecord(name: "team", createdAt: 2)) }
        expectCode(.exists) { _ = try f.catalog.saveDomain(DomainRecord(name: DomainRecord.defaultName, createdAt: 2)) }

        var inTeam = f.volume("a")
        inTeam.domainId = teamID
        let vs = try f.catalog.insertVolumes([f.volume("a"), inTeam])
        #expect(vs.map(\.domainId) == [DomainRecord.defaultID, teamID])
        expectCode(.exists) { _ = try f.catalog.insertVolumes([inTeam]) }
        expectCode(.exists) { _ = try f.insert("a") }
        var nowhere = f.volume("b")
        nowhere.domainId = 99
        #expect(throws: TesseraError.self) { _ = try f.catalog.insertVolumes([nowhere]) }

        let member: [VolumeID: (epoch: UInt64, size: UInt64)] = [VolumeID(vs[0].id!): (1, 1)]
        _ = try f.catalog.insertSnapshot(SnapshotRecord(name: "s", createdAt: 1), members: member)
        _ = try f.catalog.insertSnapshot(SnapshotRecord(name: "s", domainId: teamID, createdAt: 1), members: [:])
        expectCode(.exists) { _ = try f.catalog.insertSnapshot(SnapshotRecord(name: "s", createdAt: 2), members: [:]) }

        _ = try f.catalog.saveSchedule(ScheduleRecord(target: "a", every: 60, keep: 1))
        _ = try f.catalog.saveSchedule(ScheduleRecord(target: "a", domainId: teamID, every: 120, keep: 2))
        expectCode(.exists) { _ = try f.catalog.saveSchedule(ScheduleRecord(target: "a", every: 60, keep: 1)) }
        #expect(try f.catalog.schedule(target: "a")?.every == 60)
        #expect(try f.catalog.schedule(target: "a", in: teamID)?.every == 120)
        #expect(try f.catalog.schedule(target: "b", in: teamID) == nil)

        // A domain that still holds rows cannot go; quotas round-trip.
        var quota = team
        quota.quotaVolumes = 10
        quota.quotaSize = 1 << 40
        _ = try f.catalog.saveDomain(quota)
        #expect(try f.catalog.domains().last == quota)
        let q = try DatabaseQueue(path: f.dir.catalogPath)
        defer { try? q.close() }
        #expect(throws: DatabaseError.self) {
            try q.write { db in try db.execute(sql: "DELETE FROM domain WHERE id = 2") }
        }
    }
}
