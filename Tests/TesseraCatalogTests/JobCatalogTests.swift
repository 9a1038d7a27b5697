// Migration "v10-jobs" over a catalog of schema v9 (the release before jobs): every row stays and the
// job table starts empty; a replace starts and ends all or nothing (unit members, stores, the job),
// and a unit has at most one unfinished job.
import Foundation
import GRDB
import TesseraCore
import Testing

@testable import TesseraCatalog

@Suite("Job catalog")
struct JobCatalogTests {
    @Test func migratesAVersion9CatalogAndKeepsAReplaceWhole() throws {
        let dir = ScratchDirectory()
        let q = try DatabaseQueue(path: dir.catalogPath)
        try Schema.migrator.migrate(q, upTo: "v9-cdp")
        try q.write { db in
            try db.execute(sql: "INSERT INTO pool(name, chunkSize, createdAt) VALUES ('default', 4096, 1)")
            try db.execute(
                sql: "INSERT INTO store(poolId, name, kind, path, createdAt) VALUES (1, 'old', 'dir', '/old', 1)")
            try db.execute(sql: "INSERT INTO unit(id, poolId, nextSerial, gcFloor, createdAt) VALUES (1, 1, 9, 1, 1)")
            try db.execute(sql: "INSERT INTO unit_member(unitId, storeId, role) VALUES (1, 1, 'primary')")
        }
        try q.close()

        let c = try Catalog.open(at: dir.catalogPath)
        #expect(try c.jobs().isEmpty)
        #expect(try c.stores().map(\.name) == ["old"])

        var job = JobRecord(kind: .replace, subject: "store old → /new", createdAt: 2)
        job.unitId = 1
        job.sourceStoreId = 1
        job.endSerial = 8
        job.rename = "old"
        let target = StoreRecord(poolId: 1, name: "old-new", kind: "dir", path: "/new", createdAt: 2)
        let (started, t) = try c.startReplace(job, target: target, unit: UnitID(1), source: 1)
        #expect(started.targetStoreId == t.id && started.state == .running)
        #expect(try c.unitMembers().map { "\($0.storeId):\($0.role.rawValue)" } == ["1:source", "2:target"])
        // A second replace of the same unit is refused and changes nothing.
        var again = job
        again.targetStoreId = nil
        expectCode(.busy) {
            _ = try c.startReplace(
                again, target: StoreRecord(poolId: 1, name: "x", kind: "dir", path: "/x", createdAt: 3),
                unit: UnitID(1), source: 1)
        }
        #expect(try c.stores().map(\.name) == ["old", "old-new"])

        var progress = started
        progress.cursor = 5
        progress.doneChunks = 3
        try c.updateJob(progress)
        #expect(try c.job(started.id!)?.cursor == 5)

        var done = progress
        done.state = .done
        try c.endReplace(done, unit: UnitID(1), keep: t.id!, drop: 1, rename: "old")
        #expect(try c.stores().map { "\($0.name) \($0.path)" } == ["old /new"])
        #expect(try c.unitMembers().map { "\($0.storeId):\($0.role.rawValue)" } == ["2:primary"])
        #expect(try c.jobs().map(\.state) == [.done])
    }
}
