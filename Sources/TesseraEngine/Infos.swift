import TesseraCore

/// What `volume list/show` prints.
public struct VolumeInfo: Codable, Sendable, Equatable {
    public var id: Int64
    public var name: String
    public var pool: String
    public var size: UInt64
    public var allocated: UInt64
    public var chunkSize: UInt64
    public var uid: Int64
    public var gid: Int64
    public var mode: String
    public var open: Bool
}

/// What `pool list/show` prints.
public struct PoolInfo: Codable, Sendable, Equatable {
    public var id: Int64
    public var name: String
    public var chunkSize: UInt64
    public var stores: [StoreInfo]
    public var volumes: Int
    public var capacity: UInt64
    public var free: UInt64
    public var used: UInt64
    /// Sum of the virtual sizes of the pool's volumes (thin: may exceed capacity).
    public var provisioned: UInt64
    public var allocated: UInt64
}

/// What `store list` prints.
public struct StoreInfo: Codable, Sendable, Equatable {
    public var id: Int64
    public var name: String
    public var pool: String
    public var kind: String
    public var path: String
    public var capacity: UInt64
    public var free: UInt64
    public var used: UInt64
    public var chunks: Int
}

/// What `status` prints.
public struct StatusInfo: Codable, Sendable, Equatable {
    public var dataDirectory: String
    public var mounted: Bool
    public var mountpoint: String?
    public var pid: Int32
    public var pools: Int
    public var stores: Int
    public var volumes: Int
    public var provisioned: UInt64
    public var allocated: UInt64
    public var openImages: Int
}
