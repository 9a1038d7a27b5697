import Foundation
import GRDB
import TesseraCore

/// The catalog: pools, stores, placement units, domains, volumes, chunk maps, xattrs, snapshots and schedules in one
/// SQLite file (WAL). Volume and snapshot names and schedule targets are unique per domain; a lookup
/// by name without a domain looks in the default domain.
///
/// Threading: any thread; GRDB serialises writes. Durability: every write transaction commits with
/// `synchronous=FULL`, so when a method returns the change survives a machine crash — the volume
/// engine relies on that for the map commit at fsync. Exactly one process opens a catalog at a time
/// (the engine holds the data directory's lock); this type does not check that.
public final class Catalog: Sendable {
    public let path: String
    private let db: DatabasePool

    private init(path: String, db: DatabasePool) {
        self.path = path
        self.db = db
    }

    /// GRDB's pool switches WAL on after `prepareDatabase` and sets `synchronous = NORMAL` with it, which
    /// would leave commits unsynced; set FULL on the writer afterwards and check that it held.
    private static func requireFullSync(_ db: DatabasePool, _ path: String) throws {
        let level = try db.writeWithoutTransaction { db -> Int in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            return try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1
        }
        guard level == 2 else {
            throw TesseraError(.catalog, "cannot make \(path) commit durably (synchronous = \(level))")
        }
    }

    private static func configuration() -> Configuration {
        var config = Configuration()
        config.foreignKeysEnabled = true
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        return config
    }

    /// Creates a new, empty catalog at `path`. Refuses if a file is already there.
    public static func create(at path: String) throws(TesseraError) -> Catalog {
        if FileManager.default.fileExists(atPath: path) {
            throw TesseraError(.exists, "a catalog already exists at \(path)")
        }
        do {
            let db = try DatabasePool(path: path, configuration: configuration())
            try requireFullSync(db, path)
            try Schema.migrator.migrate(db)
            return Catalog(path: path, db: db)
        } catch {
            throw TesseraError(.catalog, "cannot create catalog at \(path): \(error)")
        }
    }

    /// Opens an existing catalog. A missing, damaged or foreign file is refused with a clear message;
    /// this never creates a fresh catalog, which would orphan the data on the stores.
    public static func open(at path: String) throws(TesseraError) -> Catalog {
        guard FileManager.default.fileExists(atPath: path) else {
            throw TesseraError(.catalog, "no catalog at \(path) (run 'tessera init' first, or give --data)")
        }
        do {
            let db = try DatabasePool(path: path, configuration: configuration())
            try requireFullSync(db, path)
            let check = try db.read { db in try String.fetchOne(db, sql: "PRAGMA quick_check") }
            guard check == "ok" else {
                throw TesseraError(.catalog, "catalog \(path) is damaged (\(check ?? "no answer")); refusing to use it")
            }
            let format = try db.read { db -> String? in
                guard try db.tableExists("tessera_meta") else { return nil }
                return try String.fetchOne(
                    db, sql: "SELECT value FROM tessera_meta WHERE key = ?", arguments: [Schema.formatKey])
            }
            guard format == Schema.formatValue else {
                throw TesseraError(.catalog, "\(path) is not a Tessera catalog (format \(format ?? "missing"))")
            }
            try Schema.migrator.migrate(db)
            return Catalog(path: path, db: db)
        } catch let e as TesseraError {
            throw e
        } catch {
            throw TesseraError(.catalog, "catalog \(path) is damaged or unreadable: \(error)")
        }
    }

    /// One write transaction (also for the catalog's other files: Catalog+QoS.swift).
    func write<T>(_ what: String, _ body: (Database) throws -> T) throws(TesseraError) -> T {
        do {
            return try db.write(body)
        } catch let e as TesseraError {
            throw e
        } catch let e as DatabaseError where e.resultCode == .SQLITE_CONSTRAINT {
            throw TesseraError(.exists, "\(what): name already exists or is still referenced (\(e.message ?? ""))")
        } catch {
            throw TesseraError(.catalog, "\(what) failed: \(error)")
        }
    }

    func read<T>(_ body: (Database) throws -> T) throws(TesseraError) -> T {
        do {
            return try db.read(body)
        } catch {
            throw TesseraError(.catalog, "catalog read failed: \(error)")
        }
    }

