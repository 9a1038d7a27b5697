// CacheLayer — a RAM cache of 4 KiB blocks with write-back, scan-resistant eviction (S3-FIFO) and
// read-ahead, between the volume engine and the pool. This file is the request path and the threads;
// CacheState holds what the cache knows, CacheQueues evicts, CacheFills brings blocks in from below,
// CacheWriteBack sends dirty blocks down, CacheReadAhead prefetches.
//
// Address space: physical chunks; IDs pass through unchanged. A block is keyed by (chunk, block index).
// States of a block: absent → clean (equal to the inner store; on a queue) ⇄ dirty (newer than the inner
// store; on no queue: pinned, never evicted) → clean after write-back → absent after eviction, zero,
// delete or replace.
// Invariants:
// - A clean block equals what the inner store holds: fills insert only absent blocks, holding the chunk's
//   stripe shared from the inner read to the insert; write-back marks a block clean only when no write
//   changed it meanwhile (`version`).
// - A chunk exists (for `.missing`) iff it exists below or has dirty blocks here: dirty blocks leave only
//   by write-back (which creates the chunk below), zero (which writes back first), delete and replace.
// - Dirty bytes ≤ dirtyLimit when a write returns (plus the blocks of writes in flight on other threads):
//   a writer past the limit writes back the oldest chunks itself and waits for them.
// - `flush()` / `flush(chunks:)` write back every dirty block of what they cover (waiting for write-backs
//   of those chunks already in flight, and for the ones they start), then flush the inner store, so a
//   write that returned before the call is durable when they return. A failed write-back leaves its
//   blocks dirty (retried later, never dropped) and the flush throws its error unchanged.
// - Order per chunk: write-back I/O, zero, delete and replace hold the chunk's stripe exclusively; fills
//   (misses, read-ahead, the old bytes under a partial-block write) hold it shared; reads and writes of
//   cached blocks take no stripe. So a write-back never lands after a later zero or delete, a fill never
//   overwrites a newer write, and a block under write-back stays readable (and writable) in RAM.
// Whole-chunk inner stores (`prefersWholeChunks`: object stores, compression): a miss fills the whole
// chunk with one readAll; write-back is one replace of the whole chunk, up to `writeBackConcurrency`
// chunks at once. Read-ahead is off for them (a miss already brings the whole chunk).
// Threads: the flusher (CacheWriteBack) and the prefetch worker (CacheReadAhead), plain threads holding
// the layer weakly; up to `writeBackConcurrency` write-back workers (a WorkerPool, started as needed; a
// job holds the layer while it runs). `stop()` ends them all without writing back (the engine calls
// flush() first); the layer keeps working after it, writing back on the calling thread.
// Memory: the slab (≤ capacity) plus about 100 bytes of bookkeeping per 4 KiB slot (slot record 32,
// index entry ~30, ghost entry ~25, per-chunk records) — about 2.5 % of the capacity.
// Lock order: one chunk stripe (never two at once) → state lock (short, never held across I/O). A thread
// that waits for the write-back workers holds no stripe.
import Dispatch
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

public final class CacheLayer: ChunkStore {
    public static let blockSize = 4096

    /// Size and write-back policy of a cache.
    public struct Configuration: Sendable, Equatable {
        /// Bytes of RAM for cached blocks (`mount --cache-size`), at least one 4 KiB block.
        public var capacity: Int
        /// Most dirty bytes; a writer past it writes back before returning. Default: capacity / 4.
        public var dirtyLimit: Int
        /// Data dirty for longer is written back without a flush. Default 5 s: bounds what a crash
        /// loses from clients that never fsync, while leaving rewrites of hot blocks time to coalesce.
        public var dirtyAge: Duration
        /// Bytes prefetched ahead of a sequential reader (clipped to its chunk); 0 turns read-ahead off.
        public var readAhead: Int
        /// Write-backs to whole-chunk stores (object stores) in flight at once. Default 8: an S3 PUT of a
        /// chunk waits mostly for round trips, and 8 is AsyncHTTPClient's connections per host.
        public var writeBackConcurrency: Int

        public init(
            capacity: Int, dirtyLimit: Int? = nil, dirtyAge: Duration = .seconds(5), readAhead: Int = 1 << 20,
            writeBackConcurrency: Int = 8
        ) {
            precondition(capacity >= CacheLayer.blockSize, "a cache holds at least one 4 KiB block")
            precondition(readAhead >= 0, "negative read-ahead")
            precondition(writeBackConcurrency >= 1, "at least one write-back at a time")
            self.capacity = capacity
            self.dirtyLimit = dirtyLimit ?? capacity / 4
            self.dirtyAge = dirtyAge
            self.readAhead = readAhead
            self.writeBackConcurrency = writeBackConcurrency
            precondition(
                self.dirtyLimit >= 0 && self.dirtyLimit <= capacity, "the dirty limit lies within the capacity")
        }
    }

