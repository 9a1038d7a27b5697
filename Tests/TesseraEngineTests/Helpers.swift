// Shared helpers of the engine tests: a volume's whole contents, a fresh data directory, engine
// life cycle, and a Volume wired by hand over any ChunkStore (for fault injection and crash tests).

import Foundation
import GRDB
import TesseraCore
import TesseraTestSupport
import Testing

@testable import TesseraCatalog
@testable import TesseraEngine

extension Volume {
    /// The whole volume (small test volumes only).
    func contents() throws(StoreError) -> [UInt8] { try read(at: 0, count: Int(size)) }
}

extension Array where Element == UInt8 {
    /// A non-zero pattern, different per seed.
    static func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        return rng.bytes(count).map { $0 | 1 }
    }
    static func zeros(_ count: Int) -> [UInt8] { [UInt8](repeating: 0, count: count) }
}

/// A fresh, initialised data directory (removed with the object).
final class TestData {
    let dir: TemporaryDirectory
    let data: DataDirectory
    let chunkSize: UInt64

    init(chunkSize: UInt64 = 64 * 1024) throws {
        dir = try TemporaryDirectory(prefix: "tessera-engine-test")
        data = DataDirectory(path: dir.path + "/data")
        self.chunkSize = chunkSize
        try Engine.initialize(data, chunkSize: chunkSize)
    }

    /// Opens an Engine, runs `body`, and lets the Engine go (its lock with it) before returning.
    /// Nothing from inside may escape, or the Engine would stay alive.
    func withEngine<T>(_ body: (Engine) throws -> T) throws -> T {
        let engine = try Engine(data)
        return try body(engine)
    }
}

extension TestData {
    /// Rewrites the catalog as a release whose schema ended at `migration` would have left it: the same
    /// rows, ids and AUTOINCREMENT sequences, in that release's tables (the columns both schemas have).
    /// What the current schema keeps elsewhere is put back where the old one kept it.
    func rewriteCatalog(asOf migration: String) throws {
        let path = data.catalogPath
        let current = dir.path + "/current.db"
        for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: path + suffix) {
            try FileManager.default.moveItem(atPath: path + suffix, toPath: current + suffix)
        }
        let q = try DatabaseQueue(path: path)
        try Schema.migrator.migrate(q, upTo: migration)
        try q.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA foreign_keys = OFF")
            try db.execute(sql: "ATTACH DATABASE ? AS current", arguments: [current])
            try db.inTransaction {
                let tables = try String.fetchAll(
                    db,
                    sql: "SELECT name FROM main.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                        + "AND name != 'grdb_migrations'")
                for table in tables {
                    let now = Set(
                        try Row.fetchAll(
                            db, sql: "SELECT name FROM pragma_table_info(?, 'current')", arguments: [table]
                        )
                        .map { $0["name"] as String })
                    let columns = try db.columns(in: table).map(\.name).filter(now.contains)
                        .map(\.quotedDatabaseIdentifier).joined(separator: ", ")
                    try db.execute(sql: "DELETE FROM main.\(table)")
                    try db.execute(sql: "INSERT INTO main.\(table)(\(columns)) SELECT \(columns) FROM current.\(table)")
                }
                try db.execute(sql: "DELETE FROM main.sqlite_sequence")
                try db.execute(
                    sql: "INSERT INTO main.sqlite_sequence SELECT * FROM current.sqlite_sequence "
                        + "WHERE name IN (SELECT name FROM main.sqlite_master)")
                // Before placement units (v6) a store kept its unit's serial counter (and, from v4, gcFloor).
                for column in try db.columns(in: "store").map(\.name) where ["nextSerial", "gcFloor"].contains(column) {
                    try db.execute(
                        sql: "UPDATE main.store SET \(column) = (SELECT u.\(column) FROM current.unit u "
                            + "JOIN current.unit_member m ON m.unitId = u.id WHERE m.storeId = main.store.id)")
                }
                return .commit
            }
            try db.execute(sql: "DETACH DATABASE current")
        }
        try q.close()
    }
}

