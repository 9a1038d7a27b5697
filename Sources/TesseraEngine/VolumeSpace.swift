// Volume space — discard (punch hole, zero range), extend and resize, and SEEK_DATA / SEEK_HOLE over the
// map, the retained versions and a clone's parent. The invariants and lock order are Volume.swift's.
import Foundation
import Synchronization
import TesseraCatalog
import TesseraCore

extension Volume {
    // MARK: Discard, resize

    /// Makes `[offset, offset+length)` read as zeros and frees every whole chunk inside it
    /// (punch hole, zero range, discard). Does not change the size.
    public func discard(at offset: UInt64, length: UInt64) throws(StoreError) {
        let size = self.size
        guard offset < size, length > 0 else { return }
        try zeroRange(offset, min(size, offset + length))
        state.withLock { $0.metaDirty = true }
    }

    func zeroRange(_ offset: UInt64, _ end: UInt64) throws(StoreError) {
        let cs = UInt64(chunkSize)
        var pos = offset
        while pos < end {
            let index = pos / cs
            let inChunk = Int(pos % cs)
            let n = Int(min(cs - pos % cs, end - pos))
            if n == chunkSize {
                // Whole chunks: only visit slots that hold something (never walk 64 TiB slot by slot).
                let wholeEnd = end / cs
                try dropWhole(from: index, to: wholeEnd)
                pos = wholeEnd * cs
                continue
            }
            stripes.lockExclusive(index)
            defer { stripes.unlock(index) }
            try foldIfPartial(index)
            let mine = state.withLock { s -> ChunkID? in
                guard let e = s.map.entry(index), e.chunk.isReal, !isShared(e, s) else { return nil }
                return e.chunk
            }
            if let mine {  // our own chunk: punch the range in place
                try io.zero(mine, offset: inChunk, length: n)
                touch(mine)
                pos += UInt64(n)
                continue
            }
            try rewrite(index, covering: inChunk..<inChunk + n) { buffer, base throws(StoreError) in
                if base.isNone { return .unchanged }
                guard let buffer else { return .needsBase }
                UnsafeMutableRawBufferPointer(rebasing: buffer[inChunk..<inChunk + n]).initializeMemory(
                    as: UInt8.self, repeating: 0)
                return .whole
            }
            pos += UInt64(n)
        }
    }

    /// Empties every slot in `first..<end` that shows something (own entry or the parent's data).
    private func dropWhole(from first: UInt64, to end: UInt64) throws(StoreError) {
        guard first < end else { return }
        var candidates = Set(state.withLock { $0.map.entries(in: first..<end).map(\.index) })
        if let parent {
            let limit = min(end, state.withLock { $0.parentLimit })
            var i = first
            while i < limit, let next = parent.nextData(from: i, below: limit, at: parentEpoch) {
                candidates.insert(next)
                i = next + 1
            }
        }
        for index in candidates.sorted() {
            stripes.lockExclusive(index)
            defer { stripes.unlock(index) }
            try rewrite(index) { _, base throws(StoreError) in base.isNone ? .unchanged : .zeros }
            // A tombstone in an otherwise empty slot stays (it hides the parent); none without a parent.
        }
    }

    /// Grows the volume to at least `newEnd` (fallocate without KEEP_SIZE). Thin: allocates nothing.
    public func extend(to newEnd: UInt64) {
        state.withLock { s in
            if newEnd > UInt64(s.record.size) {
                s.record.size = Int64(newEnd)
                s.metaDirty = true
            }
        }
    }

