// Fsck — checks the catalog against the stores and repairs leaks (within the garbage-collection rules
// of Ownership.swift). Rebuilding a lost catalog is Rebuild.swift.
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
    /// checksum) and finds chunks no map references. With `repair`, unreferenced chunks this catalog
    /// can prove it freed are removed, within the garbage-collection limit (Ownership.swift); `force`
    /// removes every unreferenced chunk, without limit. With `zeroUnrecoverable` too, every block that
    /// fails its checksum becomes zeros on purpose (for every view that reads it), is verified again and
    /// listed in `zeroed`. `progress(done, total)` is called per chunk.
    public func fsck(
        repair: Bool, force: Bool = false, zeroUnrecoverable: Bool = false,
        progress: (Int, Int) -> Void = { _, _ in }
    ) throws(TesseraError) -> FsckReport {
        var report = FsckReport()
        let volumes = allVolumes()
        report.volumes = volumes.count
        let entries = volumes.flatMap { v in
            (v.mapEntries + v.retainedEntries).filter { $0.chunk.isReal }.map { (v, $0.index, $0.chunk) }
        }
        report.mapEntries = entries.count
        let stores = poolLayers().flatMap(\.members)
        var onStores: [ChunkID: any ChunkStore] = [:]  // for the existence check; orphans come from findOrphans
        for (id, store) in stores {
            let chunks: [ChunkID]
            do { chunks = try store.allChunks() } catch {
                throw TesseraError(.io, "cannot list chunks of \(describe(id)): \(error)")
            }
            for c in chunks { onStores[c] = store }
        }
        report.chunksOnStores = onStores.count
        var referenced = Set<ChunkID>()
        var checked = Set<ChunkID>()
        for (done, (v, index, chunk)) in entries.enumerated() {
            progress(done, entries.count)
            referenced.insert(chunk)
            guard checked.insert(chunk).inserted else { continue }  // shared: verify once
            let where_ = "\(v.name) chunk \(index) (\(chunk), \(describe(chunk.unit)))"
            guard onStores[chunk] != nil else {
                report.missing += 1
                report.problems.append("\(where_): missing from its store")
                continue
            }
            do {
                let label = try v.io.label(of: chunk)
                if let label, label.volume != v.id || label.index != index, shares.extra(chunk) == 0 {
                    report.mislabeled += 1
                    report.problems.append(
                        "note: \(where_): labelled for volume #\(label.volume.rawValue) chunk \(label.index)")
                }
                switch try v.io.check(chunk) {
                case .ok: report.chunksVerified += 1
                case .unchecked: break
                case .corrupt(let offsets):
                    report.corruptChunks += 1
                    report.corruptBlocks += offsets.count
                    report.problems.append(
                        "\(where_): \(offsets.count) block(s) fail their checksum, first at byte \(offsets[0])")
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
        for o in try findOrphans() {
            let count = o.proven.count + o.unproven.count
            guard count > 0 else { continue }
            report.unreferenced += count
            var doomed: [ChunkID] = []
            if force {
                doomed = o.proven + o.unproven
            } else if !o.allowed {
                report.problems.append(
                    "store \(o.name): \(o.proven.count) unreferenced chunk(s) are more than the garbage-collection "
                        + "limit (\(OrphanSweep.rule)) of its \(o.total) chunks"
                        + (repair ? "; not removed. " : ". ")
                        + "If the catalog is older than the store, move catalog.db aside and run "
                        + "'tessera fsck --rebuild-catalog'; if they are garbage, 'tessera fsck --repair --force' removes them"
                )
            } else {
                doomed = o.proven
            }
            if !o.unproven.isEmpty && !force {
                report.problems.append(
                    "store \(o.name): \(o.unproven.count) unreferenced chunk(s) this catalog has no record of "
                        + "freeing (another catalog's, or left by an older release): kept; 'tessera fsck --repair --force' removes them"
                )
            }
            guard repair, !doomed.isEmpty, let store = poolLayers().lazy.compactMap({ $0.store(o.unit) }).first else {
                continue
            }
            for chunk in doomed {
                do {
                    try store.delete(chunk)
                    report.repaired += 1
                } catch {
                    report.problems.append("\(chunk): cannot remove: \(error)")
                }
            }
        }
        if report.unreferenced > 0 {
            report.problems.append(
                "\(report.unreferenced) chunk(s) on stores belong to no volume"
                    + (repair
                        ? " (\(report.repaired) removed)" : " (fsck --repair removes those it can prove are garbage)"))
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
    fileprivate func zeroBlocks(
        of chunk: ChunkID, at offsets: [Int], through io: any ChunkStore,
        _ report: inout FsckReport
    ) -> Bool {
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
