// CacheLayer — a RAM cache of 4 KiB blocks with write-back, scan-resistant eviction (S3-FIFO) and
// read-ahead, between the volume engine and the pool.
//
// Address space: physical chunks; IDs pass through unchanged. A block is keyed by (chunk, block index).
//
// State (one lock, `state`):
// - the slab: `capacity / 4096` slots in one anonymous mmap (MAP_NORESERVE: a page becomes memory only
//   when its slot is first used), and per slot a 32-byte record (key, version, queue links, flags);
// - `index` (key → slot) and `chunks` (per chunk: cached and dirty block counts, when it became dirty);
// - S3-FIFO queues of clean blocks: `small` (probationary, 10 % of slots) and `main`, plus `ghost`, a ring
//   of hashes of keys recently evicted from `small`. A new block enters `small` (or `main` when its key
//   is in the ghost); a hit raises a 2-bit frequency. Eviction takes `small`'s tail while `small` holds
//   ≥ 10 % of the slots — into `main` if it was hit since it came in, else out (its key into the ghost)
//   — otherwise `main`'s tail, which goes round again with frequency − 1 while its frequency is > 0.
//   Data read once never reaches `main`, so a scan cannot push out the working set.
// - the dirty FIFO: chunks in the order they became dirty (write-back takes the oldest first);
// - read-ahead streams (per chunk: where the next sequential read starts, how far is prefetched) and
//   the prefetch queue; the counters of `Stats`.
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
//   a writer past the limit writes back the oldest chunks itself, synchronously.
// - `flush()` / `flush(chunks:)` write back every dirty block of what they cover, then flush the inner
//   store, so a write that returned before the call is durable when they return. A failed write-back
//   leaves its blocks dirty (retried later, never dropped) and the flush throws its error unchanged.
// - Order per chunk: write-back I/O, zero, delete and replace hold the chunk's stripe exclusively; fills
//   (misses, read-ahead, the old bytes under a partial-block write) hold it shared; reads and writes of
//   cached blocks take no stripe. So a write-back never lands after a later zero or delete, a fill never
//   overwrites a newer write, and a block under write-back stays readable (and writable) in RAM.
// Whole-chunk inner stores (`prefersWholeChunks`: object stores, compression): a miss fills the whole
// chunk with one readAll; write-back is one replace of the whole chunk (blocks not cached are taken from
// readAll). Read-ahead is off for them (a miss already brings the whole chunk).
// Read-ahead: a read that starts where the previous read of the same chunk ended is sequential; the
// next `readAhead` bytes are then prefetched by a worker thread, clipped to the chunk (the physical chunk
// that follows is unknown at this level). Prefetched blocks enter `small`, never replace newer data and
// never evict dirty data (dirty blocks are on no queue); a failed prefetch only logs.
// Threads (plain threads, holding the layer weakly): a flusher, woken every dirtyAge/4 (10 ms … 1 s) and
// when dirty bytes pass half the limit, writes back chunks dirty for longer than dirtyAge and the oldest
// chunks while dirty bytes exceed half the limit; a prefetch worker. `stop()` ends both without writing
// back (the engine calls flush() first); the layer keeps working synchronously after it.
// Memory: the slab (≤ capacity) plus about 100 bytes of bookkeeping per 4 KiB slot (slot record 32,
// index entry ~30, ghost entry ~25, per-chunk records) — about 2.5 % of the capacity.
// Capacity below one block (0: `mount` without `--cache-size`): a pure pass-through, no thread, no slab.
// Lock order: one chunk stripe (never two at once) → state lock (short, never held across I/O).
import Dispatch
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

public final class CacheLayer: ChunkStore {
    public static let blockSize = 4096

    /// Size and write-back policy of a cache.
    public struct Configuration: Sendable, Equatable {
        /// Bytes of RAM for cached blocks (`mount --cache-size`). Below 4096 the layer is a pass-through.
        public var capacity: Int
        /// Most dirty bytes; a writer past it writes back before returning. Default: capacity / 4.
        public var dirtyLimit: Int
        /// Data dirty for longer is written back without a flush. Default 5 s: bounds what a crash
        /// loses from clients that never fsync, while leaving rewrites of hot blocks time to coalesce.
        public var dirtyAge: Duration
        /// Bytes prefetched ahead of a sequential reader (clipped to its chunk); 0 turns read-ahead off.
        public var readAhead: Int

