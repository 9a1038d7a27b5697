// MemoryStore — a ChunkStore in RAM: the bottom of test stacks and the reference the other stores are
// checked against. It can also play a machine that loses power (`crash()`).
//
// Address space: physical chunks. Any ChunkID except `.none` is accepted; its bits are not interpreted
// (no routing), so IDs from a PoolLayer work as they are.
//
// State: `live`, what reads see now; `durable`, what the last `flush()` made durable; `dirty`, the
// chunks written, zeroed, labelled or deleted since that flush. Labels have the same live/durable pair.
// A chunk is a [UInt8] as long as its highest written byte, like a sparse file: bytes past the end read
// as zeros. Arrays are copy-on-write, so a flush copies references, not bytes.
//
// Invariants:
// - The ChunkStore contract holds: a chunk exists from its first write; reading an absent chunk throws
//   `.missing`; zero on an absent chunk leaves it absent; delete of an absent chunk succeeds.
// - Breaking the contract (chunk `.none`, a range outside the chunk) is the caller's bug and stops the
//   test with a precondition failure, never an I/O error.
// - After `crash()`, `live == durable`: every write, zero and delete since the last flush is undone.
// - With a `capacity`, the sum of chunk lengths never exceeds it; a write that would pass it throws
//   `.noSpace` and changes nothing.
// Lock order: one Mutex. Byte copies happen inside it: RAM is this store's medium, and a test store
// favours obviously right over fast.

import Synchronization
import TesseraCore

#if canImport(Glibc)
    import Glibc
#endif

public final class MemoryStore: ChunkStore {
    public let chunkSize: Int
    /// Bytes the store may hold; nil means unlimited (usage then reports a nominal 1 TiB).
    public let capacity: UInt64?

    private struct State {
        var live: [ChunkID: [UInt8]] = [:]
        var durable: [ChunkID: [UInt8]] = [:]
        var dirty: Set<ChunkID> = []
        var used: UInt64 = 0
        var flushes = 0
        var labels: [ChunkID: ChunkLabel] = [:]
        var durableLabels: [ChunkID: ChunkLabel] = [:]
    }
    private let state = Mutex(State())

    /// Whether the store asks to be used in whole chunks (plays an object store for the layers above).
    public let wholeChunks: Bool

    public init(chunkSize: Int, capacity: UInt64? = nil, wholeChunks: Bool = false) {
        precondition(chunkSize > 0)
        self.chunkSize = chunkSize
        self.capacity = capacity
        self.wholeChunks = wholeChunks
    }

    private func check(_ chunk: ChunkID, _ offset: Int, _ length: Int) {
        precondition(!chunk.isNone, "ChunkID.none is not a chunk")
        precondition(
            offset >= 0 && length >= 0 && offset + length <= chunkSize,
            "range \(offset)+\(length) outside a chunk of \(chunkSize) bytes")
    }

    public func read(_ chunk: ChunkID, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) {
        check(chunk, offset, buffer.count)
        try state.withLock { s throws(StoreError) in
            guard let bytes = s.live[chunk] else { throw .missing(chunk: chunk) }
            let stored = max(0, min(buffer.count, bytes.count - offset))
            if stored > 0 {
                bytes.withUnsafeBytes { src in
                    buffer.baseAddress!.copyMemory(from: src.baseAddress! + offset, byteCount: stored)
                }
            }
            if stored < buffer.count {
                UnsafeMutableRawBufferPointer(rebasing: buffer[stored...]).initializeMemory(
                    as: UInt8.self, repeating: 0)
            }
        }
    }

    public func write(_ chunk: ChunkID, offset: Int, from buffer: UnsafeRawBufferPointer) throws(StoreError) {
        check(chunk, offset, buffer.count)
        try state.withLock { s throws(StoreError) in
            let old = s.live[chunk]?.count ?? 0
            let end = offset + buffer.count
            let growth = UInt64(max(0, end - old))
            if let capacity, s.used + growth > capacity { throw .noSpace }
            if s.live[chunk] == nil { s.live[chunk] = [] }
            if end > old { s.live[chunk]!.append(contentsOf: repeatElement(0, count: end - old)) }
            if buffer.count > 0 {
                s.live[chunk]!.withUnsafeMutableBytes { dst in
                    (dst.baseAddress! + offset).copyMemory(from: buffer.baseAddress!, byteCount: buffer.count)
                }
            }
            s.used += growth
            s.dirty.insert(chunk)
        }
    }

    public func replace(_ chunk: ChunkID, with buffer: UnsafeRawBufferPointer) throws(StoreError) {
        check(chunk, 0, buffer.count)
        try state.withLock { s throws(StoreError) in
            let old = UInt64(s.live[chunk]?.count ?? 0)
            if let capacity, s.used - old + UInt64(buffer.count) > capacity { throw .noSpace }
            s.live[chunk] = Array(buffer)
            s.used = s.used - old + UInt64(buffer.count)
            s.dirty.insert(chunk)
        }
    }

