// QoS settings in the catalog: the v7-qos migration over a catalog of the previous schema (v5), round
// trips of volume, pool and all settings, and the rules SQLite enforces (cascade, checks, one "all").
import Foundation
import GRDB
import TesseraCore
import Testing

@testable import TesseraCatalog

@Suite("QoSCatalog")
struct QoSCatalogTests {
    /// A v5 catalog with pool default and volumes a (id 1) and b (id 2).
    static func v5Catalog(at path: String) throws {
        let q = try DatabaseQueue(path: path)
        try Schema.migrator.migrate(q, upTo: "v5-domains")
        try q.write { db in
            try db.execute(sql: "INSERT INTO pool(name, chunkSize, createdAt) VALUES ('default', 4096, 1)")
            for name in ["a", "b"] {
                try db.execute(
                    sql: "INSERT INTO volume(name, poolId, size, chunkSize, uid, gid, mode, mtime, createdAt) "
                        + "VALUES (?, 1, 4096, 4096, 0, 0, 384, 5, 1)", arguments: [name])
            }
        }
        try q.close()
    }

    @Test func migrationAddsAnEmptyTableAndKeepsTheRest() throws {
        let dir = ScratchDirectory()
        try Self.v5Catalog(at: dir.catalogPath)
        let c = try Catalog.open(at: dir.catalogPath)
        #expect(try c.qosSettings().isEmpty)
        #expect(try c.volumes().map(\.name) == ["a", "b"])
        let q = try DatabaseQueue(path: dir.catalogPath)
        defer { try? q.close() }
        try q.read { db throws in
            #expect(try db.tableExists("qos_setting"))
            #expect(try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations").contains("v7-qos"))
        }
    }

    @Test func settingsRoundTripAndReplace() throws {
        let dir = ScratchDirectory()
        try Self.v5Catalog(at: dir.catalogPath)
        do {
            let c = try Catalog.open(at: dir.catalogPath)
            try c.setQoS([
                (.volume(VolumeID(1)), QoSLimits(iops: 500, bps: 10 << 20, burst: 2.5, minIops: 100, weight: 300)),
                (.pool(1), QoSLimits(writeIops: 2000)),
                (.all, QoSLimits(readBps: 1 << 30)),
            ])
            // A second set replaces the row of that target.
            try c.setQoS([(.volume(VolumeID(1)), QoSLimits(iops: 600))])
        }
        let c = try Catalog.open(at: dir.catalogPath)
        let rows = try c.qosSettings()
        let byTarget = Dictionary(uniqueKeysWithValues: rows.compactMap { r in r.target.map { ($0, r.limits) } })
        #expect(byTarget.count == 3)
        #expect(byTarget[.volume(VolumeID(1))] == QoSLimits(iops: 600))
        #expect(byTarget[.pool(1)] == QoSLimits(writeIops: 2000))
        #expect(byTarget[.all] == QoSLimits(readBps: 1 << 30))
        // Every field survives.
        let full = QoSLimits(
            iops: 1, readIops: 2, writeIops: 3, bps: 4, readBps: 5, writeBps: 6, burst: 0.5, minIops: 1,
            minBps: 2, weight: 1000)
        try c.setQoS([(.volume(VolumeID(2)), full)])
        #expect(try c.qosSettings().first { $0.target == .volume(VolumeID(2)) }?.limits == full)
        // Empty limits remove.
        try c.setQoS([(.all, QoSLimits()), (.pool(1), QoSLimits())])
        #expect(Set(try c.qosSettings().compactMap(\.target)) == [.volume(VolumeID(1)), .volume(VolumeID(2))])
    }

    @Test func aVolumeSettingGoesWithItsVolume() throws {
        let dir = ScratchDirectory()
        try Self.v5Catalog(at: dir.catalogPath)
        let c = try Catalog.open(at: dir.catalogPath)
        try c.setQoS([(.volume(VolumeID(1)), QoSLimits(iops: 5)), (.volume(VolumeID(2)), QoSLimits(iops: 7))])
        var a = try #require(try c.volumes().first { $0.name == "a" })
        a.name = "renamed"
        try c.updateVolume(a)
        #expect(try c.qosSettings().first { $0.target == .volume(VolumeID(1)) }?.limits.iops == 5)
        try c.deleteVolume(VolumeID(1))
        #expect(try c.qosSettings().compactMap(\.target) == [.volume(VolumeID(2))])
    }

    @Test func sqliteRefusesWhatTheEngineNeverWrites() throws {
        let dir = ScratchDirectory()
        try Self.v5Catalog(at: dir.catalogPath)
        _ = try Catalog.open(at: dir.catalogPath)
        let q = try DatabaseQueue(path: dir.catalogPath)
        defer { try? q.close() }
        for sql in [
            "INSERT INTO qos_setting(scope, volumeId, iops) VALUES ('volume', 1, 0)",
            "INSERT INTO qos_setting(scope, volumeId, weight) VALUES ('volume', 1, 1001)",
            "INSERT INTO qos_setting(scope, poolId, iops) VALUES ('volume', 1, 5)",
            "INSERT INTO qos_setting(scope, iops) VALUES ('pool', 5)",
            "INSERT INTO qos_setting(scope, volumeId, iops) VALUES ('volume', 99, 5)",
        ] {
            #expect(throws: DatabaseError.self, "\(sql)") { try q.write { try $0.execute(sql: sql) } }
        }
        try q.write { try $0.execute(sql: "INSERT INTO qos_setting(scope, iops) VALUES ('all', 5)") }
        #expect(throws: DatabaseError.self) {
            try q.write { try $0.execute(sql: "INSERT INTO qos_setting(scope, iops) VALUES ('all', 6)") }
        }
    }
}