    /// Counters since start (blocks are 4 KiB; a read of n blocks counts n hits or misses).
    public struct Stats: Sendable, Codable, Equatable {
        public var capacityBytes = 0
        public var cachedBytes = 0
        public var dirtyBytes = 0
        /// Blocks read from RAM.
        public var hits: UInt64 = 0
        /// Blocks a read had to fetch from below.
        public var misses: UInt64 = 0
        /// Blocks brought in by read-ahead, and how many of them a reader then found.
        public var readAheadBlocks: UInt64 = 0
        public var readAheadHits: UInt64 = 0
        /// Chunk write-backs that reached the inner store, their bytes, and failed ones.
        public var writeBacks: UInt64 = 0
        public var writeBackBytes: UInt64 = 0
        public var writeBackErrors: UInt64 = 0
        /// Clean blocks dropped to make room.
        public var evictions: UInt64 = 0

        public init() {}

        /// hits / (hits + misses), 0 before the first read.
        public var hitRate: Double { hits + misses == 0 ? 0 : Double(hits) / Double(hits + misses) }
    }

    public let chunkSize: Int
    public let inner: any ChunkStore
    public let configuration: Configuration
    let blocksPerChunk: Int
    let ageNanos: UInt64
    let stripes = StripedLocks()
    let state: Lock<State>
    let workers: WorkerPool
    let flusherWake = DispatchSemaphore(value: 0)
    let prefetchWake = DispatchSemaphore(value: 0)
    private let threadsDone = DispatchGroup()

    public init(over inner: any ChunkStore, _ configuration: Configuration) {
        precondition(inner.chunkSize % Self.blockSize == 0, "the chunk size is a multiple of 4 KiB")
        chunkSize = inner.chunkSize
        self.inner = inner
        self.configuration = configuration
        blocksPerChunk = inner.chunkSize / Self.blockSize
        ageNanos = Self.nanoseconds(configuration.dirtyAge)
        workers = WorkerPool(threads: configuration.writeBackConcurrency, name: "tessera-writeback")
        let slots = configuration.capacity / Self.blockSize
        state = Lock(State(slab: Slab(bytes: slots * Self.blockSize), slotCount: slots, blocksPerChunk: blocksPerChunk))
        startThreads()
    }

    deinit {
        let bytes = state.withLock { s in
            s.stopped = true
            return s.slotCount * Self.blockSize
        }
        flusherWake.signal()
        prefetchWake.signal()
        state.withLock { s in _ = munmap(s.slab.base, bytes) }
    }

    /// Stops the flusher, the prefetch worker and the write-back workers and waits for them; dirty data
    /// stays in RAM (call `flush()` first to keep it). Later calls still work, writing back on the
    /// calling thread. Idempotent.
    public func stop() {
        let wasRunning = state.withLock { s in
            defer { s.stopped = true }
            return !s.stopped
        }
        guard wasRunning else { return }
        flusherWake.signal()
        prefetchWake.signal()
        threadsDone.wait()
        workers.stop()
    }

    public var stats: Stats {
        let bs = Self.blockSize
        return state.withLock { s in
            var st = s.stats
            st.capacityBytes = s.slotCount * bs
            st.cachedBytes = (s.slots.count - s.free.count) * bs
            st.dirtyBytes = s.dirtyBlocks * bs
            return st
        }
    }

    // MARK: Reads

    public func read(_ chunk: ChunkID, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) {
        checkRange(offset, buffer.count)
        if buffer.isEmpty {
            if exists(chunk) { return }
            return try inner.read(chunk, offset: offset, into: buffer)
        }
        let bs = Self.blockSize
        let end = offset + buffer.count
        let blocks = offset / bs..<(end + bs - 1) / bs
        let window = configuration.readAhead
        let size = chunkSize
        let (missing, ahead) = state.withLock { s -> (Bool, Range<Int>?) in
            var missing = false
            for b in blocks {
                if let i = s.index[Key(chunk, b)] {
                    s.touch(Int(i))
                    s.stats.hits += 1
                    Self.copyOut(b, from: s.data(Int(i)), offset, buffer)
                } else {
                    missing = true
                    s.stats.misses += 1
                }
            }
            let ahead = window > 0 ? s.noteRead(chunk.rawValue, offset, end, window: window, chunkSize: size) : nil
            return (missing, ahead)
        }
        if missing { try fill(chunk, blocks, offset, buffer) }
        if let ahead { schedulePrefetch(chunk, ahead) }
    }

    /// True when the chunk has dirty blocks here (so it exists, whatever the inner store says).
    func exists(_ chunk: ChunkID) -> Bool {
        state.withLock { $0.isDirty(chunk) }
    }