    // MARK: Identity and garbage-collection proofs

    /// This catalog's identity (a UUID, lower case), recorded in each of its stores.
    public func identity() throws(TesseraError) -> String {
        let id = try read { db in
            try String.fetchOne(
                db, sql: "SELECT value FROM tessera_meta WHERE key = ?", arguments: [Schema.identityKey])
        }
        guard let id else { throw TesseraError(.catalog, "catalog \(path) has no identity") }
        return id
    }

    /// The largest volume id ever handed out (AUTOINCREMENT never reuses one), 0 when none.
    public func maxVolumeIDEver() throws(TesseraError) -> Int64 {
        try read { db in
            try Int64.fetchOne(db, sql: "SELECT seq FROM sqlite_sequence WHERE name = 'volume'") ?? 0
        }
    }

    /// Sets each unit's gcFloor (at open, once garbage collection has looked at every chunk).
    public func setGCFloors(_ floors: [UnitID: UInt64]) throws(TesseraError) {
        try write("record garbage-collection floors") { db in
            for (unit, floor) in floors {
                try db.execute(
                    sql: "UPDATE unit SET gcFloor = ? WHERE id = ?", arguments: [Int64(floor), unit.rawValue])
            }
        }
    }

    /// Chunks recorded as freed by a committed change (deletable once unreferenced).
    public func freedChunks() throws(TesseraError) -> Set<UInt64> {
        try read { db in Set(try Int64.fetchAll(db, sql: "SELECT chunk FROM chunk_free").map { UInt64(bitPattern: $0) })
        }
    }

    /// Adds `chunks` to the freed list (`fsck --rebuild-catalog`: chunks it found to be garbage).
    public func recordFreed(_ chunks: [ChunkID]) throws(TesseraError) {
        try write("record freed chunks") { db in try Self.recordFreed(db, chunks) }
    }

    /// Forgets freed chunks (deleted, or found referenced after all).
    public func forgetFreed(_ chunks: [ChunkID]) throws(TesseraError) {
        try write("forget freed chunks") { db in try Self.forgetFreed(db, chunks) }
    }

    private static func recordFreed(_ db: Database, _ chunks: [ChunkID]) throws {
        let insert = try db.cachedStatement(sql: "INSERT OR IGNORE INTO chunk_free(chunk) VALUES (?)")
        for c in chunks where c.isReal { try insert.execute(arguments: [Int64(bitPattern: c.rawValue)]) }
    }

    private static func forgetFreed(_ db: Database, _ chunks: [ChunkID]) throws {
        let remove = try db.cachedStatement(sql: "DELETE FROM chunk_free WHERE chunk = ?")
        for c in chunks { try remove.execute(arguments: [Int64(bitPattern: c.rawValue)]) }
    }

    // MARK: Pools and stores

    public func pools() throws(TesseraError) -> [PoolRecord] {
        try read { try PoolRecord.order(Column("id")).fetchAll($0) }
    }
    public func stores() throws(TesseraError) -> [StoreRecord] {
        try read { try StoreRecord.order(Column("id")).fetchAll($0) }
    }

    public func insertPool(_ pool: PoolRecord) throws(TesseraError) -> PoolRecord {
        try write("create pool \(pool.name)") { db in
            var p = pool
            try p.insert(db)
            return p
        }
    }

    /// The placement units, by id.
    public func units() throws(TesseraError) -> [UnitRecord] {
        try read { try UnitRecord.order(Column("id")).fetchAll($0) }
    }

    /// Which units each store serves, and how.
    public func unitMembers() throws(TesseraError) -> [UnitMemberRecord] {
        try read { try UnitMemberRecord.order(Column("storeId"), Column("unitId")).fetchAll($0) }
    }

    /// The unit each store is the primary of.
    public func primaryUnits() throws(TesseraError) -> [Int64: UnitID] {
        var out: [Int64: UnitID] = [:]
        for m in try unitMembers() where m.role == .primary { out[m.storeId] = UnitID(m.unitId) }
        return out
    }

