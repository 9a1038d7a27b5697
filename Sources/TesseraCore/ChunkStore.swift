/// Space figures of one store, in bytes.
public struct StoreUsage: Sendable, Equatable, Codable {
    /// Capacity of the medium the store lives on.
    public var totalBytes: UInt64
    /// Bytes still available for new chunks.
    public var freeBytes: UInt64
    /// Bytes the store's chunks really occupy.
    public var usedBytes: UInt64
    public init(totalBytes: UInt64, freeBytes: UInt64, usedBytes: UInt64) {
        self.totalBytes = totalBytes
        self.freeBytes = freeBytes
        self.usedBytes = usedBytes
    }
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
    /// Removes `chunk`; removing an absent chunk is not an error.
    func delete(_ chunk: ChunkID) throws(StoreError)
    /// Durability barrier (see above).
    func flush() throws(StoreError)
    /// Capacity, free space and space used by chunks.
    func usage() throws(StoreError) -> StoreUsage
    /// Every chunk the store holds, for garbage collection and checks. Not for the data path.
    func allChunks() throws(StoreError) -> [ChunkID]
}
