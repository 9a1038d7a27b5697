// CacheState — what the cache knows, under one lock (`CacheLayer.state`): the slots and their blocks, the
// index, per-chunk counts, and the stored fields of the queues (CacheQueues), the dirty FIFO
// (CacheWriteBack) and the read-ahead streams (CacheReadAhead), whose logic lives in those files.
//
// - the slab: `capacity / 4096` slots in one anonymous mmap (MAP_NORESERVE: a page becomes memory only
//   when its slot is first used), and per slot a 32-byte record (key, version, queue links, flags);
// - `index` (key → slot) and `chunks` (per chunk: cached and dirty block counts, when it became dirty).
// Invariants: a slot is free, or indexed under its key exactly once; `chunks[c].cached` counts c's
// indexed slots and `dirty` its dirty ones, `dirtyBlocks` all dirty slots; a chunk with no cached block
// has no record. Every method runs under the state lock and does no I/O.

#if canImport(Glibc)
    import Glibc
#endif

extension CacheLayer {
    struct Key: Hashable {
        var chunk: UInt64
        var block: UInt32
        init(_ chunk: ChunkID, _ block: Int) {
            self.chunk = chunk.rawValue
            self.block = UInt32(block)
        }
    }

    /// 32 bytes a slot.
    struct Slot {
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

    struct ChunkInfo {
        /// Blocks of the chunk in RAM, dirty ones included.
        var cached: Int32 = 0
        var dirty: Int32 = 0
        /// When the chunk went from clean to dirty, and its entry in the dirty FIFO (0: none).
        var dirtySince: UInt64 = 0
        var dirtySeq: UInt64 = 0
    }

    /// The mmap'd block memory. `@unchecked Sendable`: a C memory handle that never moves; its bytes
    /// are read and written only inside the state lock.
    struct Slab: @unchecked Sendable {
        let base: UnsafeMutableRawPointer

        /// Maps `bytes` of anonymous memory, reserved only as pages are first touched.
        init(bytes: Int) {
            let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            precondition(
                p != nil && p != UnsafeMutableRawPointer(bitPattern: -1), "cannot map \(bytes) bytes for the cache")
            base = p!
        }
    }

    enum WriteStep { case done, needBase(Int), noSlot(Int) }

    struct State {
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
        /// Chunks handed to the write-back workers and not finished yet (a count per chunk: a flush and
        /// the flusher may both have handed it over).
        var inFlight: [UInt64: Int] = [:]
        var streams: [UInt64: Stream] = [:]
        var prefetches: [Prefetch] = []
        var flusherKicked = false
        var stopped = false
        var lastLogged: (error: StoreError, at: UInt64)?
        var stats = Stats()
        /// Labels of chunks that exist only here so far: set below right after their first write-back.
        var pendingLabels: [ChunkID: ChunkLabel] = [:]

        init(slab: Slab, slotCount: Int, blocksPerChunk: Int) {
            self.slab = slab
            self.slotCount = slotCount
            self.blocksPerChunk = blocksPerChunk
            smallTarget = max(1, slotCount / 10)
            ghostCapacity = max(1, slotCount - slotCount / 10)
        }

        func data(_ i: Int) -> UnsafeMutableRawPointer { slab.base + i * CacheLayer.blockSize }

        /// True when the chunk has dirty blocks here (so it exists, whatever the inner store says).
        func isDirty(_ chunk: ChunkID) -> Bool { (chunks[chunk.rawValue]?.dirty ?? 0) > 0 }

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
        mutating func fillAbsent(_ chunk: ChunkID, _ blocks: Range<Int>, from src: UnsafeRawPointer, prefetched: Bool)
            -> Int
        {
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
        func serve(_ chunk: ChunkID, _ blocks: Range<Int>, _ offset: Int, _ buffer: UnsafeMutableRawBufferPointer?)
            -> Range<Int>?
        {
            var k = blocks.lowerBound
            while k < blocks.upperBound, let i = index[Key(chunk, k)] {
                if let buffer { CacheLayer.copyOut(k, from: data(Int(i)), offset, buffer) }
                k += 1
            }
            guard k < blocks.upperBound else { return nil }
            var e = k + 1
            while e < blocks.upperBound && index[Key(chunk, e)] == nil { e += 1 }
            return k..<e
        }

        /// Copies out every block of `blocks` that lies in the request: from RAM when cached, else from
        /// `fetched` (holding the blocks from `first` on, as read from below).
        func copyOut(
            _ chunk: ChunkID, _ blocks: Range<Int>, fetched: UnsafeRawPointer, first: Int, _ offset: Int,
            _ buffer: UnsafeMutableRawBufferPointer
        ) {
            for b in blocks {
                let src =
                    index[Key(chunk, b)].map { UnsafeRawPointer(data(Int($0))) }
                    ?? fetched + (b - first) * CacheLayer.blockSize
                CacheLayer.copyOut(b, from: src, offset, buffer)
            }
        }

        // MARK: Writes

        /// Puts the write's blocks from `blocks.lowerBound` on into RAM as dirty. A partly written block
        /// that is not cached needs its old bytes: `base` holds them for block `baseBlock`.
        mutating func apply(
            _ chunk: ChunkID, _ blocks: Range<Int>, _ offset: Int, _ buffer: UnsafeRawBufferPointer,
            base baseBlock: Int, _ base: UnsafeRawPointer?, now: UInt64
        ) -> WriteStep {
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
    }

    /// Copies the part of block `block` that lies in the request [offset, offset + buffer.count) from `src`
    /// (the block's first byte) into `buffer`.
    @inline(__always)
    static func copyOut(
        _ block: Int, from src: UnsafeRawPointer, _ offset: Int, _ buffer: UnsafeMutableRawBufferPointer
    ) {
        let bs = blockSize
        let start = block * bs
        let lo = max(offset, start)
        let hi = min(offset + buffer.count, start + bs)
        if lo < hi { (buffer.baseAddress! + (lo - offset)).copyMemory(from: src + (lo - start), byteCount: hi - lo) }
    }
}