    /// Records a store as the primary of a unit of its pool: a new unit, or, with `unit` (a rebuild
    /// from the stores' manifests), the unit of that id, made if missing. Both or neither.
    public func insertStore(_ store: StoreRecord, unit: UnitID? = nil) throws(TesseraError) -> (StoreRecord, UnitID) {
        try write("add store \(store.name)") { db in
            var s = store
            try s.insert(db)
            var u = UnitRecord(poolId: s.poolId, createdAt: s.createdAt)
            if let unit {
                u.id = unit.rawValue
                if try UnitRecord.fetchOne(db, key: unit.rawValue) == nil { try u.insert(db) }
            } else {
                let used = try Int64.fetchOne(db, sql: "SELECT seq FROM sqlite_sequence WHERE name = 'unit'") ?? 0
                guard used + 1 < UnitID.limit else {
                    throw TesseraError(.noSpace, "this catalog has used all \(UnitID.limit - 1) placement unit ids")
                }
                try u.insert(db)
            }
            try UnitMemberRecord(storeId: s.id!, unitId: u.id!, role: .primary).insert(db)
            return (s, UnitID(u.id!))
        }
    }

    /// Removes a store and, when it was the unit's last member, its unit (whose id is never reused) with
    /// the unit's entries in the freed list. Refused while any map or retained version names the unit.
    public func removeStore(_ id: Int64, unit: UnitID) throws(TesseraError) {
        try write("remove store #\(id)") { db in
            let named = "((chunk >> \(ChunkID.serialBits)) & 65535) = ?"
            let used =
                try Int.fetchOne(
                    db,
                    sql: "SELECT (SELECT count(*) FROM chunk_map WHERE \(named)) "
                        + "+ (SELECT count(*) FROM chunk_retained WHERE \(named))",
                    arguments: [unit.rawValue, unit.rawValue]) ?? 0
            if used > 0 {
                throw TesseraError(.busy, "\(used) map entr(ies) still name \(unit) of store #\(id)")
            }
            try db.execute(sql: "DELETE FROM unit_member WHERE storeId = ?", arguments: [id])
            if try UnitMemberRecord.filter(Column("unitId") == unit.rawValue).fetchCount(db) == 0 {
                try db.execute(sql: "DELETE FROM chunk_free WHERE \(named)", arguments: [unit.rawValue])
                _ = try UnitRecord.deleteOne(db, key: unit.rawValue)
            }
            _ = try StoreRecord.deleteOne(db, key: id)
        }
    }

    /// Rewrites a store's options (`store set`); nothing else of the row.
    public func updateStore(_ store: StoreRecord) throws(TesseraError) {
        try write("update store \(store.name)") { db in try store.update(db, columns: ["options"]) }
    }

    // MARK: Domains

    public func domains() throws(TesseraError) -> [DomainRecord] {
        try read { try DomainRecord.order(Column("id")).fetchAll($0) }
    }

    /// Inserts a new domain, or updates the one with the record's id.
    public func saveDomain(_ domain: DomainRecord) throws(TesseraError) -> DomainRecord {
        try write("save domain \(domain.name)") { db in
            var d = domain
            try d.save(db)
            return d
        }
    }

    /// Deletes a domain row. The catalog refuses (foreign keys) while a volume, snapshot or schedule
    /// names it; the engine checks first to say which.
    public func deleteDomain(_ id: Int64) throws(TesseraError) {
        try write("delete domain #\(id)") { db in _ = try DomainRecord.deleteOne(db, key: id) }
    }

    // MARK: Volumes

    public func volumes() throws(TesseraError) -> [VolumeRecord] {
        try read { try VolumeRecord.order(Column("id")).fetchAll($0) }
    }

    /// Inserts all of `volumes` in one transaction: all or none.
    public func insertVolumes(_ volumes: [VolumeRecord]) throws(TesseraError) -> [VolumeRecord] {
        try write("create volume") { db in
            try volumes.map { v in
                var v = v
                try v.insert(db)
                return v
            }
        }
    }

    public func updateVolume(_ volume: VolumeRecord) throws(TesseraError) {
        try write("update volume \(volume.name)") { db in try volume.update(db) }
    }

