/// Space figures of one store, in bytes.
public struct StoreUsage: Sendable, Equatable, Codable {
    /// Capacity of the medium the store lives on.
    public var totalBytes: UInt64
    /// Bytes still available for new chunks.
    public var freeBytes: UInt64
    /// Bytes the store's chunks really occupy.
    public var usedBytes: UInt64
    /// The host filesystem the store lives on, when it shares one with other users (a directory store):
    /// stores with the same `filesystem.id` share its room. totalBytes/freeBytes above are then this
    /// filesystem's figures capped by the store's quota.
    public var filesystem: FilesystemUsage?
    public init(totalBytes: UInt64, freeBytes: UInt64, usedBytes: UInt64, filesystem: FilesystemUsage? = nil) {
        self.totalBytes = totalBytes
        self.freeBytes = freeBytes
        self.usedBytes = usedBytes
        self.filesystem = filesystem
    }
}

extension StoreUsage {
    /// The figures of several stores together. Stores on one filesystem share its room: together they
    /// hold at most what the filesystem has (total = min(filesystem total, Σ totals), likewise free), so
    /// two directory stores on one disk count the disk once. `usedBytes` is summed (each store's own).
    public static func combined(_ all: [StoreUsage]) -> StoreUsage {
        var out = StoreUsage(totalBytes: 0, freeBytes: 0, usedBytes: 0)
        var groups: [UInt64: (fs: FilesystemUsage, total: UInt64, free: UInt64)] = [:]
        for u in all {
            out.usedBytes += u.usedBytes
            guard let fs = u.filesystem else {
                out.totalBytes += u.totalBytes
                out.freeBytes += u.freeBytes
                continue
            }
            let g = groups[fs.id] ?? (fs, 0, 0)
            groups[fs.id] = (g.fs, g.total + u.totalBytes, g.free + u.freeBytes)
        }
        for g in groups.values {
            out.totalBytes += min(g.fs.totalBytes, g.total)
            out.freeBytes += min(g.fs.freeBytes, g.free)
        }
        return out
    }

    /// The distinct host filesystems under these stores (each once), for "backing filesystem" figures.
    public static func filesystems(_ all: [StoreUsage]) -> [FilesystemUsage] {
        var seen: [UInt64: FilesystemUsage] = [:]
        for u in all { if let fs = u.filesystem { seen[fs.id] = fs } }
        return seen.values.sorted { $0.id < $1.id }
    }
}

/// Who a chunk belongs to, stored with the chunk so that a lost catalog can be rebuilt from the stores.
public struct ChunkLabel: Equatable, Sendable, Codable {
    public var volume: VolumeID
    /// The logical chunk index inside the volume.
    public var index: UInt64
    /// The volume's epoch when the chunk was born (grows with snapshots; 0 until then).
    public var epoch: UInt64
    public init(volume: VolumeID, index: UInt64, epoch: UInt64) {
        self.volume = volume
        self.index = index
        self.epoch = epoch
    }
}

/// The outcome of verifying one chunk.
public enum ChunkCheck: Equatable, Sendable {
    /// Every block matched its checksum.
    case ok
    /// This store keeps no checksums.
    case unchecked
    /// These byte offsets (block starts) failed their checksum.
    case corrupt(offsets: [Int])
}

/// The one protocol every store and every layer speaks: fixed-size chunks addressed by ID.
///
/// Contract:
/// - Threading: every method may be called from many threads at once. Calls on different chunks are
///   independent; the caller (the volume engine) never issues a `delete` concurrently with I/O on the
///   same chunk.
/// - A chunk comes into existence with its first `write`; bytes never written read as zeros.
///   Reading a chunk that does not exist throws `.missing`.
/// - `offset + length` always lies within `0..<chunkSize`.
/// - Durability: `flush()` returns once every `write`, `zero` and `delete` that returned before the
///   call is durable on the medium. Nothing else promises durability.
/// - Errors are `StoreError`, typed; a store never returns wrong bytes silently.
public protocol ChunkStore: AnyObject, Sendable {
    /// Bytes per chunk.
    var chunkSize: Int { get }
    /// Reads `buffer.count` bytes of `chunk` starting at `offset`.
    func read(_ chunk: ChunkID, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError)
    /// Writes `buffer` into `chunk` at `offset`, creating the chunk (zero-filled) if it does not exist.
    func write(_ chunk: ChunkID, offset: Int, from buffer: UnsafeRawBufferPointer) throws(StoreError)
    /// Makes `length` bytes at `offset` read as zeros, releasing their space where the medium can.
    /// A chunk that does not exist stays absent.
    func zero(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError)
    /// Replaces the whole content of `chunk` with `buffer` (count ≤ chunkSize; the rest reads as zeros),
    /// creating it if absent. Atomic: a crash leaves the old or the new content, never a mix.
    func replace(_ chunk: ChunkID, with buffer: UnsafeRawBufferPointer) throws(StoreError)
    /// The stored bytes of `chunk` (at most chunkSize; bytes past the returned count read as zeros).
    /// Throws `.missing` when the chunk does not exist.
    func readAll(_ chunk: ChunkID) throws(StoreError) -> [UInt8]
    /// True when `chunk`'s store works in whole chunks (object stores, compression): callers should
    /// read it with readAll and write it with replace rather than in pieces.
    func prefersWholeChunks(_ chunk: ChunkID) -> Bool
    /// Makes the 4 KiB blocks of `chunk` in `offset ..< offset + length` (block-aligned, the chunk exists)
    /// read as `.corrupt` until each is overwritten whole. A copy-on-write uses it to carry a block it
    /// could not read into the new version, so the loss stays visible there instead of turning into
    /// zeros. Only a store that keeps checksums can (the checksum layer); the others throw
    /// `.io(errno: EOPNOTSUPP)`.
    func markUnreadable(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError)
    /// Removes `chunk`; removing an absent chunk is not an error.
    func delete(_ chunk: ChunkID) throws(StoreError)
    /// Durability barrier (see above).
    func flush() throws(StoreError)
    /// Durability barrier for these chunks only (one volume's fsync): their writes, zeroes, labels and
    /// creation. A failing chunk of another volume does not fail it.
    func flush(chunks: Set<ChunkID>) throws(StoreError)
    /// Capacity, free space and space used by chunks.
    func usage() throws(StoreError) -> StoreUsage
    /// Every chunk the store holds, for garbage collection and checks. Not for the data path.
    func allChunks() throws(StoreError) -> [ChunkID]
    /// Records the owner of an existing chunk (called once, right after its first write).
    func setLabel(_ chunk: ChunkID, _ label: ChunkLabel) throws(StoreError)
    /// The owner recorded with `chunk`, or nil when it has none.
    func label(of chunk: ChunkID) throws(StoreError) -> ChunkLabel?
    /// Reads the whole chunk and verifies it against its checksums (scrub, fsck).
    func check(_ chunk: ChunkID) throws(StoreError) -> ChunkCheck
}
