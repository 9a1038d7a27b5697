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
    /// Bytes of chunks the live volume maps (its own; a clone's shared parent data is not counted).
    public var referenced: UInt64
    /// Bytes that only the live volume holds (what deleting it would free now).
    public var exclusive: UInt64
    /// Bytes of old versions its snapshots and clones keep.
    public var heldBySnapshots: UInt64
    public var snapshots: Int
    /// For a clone: the volume it was cloned from.
    public var parent: String?
    /// Bytes that small writes after a snapshot have not copied in yet (sub-chunk copy-on-write; the
    /// next fsync, snapshot or periodic flush copies them). Optional: a daemon of an earlier release does not send it.
    public var unfolded: UInt64?
    /// The domain it belongs to (optional: a daemon of an earlier release does not send it).
    public var domain: String? = nil
}

/// What `snapshot list/show` prints.
public struct SnapshotInfo: Codable, Sendable, Equatable {
    public var id: Int64
    public var name: String
    public var createdAt: Double
    public var volumes: [String]
    /// Sizes of the captured images, in the order of `volumes`.
    public var sizes: [UInt64]
    /// Bytes that deleting this snapshot would free.
    public var freeable: UInt64
    public var scheduled: Bool
    /// The domain it belongs to (optional, as in VolumeInfo).
    public var domain: String? = nil
}

/// What `snapshot schedule --list` prints.
public struct ScheduleInfo: Codable, Sendable, Equatable {
    public var id: Int64
    public var target: String
    public var everySeconds: Int64
    public var keep: Int64
    public var lastRun: Double?
}

/// What `pool list/show` prints.
public struct PoolInfo: Codable, Sendable, Equatable {
    public var id: Int64
    public var name: String
    public var chunkSize: UInt64
    public var stores: [StoreInfo]
    public var volumes: Int
    /// Room for Tessera's chunks: its stores' capacity and free space, a filesystem shared by several
    /// stores counted once (and capped by quotas).
    public var capacity: UInt64
    public var free: UInt64
    /// Bytes Tessera's chunks take on the stores.
    public var used: UInt64
    /// Sum of the virtual sizes of the pool's volumes (thin: may exceed capacity).
    public var provisioned: UInt64
    public var allocated: UInt64
    /// The host filesystems under the pool's directory stores, each counted once: their size and what
    /// is used on them by everything (Tessera and others). Absent without directory stores.
    public var filesystemSize: UInt64?
    public var filesystemUsed: UInt64?
}

/// What `store list` prints.
public struct StoreInfo: Codable, Sendable, Equatable {
    public var id: Int64
    public var name: String
    public var pool: String
    public var kind: String
    public var path: String
    /// The placement unit the store serves (what its chunk IDs name; `store show`).
    public var unit: Int64?
    public var capacity: UInt64
    public var free: UInt64
    public var used: UInt64
    public var chunks: Int
    /// "none" or "zstd:LEVEL".
    public var compression: String = "none"
    /// What the sampled chunks hold uncompressed and what they take on the store (`store show` only).
    public var sampledLogical: UInt64?
    public var sampledStored: UInt64?
    /// Checksum mismatches seen on this store since the mount started.
    public var checksumErrors: Int = 0
    /// Placement weight: estimated free chunks (0 when full).
    public var freeChunks: UInt64?
    /// Share (0…1) of the pool's new chunks this store takes now.
    public var placementShare: Double?
    /// The capacity quota set with `--size` (dir and s3 stores).
    public var quota: UInt64?
    /// The host filesystem (directory stores): its st_dev, size and free space.
    public var filesystemID: UInt64?
    public var filesystemSize: UInt64?
    public var filesystemFree: UInt64?
    /// "ok" or "unreachable", since when (seconds since 1970), and the last failure seen.
    public var health: String = "ok"
    public var healthSince: Double?
    public var lastError: String?
    /// Seconds since 1970 when the figures above were read (older when the store does not answer).
    public var figuresAt: Double?
}

/// One store's health, for `status`.
public struct StoreHealthInfo: Codable, Sendable, Equatable {
    public var name: String
    public var pool: String
    public var health: String
    public var since: Double
    public var lastError: String?
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
    /// One per pool with a RAM cache.
    public var caches: [CacheInfo] = []
    /// Checksum mismatches seen on all stores since the mount started.
    public var checksumErrors: Int = 0
    /// The open images, with the processes that opened them (a running mount only).
    public var openImageNames: [String] = []
    /// Where a daemon that died left its FUSE mount behind (not mounted only).
    public var deadMount: String?
    /// Every store's health.
    public var storeHealth: [StoreHealthInfo] = []
    /// Volumes under a QoS setting (their own or a group's), with their figures.
    public var qos: [QoSVolumeInfo]?
    /// Jobs still running or paused.
    public var jobs: [JobInfo]?
    /// Where the mount serves the HTTP API ("HOST:PORT"; nil: it does not).
    public var api: String? = nil
}

/// A pool's RAM cache: size, hit rates, dirty bytes.
public struct CacheInfo: Codable, Sendable, Equatable {
    public var pool: String
    public var stats: CacheLayer.Stats
}
