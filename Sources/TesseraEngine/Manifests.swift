// Manifests — the self-description each store keeps beside its chunks, so that the catalog is never a
// single point of total loss: `store.json` (which store of which pool, chunk size) and
// `volumes/ID.json` (name, size, owner of each volume of the pool). With the label on every chunk
// (volume, index, epoch), `tessera fsck --rebuild-catalog` can rebuild pools, stores, volumes and maps.
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
    public var storeName: String
    public var kind: String
    public var poolID: Int64
    public var poolName: String
    public var chunkSize: Int64

    init(_ store: StoreRecord, _ pool: PoolRecord) {
        storeID = store.id!
        storeName = store.name
        kind = store.kind
        poolID = pool.id!
        poolName = pool.name
        chunkSize = pool.chunkSize
    }
}

public struct VolumeManifest: Codable, Sendable, Equatable {
    public var id: Int64
    public var name: String
    public var poolID: Int64
    public var size: Int64
    public var uid: Int64
    public var gid: Int64
    public var mode: Int64
    public var createdAt: Double

    init(_ r: VolumeRecord) {
        id = r.id!
        name = r.name
        poolID = r.poolId
        size = r.size
        uid = r.uid
        gid = r.gid
        mode = r.mode
        createdAt = r.createdAt
    }

    var record: VolumeRecord {
        var r = VolumeRecord(name: name, poolId: poolID, size: size, chunkSize: 1, uid: uid, gid: gid, mode: mode,
                             now: createdAt)
        r.id = id
        return r
    }
}

enum Manifests {
    static func storeFile(_ root: String) -> String { root + "/store.json" }
    static func volumesDir(_ root: String) -> String { root + "/volumes" }

    /// Writes `data` to `path` atomically and durably.
    private static func replace(_ path: String, _ data: Data) throws(TesseraError) {
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw TesseraError(.io, "cannot write \(tmp): \(String(cString: strerror(errno)))") }
        let ok = data.withUnsafeBytes { raw in write(fd, raw.baseAddress, raw.count) == raw.count } && fdatasync(fd) == 0
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

    static func readStore(root: String) -> StoreManifest? {
        guard let data = FileManager.default.contents(atPath: storeFile(root)) else { return nil }
        return try? JSONDecoder().decode(StoreManifest.self, from: data)
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
            FileManager.default.contents(atPath: dir + "/" + name).flatMap { try? JSONDecoder().decode(VolumeManifest.self, from: $0) }
        }
    }
}
