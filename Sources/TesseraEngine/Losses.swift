// Losses — where a block that fails its checksum shows: which volume, at which byte offset, read by
// the live image and by which snapshots; and what the admin can do about it. fsck and scrub report
// through it, and `fsck --repair --zero-unrecoverable` names what it zeroed with it.
//
// A chunk may be read by several views: the live image of its volume, snapshots of that volume (birth
// epochs), clones falling through to it, and other volumes sharing it (copy_file_range, revert). Each
// (volume, chunk index) that refers to it is checked against each of those views.
import TesseraCore

/// One 4 KiB block whose bytes are lost, as the user sees it.
public struct LostBlock: Codable, Sendable, Equatable {
    public var volume: String
    /// Byte offset of the block in the volume's image (and in its snapshot images).
    public var offset: UInt64
    public var length: Int
    /// True when the live image reads the lost block (rewriting the range there repairs it).
    public var live: Bool
    /// Snapshots whose image of `volume` reads the lost block.
    public var snapshots: [String]

    /// "volume v1, bytes 4096…8191 (live image; snapshots s1, s2)".
    public var description: String {
        var seen: [String] = []
        if live { seen.append("live image") }
        if !snapshots.isEmpty {
            seen.append("snapshot\(snapshots.count == 1 ? "" : "s") \(snapshots.joined(separator: ", "))")
        }
        let views = seen.isEmpty ? "no image reads it" : seen.joined(separator: "; ")
        return "volume \(volume), bytes \(offset)…\(offset + UInt64(length) - 1) (\(views))"
    }
}

public enum Losses {
    /// What to do about lost blocks, for an admin (one line each).
    public static let nextSteps = [
        "rewrite each lost range in the live image with good data (e.g. dd from a backup with conv=notrunc); "
            + "snapshots keep the loss",
        "or restore the volume from a backup (or revert it to a snapshot that does not read the block)",
        "or, unmounted, run 'tessera fsck --repair --zero-unrecoverable': every lost block becomes zeros, "
            + "in the volume and its snapshots, and the images read again",
    ]
}

extension Engine {
    /// The views that read `chunk`'s blocks at `offsets` (byte offsets inside the chunk).
    func losses(of chunk: ChunkID, at offsets: [Int]) -> [LostBlock] {
        let volumes = allVolumes()
        // (volume, index) pairs that refer to the chunk, then clones that fall through to them.
        var refs: [(Volume, UInt64)] = []
        for v in volumes {
            for e in v.mapEntries + v.retainedEntries
            where e.chunk == chunk && !refs.contains(where: { $0.0 === v && $0.1 == e.index }) {
                refs.append((v, e.index))
            }
        }
        var i = 0
        while i < refs.count {
            let (v, index) = refs[i]
            for c in volumes where c.parent === v && !refs.contains(where: { $0.0 === c && $0.1 == index }) {
                refs.append((c, index))
            }
            i += 1
        }
        let (snapshots, members) = state.withLock { s in (s.snapshots, s.members) }
        var out: [LostBlock] = []
        for (v, index) in refs {
            let base = index * UInt64(v.chunkSize)
            let live = v.resolve(index) == chunk
            var names: [String] = []
            for (id, ms) in members {
                for m in ms where m.volumeId == v.id.rawValue && v.resolve(index, at: UInt64(m.epoch)) == chunk {
                    if let name = snapshots[id]?.name { names.append(name) }
                }
            }
            guard live || !names.isEmpty else { continue }  // a version no view reads any more
            for offset in offsets {
                out.append(
                    LostBlock(
                        volume: v.name, offset: base + UInt64(offset), length: Volume.blockSize, live: live,
                        snapshots: names.sorted()))
            }
        }
        return out.sorted { ($0.volume, $0.offset) < ($1.volume, $1.offset) }
    }
}
