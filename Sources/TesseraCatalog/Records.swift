import Foundation
import GRDB
import TesseraCore

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

/// One row of `store`: where a store lives and the next chunk serial it may hand out.
public struct StoreRecord: Codable, Sendable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "store"
    public var id: Int64?
    public var poolId: Int64
    public var name: String
    public var kind: String
    public var path: String
    public var nextSerial: Int64
    public var createdAt: Double
    public init(poolId: Int64, name: String, kind: String, path: String, createdAt: Double) {
        self.poolId = poolId
        self.name = name
        self.kind = kind
        self.path = path
        self.nextSerial = 1
        self.createdAt = createdAt
    }
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// One row of `volume`.
public struct VolumeRecord: Codable, Sendable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "volume"
    public var id: Int64?
    public var name: String
    public var poolId: Int64
    public var size: Int64
    public var chunkSize: Int64
    public var uid: Int64
    public var gid: Int64
    public var mode: Int64
    public var mtime: Double
    public var createdAt: Double
    public init(name: String, poolId: Int64, size: Int64, chunkSize: Int64, uid: Int64 = 0, gid: Int64 = 0,
                mode: Int64 = 0o600, now: Double) {
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