extension Engine {
    /// Chunks on every store (what really exists on disk).
    func storedChunks() throws -> Int { try storeInfos().reduce(0) { $0 + $1.chunks } }
}

/// Runs `body`, which must throw a TesseraError with `code`.
func expectCode(
    _ code: TesseraError.Code, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) {
    do {
        try body()
        Issue.record(
            "expected TesseraError(\(code)), nothing was thrown. \(comment.map { "\($0)" } ?? "")",
            sourceLocation: sourceLocation)
    } catch let e as TesseraError {
        #expect(e.code == code, "\(e.message) \(comment.map { "\($0)" } ?? "")", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected TesseraError(\(code)), got \(error)", sourceLocation: sourceLocation)
    }
}

/// A catalog (on disk, in a temporary directory) and one volume on a PoolLayer over `store`, wired by
/// hand as Engine.init does, so any ChunkStore (MemoryStore, FaultyStore) can sit under a real Volume.
final class HandWiredVolume {
    let dir: TemporaryDirectory
    let catalog: Catalog
    private(set) var store: any ChunkStore
    let unitID: UnitID
    private(set) var volume: Volume

    init(store: any ChunkStore, size: UInt64) throws {
        dir = try TemporaryDirectory(prefix: "tessera-volume-test")
        catalog = try Catalog.create(at: dir.path + "/catalog.db")
        let cs = Int64(store.chunkSize)
        let pool = try catalog.insertPool(PoolRecord(name: "p", chunkSize: cs, createdAt: 0))
        (_, unitID) = try catalog.insertStore(
            StoreRecord(poolId: pool.id!, name: "s", kind: "test", path: "", createdAt: 0))
        _ = try catalog.insertVolumes([
            VolumeRecord(name: "v", poolId: pool.id!, size: Int64(size), chunkSize: cs, now: 0)
        ])
        self.store = store
        volume = try Self.load(catalog, store, unitID)
    }

    /// A new Volume object from what the catalog committed (as after a restart), over the same store or,
    /// when a stack caches state of its own (ChecksumLayer), over a freshly built one.
    func reload(store newStore: (any ChunkStore)? = nil) throws {
        if let newStore { store = newStore }
        volume = try Self.load(catalog, store, unitID)
    }

    private static func load(_ catalog: Catalog, _ store: any ChunkStore, _ unitID: UnitID) throws -> Volume {
        let layer = PoolLayer(chunkSize: store.chunkSize)
        let serial = try catalog.units().first { $0.id == unitID.rawValue }!.nextSerial
        layer.add(unitID, store: store, nextSerial: UInt64(serial))
        for c in try store.allChunks() { layer.raiseSerial(c.unit, to: c.serial + 1) }
        let record = try catalog.volumes()[0]
        var map = ChunkMap()
        for e in try catalog.chunkMap(of: VolumeID(record.id!)) {
            map[UInt64(e.idx)] = ChunkID(UInt64(bitPattern: e.chunk))
        }
        return Volume(record: record, map: map, xattrs: [:], poolName: "p", pool: layer, catalog: catalog)
    }
}

/// Compares byte arrays and reports the first difference briefly (`#expect(a == b)` would print both
/// arrays in full, which for a volume image is megabytes of output).
func expectBytes(
    _ actual: [UInt8], _ expected: [UInt8], _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation
) {
    guard actual != expected else { return }
    let note = comment.map { "\($0): " } ?? ""
    if let i = (0..<min(actual.count, expected.count)).first(where: { actual[$0] != expected[$0] }) {
        let differing = zip(actual, expected).filter { $0 != $1 }.count
        let text =
            "\(note)first difference at byte \(i): read \(actual[i]), expected \(expected[i]) "
            + "(\(differing) byte(s) differ; lengths \(actual.count) and \(expected.count))"
        Issue.record(Comment(rawValue: text), sourceLocation: sourceLocation)
    } else {
        Issue.record(
            Comment(rawValue: "\(note)length \(actual.count), expected \(expected.count)"),
            sourceLocation: sourceLocation)
    }
}