    /// Deletes the volume row; its map and xattrs go with it (ON DELETE CASCADE). Every chunk it
    /// referenced is recorded as freed in the same transaction (garbage collection's proof, should a
    /// crash come before the deletes).
    public func deleteVolume(_ id: VolumeID) throws(TesseraError) {
        try write("delete volume") { db in
            try db.execute(
                sql: "INSERT OR IGNORE INTO chunk_free(chunk) SELECT chunk FROM chunk_map WHERE volumeId = ? "
                    + "UNION SELECT chunk FROM chunk_retained WHERE volumeId = ?",
                arguments: [id.rawValue, id.rawValue])
            try db.execute(sql: "DELETE FROM chunk_free WHERE chunk = 0 OR chunk = -1")  // none, tombstone
            _ = try VolumeRecord.deleteOne(db, key: id.rawValue)
        }
    }

    public func chunkMap(of id: VolumeID) throws(TesseraError) -> [ChunkMapRecord] {
        try read { try ChunkMapRecord.filter(Column("volumeId") == id.rawValue).fetchAll($0) }
    }

    public func retained(of id: VolumeID) throws(TesseraError) -> [RetainedRecord] {
        try read { try RetainedRecord.filter(Column("volumeId") == id.rawValue).fetchAll($0) }
    }

    public func shares() throws(TesseraError) -> [ShareRecord] { try read { try ShareRecord.fetchAll($0) } }

    /// Every physical chunk referenced by any map or retained version.
    public func referencedChunks() throws(TesseraError) -> Set<UInt64> {
        try read { db in
            Set(
                try Int64.fetchAll(db, sql: "SELECT chunk FROM chunk_map UNION SELECT chunk FROM chunk_retained")
                    .map { UInt64(bitPattern: $0) })
        }
    }

    /// Commits one volume's map changes, size and mtime, and the units' serial high-water marks, in one
    /// durable transaction. `changes` maps a logical index to its chunk (birth epoch 0); `.none` removes
    /// the entry.
    public func commitVolume(
        _ id: VolumeID, size: UInt64, mtime: Double, changes: [UInt64: ChunkID], nextSerials: [UnitID: UInt64]
    ) throws(TesseraError) {
        var commit = VolumeCommit(size: size, mtime: mtime)
        commit.changes = changes.mapValues { $0.isNone ? nil : MapEntry(chunk: $0, birth: 0) }
        commit.nextSerials = nextSerials
        try commitVolume(id, commit)
    }

    /// Everything one volume flush makes durable, in one transaction.
    public struct VolumeCommit: Sendable {
        public var size: UInt64
        public var mtime: Double
        public var epoch: UInt64?
        public var parentLimit: UInt64?
        /// Logical index → new entry, or nil to clear the slot.
        public var changes: [UInt64: MapEntry?] = [:]
        public var retainedAdds: [RetainedRecord] = []
        /// (index, birth) of retained versions that are gone.
        public var retainedRemoves: [(UInt64, UInt64)] = []
        /// Chunk → change of its extra reference count.
        public var shareDeltas: [ChunkID: Int] = [:]
        public var nextSerials: [UnitID: UInt64] = [:]
        /// Chunks this commit unmaps for good, deleted after it (recorded as freed with it).
        public var frees: [ChunkID] = []
        /// Freed chunks whose delete has completed since (their freed record goes).
        public var deleted: [ChunkID] = []
        public init(size: UInt64, mtime: Double) {
            self.size = size
            self.mtime = mtime
        }
    }