        public init(capacity: Int, dirtyLimit: Int? = nil, dirtyAge: Duration = .seconds(5), readAhead: Int = 1 << 20) {
            precondition(capacity >= 0 && readAhead >= 0, "negative cache size")
            self.capacity = capacity
            self.dirtyLimit = dirtyLimit ?? capacity / 4
            self.dirtyAge = dirtyAge
            self.readAhead = readAhead
            precondition(self.dirtyLimit >= 0 && self.dirtyLimit <= capacity, "the dirty limit lies within the capacity")
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
    private let blocksPerChunk: Int
    private let slotCount: Int
    private let passThrough: Bool
    private let ageNanos: UInt64
    private let stripes = StripedLocks()
    private let state: Lock<State>
    private let flusherWake = DispatchSemaphore(value: 0)
    private let prefetchWake = DispatchSemaphore(value: 0)
    private let threadsDone = DispatchGroup()

    public init(over inner: any ChunkStore, _ configuration: Configuration) {
        precondition(inner.chunkSize % Self.blockSize == 0, "the chunk size is a multiple of 4 KiB")
        chunkSize = inner.chunkSize
        self.inner = inner
        self.configuration = configuration
        blocksPerChunk = inner.chunkSize / Self.blockSize
        slotCount = configuration.capacity / Self.blockSize
        passThrough = slotCount == 0
        ageNanos = Self.nanoseconds(configuration.dirtyAge)
        var slab: UnsafeMutableRawPointer?
        if !passThrough {
            let p = mmap(nil, slotCount * Self.blockSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            precondition(p != nil && p != UnsafeMutableRawPointer(bitPattern: -1), "cannot map \(configuration.capacity) bytes for the cache")
            slab = p
        }
        state = Lock(State(slab: slab, slotCount: slotCount, blocksPerChunk: blocksPerChunk))
        if !passThrough { startThreads() }
    }

    deinit {
        let bytes = slotCount * Self.blockSize
        state.withLock { s in
            s.stopped = true
            if let slab = s.slab.base { munmap(slab, bytes) }
        }
        flusherWake.signal()
        prefetchWake.signal()
    }

    /// Stops the flusher and the prefetch worker and waits for them; dirty data stays in RAM (call
    /// `flush()` first to keep it). Later calls still work, writing back synchronously. Idempotent.
    public func stop() {
        guard !passThrough else { return }
        let wasRunning = state.withLock { s in
            defer { s.stopped = true }
            return !s.stopped
        }
        guard wasRunning else { return }
        flusherWake.signal()
        prefetchWake.signal()
        threadsDone.wait()
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
        if passThrough { return try inner.read(chunk, offset: offset, into: buffer) }
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
                    copyOut(b, from: s.data(Int(i)), offset, buffer)
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

    /// The miss path: fetches the blocks of `blocks` not in RAM, caches them, and copies out the request.
    private func fill(_ chunk: ChunkID, _ blocks: Range<Int>, _ offset: Int, _ buffer: UnsafeMutableRawBufferPointer) throws(StoreError) {
        let bs = Self.blockSize
        stripes.lockShared(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        if inner.prefersWholeChunks(chunk) {
            let loaded: (data: [UInt8], stored: Bool)
            do throws(StoreError) {
                loaded = try readWhole(chunk, absentReadsZero: false)
            } catch .corrupt {
                return try fillUncached(chunk, blocks, offset, buffer)
            }
            let (data, stored) = loaded
            let all = 0..<blocksPerChunk
            data.withUnsafeBytes { d in
                state.withLock { s in
                    if stored { _ = s.fillAbsent(chunk, all, from: d.baseAddress!, prefetched: false) }
                    for b in blocks {
                        let src = s.index[Key(chunk, b)].map { UnsafeRawPointer(s.data(Int($0))) } ?? d.baseAddress! + b * bs
                        copyOut(b, from: src, offset, buffer)
                    }
                }
            }
            return
        }
        var b = blocks.lowerBound
        while b < blocks.upperBound {
            let from = b
            guard let run = state.withLock({ s in s.serve(chunk, from..<blocks.upperBound, offset, buffer) }) else { return }
            let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: run.count * bs, alignment: 4096)
            defer { scratch.deallocate() }
            let stored = try readBelow(chunk, offset: run.lowerBound * bs, into: scratch)
            state.withLock { s in
                if stored { _ = s.fillAbsent(chunk, run, from: scratch.baseAddress!, prefetched: false) }
                for k in run {
                    let src = s.index[Key(chunk, k)].map { UnsafeRawPointer(s.data(Int($0))) }
                        ?? UnsafeRawPointer(scratch.baseAddress! + (k - run.lowerBound) * bs)
                    copyOut(k, from: src, offset, buffer)
                }
            }
            b = run.upperBound
        }
    }

    /// A whole chunk with a bad block: a read of other blocks must still work, so ask the inner store
    /// (whose checksum layer verifies only what is asked) for just `blocks`, and cache none of it.
    /// Caller holds the stripe shared.
    private func fillUncached(_ chunk: ChunkID, _ blocks: Range<Int>, _ offset: Int, _ buffer: UnsafeMutableRawBufferPointer) throws(StoreError) {
        let bs = Self.blockSize
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: blocks.count * bs, alignment: 4096)
        defer { scratch.deallocate() }
        _ = try readBelow(chunk, offset: blocks.lowerBound * bs, into: scratch)
        state.withLock { s in
            for k in blocks {
                let src = s.index[Key(chunk, k)].map { UnsafeRawPointer(s.data(Int($0))) }
                    ?? UnsafeRawPointer(scratch.baseAddress! + (k - blocks.lowerBound) * bs)
                copyOut(k, from: src, offset, buffer)
            }
        }
    }

    /// Reads from the inner store. A chunk that exists only here (dirty, never written back) reads as
    /// zeros below; returns false then (nothing to cache as clean).
    private func readBelow(_ chunk: ChunkID, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) -> Bool {
        do throws(StoreError) {
            try inner.read(chunk, offset: offset, into: buffer)
            return true
        } catch .missing {
            guard exists(chunk) else { throw .missing(chunk: chunk) }
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            return false
        }
    }

    /// The whole chunk from the inner store, zero-padded to chunkSize; `stored` is false when it is not
    /// there (then zeros, if it exists here or `absentReadsZero`; else `.missing`).
    private func readWhole(_ chunk: ChunkID, absentReadsZero: Bool) throws(StoreError) -> (data: [UInt8], stored: Bool) {
        var data: [UInt8]
        var stored = true
        do throws(StoreError) {
            data = try inner.readAll(chunk)
        } catch .missing {
            guard absentReadsZero || exists(chunk) else { throw .missing(chunk: chunk) }
            data = []
            stored = false
        }
        if data.count < chunkSize { data.append(contentsOf: repeatElement(0, count: chunkSize - data.count)) }
        return (data, stored)
    }

    /// True when the chunk has dirty blocks here (so it exists, whatever the inner store says).
    private func exists(_ chunk: ChunkID) -> Bool {
        state.withLock { ($0.chunks[chunk.rawValue]?.dirty ?? 0) > 0 }
    }

    public func readAll(_ chunk: ChunkID) throws(StoreError) -> [UInt8] {
        if passThrough { return try inner.readAll(chunk) }
        var data = [UInt8](repeating: 0, count: chunkSize)
        try data.withMutableStoreBytes { (p) throws(StoreError) in try read(chunk, offset: 0, into: p) }
        return data
    }

    /// The cache takes pieces: whole-chunk handling is its own business with the inner store.
    public func prefersWholeChunks(_ chunk: ChunkID) -> Bool {
        passThrough ? inner.prefersWholeChunks(chunk) : false
    }

    // MARK: Writes

    fileprivate enum WriteStep { case done, needBase(Int), noSlot(Int) }

    public func write(_ chunk: ChunkID, offset: Int, from buffer: UnsafeRawBufferPointer) throws(StoreError) {
        if passThrough { return try inner.write(chunk, offset: offset, from: buffer) }
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
            let step = state.withLock { s in s.apply(chunk, from..<last, offset, buffer, base: withBase, old, now: now) }
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

    /// The old bytes of one block (zeros where the chunk does not exist yet). Caller holds the stripe.
    private func readBase(_ chunk: ChunkID, block: Int, into base: UnsafeMutableRawBufferPointer) throws(StoreError) {
        let bs = Self.blockSize
        if inner.prefersWholeChunks(chunk) {
            let loaded: (data: [UInt8], stored: Bool)
            do throws(StoreError) {
                loaded = try readWhole(chunk, absentReadsZero: true)
            } catch .corrupt {
                // Another block of the chunk is bad: this one alone (it fails too if it is the bad one).
                return try inner.read(chunk, offset: block * bs, into: base)
            }
            let (data, stored) = loaded
            data.withUnsafeBytes { d in
                if stored {
                    state.withLock { s in _ = s.fillAbsent(chunk, 0..<blocksPerChunk, from: d.baseAddress!, prefetched: false) }
                }
                base.copyMemory(from: UnsafeRawBufferPointer(rebasing: d[block * bs..<(block + 1) * bs]))
            }
            return
        }
        do throws(StoreError) {
            try inner.read(chunk, offset: block * bs, into: base)
        } catch .missing {
            base.initializeMemory(as: UInt8.self, repeating: 0)
        }
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

    // MARK: Write-back

    fileprivate struct Taken {
        var block: Int
        var slot: Int
        var version: UInt32
    }

    /// Writes back the chunk that became dirty first; false when nothing is dirty.
    private func writeBackOldest() throws(StoreError) -> Bool {
        guard let c = state.withLock({ $0.oldestDirty()?.chunk }) else { return false }
        try writeBack(ChunkID(c))
        return true
    }

    private func writeBack(_ chunk: ChunkID) throws(StoreError) {
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        try writeBackLocked(chunk)
    }

    /// Writes the chunk's dirty blocks to the inner store and marks those still unchanged clean. Caller
    /// holds the chunk's stripe exclusively. The blocks are copied out under the state lock (writers may
    /// change them during the I/O: they then stay dirty).
    private func writeBackLocked(_ chunk: ChunkID) throws(StoreError) {
        try writeBackData(chunk)
        try applyPendingLabel(chunk)
    }

    /// Sets a label that waited for its chunk's first write-back. Caller holds the stripe exclusively.
    private func applyPendingLabel(_ chunk: ChunkID) throws(StoreError) {
        guard let label = state.withLock({ $0.pendingLabels[chunk] }) else { return }
        try inner.setLabel(chunk, label)
        state.withLock { s in if s.pendingLabels[chunk] == label { s.pendingLabels[chunk] = nil } }
    }

    private func writeBackData(_ chunk: ChunkID) throws(StoreError) {
        guard exists(chunk) else { return }
        let bs = Self.blockSize
        var whole = inner.prefersWholeChunks(chunk)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        var taken: [Taken] = []
        var bytes = 0
        do throws(StoreError) {
            if whole {
                var below: [UInt8]?
                while !state.withLock({ s in s.snapshot(chunk, into: buffer, whole: true, below: below, &taken) }) {
                    do throws(StoreError) {
                        below = try readWhole(chunk, absentReadsZero: true).data
                    } catch .corrupt {
                        // A bad block below: the checksum layer's piecewise writes keep it marked bad
                        // (or repair it when a dirty block covers it) instead of one blind replace.
                        whole = false
                        break
                    }
                }
            }
            if whole {
                guard !taken.isEmpty else { return }
                var blocks = blocksPerChunk
                while blocks > 0 && isAllZero(UnsafeRawBufferPointer(rebasing: buffer[(blocks - 1) * bs..<blocks * bs])) {
                    blocks -= 1
                }
                bytes = blocks * bs
                try inner.replace(chunk, with: UnsafeRawBufferPointer(rebasing: buffer[0..<bytes]))
            } else {
                _ = state.withLock { s in s.snapshot(chunk, into: buffer, whole: false, below: nil, &taken) }
                var r = 0
                while r < taken.count {
                    var e = r + 1
                    while e < taken.count && taken[e].block == taken[e - 1].block + 1 { e += 1 }
                    let lo = taken[r].block * bs
                    let hi = (taken[e - 1].block + 1) * bs
                    try inner.write(chunk, offset: lo, from: UnsafeRawBufferPointer(rebasing: buffer[lo..<hi]))
                    bytes += hi - lo
                    r = e
                }
            }
        } catch {
            state.withLock { $0.stats.writeBackErrors += 1 }
            throw error
        }
        let now = Self.now()
        state.withLock { s in s.finishWriteBack(chunk, taken, bytes: bytes, now: now) }
    }

    // MARK: Zero, replace, delete

    public func zero(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        if passThrough { return try inner.zero(chunk, offset: offset, length: length) }
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
        if passThrough { return try inner.replace(chunk, with: buffer) }
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
        if passThrough { return try inner.markUnreadable(chunk, offset: offset, length: length) }
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
        if passThrough { return try inner.delete(chunk) }
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
        if passThrough { return try inner.flush() }
        let dirty = state.withLock { s in
            Set(s.chunks.compactMap { $0.value.dirty > 0 ? ChunkID($0.key) : nil }).union(s.pendingLabels.keys)
        }
        var failure = writeBack(Array(dirty))
        do { try inner.flush() } catch { failure = failure ?? error }
        if let failure { throw failure }
    }

    public func flush(chunks: Set<ChunkID>) throws(StoreError) {
        if passThrough { return try inner.flush(chunks: chunks) }
        var failure = writeBack(Array(chunks))
        do { try inner.flush(chunks: chunks) } catch { failure = failure ?? error }
        if let failure { throw failure }
    }

    /// Writes back each chunk (those with nothing dirty cost a lookup); the first error, after trying all.
    private func writeBack(_ chunks: [ChunkID]) -> StoreError? {
        var failure: StoreError?
        for c in chunks {
            do { try writeBack(c) } catch { failure = failure ?? error }
        }
        return failure
    }

    // MARK: Pass-through (after writing back the chunk where the inner store must see it)

    public func usage() throws(StoreError) -> StoreUsage { try inner.usage() }

    /// The inner store's chunks and those that exist only here so far.
    public func allChunks() throws(StoreError) -> [ChunkID] {
        if passThrough { return try inner.allChunks() }
        let onlyHere = state.withLock { s in s.chunks.compactMap { $0.value.dirty > 0 ? ChunkID($0.key) : nil } }
        return Set(try inner.allChunks()).union(onlyHere).sorted()
    }

    /// A chunk that exists only here so far (setLabel follows its first write) keeps its label here
    /// until its first write-back, which sets it below right after the data: a new chunk costs one
    /// write-back, not a write-through. A flush that covers the chunk makes both durable.
    public func setLabel(_ chunk: ChunkID, _ label: ChunkLabel) throws(StoreError) {
        if passThrough { return try inner.setLabel(chunk, label) }
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        let deferred = state.withLock { s in
            guard (s.chunks[chunk.rawValue]?.dirty ?? 0) > 0 else { return false }
            s.pendingLabels[chunk] = label
            return true
        }
        if !deferred { try inner.setLabel(chunk, label) }
    }

    public func label(of chunk: ChunkID) throws(StoreError) -> ChunkLabel? {
        if passThrough { return try inner.label(of: chunk) }
        if let pending = state.withLock({ $0.pendingLabels[chunk] }) { return pending }
        try writeBack(chunk)
        return try inner.label(of: chunk)
    }

    public func check(_ chunk: ChunkID) throws(StoreError) -> ChunkCheck {
        if !passThrough { try writeBack(chunk) }
        return try inner.check(chunk)
    }

    // MARK: Read-ahead

    private func schedulePrefetch(_ chunk: ChunkID, _ blocks: Range<Int>) {
        let queued = state.withLock { s in
            guard !s.stopped, s.prefetches.count < 64 else { return false }
            s.prefetches.append(Prefetch(chunk: chunk, blocks: blocks))
            return true
        }
        if queued { prefetchWake.signal() }
    }

    private func runPrefetches() {
        while let p = state.withLock({ s in s.stopped || s.prefetches.isEmpty ? nil : s.prefetches.removeFirst() }) {
            prefetch(p.chunk, p.blocks)
        }
    }

    /// Brings the missing blocks of `blocks` into `small`, marked as read-ahead.
    private func prefetch(_ chunk: ChunkID, _ blocks: Range<Int>) {
        guard !inner.prefersWholeChunks(chunk) else { return }
        let bs = Self.blockSize
        stripes.lockShared(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        var b = blocks.lowerBound
        while b < blocks.upperBound {
            let from = b
            guard let run = state.withLock({ s in s.serve(chunk, from..<blocks.upperBound, 0, nil) }) else { return }
            let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: run.count * bs, alignment: 4096)
            defer { scratch.deallocate() }
            do throws(StoreError) {
                try inner.read(chunk, offset: run.lowerBound * bs, into: scratch)
            } catch .missing {
                return  // exists only here so far, or deleted: nothing to prefetch
            } catch {
                Log.error("cache: read-ahead of \(chunk) failed: \(error)")
                return
            }
            state.withLock { s in
                s.stats.readAheadBlocks += UInt64(s.fillAbsent(chunk, run, from: scratch.baseAddress!, prefetched: true))
            }
            b = run.upperBound
        }
    }

    // MARK: Background threads

    private func startThreads() {
        let age = Double(ageNanos) / 4
        let interval = DispatchTimeInterval.nanoseconds(Int(min(max(age, 10e6), 1e9)))
        spawn(flusherWake, every: interval) { $0.backgroundWriteBack() }
        spawn(prefetchWake, every: .seconds(1)) { $0.runPrefetches() }
    }

    /// A plain thread that runs `body` when woken or every `interval`, until the layer stops or goes away.
    private func spawn(_ wake: DispatchSemaphore, every interval: DispatchTimeInterval, _ body: @escaping @Sendable (CacheLayer) -> Void) {
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

    /// Writes back chunks dirty for longer than dirtyAge, and oldest chunks while dirty bytes exceed
    /// half the limit. A failure ends the round (the blocks stay dirty; the next flush reports it).
    private func backgroundWriteBack() {
        let bs = Self.blockSize
        let limit = configuration.dirtyLimit
        let now = Self.now()
        state.withLock { $0.flusherKicked = false }
        while true {
            let next = state.withLock { s -> UInt64? in
                guard !s.stopped, let (c, since) = s.oldestDirty() else { return nil }
                return since &+ ageNanos <= now || s.dirtyBlocks * bs * 2 > limit ? c : nil
            }
            guard let next else { return }
            do throws(StoreError) {
                try writeBack(ChunkID(next))
            } catch {
                let log = state.withLock { s in
                    // Once per distinct error and at most every 10 s: a dead store must not flood the log.
                    guard s.lastLogged?.error != error || now > s.lastLogged!.at &+ 10_000_000_000 else { return false }
                    s.lastLogged = (error, now)
                    return true
                }
                if log { Log.error("cache: write-back of \(ChunkID(next)) failed, kept dirty: \(error)") }
                return
            }
        }
    }

    // MARK: Helpers

    private func checkRange(_ offset: Int, _ length: Int) {
        precondition(offset >= 0 && length >= 0 && offset + length <= chunkSize, "range \(offset)+\(length) outside the chunk")
    }

    private static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    private static func nanoseconds(_ d: Duration) -> UInt64 {
        let (seconds, attoseconds) = d.components
        return UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
    }
}

// MARK: - State

extension CacheLayer {
    fileprivate struct Key: Hashable {
        var chunk: UInt64
        var block: UInt32
        init(_ chunk: ChunkID, _ block: Int) {
            self.chunk = chunk.rawValue
            self.block = UInt32(block)
        }
    }

    fileprivate enum Queue: UInt8 { case none = 0, small = 1, main = 2 }

    /// 32 bytes a slot.
    fileprivate struct Slot {
        var key = Key(ChunkID.none, 0)
        /// Bumped by every write into the block; write-back marks it clean only if unchanged.
        var version: UInt32 = 0
        var prev: Int32 = -1
        var next: Int32 = -1
        var queue = Queue.none
        /// Hits since it came in or last went round `main`, saturating at 3.
        var freq: UInt8 = 0
        var dirty = false
        /// Brought in by read-ahead and not read yet.
        var prefetched = false
    }

    /// A doubly linked FIFO through the slot records: newest at `head`, oldest at `tail`.
    fileprivate struct List {
        var head: Int32 = -1
        var tail: Int32 = -1
        var count = 0
    }

    fileprivate struct ChunkInfo {
        /// Blocks of the chunk in RAM, dirty ones included.
        var cached: Int32 = 0
        var dirty: Int32 = 0
        /// When the chunk went from clean to dirty, and its entry in the dirty FIFO (0: none).
        var dirtySince: UInt64 = 0
        var dirtySeq: UInt64 = 0
    }

    fileprivate struct DirtyEntry {
        var chunk: UInt64
        var seq: UInt64
    }

    fileprivate struct Stream {
        /// Where a sequential read would start, and how far read-ahead has been asked for (bytes).
        var next: Int
        var ahead: Int
    }

    fileprivate struct Prefetch {
        var chunk: ChunkID
        var blocks: Range<Int>
    }

    /// The mmap'd block memory. `@unchecked Sendable`: a C memory handle that never moves; its bytes
    /// are read and written only inside the state lock.
    fileprivate struct Slab: @unchecked Sendable {
        let base: UnsafeMutableRawPointer?
    }

    fileprivate struct State {
        let slab: Slab
        let slotCount: Int
        let blocksPerChunk: Int
        let smallTarget: Int
        let ghostCapacity: Int
        /// Grows up to slotCount as slots are first used.
        var slots: [Slot] = []
        var free: [Int32] = []
        var index: [Key: Int32] = [:]
        var chunks: [UInt64: ChunkInfo] = [:]
        /// Indexed by Queue.rawValue (0 unused).
        var lists = [List](repeating: List(), count: 3)
        var ghostRing: [UInt64] = []
        var ghostNext = 0
        var ghost: [UInt64: Int32] = [:]
        /// Chunks in the order they became dirty; entries whose seq no longer matches are stale.
        var dirtyOrder: [DirtyEntry] = []
        var dirtyHead = 0
        var nextSeq: UInt64 = 1
        var dirtyBlocks = 0
        var streams: [UInt64: Stream] = [:]
        var prefetches: [Prefetch] = []
        var flusherKicked = false
        var stopped = false
        var lastLogged: (error: StoreError, at: UInt64)?
        var stats = Stats()
        /// Labels of chunks that exist only here so far: set below right after their first write-back.
        var pendingLabels: [ChunkID: ChunkLabel] = [:]

        init(slab: UnsafeMutableRawPointer?, slotCount: Int, blocksPerChunk: Int) {
            self.slab = Slab(base: slab)
            self.slotCount = slotCount
            self.blocksPerChunk = blocksPerChunk
            smallTarget = max(1, slotCount / 10)
            ghostCapacity = max(1, slotCount - slotCount / 10)
        }

        func data(_ i: Int) -> UnsafeMutableRawPointer { slab.base.unsafelyUnwrapped + i * CacheLayer.blockSize }

        // MARK: Queues

        mutating func push(_ i: Int, _ q: Queue) {
            let l = Int(q.rawValue)
            slots[i].queue = q
            slots[i].prev = -1
            slots[i].next = lists[l].head
            if lists[l].head >= 0 { slots[Int(lists[l].head)].prev = Int32(i) } else { lists[l].tail = Int32(i) }
            lists[l].head = Int32(i)
            lists[l].count += 1
        }

        mutating func unlink(_ i: Int) {
            guard slots[i].queue != .none else { return }
            let l = Int(slots[i].queue.rawValue)
            let (p, n) = (slots[i].prev, slots[i].next)
            if p >= 0 { slots[Int(p)].next = n } else { lists[l].head = n }
            if n >= 0 { slots[Int(n)].prev = p } else { lists[l].tail = p }
            lists[l].count -= 1
            slots[i].queue = .none
            slots[i].prev = -1
            slots[i].next = -1
        }

        /// A hit: frequency up, read-ahead hit counted once.
        mutating func touch(_ i: Int) {
            if slots[i].freq < 3 { slots[i].freq += 1 }
            if slots[i].prefetched {
                slots[i].prefetched = false
                stats.readAheadHits += 1
            }
        }

        // MARK: Slots

        /// A free slot: never used, freed, or taken from a clean block by eviction; nil when every slot
        /// holds a dirty block.
        mutating func takeSlot() -> Int? {
            if let i = free.popLast() { return Int(i) }
            if slots.count < slotCount {
                slots.append(Slot())
                return slots.count - 1
            }
            return evict()
        }

        /// S3-FIFO eviction of one clean block (see the header).
        mutating func evict() -> Int? {
            while true {
                let small = lists[Int(Queue.small.rawValue)]
                let main = lists[Int(Queue.main.rawValue)]
                let i: Int
                if small.count > 0 && (small.count >= smallTarget || main.count == 0) {
                    i = Int(small.tail)
                    unlink(i)
                    if slots[i].freq > 0 {
                        slots[i].freq -= 1
                        push(i, .main)
                        continue
                    }
                    remember(slots[i].key)
                } else if main.count > 0 {
                    i = Int(main.tail)
                    unlink(i)
                    if slots[i].freq > 0 {
                        slots[i].freq -= 1
                        push(i, .main)
                        continue
                    }
                } else {
                    return nil
                }
                forget(i)
                stats.evictions += 1
                return i
            }
        }

        /// Takes a slot for `key` (absent) and indexes it; the caller fills its data, then queues it
        /// (`queueClean`) or marks it dirty.
        mutating func insert(_ key: Key, prefetched: Bool) -> Int? {
            guard let i = takeSlot() else { return nil }
            slots[i] = Slot()
            slots[i].key = key
            slots[i].prefetched = prefetched
            index[key] = Int32(i)
            chunks[key.chunk, default: ChunkInfo()].cached += 1
            return i
        }

        mutating func queueClean(_ i: Int) {
            push(i, slots[i].freq > 0 || ghost[Self.ghostHash(slots[i].key)] != nil ? .main : .small)
        }

        /// Removes block `i` from the index and the counts; the slot itself is the caller's.
        mutating func forget(_ i: Int) {
            unlink(i)
            let key = slots[i].key
            index[key] = nil
            var info = chunks[key.chunk]!
            info.cached -= 1
            if slots[i].dirty {
                slots[i].dirty = false
                dirtyBlocks -= 1
                info.dirty -= 1
                if info.dirty == 0 { info.dirtySeq = 0 }
            }
            slots[i].prefetched = false
            chunks[key.chunk] = info.cached == 0 ? nil : info
        }

        /// Forgets block `i` and frees its slot.
        mutating func discard(_ i: Int) {
            forget(i)
            free.append(Int32(i))
        }

        /// Discards the chunk's cached blocks in `blocks` (dirty ones too unless `keepDirty`).
        mutating func drop(_ chunk: ChunkID, _ blocks: Range<Int>, keepDirty: Bool) {
            guard chunks[chunk.rawValue] != nil else { return }
            for b in blocks {
                guard let i = index[Key(chunk, b)], !(keepDirty && slots[Int(i)].dirty) else { continue }
                discard(Int(i))
            }
        }

        /// Caches the absent blocks of `blocks` as clean, from `src` (block `blocks.lowerBound` first).
        /// Returns how many it inserted; stops when no slot is free.
        mutating func fillAbsent(_ chunk: ChunkID, _ blocks: Range<Int>, from src: UnsafeRawPointer, prefetched: Bool) -> Int {
            let bs = CacheLayer.blockSize
            var n = 0
            for b in blocks where index[Key(chunk, b)] == nil {
                guard let i = insert(Key(chunk, b), prefetched: prefetched) else { break }
                data(i).copyMemory(from: src + (b - blocks.lowerBound) * bs, byteCount: bs)
                queueClean(i)
                n += 1
            }
            return n
        }

        /// Copies out the cached blocks of `blocks` from its start (when `buffer` is given) up to the first
        /// missing one; returns the run of missing blocks that follows, or nil when none is missing.
        func serve(_ chunk: ChunkID, _ blocks: Range<Int>, _ offset: Int, _ buffer: UnsafeMutableRawBufferPointer?) -> Range<Int>? {
            var k = blocks.lowerBound
            while k < blocks.upperBound, let i = index[Key(chunk, k)] {
                if let buffer { copyOut(k, from: data(Int(i)), offset, buffer) }
                k += 1
            }
            guard k < blocks.upperBound else { return nil }
            var e = k + 1
            while e < blocks.upperBound && index[Key(chunk, e)] == nil { e += 1 }
            return k..<e
        }

        // MARK: Writes and write-back

        /// Puts the write's blocks from `blocks.lowerBound` on into RAM as dirty. A partly written block
        /// that is not cached needs its old bytes: `base` holds them for block `baseBlock`.
        mutating func apply(
            _ chunk: ChunkID, _ blocks: Range<Int>, _ offset: Int, _ buffer: UnsafeRawBufferPointer,
            base baseBlock: Int, _ base: UnsafeRawPointer?, now: UInt64
        ) -> CacheLayer.WriteStep {
            let bs = CacheLayer.blockSize
            for b in blocks {
                let key = Key(chunk, b)
                let start = b * bs
                let i: Int
                if let found = index[key] {
                    i = Int(found)
                    if slots[i].freq < 3 { slots[i].freq += 1 }
                } else if offset <= start && offset + buffer.count >= start + bs {
                    guard let got = insert(key, prefetched: false) else { return .noSlot(b) }
                    i = got
                } else if b == baseBlock {
                    guard let got = insert(key, prefetched: false) else { return .noSlot(b) }
                    i = got
                    data(i).copyMemory(from: base!, byteCount: bs)
                } else {
                    return .needBase(b)
                }
                let lo = max(offset, start)
                let hi = min(offset + buffer.count, start + bs)
                (data(i) + (lo - start)).copyMemory(from: buffer.baseAddress! + (lo - offset), byteCount: hi - lo)
                markDirty(i, now: now)
            }
            return .done
        }

        mutating func markDirty(_ i: Int, now: UInt64) {
            slots[i].version &+= 1
            slots[i].prefetched = false
            guard !slots[i].dirty else { return }
            unlink(i)
            slots[i].dirty = true
            dirtyBlocks += 1
            let c = slots[i].key.chunk
            chunks[c]!.dirty += 1
            if chunks[c]!.dirty == 1 { enqueueDirty(c, now: now) }
        }

        mutating func markClean(_ i: Int) {
            slots[i].dirty = false
            dirtyBlocks -= 1
            let c = slots[i].key.chunk
            chunks[c]!.dirty -= 1
            if chunks[c]!.dirty == 0 { chunks[c]!.dirtySeq = 0 }
            queueClean(i)
        }

        mutating func enqueueDirty(_ c: UInt64, now: UInt64) {
            if dirtyOrder.count > 64 && dirtyOrder.count > 4 * chunks.count {
                // Mostly stale entries: keep the live ones, in order.
                let live = dirtyOrder[dirtyHead...].filter { chunks[$0.chunk]?.dirtySeq == $0.seq }
                dirtyOrder = Array(live)
                dirtyHead = 0
            }
            chunks[c]!.dirtySince = now
            chunks[c]!.dirtySeq = nextSeq
            dirtyOrder.append(DirtyEntry(chunk: c, seq: nextSeq))
            nextSeq += 1
        }

        /// The chunk that became dirty first (skipping stale entries), and since when.
        mutating func oldestDirty() -> (chunk: UInt64, since: UInt64)? {
            while dirtyHead < dirtyOrder.count {
                let e = dirtyOrder[dirtyHead]
                if let info = chunks[e.chunk], info.dirtySeq == e.seq { return (e.chunk, info.dirtySince) }
                dirtyHead += 1
            }
            dirtyOrder.removeAll(keepingCapacity: true)
            dirtyHead = 0
            return nil
        }

        /// Copies what a write-back sends into `buffer` (laid out as the chunk) and lists the dirty blocks
        /// in `taken`. `whole`: every block, from RAM or else from `below`; false when `below` is needed
        /// but nil.
        func snapshot(_ chunk: ChunkID, into buffer: UnsafeMutableRawBufferPointer, whole: Bool, below: [UInt8]?,
                      _ taken: inout [CacheLayer.Taken]) -> Bool {
            let bs = CacheLayer.blockSize
            taken.removeAll(keepingCapacity: true)
            for b in 0..<blocksPerChunk {
                let dst = buffer.baseAddress! + b * bs
                if let found = index[Key(chunk, b)] {
                    let i = Int(found)
                    if slots[i].dirty { taken.append(CacheLayer.Taken(block: b, slot: i, version: slots[i].version)) }
                    if slots[i].dirty || whole { dst.copyMemory(from: data(i), byteCount: bs) }
                } else if whole {
                    guard let below else { return false }
                    below.withUnsafeBytes { dst.copyMemory(from: $0.baseAddress! + b * bs, byteCount: bs) }
                }
            }
            return true
        }

        /// After a successful write-back: blocks unchanged since `snapshot` become clean; a chunk that
        /// writes dirtied meanwhile goes to the back of the dirty FIFO.
        mutating func finishWriteBack(_ chunk: ChunkID, _ taken: [CacheLayer.Taken], bytes: Int, now: UInt64) {
            for t in taken {
                let s = slots[t.slot]
                if index[Key(chunk, t.block)] == Int32(t.slot) && s.dirty && s.version == t.version { markClean(t.slot) }
            }
            if !taken.isEmpty {
                stats.writeBacks += 1
                stats.writeBackBytes += UInt64(bytes)
            }
            if let info = chunks[chunk.rawValue], info.dirty > 0 { enqueueDirty(chunk.rawValue, now: now) }
        }

        // MARK: Ghost and read-ahead

        static func ghostHash(_ k: Key) -> UInt64 {
            var z = k.chunk ^ (UInt64(k.block) &* 0x9E37_79B9_7F4A_7C15)
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }

        /// Records a key evicted from `small`, overwriting the oldest record once the ring is full.
        mutating func remember(_ k: Key) {
            let h = Self.ghostHash(k)
            if ghostRing.count < ghostCapacity {
                ghost[h] = Int32(ghostRing.count)
                ghostRing.append(h)
                return
            }
            let old = ghostRing[ghostNext]
            if ghost[old] == Int32(ghostNext) { ghost[old] = nil }
            ghostRing[ghostNext] = h
            ghost[h] = Int32(ghostNext)
            ghostNext = (ghostNext + 1) % ghostCapacity
        }

        /// Tracks the read stream of `chunk`; returns the blocks to prefetch when the read is sequential
        /// and less than half a window is prefetched ahead of it.
        mutating func noteRead(_ chunk: UInt64, _ offset: Int, _ end: Int, window: Int, chunkSize: Int) -> Range<Int>? {
            let bs = CacheLayer.blockSize
            guard var st = streams[chunk], st.next == offset else {
                if streams.count >= 4096 { streams.removeAll(keepingCapacity: true) }
                streams[chunk] = Stream(next: end, ahead: end)
                return nil
            }
            st.next = end
            var request: Range<Int>?
            if st.ahead < end + window / 2 {
                let lo = max(st.ahead, end)
                let hi = min(chunkSize, end + window)
                if lo < hi {
                    request = lo / bs..<(hi + bs - 1) / bs
                    st.ahead = hi
                }
            }
            streams[chunk] = st
            return request
        }
    }
}

/// Copies the part of block `block` that lies in the request [offset, offset + buffer.count) from `src`
/// (the block's first byte) into `buffer`.
@inline(__always)
private func copyOut(_ block: Int, from src: UnsafeRawPointer, _ offset: Int, _ buffer: UnsafeMutableRawBufferPointer) {
    let bs = CacheLayer.blockSize
    let start = block * bs
    let lo = max(offset, start)
    let hi = min(offset + buffer.count, start + bs)
    if lo < hi { (buffer.baseAddress! + (lo - offset)).copyMemory(from: src + (lo - start), byteCount: hi - lo) }
}