    public func readAll(_ chunk: ChunkID) throws(StoreError) -> [UInt8] {
        var data = [UInt8](repeating: 0, count: chunkSize)
        try data.withMutableStoreBytes { (p) throws(StoreError) in try read(chunk, offset: 0, into: p) }
        return data
    }

    /// The cache takes pieces: whole-chunk handling is its own business with the inner store.
    public func prefersWholeChunks(_ chunk: ChunkID) -> Bool { false }

    // MARK: Writes

    public func write(_ chunk: ChunkID, offset: Int, from buffer: UnsafeRawBufferPointer) throws(StoreError) {
        checkRange(offset, buffer.count)
        // Nothing to cache; only creates the chunk below.
        if buffer.isEmpty { return try inner.write(chunk, offset: offset, from: buffer) }
        let bs = Self.blockSize
        let last = (offset + buffer.count + bs - 1) / bs
        let now = Self.now()
        var next = offset / bs
        var base: UnsafeMutableRawBufferPointer?
        defer { base?.deallocate() }
        var baseBlock = -1  // ≥ 0: `base` holds that block's old bytes and the stripe is held shared
        apply: while true {
            let (from, withBase, old) = (next, baseBlock, base.map { UnsafeRawPointer($0.baseAddress!) })
            let step = state.withLock { s in s.apply(chunk, from..<last, offset, buffer, base: withBase, old, now: now)
            }
            if baseBlock >= 0 {
                stripes.unlock(chunk.rawValue)
                baseBlock = -1
            }
            switch step {
            case .done:
                break apply
            case .needBase(let k):
                // A partly written block that is not cached: merge with its old bytes, read under the
                // stripe so that no write-back can change them before the merged block is in RAM.
                next = k
                if base == nil { base = .allocate(byteCount: bs, alignment: 4096) }
                stripes.lockShared(chunk.rawValue)
                do throws(StoreError) {
                    try readBase(chunk, block: k, into: base!)
                } catch {
                    stripes.unlock(chunk.rawValue)
                    throw error
                }
                baseBlock = k
            case .noSlot(let k):
                next = k
                guard try writeBackOldest() else { preconditionFailure("no cache slot free and nothing dirty") }
            }
        }
        try throttle()
    }

    /// Writes back oldest chunks while dirty bytes exceed the limit; wakes the flusher past half of it.
    private func throttle() throws(StoreError) {
        let bs = Self.blockSize
        let limit = configuration.dirtyLimit
        while true {
            let (over, kick) = state.withLock { s -> (Bool, Bool) in
                let dirty = s.dirtyBlocks * bs
                let kick = dirty * 2 > limit && !s.flusherKicked
                if kick { s.flusherKicked = true }
                return (dirty > limit, kick)
            }
            if kick { flusherWake.signal() }
            guard over, try writeBackOldest() else { return }
        }
    }

    // MARK: Zero, replace, delete

    public func zero(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        checkRange(offset, length)
        let bs = Self.blockSize
        let blocks = offset / bs..<(offset + length + bs - 1) / bs
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        // Dirty blocks go down first: the chunk then exists below if it exists at all, and the zero
        // lands after them.
        try writeBackLocked(chunk)
        do throws(StoreError) {
            try inner.zero(chunk, offset: offset, length: length)
        } catch {
            state.withLock { s in s.drop(chunk, blocks, keepDirty: true) }
            throw error
        }
        state.withLock { s in
            for b in blocks {
                guard let i = s.index[Key(chunk, b)] else { continue }
                let start = b * bs
                if offset <= start && offset + length >= start + bs {
                    s.discard(Int(i))
                } else {
                    // An edge block: zero its part in RAM too (dirty or clean, it stays what it was).
                    let lo = max(offset, start)
                    let hi = min(offset + length, start + bs)
                    (s.data(Int(i)) + (lo - start)).initializeMemory(as: UInt8.self, repeating: 0, count: hi - lo)
                }
            }
        }
    }

    public func replace(_ chunk: ChunkID, with buffer: UnsafeRawBufferPointer) throws(StoreError) {
        precondition(buffer.count <= chunkSize)
        let all = 0..<blocksPerChunk
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        do throws(StoreError) {
            try inner.replace(chunk, with: buffer)
        } catch {
            state.withLock { s in s.drop(chunk, all, keepDirty: true) }
            throw error
        }
        // Everything cached of the chunk is older than the new content.
        state.withLock { s in s.drop(chunk, all, keepDirty: false) }
        try applyPendingLabel(chunk)
    }

