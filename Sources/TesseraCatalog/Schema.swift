import GRDB

/// Schema migrations, in order. Never edit a shipped migration; add a new one.
enum Schema {
    static let formatKey = "format"
    static let formatValue = "tessera-catalog-1"

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
            try db.execute(sql: "INSERT INTO tessera_meta(key, value) VALUES (?, ?)", arguments: [formatKey, formatValue])
        }
        return m
    }
}
