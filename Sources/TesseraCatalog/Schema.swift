import Foundation
import GRDB

/// Schema migrations, in order. Never edit a shipped migration; add a new one.
enum Schema {
    static let formatKey = "format"
    static let formatValue = "tessera-catalog-1"
    /// The catalog's identity (a UUID), recorded in every store it owns (store.json) so that a store is
    /// never taken for another catalog's, and garbage collection never runs over a stranger's chunks.
    static let identityKey = "catalog-id"

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.create(table: "tessera_meta") { t in
                t.primaryKey("key", .text)
                t.column("value", .text).notNull()
            }
            try db.create(table: "pool") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("name", .text).notNull().unique()
                t.column("chunkSize", .integer).notNull().check { $0 > 0 }
                t.column("createdAt", .double).notNull()
            }
            try db.create(table: "store") { t in
                t.autoIncrementedPrimaryKey("id")
                t.belongsTo("pool", onDelete: .restrict).notNull()
                t.column("name", .text).notNull().unique()
                t.column("kind", .text).notNull()
                t.column("path", .text).notNull()
                t.column("nextSerial", .integer).notNull().defaults(to: 1)
                t.column("createdAt", .double).notNull()
            }
            try db.create(table: "volume") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("name", .text).notNull().unique()
                t.belongsTo("pool", onDelete: .restrict).notNull()
                t.column("size", .integer).notNull().check { $0 >= 0 }
                t.column("chunkSize", .integer).notNull().check { $0 > 0 }
                t.column("uid", .integer).notNull()
                t.column("gid", .integer).notNull()
                t.column("mode", .integer).notNull()
                t.column("mtime", .double).notNull()
                t.column("createdAt", .double).notNull()
            }
            try db.create(table: "chunk_map", options: [.withoutRowID]) { t in
                t.column("volumeId", .integer).notNull().references("volume", onDelete: .cascade)
                t.column("idx", .integer).notNull()
                t.column("chunk", .integer).notNull()
                t.primaryKey(["volumeId", "idx"])
            }
            try db.create(table: "volume_xattr", options: [.withoutRowID]) { t in
                t.column("volumeId", .integer).notNull().references("volume", onDelete: .cascade)
                t.column("name", .text).notNull()
                t.column("value", .blob).notNull()
                t.primaryKey(["volumeId", "name"])
            }
            try db.execute(
                sql: "INSERT INTO tessera_meta(key, value) VALUES (?, ?)", arguments: [formatKey, formatValue])
        }
        m.registerMigration("v2-snapshots") { db in
            try db.alter(table: "volume") { t in
                t.add(column: "epoch", .integer).notNull().defaults(to: 1)
                t.add(column: "parentId", .integer).references("volume", onDelete: .restrict)
                t.add(column: "parentEpoch", .integer)
                t.add(column: "parentLimit", .integer)
            }
            try db.alter(table: "chunk_map") { t in
                t.add(column: "birth", .integer).notNull().defaults(to: 0)
            }
            try db.create(table: "chunk_retained", options: [.withoutRowID]) { t in
                t.column("volumeId", .integer).notNull().references("volume", onDelete: .cascade)
                t.column("idx", .integer).notNull()
                t.column("birth", .integer).notNull()
                t.column("chunk", .integer).notNull()
                t.column("death", .integer).notNull()
                t.primaryKey(["volumeId", "idx", "birth"])
            }
            try db.create(table: "chunk_share") { t in
                t.primaryKey("chunk", .integer)
                // May be negative for a moment: the volumes that add and drop references commit apart.
                t.column("extra", .integer).notNull()
            }
            try db.create(table: "schedule") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("target", .text).notNull()
                t.column("every", .integer).notNull().check { $0 > 0 }
                t.column("keep", .integer).notNull().check { $0 > 0 }
                t.column("lastRun", .double)
            }
            try db.create(table: "snapshot") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("name", .text).notNull().unique()
                t.column("createdAt", .double).notNull()
                t.belongsTo("schedule", onDelete: .setNull)
            }
            try db.create(table: "snapshot_member", options: [.withoutRowID]) { t in
                t.column("snapshotId", .integer).notNull().references("snapshot", onDelete: .cascade)
                t.column("volumeId", .integer).notNull().references("volume", onDelete: .cascade)
                t.column("epoch", .integer).notNull()
                t.column("size", .integer).notNull()
                t.primaryKey(["snapshotId", "volumeId"])
            }
        }
        m.registerMigration("v3-store-options") { db in
            // How a store is opened beyond its kind and path (JSON: capacity, compression, S3 settings,
            // the path of its credentials file — never a secret).
            try db.alter(table: "store") { t in
                t.add(column: "options", .text).notNull().defaults(to: "{}")
            }
        }
        m.registerMigration("v4-catalog-identity") { db in
            // An existing catalog gets its identity here; the engine stamps its stores at the first open.
            try db.execute(
                sql: "INSERT OR IGNORE INTO tessera_meta(key, value) VALUES (?, ?)",
                arguments: [identityKey, UUID().uuidString.lowercased()])
            // Garbage collection's proof: chunks at or above a store's gcFloor were allocated by the run
            // that began when the floor was set (see Engine). An existing store starts at its committed
            // high-water mark, so chunks from before the upgrade are never taken for that run's orphans.
            try db.alter(table: "store") { t in
                t.add(column: "gcFloor", .integer).notNull().defaults(to: 1)
            }
            try db.execute(sql: "UPDATE store SET gcFloor = nextSerial")
            // Chunks a committed change unmapped (or a deleted volume held) and that are to be deleted:
            // the proof that lets garbage collection remove such a chunk if a crash came first.
            try db.create(table: "chunk_free") { t in
                t.primaryKey("chunk", .integer)
            }
        }
        m.registerMigration("v5-domains") { db in
            // Names become unique per domain rather than per catalog. Every existing row goes to the
            // default domain, so today's names and paths stay as they were.
            try db.create(table: "domain") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("name", .text).notNull().unique()
                t.column("createdAt", .double).notNull()
                t.column("quotaVolumes", .integer)
                t.column("quotaSize", .integer)
                t.column("quotaSnapshots", .integer)
            }
            try db.execute(
                sql: "INSERT INTO domain(id, name, createdAt) VALUES (?, ?, ?)",
                arguments: [DomainRecord.defaultID, DomainRecord.defaultName, Date().timeIntervalSince1970])
            try redefine(db, table: "volume") { t in
                t.autoIncrementedPrimaryKey("id")
                domainColumn(t)
                t.column("name", .text).notNull()
                t.column("poolId", .integer).notNull().references("pool", onDelete: .restrict)
                t.column("size", .integer).notNull().check { $0 >= 0 }
                t.column("chunkSize", .integer).notNull().check { $0 > 0 }
                t.column("uid", .integer).notNull()
                t.column("gid", .integer).notNull()
                t.column("mode", .integer).notNull()
                t.column("mtime", .double).notNull()
                t.column("createdAt", .double).notNull()
                t.column("epoch", .integer).notNull().defaults(to: 1)
                t.column("parentId", .integer).references("volume", onDelete: .restrict)
                t.column("parentEpoch", .integer)
                t.column("parentLimit", .integer)
                t.uniqueKey(["domainId", "name"])
            }
            try redefine(db, table: "schedule") { t in
                t.autoIncrementedPrimaryKey("id")
                domainColumn(t)
                t.column("target", .text).notNull()
                t.column("every", .integer).notNull().check { $0 > 0 }
                t.column("keep", .integer).notNull().check { $0 > 0 }
                t.column("lastRun", .double)
                t.uniqueKey(["domainId", "target"])
            }
            try redefine(db, table: "snapshot") { t in
                t.autoIncrementedPrimaryKey("id")
                domainColumn(t)
                t.column("name", .text).notNull()
                t.column("createdAt", .double).notNull()
                t.column("scheduleId", .integer).references("schedule", onDelete: .setNull)
                t.uniqueKey(["domainId", "name"])
            }
        }
        m.registerMigration("v6-units") { db in
            // Chunk IDs name placement units rather than stores. Each existing store becomes the one
            // member of a unit with the store's own id, so every chunk ID already written (store id in
            // its top bits) names its unit unchanged; the serial counter and gcFloor move to the unit.
            try db.create(table: "unit") { t in
                t.autoIncrementedPrimaryKey("id").check { $0 > 0 && $0 < 0xffff }
                t.column("poolId", .integer).notNull().references("pool", onDelete: .restrict)
                t.column("nextSerial", .integer).notNull().defaults(to: 1)
                t.column("gcFloor", .integer).notNull().defaults(to: 1)
                t.column("createdAt", .double).notNull()
            }
            // A store is the primary of at most one unit; it may serve others too later (as a drain
            // target, say: chunk files are named by their full ID, so units never collide on a store).
            try db.create(table: "unit_member", options: [.withoutRowID]) { t in
                t.column("unitId", .integer).notNull().references("unit", onDelete: .restrict)
                t.column("storeId", .integer).notNull().references("store", onDelete: .restrict).indexed()
                t.column("role", .text).notNull()
                t.primaryKey(["unitId", "storeId"])
            }
            try db.execute(
                sql: "CREATE UNIQUE INDEX unit_member_primary ON unit_member(storeId) WHERE role = 'primary'")
            try db.execute(
                sql: "INSERT INTO unit(id, poolId, nextSerial, gcFloor, createdAt) "
                    + "SELECT id, poolId, nextSerial, gcFloor, createdAt FROM store")
            try db.execute(
                sql: "INSERT INTO unit_member(unitId, storeId, role) SELECT id, id, ? FROM store",
                arguments: [UnitMemberRecord.Role.primary.rawValue])
            // Unit ids go on from the store ids, so the two stay equal until a store changes units.
            try db.execute(sql: "DELETE FROM sqlite_sequence WHERE name = 'unit'")
            try db.execute(
                sql:
                    "INSERT INTO sqlite_sequence(name, seq) SELECT 'unit', seq FROM sqlite_sequence WHERE name = 'store'"
            )
            try redefine(db, table: "store") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("poolId", .integer).notNull().references("pool", onDelete: .restrict)
                t.column("name", .text).notNull().unique()
                t.column("kind", .text).notNull()
                t.column("path", .text).notNull()
                t.column("createdAt", .double).notNull()
                t.column("options", .text).notNull().defaults(to: "{}")
            }
        }
        m.registerMigration("v7-qos") { db in
            // QoS settings (caps, burst, floors, weight) of one volume, of one pool's volumes as a group,
            // or of every volume as one group ('all'). Keyed by id, so a setting follows its volume
            // through renames and goes with it when it is deleted; a clone starts without one.
            try db.create(table: "qos_setting") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("scope", .text).notNull().check { ["volume", "pool", "all"].contains($0) }
                t.column("volumeId", .integer).unique().references("volume", onDelete: .cascade)
                t.column("poolId", .integer).unique().references("pool", onDelete: .cascade)
                for rate in ["iops", "readIops", "writeIops", "bps", "readBps", "writeBps", "minIops", "minBps"] {
                    t.column(rate, .integer).check { $0 == nil || $0 > 0 }
                }
                t.column("burst", .double).check { $0 == nil || $0 > 0 }
                t.column("weight", .integer).check { $0 == nil || ($0 >= 1 && $0 <= 1000) }
                t.check(
                    sql: """
                        (scope = 'volume' AND volumeId IS NOT NULL AND poolId IS NULL)
                        OR (scope = 'pool' AND poolId IS NOT NULL AND volumeId IS NULL)
                        OR (scope = 'all' AND volumeId IS NULL AND poolId IS NULL)
                        """)
            }
            try db.execute(sql: "CREATE UNIQUE INDEX qos_setting_all ON qos_setting(scope) WHERE scope = 'all'")
        }
        m.registerMigration("v8-domain-policy") { db in
            // The pools a domain's volumes may be placed in (a JSON array of pool names; NULL: any pool).
            try db.alter(table: "domain") { t in t.add(column: "pools", .text) }
        }
        // Continuous data protection: which volumes are protected and how long / how much is kept, and the
        // named instants (marks). The bases are hidden snapshots (".cdp.VOLUME-ID.GENERATION"); the writes
        // themselves live in journal segment files under DATA/cdp/VOLUME-ID/, not in the catalog.
        m.registerMigration("v9-cdp") { db in
            try db.create(table: "cdp") { t in
                t.primaryKey("volumeId", .integer).references("volume", onDelete: .cascade)
                t.column("windowSeconds", .integer).notNull().check { $0 > 0 }
                t.column("maxSize", .integer).check { $0 > 0 }
                t.column("enabledAt", .double).notNull()
                t.column("note", .text)
            }
            try db.create(table: "cdp_mark") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("volumeId", .integer).notNull().references("cdp", column: "volumeId", onDelete: .cascade)
                t.column("name", .text).notNull()
                t.column("time", .integer).notNull()
                t.uniqueKey(["volumeId", "name"])
            }
        }
        // Long operations (store replace today; migrate and drain later) as jobs that survive a restart:
        // what they work on, their state, progress and a resumable cursor, a rate cap and the last error.
        // A replace's stores are members of the unit (roles 'source' and 'target') while it runs.
        m.registerMigration("v10-jobs") { db in
            try db.create(table: "job") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("kind", .text).notNull().check { ["replace", "migrate", "drain"].contains($0) }
                t.column("state", .text).notNull()
                    .check { ["running", "paused", "cancelled", "done", "failed"].contains($0) }
                // What it works on, for display (store names change hands; ids are kept below).
                t.column("subject", .text).notNull()
                t.column("unitId", .integer)
                t.column("sourceStoreId", .integer)
                t.column("targetStoreId", .integer)
                t.column("volumeId", .integer)
                t.column("poolId", .integer)
                // replace: the name the target store takes when the job is done (the source's).
                t.column("rename", .text)
                // Serials up to `cursor` are copied and durable on the target; serials above `endSerial`
                // were handed out after the job started.
                t.column("cursor", .integer).notNull().defaults(to: 0)
                t.column("endSerial", .integer).notNull().defaults(to: 0)
                t.column("doneChunks", .integer).notNull().defaults(to: 0)
                t.column("totalChunks", .integer).notNull().defaults(to: 0)
                t.column("doneBytes", .integer).notNull().defaults(to: 0)
                t.column("totalBytes", .integer).notNull().defaults(to: 0)
                t.column("rate", .integer).check { $0 == nil || $0 > 0 }
                t.column("lastError", .text)
                t.column("errorAt", .double)
                t.column("createdAt", .double).notNull()
                t.column("updatedAt", .double).notNull()
            }
            // One unfinished job per unit.
            try db.execute(
                sql: "CREATE UNIQUE INDEX job_unit_active ON job(unitId) WHERE state IN ('running', 'paused')")
        }
        // API users (issue 15): a role, the domain it acts in (domain-admin and operator only) and the
        // SHA-256 of its bearer token; a domain is not deleted while one of its users remains.
        m.registerMigration("v11-users") { db in
            try db.create(table: "user") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("name", .text).notNull().unique()
                t.column("role", .text).notNull()
                    .check { ["admin", "domain-admin", "operator", "auditor"].contains($0) }
                t.column("domainId", .integer).references("domain", onDelete: .restrict)
                t.column("tokenHash", .text).notNull().unique()
                t.column("createdAt", .double).notNull()
                t.check(
                    sql: """
                        (role IN ('domain-admin', 'operator') AND domainId IS NOT NULL)
                        OR (role IN ('admin', 'auditor') AND domainId IS NULL)
                        """)
            }
        }
        // A protected volume's snapshot keeps the CDP instants that bound it (a diff may be named by it).
        m.registerMigration("v12-cdp-snapshots") { db in
            try db.alter(table: "snapshot_member") { t in
                t.add(column: "cdpFrom", .integer)
                t.add(column: "cdpTo", .integer)
            }
        }
        return m
    }

    /// The domain a row's name belongs to; rows written before domains belong to the default one.
    private static func domainColumn(_ t: TableDefinition) {
        t.column("domainId", .integer).notNull().defaults(to: DomainRecord.defaultID)
            .references("domain", onDelete: .restrict)
    }

    /// Gives `table` a new definition, since SQLite cannot alter a constraint: creates the new table,
    /// copies the columns both definitions have (a new column takes its default), drops the old table,
    /// renames the new one and recreates the old table's explicit indexes. That order keeps every other
    /// table's foreign keys naming `table`; GRDB runs a migration with foreign keys off and checks them
    /// all before it commits. AUTOINCREMENT's high-water mark is carried over, so no id is ever reused.
    private static func redefine(_ db: Database, table: String, as body: (TableDefinition) throws -> Void) throws {
        let building = "redefined_" + table
        let indexes = try String.fetchAll(
            db, sql: "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
            arguments: [table])
        let sequence = try Int64.fetchOne(db, sql: "SELECT seq FROM sqlite_sequence WHERE name = ?", arguments: [table])
        try db.create(table: building, body: body)
        let kept = Set(try db.columns(in: building).map(\.name))
        let columns = try db.columns(in: table).map(\.name).filter(kept.contains)
            .map(\.quotedDatabaseIdentifier).joined(separator: ", ")
        try db.execute(sql: "INSERT INTO \(building)(\(columns)) SELECT \(columns) FROM \(table)")
        try db.drop(table: table)
        try db.rename(table: building, to: table)
        for sql in indexes { try db.execute(sql: sql) }
        if let sequence {
            try db.execute(sql: "DELETE FROM sqlite_sequence WHERE name IN (?, ?)", arguments: [table, building])
            try db.execute(sql: "INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)", arguments: [table, sequence])
        }
    }
}
