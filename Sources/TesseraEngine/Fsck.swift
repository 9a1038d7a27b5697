// Fsck — checks the catalog against the stores, repairs leaks, and rebuilds a lost catalog from the
// stores' self-description (manifests + chunk labels).
import Foundation
import TesseraCatalog
import TesseraCore
import TesseraStores

/// Counters of one `tessera fsck` run (printed, and as JSON with --json).
public struct FsckReport: Codable, Sendable {
    public var volumes = 0
    public var mapEntries = 0
    public var chunksOnStores = 0
    public var chunksVerified = 0
    public var missing = 0
    public var mislabeled = 0
    public var corruptChunks = 0
    public var corruptBlocks = 0
    public var unreferenced = 0
    public var repaired = 0
    /// Blocks that fail their checksum, where they show (volume, offset, snapshots).
    public var lost: [LostBlock] = []
    /// Blocks `--zero-unrecoverable` turned into zeros (each also in `lost`).
    public var zeroed: [LostBlock] = []
    public var problems: [String] = []
    /// Mislabelled chunks are reported but do not make a store unclean: a chunk shared by
    /// copy_file_range keeps the label of the volume that wrote it.
    public var clean: Bool { missing + corruptChunks + unreferenced - repaired == 0 }
}

extension Engine {
    /// Verifies every map entry (the chunk exists, carries the right label, and every block matches its
    /// checksum) and finds chunks no map references. With `repair`, unreferenced chunks are removed
    /// (the only damage fsck can undo without losing data). With `zeroUnrecoverable` too, every block
    /// that fails its checksum becomes zeros on purpose (for every view that reads it), is verified
    /// again and listed in `zeroed`. `progress(done, total)` is called per chunk.
    public func fsck(repair: Bool, zeroUnrecoverable: Bool = false,
                     progress: (Int, Int) -> Void = { _, _ in }) throws(TesseraError) -> FsckReport {
        var report = FsckReport()
        let volumes = allVolumes()
        report.volumes = volumes.count
        let entries = volumes.flatMap { v in
            (v.mapEntries + v.retainedEntries).filter { $0.chunk.isReal }.map { (v, $0.index, $0.chunk) }
        }
        report.mapEntries = entries.count
        let stores = poolLayers().flatMap(\.members)
        var onStores: [ChunkID: any ChunkStore] = [:]
        for (id, store) in stores {
            let chunks: [ChunkID]
            do { chunks = try store.allChunks() } catch { throw TesseraError(.io, "cannot list chunks of store #\(id.rawValue): \(error)") }
            for c in chunks { onStores[c] = store }
        }
        report.chunksOnStores = onStores.count
        var referenced = Set<ChunkID>()
        var checked = Set<ChunkID>()
        for (done, (v, index, chunk)) in entries.enumerated() {
            progress(done, entries.count)
            referenced.insert(chunk)
            guard checked.insert(chunk).inserted else { continue }  // shared: verify once
            let where_ = "\(v.name) chunk \(index) (\(chunk), store #\(chunk.store.rawValue))"
            guard onStores[chunk] != nil else {
                report.missing += 1
                report.problems.append("\(where_): missing from its store")
                continue
            }
            do {
                let label = try v.io.label(of: chunk)
                if let label, label.volume != v.id || label.index != index, shares.extra(chunk) == 0 {
                    report.mislabeled += 1
                    report.problems.append("note: \(where_): labelled for volume #\(label.volume.rawValue) chunk \(label.index)")
                }
                switch try v.io.check(chunk) {
                case .ok: report.chunksVerified += 1
                case .unchecked: break
                case .corrupt(let offsets):
                    report.corruptChunks += 1
                    report.corruptBlocks += offsets.count
                    report.problems.append("\(where_): \(offsets.count) block(s) fail their checksum, first at byte \(offsets[0])")
                    let lost = losses(of: chunk, at: offsets)
                    report.lost += lost
                    if zeroUnrecoverable && repair && zeroBlocks(of: chunk, at: offsets, through: v.io, &report) {
                        report.repaired += 1
                        report.zeroed += lost
                    }
                }
            } catch {
                report.missing += 1
                report.problems.append("\(where_): unreadable: \(error)")
            }
        }
        progress(entries.count, entries.count)
        for (chunk, store) in onStores where !referenced.contains(chunk) {
            report.unreferenced += 1
            if repair {
                do {
                    try store.delete(chunk)
                    report.repaired += 1
                } catch {
                    report.problems.append("\(chunk): cannot remove: \(error)")
                }
            }
        }
        if report.unreferenced > 0 {
            report.problems.append("\(report.unreferenced) chunk(s) on stores belong to no volume" + (repair ? " (removed)" : " (fsck --repair removes them)"))
        }
        if repair {
            for (_, store) in stores { try? store.flush() }
        }
        return report
    }
}

extension Engine {
    /// Turns `chunk`'s blocks at `offsets` into zeros and verifies the chunk again; true when it now
    /// passes. A failure is recorded as a problem.
    fileprivate func zeroBlocks(of chunk: ChunkID, at offsets: [Int], through io: any ChunkStore,
                                _ report: inout FsckReport) -> Bool {
        let bs = Volume.blockSize
        do throws(StoreError) {
            var i = 0
            while i < offsets.count {  // adjacent blocks in one call
                var end = offsets[i] + bs
                var j = i + 1
                while j < offsets.count && offsets[j] == end {
                    end += bs
                    j += 1
                }
                try io.zero(chunk, offset: offsets[i], length: end - offsets[i])
                i = j
            }
            try io.flush(chunks: [chunk])
            if case .corrupt(let still) = try io.check(chunk) {
                report.problems.append("\(chunk): still \(still.count) bad block(s) after zeroing")
                return false
            }
            return true
        } catch {
            report.problems.append("\(chunk): cannot zero its lost blocks: \(error)")
            return false
        }
    }
}