    public func readAll(_ chunk: ChunkID) throws(StoreError) -> [UInt8] {
        precondition(!chunk.isNone, "ChunkID.none is not a chunk")
        return try state.withLock { s throws(StoreError) in
            guard let bytes = s.live[chunk] else { throw .missing(chunk: chunk) }
            return bytes
        }
    }

    public func prefersWholeChunks(_ chunk: ChunkID) -> Bool { wholeChunks }

    public func zero(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        check(chunk, offset, length)
        state.withLock { s in
            guard let count = s.live[chunk]?.count, offset < count, length > 0 else { return }
            if offset + length >= count {
                // The zeroed range reaches the end: shorten the chunk, as a punched hole frees blocks.
                s.live[chunk]!.removeSubrange(offset...)
                s.used -= UInt64(count - offset)
            } else {
                s.live[chunk]!.withUnsafeMutableBytes { dst in
                    _ = UnsafeMutableRawBufferPointer(rebasing: dst[offset..<offset + length])
                        .initializeMemory(as: UInt8.self, repeating: 0)
                }
            }
            s.dirty.insert(chunk)
        }
    }

    /// No checksums here: a block cannot be marked unreadable (only the checksum layer above can).
    public func markUnreadable(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        throw .io(errno: EOPNOTSUPP, chunk: chunk)
    }

    public func delete(_ chunk: ChunkID) throws(StoreError) {
        precondition(!chunk.isNone, "ChunkID.none is not a chunk")
        state.withLock { s in
            guard let old = s.live.removeValue(forKey: chunk) else { return }
            s.labels[chunk] = nil
            s.used -= UInt64(old.count)
            s.dirty.insert(chunk)
        }
    }

    public func flush() throws(StoreError) {
        state.withLock { s in
            for chunk in s.dirty {
                s.durable[chunk] = s.live[chunk]
                s.durableLabels[chunk] = s.labels[chunk]
            }
            s.dirty.removeAll()
            s.flushes += 1
        }
    }

    /// Makes only `chunks` durable (a volume's fsync); other chunks stay as they were.
    public func flush(chunks: Set<ChunkID>) throws(StoreError) {
        state.withLock { s in
            for chunk in s.dirty.intersection(chunks) {
                s.durable[chunk] = s.live[chunk]
                s.durableLabels[chunk] = s.labels[chunk]
            }
            s.dirty.subtract(chunks)
            s.flushes += 1
        }
    }

    public func usage() throws(StoreError) -> StoreUsage {
        state.withLock { s in
            let total = capacity ?? 1 << 40
            return StoreUsage(totalBytes: total, freeBytes: total - min(total, s.used), usedBytes: s.used)
        }
    }

    public func allChunks() throws(StoreError) -> [ChunkID] {
        state.withLock { s in s.live.keys.sorted() }
    }

    public func setLabel(_ chunk: ChunkID, _ label: ChunkLabel) throws(StoreError) {
        try state.withLock { s throws(StoreError) in
            guard s.live[chunk] != nil else { throw .missing(chunk: chunk) }
            s.labels[chunk] = label
            s.dirty.insert(chunk)
        }
    }

    public func label(of chunk: ChunkID) throws(StoreError) -> ChunkLabel? {
        try state.withLock { s throws(StoreError) in
            guard s.live[chunk] != nil else { throw .missing(chunk: chunk) }
            return s.labels[chunk]
        }
    }

    /// RAM keeps no checksums.
    public func check(_ chunk: ChunkID) throws(StoreError) -> ChunkCheck {
        try state.withLock { s throws(StoreError) in
            guard s.live[chunk] != nil else { throw .missing(chunk: chunk) }
            return .unchecked
        }
    }

    // MARK: For tests

    /// Loses everything not flushed, as a power cut would.
    public func crash() {
        state.withLock { s in
            s.live = s.durable
            s.labels = s.durableLabels
            s.dirty.removeAll()
            s.used = s.live.values.reduce(0) { $0 + UInt64($1.count) }
        }
    }

    /// Number of chunks that exist now.
    public var chunkCount: Int { state.withLock { $0.live.count } }
    /// Number of chunks whose state would be lost by `crash()`.
    public var unflushedCount: Int { state.withLock { $0.dirty.count } }
    /// Number of completed `flush()` calls.
    public var flushCount: Int { state.withLock { $0.flushes } }
    /// The chunk's bytes (trailing never-written bytes omitted), or nil when it does not exist.
    public func contents(of chunk: ChunkID) -> [UInt8]? { state.withLock { $0.live[chunk] } }
}