    public func commitVolume(_ id: VolumeID, _ c: VolumeCommit) throws(TesseraError) {
        try write("commit volume map") { db in
            try db.execute(
                sql:
                    "UPDATE volume SET size = ?, mtime = ?, epoch = coalesce(?, epoch), parentLimit = coalesce(?, parentLimit) WHERE id = ?",
                arguments: [
                    Int64(c.size), c.mtime, c.epoch.map { Int64($0) }, c.parentLimit.map { Int64($0) }, id.rawValue,
                ])
            let upsert = try db.cachedStatement(
                sql: "INSERT INTO chunk_map(volumeId, idx, chunk, birth) VALUES (?, ?, ?, ?) "
                    + "ON CONFLICT(volumeId, idx) DO UPDATE SET chunk = excluded.chunk, birth = excluded.birth")
            let remove = try db.cachedStatement(sql: "DELETE FROM chunk_map WHERE volumeId = ? AND idx = ?")
            for (idx, entry) in c.changes {
                if let entry {
                    try upsert.execute(arguments: [
                        id.rawValue, Int64(idx), Int64(bitPattern: entry.chunk.rawValue), Int64(entry.birth),
                    ])
                } else {
                    try remove.execute(arguments: [id.rawValue, Int64(idx)])
                }
            }
            let dropRetained = try db.cachedStatement(
                sql: "DELETE FROM chunk_retained WHERE volumeId = ? AND idx = ? AND birth = ?")
            for (idx, birth) in c.retainedRemoves {
                try dropRetained.execute(arguments: [id.rawValue, Int64(idx), Int64(birth)])
            }
            let keep = try db.cachedStatement(
                sql: "INSERT INTO chunk_retained(volumeId, idx, birth, chunk, death) VALUES (?, ?, ?, ?, ?) "
                    + "ON CONFLICT(volumeId, idx, birth) DO UPDATE SET chunk = excluded.chunk, death = excluded.death")
            for r in c.retainedAdds { try keep.execute(arguments: [r.volumeId, r.idx, r.birth, r.chunk, r.death]) }
            for (chunk, delta) in c.shareDeltas where delta != 0 {
                let key = Int64(bitPattern: chunk.rawValue)
                try db.execute(
                    sql:
                        "INSERT INTO chunk_share(chunk, extra) VALUES (?, ?) ON CONFLICT(chunk) DO UPDATE SET extra = extra + excluded.extra",
                    arguments: [key, delta])
                try db.execute(sql: "DELETE FROM chunk_share WHERE chunk = ? AND extra = 0", arguments: [key])
            }
            try Self.raiseSerials(db, c.nextSerials)
            try Self.forgetFreed(db, c.deleted)
            try Self.recordFreed(db, c.frees)
        }
    }

    /// Replaces the share counts with `counts` (recomputed from the maps at open).
    public func replaceShares(_ counts: [ChunkID: Int]) throws(TesseraError) {
        try write("record share counts") { db in
            try db.execute(sql: "DELETE FROM chunk_share")
            for (chunk, extra) in counts where extra != 0 {
                try db.execute(
                    sql: "INSERT INTO chunk_share(chunk, extra) VALUES (?, ?)",
                    arguments: [Int64(bitPattern: chunk.rawValue), extra])
            }
        }
    }

    /// Adds `deltas` to the share counts (a deleted volume's dropped references).
    public func applyShareDeltas(_ deltas: [ChunkID: Int]) throws(TesseraError) {
        try write("record share counts") { db in
            for (chunk, delta) in deltas where delta != 0 {
                let key = Int64(bitPattern: chunk.rawValue)
                try db.execute(
                    sql:
                        "INSERT INTO chunk_share(chunk, extra) VALUES (?, ?) ON CONFLICT(chunk) DO UPDATE SET extra = extra + excluded.extra",
                    arguments: [key, delta])
                try db.execute(sql: "DELETE FROM chunk_share WHERE chunk = ? AND extra = 0", arguments: [key])
            }
        }
    }

    // MARK: Snapshots and schedules

    public func snapshots() throws(TesseraError) -> [SnapshotRecord] {
        try read { try SnapshotRecord.order(Column("createdAt"), Column("id")).fetchAll($0) }
    }

    public func snapshotMembers() throws(TesseraError) -> [SnapshotMemberRecord] {
        try read { try SnapshotMemberRecord.fetchAll($0) }
    }

    /// Records a snapshot of `members` (volume → the epoch it captured) and moves each member volume to
    /// the next epoch, in one durable transaction.
    /// `cdp`: the CDP instants bounding the members that are protected (see SnapshotMemberRecord).
    public func insertSnapshot(
        _ snapshot: SnapshotRecord, members: [VolumeID: (epoch: UInt64, size: UInt64)],
        cdp: [VolumeID: (from: Int64, to: Int64)] = [:]
    ) throws(TesseraError) -> SnapshotRecord {
        try write("create snapshot \(snapshot.name)") { db in
            var s = snapshot
            try s.insert(db)
            for (volume, (epoch, size)) in members {
                try SnapshotMemberRecord(
                    snapshotId: s.id!, volumeId: volume.rawValue, epoch: Int64(epoch), size: Int64(size),
                    cdpFrom: cdp[volume]?.from, cdpTo: cdp[volume]?.to
                ).insert(db)
                try db.execute(
                    sql: "UPDATE volume SET epoch = ? WHERE id = ?", arguments: [Int64(epoch + 1), volume.rawValue])
            }
            return s
        }
    }

