// CacheWriteBack — how the cache's dirty blocks reach the inner store.
//
// One chunk (`writeBack(_ chunk:)`): under the chunk's stripe held exclusively, so a write-back never
// lands after a later zero or delete, never races a fill, and two write-backs of one chunk never overlap.
// The dirty blocks are copied out under the state lock with their versions (`snapshot`); writers may
// change them during the I/O, and such a block stays dirty: `finishWriteBack` marks clean only blocks
// whose version did not move, and sends a chunk that still has dirty blocks to the back of the dirty
// FIFO, to be written again. A failed write-back leaves its blocks dirty and throws: nothing is dropped,
// and the next flush that covers the chunk tries again and reports its own outcome. A label that waited
// for the chunk's first write-back is set right after the data.
// Whole-chunk inner stores (`prefersWholeChunks`: object stores, compression): one replace of the whole
// chunk (blocks not cached come from readAll). Others: one write per run of dirty blocks.
// Many chunks (`writeBack(_ chunks:)`, for flush, the flusher and a writer past the dirty limit): chunks
// of whole-chunk stores go to `workers`, a pool of `writeBackConcurrency` threads, so at most that many of
// those write-backs are in flight at once (an object store answers each PUT after a round trip: one at a
// time wastes its bandwidth); the others are written on the calling thread meanwhile (a local store
// gains nothing from a thread hop). The call waits for all and returns the first failure after trying
// all. zero, markUnreadable, label and check write back their one chunk on the calling thread, under the
// stripe they hold.
// The dirty FIFO: chunks in the order they became dirty; an entry whose seq no longer matches its chunk's
// is stale and skipped. The flusher and throttled writers take the oldest chunks not already handed to
// the workers (`inFlight`); a throttled writer that finds every dirty chunk in flight takes the oldest
// anyway, which waits for it (the stripe) and so for progress.
// The flusher thread, woken every dirtyAge/4 (10 ms … 1 s) and when dirty bytes pass half the limit,
// writes back the chunks dirty for longer than dirtyAge, and the oldest while dirty bytes exceed half
// the limit, `writeBackConcurrency` at a time; a failure ends its round (logged at most every 10 s).
// Lock order: a caller of `writeBack(_ chunks:)` holds no stripe (the workers take them).
import Dispatch

extension CacheLayer {
    struct Taken {
        var block: Int
        var slot: Int
        var version: UInt32
    }

    struct DirtyEntry {
        var chunk: UInt64
        var seq: UInt64
    }

    /// A chunk whose write-back failed, and the error.
    typealias Failure = (chunk: ChunkID, error: StoreError)

    /// For a writer past the dirty limit or short of a free slot: writes back the oldest dirty chunk or,
    /// when it lives on a whole-chunk store, the oldest such chunks up to `writeBackConcurrency` at once.
    /// False when nothing is dirty.
    func writeBackOldest() throws(StoreError) -> Bool {
        let oldest = state.withLock { $0.oldestDirty(configuration.writeBackConcurrency, orInFlight: true) }
        guard let first = oldest.first else { return false }
        let batch = inner.prefersWholeChunks(first) ? oldest.filter { inner.prefersWholeChunks($0) } : [first]
        if let failure = writeBack(batch) { throw failure.error }
        return true
    }

    /// Writes back `chunks` (see the header): whole-chunk ones on the workers, the rest here; waits for
    /// all. The caller holds no stripe.
    func writeBack(_ chunks: [ChunkID]) -> Failure? {
        var whole: [ChunkID] = []
        var here: [ChunkID] = []
        for c in chunks {
            if inner.prefersWholeChunks(c) { whole.append(c) } else { here.append(c) }
        }
        let failure = Lock<Failure?>(nil)
        let done = DispatchGroup()
        if !whole.isEmpty {
            state.withLock { s in for c in whole { s.inFlight[c.rawValue, default: 0] += 1 } }
        }
        for chunk in whole {
            done.enter()
            workers.submit { [self] in
                let error = writeBackReporting(chunk)
                state.withLock { s in
                    let left = s.inFlight[chunk.rawValue, default: 1] - 1
                    s.inFlight[chunk.rawValue] = left > 0 ? left : nil
                }
                if let error { failure.withLock { $0 = $0 ?? (chunk: chunk, error: error) } }
                done.leave()
            }
        }
        for chunk in here {
            if let error = writeBackReporting(chunk) { failure.withLock { $0 = $0 ?? (chunk: chunk, error: error) } }
        }
        done.wait()
        return failure.withLock { $0 }
    }

    private func writeBackReporting(_ chunk: ChunkID) -> StoreError? {
        do throws(StoreError) {
            try writeBack(chunk)
            return nil
        } catch {
            return error
        }
    }

    func writeBack(_ chunk: ChunkID) throws(StoreError) {
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        try writeBackLocked(chunk)
    }