/// What `fsck --rebuild-catalog` did.
public struct RebuildReport: Codable, Sendable {
    public var stores: [String] = []
    public var pools = 0
    public var volumes = 0
    public var recoveredWithoutManifest = 0
    public var mapEntries = 0
    public var unlabeledChunks = 0
    public var movedAside: String?
}

public enum CatalogRebuild {
    /// Rebuilds the catalog of `data` from the stores in `data/stores/*` and `extraStores`: pools and
    /// stores from `store.json`, volumes from their manifests, maps from chunk labels (the newest chunk
    /// wins where two claim one slot). A damaged catalog is moved aside first; a healthy one is refused.
    public static func rebuild(_ data: DataDirectory, extraStores: [String]) throws(TesseraError) -> RebuildReport {
        let lock = try DirectoryLock(data)
        defer { _ = lock }
        var report = RebuildReport()
        if FileManager.default.fileExists(atPath: data.catalogPath) {
            if (try? Catalog.open(at: data.catalogPath)) != nil {
                throw TesseraError(.exists, "the catalog at \(data.catalogPath) is healthy; nothing to rebuild")
            }
            let aside = data.catalogPath + ".damaged-\(Int(Date().timeIntervalSince1970))"
            for suffix in ["", "-wal", "-shm"] where FileManager.default.fileExists(atPath: data.catalogPath + suffix) {
                do { try FileManager.default.moveItem(atPath: data.catalogPath + suffix, toPath: aside + suffix) } catch {
                    throw TesseraError(.io, "cannot move the damaged catalog aside: \(error.localizedDescription)")
                }
            }
            report.movedAside = aside
        }
        let storesDir = data.path + "/stores"
        let local = ((try? FileManager.default.contentsOfDirectory(atPath: storesDir)) ?? []).map { storesDir + "/" + $0 }
        var manifests: [(String, StoreManifest)] = []
        for root in local + extraStores.map(DataDirectory.absolute) {
            guard let m = Manifests.readStore(root: root) else { continue }
            if !manifests.contains(where: { $0.1.storeID == m.storeID }) { manifests.append((root, m)) }
        }
        guard !manifests.isEmpty else {
            throw TesseraError(.notFound, "no store with a store.json under \(storesDir) or in --store; nothing to rebuild from")
        }
        let catalog = try Catalog.create(at: data.catalogPath)
        let now = Date().timeIntervalSince1970
        var pools: [Int64: PoolRecord] = [:]
        for (_, m) in manifests where pools[m.poolID] == nil {
            var p = PoolRecord(name: m.poolName, chunkSize: m.chunkSize, createdAt: now)
            p.id = m.poolID
            pools[m.poolID] = try catalog.insertPool(p)
        }
        report.pools = pools.count
        // Volumes from manifests; chunks from labels.
        var volumes: [Int64: VolumeRecord] = [:]
        var slots: [Int64: [UInt64: ChunkID]] = [:]
        var nextSerial: [StoreID: UInt64] = [:]
        for (root, m) in manifests {
            var s = StoreRecord(poolId: m.poolID, name: m.storeName, kind: m.kind, path: root, createdAt: now)
            s.id = m.storeID
            _ = try catalog.insertStore(s)
            report.stores.append("\(m.storeName) (\(root))")
            for v in Manifests.readVolumes(root: root) where volumes[v.id] == nil {
                var r = v.record
                r.chunkSize = m.chunkSize
                volumes[v.id] = r
            }
            let store: ChecksumLayer
            do {
                store = ChecksumLayer(over: try DirectoryStore(root: root, chunkSize: ChecksumLayer.innerChunkSize(for: Int(m.chunkSize))))
            } catch {
                throw TesseraError(.io, "store \(m.storeName): \(error)")
            }
            let chunks: [ChunkID]
            do { chunks = try store.allChunks() } catch { throw TesseraError(.io, "store \(m.storeName): \(error)") }
            for c in chunks {
                nextSerial[c.store] = max(nextSerial[c.store] ?? 1, c.serial + 1)
                guard let label = try? store.label(of: c) else {
                    report.unlabeledChunks += 1
                    continue
                }
                let existing = slots[label.volume.rawValue]?[label.index]
                if existing == nil || existing!.serial < c.serial { slots[label.volume.rawValue, default: [:]][label.index] = c }
                if volumes[label.volume.rawValue] == nil {
                    var r = VolumeRecord(name: "recovered-\(label.volume.rawValue)", poolId: m.poolID, size: 0,
                                         chunkSize: m.chunkSize, now: now)
                    r.id = label.volume.rawValue
                    volumes[label.volume.rawValue] = r
                    report.recoveredWithoutManifest += 1
                }
            }
        }
        for id in volumes.keys.sorted() {
            var r = volumes[id]!
            let map = slots[id] ?? [:]
            // Writes past the end grow a volume without rewriting its manifest: trust the chunks too.
            if let top = map.keys.max() { r.size = max(r.size, Int64((top + 1) * UInt64(r.chunkSize))) }
            _ = try catalog.insertVolumes([r])
            try catalog.commitVolume(VolumeID(id), size: UInt64(r.size), mtime: now, changes: map, nextSerials: nextSerial)
            report.mapEntries += map.count
        }
        try catalog.updateSerials(nextSerial)
        report.volumes = volumes.count
        return report
    }
}
