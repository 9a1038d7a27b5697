// PartialChunks — sub-chunk copy-on-write: the live chunks of one volume that are partial copies.
//
// The first small write to a chunk a snapshot (or a clone's parent) still sees does not copy the
// chunk: it writes only the 4 KiB blocks it touches into a fresh chunk, and the blocks the fresh chunk
// has not written yet read from the chunk it replaced (its base, which the snapshot or the parent keeps).
// Folding copies the missing blocks from the base; only a folded chunk is labelled and committed to the
// catalog, so a committed map, a rebuild from labels and garbage collection never meet a partial chunk
// (an unfolded one is an unlabelled orphan after a crash, like any chunk written after the last fsync).
//
// Concurrency: an entry for slot `index` is created, changed and removed only while the volume holds
// that slot's stripe exclusively (or all stripes); a reader holding the stripe shared sees it stable.
// `isEmpty` is one atomic load, so a volume without partial chunks pays nothing else on its hot path.
import Synchronization
import TesseraCore

/// The blocks of a chunk, as a bit set (block = `Volume.blockSize` bytes).
struct BlockSet: Equatable {
    private var words: [UInt64]
    let count: Int

    init(count: Int) {
        self.count = count
        words = [UInt64](repeating: 0, count: (count + 63) / 64)
    }

    func contains(_ block: Int) -> Bool { words[block >> 6] & (1 << UInt64(block & 63)) != 0 }

    mutating func insert(_ blocks: Range<Int>) {
        for b in blocks { words[b >> 6] |= 1 << UInt64(b & 63) }
    }

    func containsAll(_ blocks: Range<Int>) -> Bool { blocks.allSatisfy(contains) }

    /// The maximal runs of blocks not in the set, in order.
    var missingRuns: [Range<Int>] {
        var runs: [Range<Int>] = []
        var b = 0
        while b < count {
            if contains(b) {
                b += 1
                continue
            }
            let start = b
            while b < count && !contains(b) { b += 1 }
            runs.append(start..<b)
        }
        return runs
    }
}

/// A live chunk that holds only some of its blocks; the others read from `base`.
struct PartialChunk {
    let chunk: ChunkID
    let base: ChunkID
    /// The blocks `chunk` has written itself.
    var owned: BlockSet
    /// When it became partial (folding waits a little, so a burst of writes after a snapshot is cheap).
    let since: ContinuousClock.Instant
}

/// The partial chunks of one volume, by slot.
final class PartialChunks: Sendable {
    private let live = Atomic<Int>(0)
    private let table = Lock([UInt64: PartialChunk]())

    var isEmpty: Bool { live.load(ordering: .acquiring) == 0 }

    subscript(index: UInt64) -> PartialChunk? {
        if isEmpty { return nil }
        return table.withLock { $0[index] }
    }

    func set(_ index: UInt64, _ partial: PartialChunk) {
        table.withLock { t in
            if t.updateValue(partial, forKey: index) == nil { live.add(1, ordering: .releasing) }
        }
    }

    func markOwned(_ index: UInt64, _ blocks: Range<Int>) {
        table.withLock { t in t[index]?.owned.insert(blocks) }
    }

    func remove(_ index: UInt64) {
        table.withLock { t in
            if t.removeValue(forKey: index) != nil { live.subtract(1, ordering: .releasing) }
        }
    }

    func removeAll() {
        table.withLock { t in
            live.subtract(t.count, ordering: .releasing)
            t = [:]
        }
    }

    /// Every slot with a partial chunk.
    var indexes: [UInt64] { isEmpty ? [] : table.withLock { Array($0.keys) } }

    /// When the oldest partial chunk became partial (nil: none).
    var oldest: ContinuousClock.Instant? { isEmpty ? nil : table.withLock { $0.values.map(\.since).min() } }
}
