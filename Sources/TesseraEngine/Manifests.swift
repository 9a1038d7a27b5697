// Manifests — the self-description each store keeps beside its chunks, so that the catalog is never a
// single point of total loss: `store.json` (which store of which pool and placement unit, chunk size,
// its settings, and
// the identity of the catalog that owns it), `volumes/ID.json` (domain, name, size, owner, epoch and
// clone parent of each volume of the pool), `snapshots/ID.json` (each snapshot holding a volume of the
// pool: domain, name, member epochs and sizes), `schedules.json` (every snapshot schedule) and
// `domains.json` (every domain). With the label on every chunk (volume, index, birth epoch),
// `tessera fsck --rebuild-catalog` rebuilds pools, stores, domains, volumes, clones, maps, snapshots
// (the retained versions follow from the birth epochs) and schedules. Fields added after the first
// release are optional: older manifests still read (no domain: the default domain).
//
// Invariants: a manifest file is replaced atomically (write, fdatasync, rename, fsync the directory);
// the catalog stays the truth while it exists — manifests are only read by the rebuild.
import Foundation
import TesseraCatalog
import TesseraCore

public struct StoreManifest: Codable, Sendable, Equatable {
    public static let currentFormat = "tessera-store-1"
    public var format = StoreManifest.currentFormat
    public var storeID: Int64
    /// The placement unit the store serves, whose id its chunk IDs carry (nil: written before units,
    /// when every store was a unit of its own id).
    public var unitID: Int64?
    public var storeName: String
    public var kind: String
    public var poolID: Int64
    public var poolName: String
    public var chunkSize: Int64
    /// The identity of the catalog that owns the store (nil: written by a release before identities).
    public var catalogID: String?
    /// The store's options (catalog column `store.options`; nil: written by an older release).
    public var options: String?

    init(_ store: StoreRecord, _ pool: PoolRecord, unit: UnitID, catalogID: String) {
        storeID = store.id!
        unitID = unit.rawValue
        storeName = store.name
        kind = store.kind
        poolID = pool.id!
        poolName = pool.name
        chunkSize = pool.chunkSize
        self.catalogID = catalogID
        options = store.options
    }
}

public struct VolumeManifest: Codable, Sendable, Equatable {
    public var id: Int64
    /// nil in manifests of a release before domains: the default domain.
    public var domainID: Int64?
    public var name: String
    public var poolID: Int64
    public var size: Int64
    public var uid: Int64
    public var gid: Int64
    public var mode: Int64
    public var createdAt: Double
    /// Epoch and clone parent (nil in manifests of an older release).
    public var epoch: Int64?
    public var parentID: Int64?
    public var parentEpoch: Int64?
    public var parentLimit: Int64?

    init(_ r: VolumeRecord) {
        id = r.id!
        domainID = r.domainId
        name = r.name
        poolID = r.poolId
        size = r.size
        uid = r.uid
        gid = r.gid
        mode = r.mode
        createdAt = r.createdAt
        epoch = r.epoch
        parentID = r.parentId
        parentEpoch = r.parentEpoch
        parentLimit = r.parentLimit
    }

    var record: VolumeRecord {
        var r = VolumeRecord(
            name: name, domainId: domainID ?? DomainRecord.defaultID, poolId: poolID, size: size, chunkSize: 1,
            uid: uid, gid: gid, mode: mode, now: createdAt)
        r.id = id
        r.epoch = epoch ?? 1
        r.parentId = parentID
        r.parentEpoch = parentEpoch
        r.parentLimit = parentLimit
        return r
    }
}

/// One snapshot, on the stores of every pool it holds a volume of.
public struct SnapshotManifest: Codable, Sendable, Equatable {
    public struct Member: Codable, Sendable, Equatable {
        public var volumeID: Int64
        public var epoch: Int64
        public var size: Int64
    }
    public var id: Int64
    /// nil in manifests of a release before domains: the default domain.
    public var domainID: Int64?
    public var name: String
    public var createdAt: Double
    public var scheduleID: Int64?
    public var members: [Member]

    init(_ r: SnapshotRecord, _ members: [SnapshotMemberRecord]) {
        id = r.id!
        domainID = r.domainId
        name = r.name
        createdAt = r.createdAt
        scheduleID = r.scheduleId
        self.members = members.sorted { $0.volumeId < $1.volumeId }.map {
            Member(volumeID: $0.volumeId, epoch: $0.epoch, size: $0.size)
        }
    }
}

/// Every schedule, on every directory store (schedules belong to no pool).
public struct SchedulesManifest: Codable, Sendable, Equatable {
    public struct Schedule: Codable, Sendable, Equatable {
        public var id: Int64
        /// nil in manifests of a release before domains: the default domain.
        public var domainID: Int64?
        public var target: String
        public var every: Int64
        public var keep: Int64
        public var lastRun: Double?
    }
    /// When it was written: the newest copy wins at a rebuild.
    public var writtenAt: Double
    public var schedules: [Schedule]

    init(_ records: [ScheduleRecord], writtenAt: Double) {
        self.writtenAt = writtenAt
        schedules = records.map {
            Schedule(
                id: $0.id!, domainID: $0.domainId, target: $0.target, every: $0.every, keep: $0.keep,
                lastRun: $0.lastRun)
        }
    }
}