    /// Writes the chunk's dirty blocks to the inner store and marks those still unchanged clean, then sets
    /// a waiting label. Caller holds the chunk's stripe exclusively.
    func writeBackLocked(_ chunk: ChunkID) throws(StoreError) {
        try writeBackData(chunk)
        try applyPendingLabel(chunk)
    }

    /// Sets a label that waited for its chunk's first write-back. Caller holds the stripe exclusively.
    func applyPendingLabel(_ chunk: ChunkID) throws(StoreError) {
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
                while blocks > 0 && isAllZero(UnsafeRawBufferPointer(rebasing: buffer[(blocks - 1) * bs..<blocks * bs]))
                {
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

    /// The flusher's round (see the header).
    func backgroundWriteBack() {
        let bs = Self.blockSize
        let limit = configuration.dirtyLimit
        let now = Self.now()
        let aged = now > ageNanos ? now - ageNanos : 0
        state.withLock { $0.flusherKicked = false }
        while true {
            let due = state.withLock { s -> [ChunkID] in
                guard !s.stopped else { return [] }
                let dueBy = s.dirtyBlocks * bs * 2 > limit ? UInt64.max : aged
                return s.oldestDirty(configuration.writeBackConcurrency, dueBy: dueBy, orInFlight: false)
            }
            guard !due.isEmpty else { return }
            guard let failure = writeBack(due) else { continue }
            let log = state.withLock { s in
                // Once per distinct error and at most every 10 s: a dead store must not flood the log.
                guard s.lastLogged?.error != failure.error || now > s.lastLogged!.at &+ 10_000_000_000 else {
                    return false
                }
                s.lastLogged = (failure.error, now)
                return true
            }
            if log { Log.error("cache: write-back of \(failure.chunk) failed, kept dirty: \(failure.error)") }
            return
        }
    }
}

extension CacheLayer.State {
    mutating func enqueueDirty(_ c: UInt64, now: UInt64) {
        if dirtyOrder.count > 64 && dirtyOrder.count > 4 * chunks.count {
            // Mostly stale entries: keep the live ones, in order.
            let live = dirtyOrder[dirtyHead...].filter { chunks[$0.chunk]?.dirtySeq == $0.seq }
            dirtyOrder = Array(live)
            dirtyHead = 0
        }
        chunks[c]!.dirtySince = now
        chunks[c]!.dirtySeq = nextSeq
        dirtyOrder.append(CacheLayer.DirtyEntry(chunk: c, seq: nextSeq))
        nextSeq += 1
    }

    /// Up to `n` chunks from the front of the dirty FIFO that became dirty at or before `dueBy` and are
    /// not in flight, oldest first. When there are none but some are in flight and `orInFlight`, the
    /// oldest of those alone.
    mutating func oldestDirty(_ n: Int, dueBy: UInt64 = .max, orInFlight: Bool) -> [ChunkID] {
        var picked: [ChunkID] = []
        var busy: ChunkID?
        var k = dirtyHead
        while k < dirtyOrder.count && picked.count < n {
            let e = dirtyOrder[k]
            k += 1
            guard let info = chunks[e.chunk], info.dirtySeq == e.seq else {
                if dirtyHead == k - 1 { dirtyHead = k }  // stale at the front: gone for good
                continue
            }
            guard info.dirtySince <= dueBy else { break }
            if inFlight[e.chunk] != nil {
                busy = busy ?? ChunkID(e.chunk)
            } else {
                picked.append(ChunkID(e.chunk))
            }
        }
        if dirtyHead == dirtyOrder.count {
            dirtyOrder.removeAll(keepingCapacity: true)
            dirtyHead = 0
        }
        if picked.isEmpty, orInFlight, let busy { return [busy] }
        return picked
    }

    /// Copies what a write-back sends into `buffer` (laid out as the chunk) and lists the dirty blocks
    /// in `taken`. `whole`: every block, from RAM or else from `below`; false when `below` is needed
    /// but nil.
    func snapshot(
        _ chunk: ChunkID, into buffer: UnsafeMutableRawBufferPointer, whole: Bool, below: [UInt8]?,
        _ taken: inout [CacheLayer.Taken]
    ) -> Bool {
        let bs = CacheLayer.blockSize
        taken.removeAll(keepingCapacity: true)
        for b in 0..<blocksPerChunk {
            let dst = buffer.baseAddress! + b * bs
            if let found = index[CacheLayer.Key(chunk, b)] {
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
            if index[CacheLayer.Key(chunk, t.block)] == Int32(t.slot) && s.dirty && s.version == t.version {
                markClean(t.slot)
            }
        }
        if !taken.isEmpty {
            stats.writeBacks += 1
            stats.writeBackBytes += UInt64(bytes)
        }
        if let info = chunks[chunk.rawValue], info.dirty > 0 { enqueueDirty(chunk.rawValue, now: now) }
    }
}