    public func deleteSnapshot(_ id: Int64) throws(TesseraError) {
        try write("delete snapshot") { db in _ = try SnapshotRecord.deleteOne(db, key: id) }
    }

    /// Removes one volume from a snapshot (the snapshot goes too when it has no member left).
    public func deleteSnapshotMember(snapshot: Int64, volume: VolumeID) throws(TesseraError) {
        try write("delete snapshot member") { db in
            try db.execute(
                sql: "DELETE FROM snapshot_member WHERE snapshotId = ? AND volumeId = ?",
                arguments: [snapshot, volume.rawValue])
            try db.execute(
                sql:
                    "DELETE FROM snapshot WHERE id = ? AND NOT EXISTS (SELECT 1 FROM snapshot_member WHERE snapshotId = ?)",
                arguments: [snapshot, snapshot])
        }
    }

    /// Bumps a volume's epoch alone (a clone of the live volume holds the epoch before).
    public func setEpoch(_ id: VolumeID, _ epoch: UInt64) throws(TesseraError) {
        try write("set epoch") { db in
            try db.execute(sql: "UPDATE volume SET epoch = ? WHERE id = ?", arguments: [Int64(epoch), id.rawValue])
        }
    }

    public func schedules() throws(TesseraError) -> [ScheduleRecord] {
        try read { try ScheduleRecord.order(Column("id")).fetchAll($0) }
    }

    /// The schedule of `target` in `domain`, if any.
    public func schedule(target: String, in domain: Int64 = DomainRecord.defaultID) throws(TesseraError)
        -> ScheduleRecord?
    {
        try read { db in
            try ScheduleRecord.filter(Column("domainId") == domain && Column("target") == target).fetchOne(db)
        }
    }

    public func saveSchedule(_ schedule: ScheduleRecord) throws(TesseraError) -> ScheduleRecord {
        try write("save schedule") { db in
            var s = schedule
            try s.save(db)
            return s
        }
    }

    public func deleteSchedule(_ id: Int64) throws(TesseraError) {
        try write("delete schedule") { db in _ = try ScheduleRecord.deleteOne(db, key: id) }
    }

    /// Every unit's gcFloor, by unit id.
    public func gcFloors() throws(TesseraError) -> [UnitID: UInt64] {
        Dictionary(uniqueKeysWithValues: try units().map { (UnitID($0.id!), UInt64($0.gcFloor)) })
    }

    public func updateSerials(_ nextSerials: [UnitID: UInt64]) throws(TesseraError) {
        try write("record chunk serials") { db in try Self.raiseSerials(db, nextSerials) }
    }

    private static func raiseSerials(_ db: Database, _ nextSerials: [UnitID: UInt64]) throws {
        for (unit, next) in nextSerials {
            try db.execute(
                sql: "UPDATE unit SET nextSerial = max(nextSerial, ?) WHERE id = ?",
                arguments: [Int64(next), unit.rawValue])
        }
    }

    // MARK: Extended attributes

    public func xattrs(of id: VolumeID) throws(TesseraError) -> [XattrRecord] {
        try read { db in
            try XattrRecord.fetchAll(db, sql: "SELECT * FROM volume_xattr WHERE volumeId = ?", arguments: [id.rawValue])
        }
    }

    public func setXattr(_ id: VolumeID, name: String, value: [UInt8]?) throws(TesseraError) {
        try write("set xattr") { db in
            if let value {
                // Plain SQL: GRDB's upsert asks for a rowid, which this WITHOUT ROWID table has not.
                try db.execute(
                    sql: "INSERT INTO volume_xattr(volumeId, name, value) VALUES (?, ?, ?) "
                        + "ON CONFLICT(volumeId, name) DO UPDATE SET value = excluded.value",
                    arguments: [id.rawValue, name, Data(value)])
            } else {
                try db.execute(
                    sql: "DELETE FROM volume_xattr WHERE volumeId = ? AND name = ?", arguments: [id.rawValue, name])
            }
        }
    }
}
