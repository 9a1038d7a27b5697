// Migration "v9-cdp" over a catalog of schema v5 (the release before CDP): every row stays, the CDP
// tables start empty, and their relations act (a volume's deletion takes its protection and marks).
import Foundation
import GRDB
import TesseraCore
import Testing

@testable import TesseraCatalog

@Suite("CDP catalog")
struct CDPCatalogTests {
    @Test func migratesAVersion5Catalog() throws {
        let dir = ScratchDirectory()
        let q = try DatabaseQueue(path: dir.catalogPath)
        try Schema.migrator.migrate(q, upTo: "v5-domains")
        try q.write { db in
            try db.execute(sql: "INSERT INTO pool(name, chunkSize, createdAt) VALUES ('default', 4096, 1)")
            try db.execute(
                sql: "INSERT INTO volume(name, poolId, size, chunkSize, uid, gid, mode, mtime, createdAt) "
                    + "VALUES ('a', 1, 8192, 4096, 0, 0, 384, 5, 1), ('b', 1, 4096, 4096, 0, 0, 384, 5, 1)")
        }
        try q.close()

        let c = try Catalog.open(at: dir.catalogPath)
        #expect(try c.volumes().map(\.name) == ["a", "b"])
        #expect(try c.cdpRecords().isEmpty)
        #expect(try c.cdpMarks().isEmpty)

        try c.insertCDP(CDPRecord(volumeId: 1, windowSeconds: 86400, maxSize: 1 << 30, enabledAt: 7))
        try c.insertCDP(CDPRecord(volumeId: 2, windowSeconds: 60, maxSize: nil, enabledAt: 7))
        expectCode(.exists) { try c.insertCDP(CDPRecord(volumeId: 1, windowSeconds: 60, maxSize: nil, enabledAt: 8)) }
        #expect(throws: TesseraError.self) {
            try c.insertCDP(CDPRecord(volumeId: 1, windowSeconds: 0, maxSize: nil, enabledAt: 8))
        }
        _ = try c.insertMark(CDPMarkRecord(volumeId: 1, name: "before", time: 5))
        _ = try c.insertMark(CDPMarkRecord(volumeId: 1, name: "after", time: 9))
        _ = try c.insertMark(CDPMarkRecord(volumeId: 2, name: "before", time: 5))
        expectCode(.exists) { _ = try c.insertMark(CDPMarkRecord(volumeId: 1, name: "before", time: 6)) }
        try c.deleteMarks(volume: VolumeID(1), before: 6)
        #expect(try c.cdpMarks().map { "\($0.volumeId) \($0.name)" } == ["2 before", "1 after"])

        var r = try #require(try c.cdpRecords().first)
        r.note = "moved"
        try c.updateCDP(r)
        #expect(try c.cdpRecords().first?.note == "moved")

        try c.deleteVolume(VolumeID(2))
        #expect(try c.cdpRecords().map(\.volumeId) == [1])
        try c.deleteCDP(VolumeID(1))
        #expect(try c.cdpRecords().isEmpty)
        #expect(try c.cdpMarks().isEmpty)
        // Opening again runs no migration twice.
        _ = try Catalog.open(at: dir.catalogPath)
    }

    /// Migration "v12-cdp-snapshots" over a catalog of the release before it: a snapshot's members keep
    /// their rows with no CDP bounds, and a new snapshot stores the bounds of its protected members.
    @Test func snapshotMembersGainCDPBounds() throws {
        let dir = ScratchDirectory()
        let q = try DatabaseQueue(path: dir.catalogPath)
        try Schema.migrator.migrate(q, upTo: "v9-cdp")
        try q.write { db in
            try db.execute(sql: "INSERT INTO pool(name, chunkSize, createdAt) VALUES ('default', 4096, 1)")
            try db.execute(
                sql: "INSERT INTO volume(name, poolId, size, chunkSize, uid, gid, mode, mtime, createdAt, epoch) "
                    + "VALUES ('a', 1, 8192, 4096, 0, 0, 384, 5, 1, 2)")
            try db.execute(sql: "INSERT INTO snapshot(name, createdAt) VALUES ('old', 3)")
            try db.execute(sql: "INSERT INTO snapshot_member(snapshotId, volumeId, epoch, size) VALUES (1, 1, 1, 8192)")
        }
        try q.close()

        let c = try Catalog.open(at: dir.catalogPath)
        let old = try c.snapshotMembers().filter { $0.snapshotId == 1 }
        #expect(old.map { "\($0.volumeId) \($0.epoch) \($0.size)" } == ["1 1 8192"])
        #expect(old.first?.cdpFrom == nil && old.first?.cdpTo == nil)
        let s = try c.insertSnapshot(
            SnapshotRecord(name: "new", createdAt: 4), members: [VolumeID(1): (epoch: 2, size: 8192)],
            cdp: [VolumeID(1): (from: 100, to: 150)])
        let new = try c.snapshotMembers().filter { $0.snapshotId == s.id! }
        #expect(new.map { "\($0.cdpFrom ?? -1) \($0.cdpTo ?? -1)" } == ["100 150"])
    }
}
