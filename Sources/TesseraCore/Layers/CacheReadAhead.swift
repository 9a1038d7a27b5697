// CacheReadAhead — the cache's prefetch of sequential readers.
//
// A read that starts where the previous read of the same chunk ended is sequential; the next `readAhead`
// bytes are then prefetched by the prefetch worker thread, clipped to the chunk (the physical chunk that
// follows is unknown at this level). Prefetched blocks enter `small`, never replace newer data (only
// absent blocks are filled, under the chunk's stripe held shared) and never evict dirty data (dirty blocks
// are on no queue); a failed prefetch only logs. Off for whole-chunk inner stores: a miss there already
// brings the whole chunk.
// State (in CacheState): `streams` (per chunk: where the next sequential read starts, how far is
// prefetched; cleared wholesale past 4,096 streams) and `prefetches`, the queue of the worker (≤ 64).

extension CacheLayer {
    struct Stream {
        /// Where a sequential read would start, and how far read-ahead has been asked for (bytes).
        var next: Int
        var ahead: Int
    }

    struct Prefetch {
        var chunk: ChunkID
        var blocks: Range<Int>
    }

    func schedulePrefetch(_ chunk: ChunkID, _ blocks: Range<Int>) {
        let queued = state.withLock { s in
            guard !s.stopped, s.prefetches.count < 64 else { return false }
            s.prefetches.append(Prefetch(chunk: chunk, blocks: blocks))
            return true
        }
        if queued { prefetchWake.signal() }
    }

    /// The prefetch worker's round: every queued prefetch.
    func runPrefetches() {
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
                s.stats.readAheadBlocks += UInt64(
                    s.fillAbsent(chunk, run, from: scratch.baseAddress!, prefetched: true))
            }
            b = run.upperBound
        }
    }
}

extension CacheLayer.State {
    /// Tracks the read stream of `chunk`; returns the blocks to prefetch when the read is sequential
    /// and less than half a window is prefetched ahead of it.
    mutating func noteRead(_ chunk: UInt64, _ offset: Int, _ end: Int, window: Int, chunkSize: Int) -> Range<Int>? {
        let bs = CacheLayer.blockSize
        guard var st = streams[chunk], st.next == offset else {
            if streams.count >= 4096 { streams.removeAll(keepingCapacity: true) }
            streams[chunk] = CacheLayer.Stream(next: end, ahead: end)
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