/// Every domain, on every directory store (domains belong to no pool). The rows are the catalog's own:
/// a column added to `domain` must be optional in DomainRecord, as a field added to a manifest is.
public struct DomainsManifest: Codable, Sendable, Equatable {
    /// When it was written: the newest copy wins at a rebuild.
    public var writtenAt: Double
    public var domains: [DomainRecord]
}

enum Manifests {
    static func storeFile(_ root: String) -> String { root + "/store.json" }
    static func volumesDir(_ root: String) -> String { root + "/volumes" }
    static func snapshotsDir(_ root: String) -> String { root + "/snapshots" }
    static func schedulesFile(_ root: String) -> String { root + "/schedules.json" }
    static func domainsFile(_ root: String) -> String { root + "/domains.json" }

    /// Writes `data` to `path` atomically and durably.
    private static func replace(_ path: String, _ data: Data) throws(TesseraError) {
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw TesseraError(.io, "cannot write \(tmp): \(String(cString: strerror(errno)))") }
        let ok =
            data.withUnsafeBytes { raw in write(fd, raw.baseAddress, raw.count) == raw.count } && fdatasync(fd) == 0
        close(fd)
        guard ok, rename(tmp, path) == 0 else {
            throw TesseraError(.io, "cannot write \(path): \(String(cString: strerror(errno)))")
        }
    }

    private static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }

    static func writeStore(_ m: StoreManifest, root: String) throws(TesseraError) {
        let data: Data
        do { data = try JSONEncoder().encode(m) } catch { throw TesseraError(.io, "\(error)") }
        try replace(storeFile(root), data)
        syncDirectory(root)
    }

    /// Removes every manifest under `root` (a store leaving its catalog), store.json last, so that the
    /// directory no longer looks like a store to a rebuild or to `init`.
    static func removeAll(root: String) {
        let fm = FileManager.default
        for path in [volumesDir(root), snapshotsDir(root), schedulesFile(root), domainsFile(root), storeFile(root)] {
            try? fm.removeItem(atPath: path)
        }
        syncDirectory(root)
    }

    static func readStore(root: String) -> StoreManifest? {
        guard let data = FileManager.default.contents(atPath: storeFile(root)) else { return nil }
        return try? JSONDecoder().decode(StoreManifest.self, from: data)
    }

    private static func encode<T: Encodable>(_ value: T) throws(TesseraError) -> Data {
        do { return try JSONEncoder().encode(value) } catch { throw TesseraError(.io, "\(error)") }
    }

    private static func makeDirectory(_ dir: String) throws(TesseraError) {
        if mkdir(dir, 0o700) != 0 && errno != EEXIST {
            throw TesseraError(.io, "cannot create \(dir): \(String(cString: strerror(errno)))")
        }
    }

    static func writeSnapshot(_ m: SnapshotManifest, roots: [String]) throws(TesseraError) {
        let data = try encode(m)
        for root in roots {
            let dir = snapshotsDir(root)
            try makeDirectory(dir)
            try replace(dir + "/\(m.id).json", data)
            syncDirectory(dir)
        }
    }

    static func removeSnapshot(_ id: Int64, roots: [String]) {
        for root in roots where unlink(snapshotsDir(root) + "/\(id).json") == 0 { syncDirectory(snapshotsDir(root)) }
    }

    static func readSnapshots(root: String) -> [SnapshotManifest] {
        let dir = snapshotsDir(root)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.filter { $0.hasSuffix(".json") }.compactMap { name in
            FileManager.default.contents(atPath: dir + "/" + name).flatMap {
                try? JSONDecoder().decode(SnapshotManifest.self, from: $0)
            }
        }
    }

    /// Writes a manifest kept whole on every directory store (`schedulesFile`, `domainsFile`).
    static func writeShared<T: Encodable>(_ m: T, file: (String) -> String, roots: [String]) throws(TesseraError) {
        let data = try encode(m)
        for root in roots {
            try replace(file(root), data)
            syncDirectory(root)
        }
    }

    static func readShared<T: Decodable>(_ type: T.Type, file: (String) -> String, root: String) -> T? {
        FileManager.default.contents(atPath: file(root)).flatMap { try? JSONDecoder().decode(type, from: $0) }
    }

    static func writeVolumes(_ volumes: [VolumeRecord], roots: [String]) throws(TesseraError) {
        for root in roots {
            let dir = volumesDir(root)
            if mkdir(dir, 0o700) != 0 && errno != EEXIST {
                throw TesseraError(.io, "cannot create \(dir): \(String(cString: strerror(errno)))")
            }
            for v in volumes {
                let data: Data
                do { data = try JSONEncoder().encode(VolumeManifest(v)) } catch { throw TesseraError(.io, "\(error)") }
                try replace(dir + "/\(v.id!).json", data)
            }
            syncDirectory(dir)
        }
    }

    static func removeVolume(_ id: VolumeID, roots: [String]) {
        for root in roots {
            unlink(volumesDir(root) + "/\(id.rawValue).json")
            syncDirectory(volumesDir(root))
        }
    }

    static func readVolumes(root: String) -> [VolumeManifest] {
        let dir = volumesDir(root)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.filter { $0.hasSuffix(".json") }.compactMap { name in
            FileManager.default.contents(atPath: dir + "/" + name).flatMap {
                try? JSONDecoder().decode(VolumeManifest.self, from: $0)
            }
        }
    }
}
