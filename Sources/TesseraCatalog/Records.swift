import Foundation
import GRDB
import TesseraCore

/// One row of `domain`: a namespace for volumes, snapshots and schedules, whose names are unique within
/// one. The default domain (created by the schema) holds everything made without naming a domain; its
/// volumes keep the paths of a mount without domains (`MOUNT/<volume>.img`).
public struct DomainRecord: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "domain"
    public static let defaultID: Int64 = 1
    public static let defaultName = "default"
    public var id: Int64?
    public var name: String
    public var createdAt: Double
    /// Limits on what the domain may hold (nil: none).
    public var quotaVolumes: Int64?
    public var quotaSize: Int64?
    public var quotaSnapshots: Int64?
    /// The pools its volumes may be placed in, by name (nil: any pool). Stored as a JSON array.
    public var pools: [String]?
    public init(name: String, createdAt: Double) {
        self.name = name
        self.createdAt = createdAt
    }
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// One row of `pool`.
public struct PoolRecord: Codable, Sendable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "pool"
    public var id: Int64?
    public var name: String
    public var chunkSize: Int64
    public var createdAt: Double
    public init(name: String, chunkSize: Int64, createdAt: Double) {
        self.name = name
        self.chunkSize = chunkSize
        self.createdAt = createdAt
    }
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// One row of `store`: where a physical store lives and how it is opened. The chunks it holds belong
/// to the placement unit it is a member of (`unit_member`).
public struct StoreRecord: Codable, Sendable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "store"
    public var id: Int64?
    public var poolId: Int64
    public var name: String
    public var kind: String
    public var path: String
    public var createdAt: Double
    /// JSON of the engine's StoreOptions ("{}" for a plain directory store).
    public var options: String
    public init(poolId: Int64, name: String, kind: String, path: String, createdAt: Double, options: String = "{}") {
        self.poolId = poolId
        self.name = name
        self.kind = kind
        self.path = path
        self.createdAt = createdAt
        self.options = options
    }
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// One row of `unit`: a placement unit of a pool, what chunk IDs name. It hands out the serials of its
/// chunks; its member stores hold them.
public struct UnitRecord: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "unit"
    public var id: Int64?
    public var poolId: Int64
    /// The next serial the unit may hand out (raised with every map commit that used one).
    public var nextSerial: Int64
    /// Unreferenced chunks with a serial at or above this were allocated since the catalog was last
    /// opened: garbage collection may take them for a crashed run's orphans (see Engine).
    public var gcFloor: Int64
    public var createdAt: Double
    public init(poolId: Int64, createdAt: Double) {
        self.poolId = poolId
        self.nextSerial = 1
        self.gcFloor = 1
        self.createdAt = createdAt
    }
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// One row of `unit_member`: a store serving a unit. A store is the primary of at most one unit.
public struct UnitMemberRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "unit_member"
    /// What the store does for its unit: its one primary, or, while a replace job runs, the store
    /// being replaced (`source`) and its replacement (`target`). Mirror legs will be roles of their own.
    public enum Role: String, Codable, Sendable { case primary, source, target }
    public var storeId: Int64
    public var unitId: Int64
    public var role: Role
    public init(storeId: Int64, unitId: Int64, role: Role) {
        self.storeId = storeId
        self.unitId = unitId
        self.role = role
    }
}

/// One row of `volume`.
public struct VolumeRecord: Codable, Sendable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "volume"
    public var id: Int64?
    /// The domain the name belongs to (names are unique per domain).
    public var domainId: Int64
    public var name: String
    public var poolId: Int64
    public var size: Int64
    public var chunkSize: Int64
    public var uid: Int64
    public var gid: Int64
    public var mode: Int64
    public var mtime: Double
    public var createdAt: Double
    /// The epoch new chunks are born in; a snapshot records the epoch before it and bumps this.
    public var epoch: Int64 = 1
    /// For a clone: the volume and epoch its unmapped chunks fall through to.
    public var parentId: Int64?
    public var parentEpoch: Int64?
    /// For a clone: chunk indexes at or past this never fall through (the clone was shrunk).
    public var parentLimit: Int64?
    public init(
        name: String, domainId: Int64 = DomainRecord.defaultID, poolId: Int64, size: Int64, chunkSize: Int64,
        uid: Int64 = 0, gid: Int64 = 0, mode: Int64 = 0o600, now: Double
    ) {
        self.domainId = domainId
        self.name = name
        self.poolId = poolId
        self.size = size
        self.chunkSize = chunkSize
        self.uid = uid
        self.gid = gid
        self.mode = mode
        self.mtime = now
        self.createdAt = now
    }
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// One row of `chunk_map`: logical chunk `idx` of a volume lives in physical chunk `chunk`.
public struct ChunkMapRecord: Codable, Sendable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "chunk_map"
    public var volumeId: Int64
    public var idx: Int64
    public var chunk: Int64
    public var birth: Int64
}