    /// Sets the size. Shrinking zeroes the tail of the last chunk and frees every chunk past the end
    /// before the new size shows; if that fails, the size is unchanged.
    public func resize(to newSize: UInt64) throws(StoreError) {
        let old = size
        if newSize < old {
            let cs = UInt64(chunkSize)
            let firstGone = (newSize + cs - 1) / cs
            if newSize % cs != 0 { try zeroRange(newSize, min(old, firstGone * cs)) }
            if parent != nil {
                // A clone hides its parent's data past the end with tombstones born now, so growing
                // again reads zeros while its older snapshots still see what was there.
                try dropWhole(from: firstGone, to: Engine.maxVolumeSize / cs + 1)
            } else {
                let mapped = state.withLock { $0.map.entries(in: firstGone..<UInt64.max) }
                for (index, _) in mapped {
                    stripes.lockExclusive(index)
                    defer { stripes.unlock(index) }
                    try foldIfPartial(index)
                    setLive(index, nil)
                }
            }
        }
        state.withLock { s in
            s.record.size = Int64(newSize)
            s.record.mtime = Self.now()
            s.metaDirty = true
        }
    }

    // MARK: Seeking

    /// Bytes of chunks with data in the live image: its own chunks, plus for a clone the parent's it
    /// still reads through (what `st_blocks` and `referenced` report).
    public var referencedBytes: UInt64 {
        guard parent != nil else { return allocatedBytes }
        let cs = UInt64(chunkSize)
        let chunks = (size + cs - 1) / cs
        var n: UInt64 = 0
        var i: UInt64 = 0
        while let next = nextData(from: i, below: chunks) {
            n += 1
            i = next + 1
        }
        return n * cs
    }

    /// Bytes of chunks with data in the image at `epoch` of size `viewSize` (a snapshot's st_blocks).
    public func allocatedBytes(at epoch: UInt64, viewSize: UInt64) -> UInt64 {
        let cs = UInt64(chunkSize)
        let chunks = (viewSize + cs - 1) / cs
        var n: UInt64 = 0
        var i: UInt64 = 0
        while let next = nextData(from: i, below: chunks, at: epoch) {
            n += 1
            i = next + 1
        }
        return n * cs
    }

    /// The first index in `from..<limit` whose content at `epoch` is not all-zero-by-absence, or nil.
    func nextData(from start: UInt64, below limit: UInt64, at epoch: UInt64? = nil) -> UInt64? {
        let (retainedKeys, parentLimit) = state.withLock { s in
            (epoch == nil ? [] : s.retained.keys.filter { $0 >= start && $0 < limit }.sorted(), s.parentLimit)
        }
        var i = start
        while i < limit {
            let a = state.withLock { $0.map.nextMapped(from: i, below: limit) } ?? limit
            let b = retainedKeys.first { $0 >= i } ?? limit
            var c = limit
            if let parent, i < parentLimit {
                c = parent.nextData(from: i, below: min(limit, parentLimit), at: parentEpoch) ?? limit
            }
            let m = min(a, b, c)
            if m >= limit { return nil }
            if !resolve(m, at: epoch).isNone { return m }
            i = m + 1
        }
        return nil
    }

    /// SEEK_DATA (`data: true`) or SEEK_HOLE from `offset` of the live volume, or of its image at
    /// `epoch` whose size was `viewSize`. nil means ENXIO. Chunk-granular: a hole is never reported
    /// where data is.
    public func seek(from offset: UInt64, data: Bool, epoch: UInt64?, viewSize: UInt64?) -> UInt64? {
        let size = viewSize ?? self.size
        guard offset < size else { return nil }
        let cs = UInt64(chunkSize)
        let chunks = (size + cs - 1) / cs
        let index = offset / cs
        if data {
            if !resolve(index, at: epoch).isNone { return offset }
            return nextData(from: index + 1, below: chunks, at: epoch).map { $0 * cs }
        }
        if resolve(index, at: epoch).isNone { return offset }
        if parent == nil && epoch == nil {
            let next = state.withLock { $0.map.nextUnmapped(from: index + 1, below: chunks) }
            return min(size, next * cs)
        }
        var i = index + 1
        while i < chunks && !resolve(i, at: epoch).isNone { i += 1 }
        return min(size, i * cs)
    }
}