    /// Writes the chunk's dirty blocks back first (the mark must land after them), then forgets the
    /// cached copies of the range: they would otherwise keep answering with bytes the store refuses.
    public func markUnreadable(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        checkRange(offset, length)
        let bs = Self.blockSize
        let blocks = offset / bs..<(offset + length + bs - 1) / bs
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        try writeBackLocked(chunk)
        // (A block written meanwhile stays: a whole-block write replaces the mark anyway.)
        defer { state.withLock { s in s.drop(chunk, blocks, keepDirty: true) } }
        try inner.markUnreadable(chunk, offset: offset, length: length)
    }

    public func delete(_ chunk: ChunkID) throws(StoreError) {
        let all = 0..<blocksPerChunk
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        do throws(StoreError) {
            try inner.delete(chunk)
        } catch {
            state.withLock { s in s.drop(chunk, all, keepDirty: true) }
            throw error
        }
        state.withLock { s in
            s.drop(chunk, all, keepDirty: false)
            s.streams[chunk.rawValue] = nil
            s.pendingLabels[chunk] = nil
        }
    }

    // MARK: Durability

    public func flush() throws(StoreError) {
        let dirty = state.withLock { s in
            Set(s.chunks.compactMap { $0.value.dirty > 0 ? ChunkID($0.key) : nil }).union(s.pendingLabels.keys)
        }
        var failure = writeBack(Array(dirty))?.error
        do { try inner.flush() } catch { failure = failure ?? error }
        if let failure { throw failure }
    }

    /// Writes back only the chunks with dirty blocks or a waiting label: a chunk under write-back keeps
    /// its blocks dirty until the write-back returns, so one in flight is waited for.
    public func flush(chunks: Set<ChunkID>) throws(StoreError) {
        let dirty = state.withLock { s in chunks.filter { s.isDirty($0) || s.pendingLabels[$0] != nil } }
        var failure = writeBack(Array(dirty))?.error
        do { try inner.flush(chunks: chunks) } catch { failure = failure ?? error }
        if let failure { throw failure }
    }

    // MARK: The rest (after writing back the chunk where the inner store must see it)

    public func usage() throws(StoreError) -> StoreUsage { try inner.usage() }

    /// The inner store's chunks and those that exist only here so far.
    public func allChunks() throws(StoreError) -> [ChunkID] {
        let onlyHere = state.withLock { s in s.chunks.compactMap { $0.value.dirty > 0 ? ChunkID($0.key) : nil } }
        return Set(try inner.allChunks()).union(onlyHere).sorted()
    }

    /// A chunk that exists only here so far (setLabel follows its first write) keeps its label here
    /// until its first write-back, which sets it below right after the data: a new chunk costs one
    /// write-back, not a write-through. A flush that covers the chunk makes both durable.
    public func setLabel(_ chunk: ChunkID, _ label: ChunkLabel) throws(StoreError) {
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        let deferred = state.withLock { s in
            guard s.isDirty(chunk) else { return false }
            s.pendingLabels[chunk] = label
            return true
        }
        if !deferred { try inner.setLabel(chunk, label) }
    }

    public func label(of chunk: ChunkID) throws(StoreError) -> ChunkLabel? {
        if let pending = state.withLock({ $0.pendingLabels[chunk] }) { return pending }
        try writeBack(chunk)
        return try inner.label(of: chunk)
    }

    public func check(_ chunk: ChunkID) throws(StoreError) -> ChunkCheck {
        try writeBack(chunk)
        return try inner.check(chunk)
    }

    // MARK: Background threads

    private func startThreads() {
        let age = Double(ageNanos) / 4
        let interval = DispatchTimeInterval.nanoseconds(Int(min(max(age, 10e6), 1e9)))
        spawn(flusherWake, every: interval) { $0.backgroundWriteBack() }
        spawn(prefetchWake, every: .seconds(1)) { $0.runPrefetches() }
    }

    /// A plain thread that runs `body` when woken or every `interval`, until the layer stops or goes away.
    private func spawn(
        _ wake: DispatchSemaphore, every interval: DispatchTimeInterval,
        _ body: @escaping @Sendable (CacheLayer) -> Void
    ) {
        let done = threadsDone
        done.enter()
        let thread = Thread { [weak self] in
            while true {
                _ = wake.wait(timeout: .now() + interval)
                guard let self, !self.state.withLock({ $0.stopped }) else { break }
                body(self)
            }
            done.leave()
        }
        thread.name = "tessera-cache"
        thread.start()
    }

    // MARK: Helpers

    func checkRange(_ offset: Int, _ length: Int) {
        precondition(
            offset >= 0 && length >= 0 && offset + length <= chunkSize, "range \(offset)+\(length) outside the chunk")
    }

    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    private static func nanoseconds(_ d: Duration) -> UInt64 {
        let (seconds, attoseconds) = d.components
        return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
    }
}
