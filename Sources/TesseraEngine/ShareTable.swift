import Synchronization
import TesseraCore

/// Extra references to physical chunks beyond the first (a chunk shared by copy_file_range between
/// volumes, or revived by a revert while a snapshot still holds it). Empty in the common case, so the
/// check on the write path is one atomic load.
///
/// Invariant: a chunk whose count is > 0 is never written in place and never deleted; dropping a
/// reference decrements instead. Each change is also recorded by the volume whose map it belongs to,
/// and committed with that map (see Volume.flush).
final class ShareTable: Sendable {
    private let counts = Lock<[ChunkID: Int]>([:])
    /// How many chunks have a count (so the common, empty case is one atomic load and no lock).
    private let entries = Atomic<Int>(0)

    func extra(_ chunk: ChunkID) -> Int {
        guard entries.load(ordering: .acquiring) > 0 else { return 0 }
        return counts.withLock { $0[chunk] ?? 0 }
    }

    func add(_ chunk: ChunkID, _ delta: Int) {
        counts.withLock { c in
            let v = (c[chunk] ?? 0) + delta
            c[chunk] = v == 0 ? nil : v
            entries.store(c.count, ordering: .releasing)
        }
    }
}