/// One row of `chunk_retained`: a chunk version that left the live map but a snapshot or clone still
/// sees (it was live for epochs birth ..< death).
public struct RetainedRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "chunk_retained"
    public var volumeId: Int64
    public var idx: Int64
    public var birth: Int64
    public var chunk: Int64
    public var death: Int64
    public init(volumeId: Int64, idx: Int64, birth: Int64, chunk: Int64, death: Int64) {
        self.volumeId = volumeId
        self.idx = idx
        self.birth = birth
        self.chunk = chunk
        self.death = death
    }
}

/// One row of `chunk_share`: a chunk referenced `extra` more times than once (copy_file_range, revert).
public struct ShareRecord: Codable, Sendable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "chunk_share"
    public var chunk: Int64
    public var extra: Int64
}

/// One row of `snapshot`.
public struct SnapshotRecord: Codable, Sendable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "snapshot"
    public var id: Int64?
    /// The domain the name belongs to (names are unique per domain).
    public var domainId: Int64
    public var name: String
    public var createdAt: Double
    /// The schedule that took it, if any (retention only ever deletes its own).
    public var scheduleId: Int64?
    public init(name: String, domainId: Int64 = DomainRecord.defaultID, createdAt: Double, scheduleId: Int64? = nil) {
        self.domainId = domainId
        self.name = name
        self.createdAt = createdAt
        self.scheduleId = scheduleId
    }
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// One row of `snapshot_member`: snapshot `snapshotId` captured volume `volumeId` at `epoch`.
public struct SnapshotMemberRecord: Codable, Sendable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "snapshot_member"
    public var snapshotId: Int64
    public var volumeId: Int64
    public var epoch: Int64
    /// The volume's size at that instant.
    public var size: Int64
    /// For a volume protected by CDP: every journal record stamped at or before `cdpFrom` (ns) is in the
    /// snapshot, and none stamped after `cdpTo` is — what lets the snapshot bound a diff (nil otherwise).
    public var cdpFrom: Int64?
    public var cdpTo: Int64?
    public init(
        snapshotId: Int64, volumeId: Int64, epoch: Int64, size: Int64, cdpFrom: Int64? = nil, cdpTo: Int64? = nil
    ) {
        self.snapshotId = snapshotId
        self.volumeId = volumeId
        self.epoch = epoch
        self.size = size
        self.cdpFrom = cdpFrom
        self.cdpTo = cdpTo
    }
}

/// One row of `schedule`: snapshot `target` (a volume name of the schedule's domain, or "*" for all)
/// every `every` seconds, keeping the newest `keep`. One schedule per target and domain.
public struct ScheduleRecord: Codable, Sendable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "schedule"
    public var id: Int64?
    public var domainId: Int64
    public var target: String
    public var every: Int64
    public var keep: Int64
    public var lastRun: Double?
    public init(target: String, domainId: Int64 = DomainRecord.defaultID, every: Int64, keep: Int64) {
        self.domainId = domainId
        self.target = target
        self.every = every
        self.keep = keep
    }
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// One row of `volume_xattr` (libvirt's `trusted.libvirt.security.*` and friends).
public struct XattrRecord: Sendable, FetchableRecord {
    public static let databaseTableName = "volume_xattr"
    public var volumeId: Int64
    public var name: String
    public var value: [UInt8]

    public init(row: Row) throws {
        volumeId = row["volumeId"]
        name = row["name"]
        value = [UInt8]((row["value"] as Data?) ?? Data())
    }
}
