// Volume's sub-chunk copy-on-write: how a partial chunk (PartialChunks.swift) is started, written,
// read and folded.
//
// Started: the first write smaller than a chunk to a slot whose chunk a snapshot holds (or that falls
// through to a clone's parent) writes the blocks it touches — edges of a block it covers only in part
// come from the base — into a fresh, unlabelled chunk, and the slot moves to it; the base stays where
// the hold keeps it (retained) or in the parent. Nothing is copied.
// Written: blocks it already owns in place; others as at the start. Read: owned blocks from it, the
// rest from the base, in runs.
// Folded: the missing blocks are copied from the base (a block that fails its checksum there is carried
// as unreadable, never turned into zeros), then the chunk is labelled and stops being partial. A flush
// folds every partial chunk its commit points at, so the catalog never sees one; the periodic flush
// leaves a volume alone while its partial chunks are younger than `Volume.foldDelay`, fsync folds at
// once. Every path that drops or shares a partial chunk folds it first.
// Base content never changes under a partial chunk: a hold (or the clone's hold on its parent) keeps
// it, and held chunks are never written in place.
import TesseraCore

extension Volume {
    /// The chunk a sub-chunk copy-on-write of slot `index` would fall through to, or nil when the slot
    /// is written in place, holds nothing, or is shared otherwise (another map: a whole copy then).
    /// Caller holds the stripe exclusively.
    func copyOnWriteBase(_ index: UInt64) -> ChunkID? {
        let (entry, held, falls) = state.withLock { s in
            let e = s.map.entry(index)
            let held = e.map { e in s.maxHold.map { e.birth <= $0 } ?? false } ?? false
            return (e, held, parent != nil && index < s.parentLimit)
        }
        if let entry { return entry.chunk.isReal && held ? entry.chunk : nil }
        guard falls, let parent else { return nil }
        let base = parent.resolve(index, at: parentEpoch)
        return base.isReal ? base : nil
    }

    /// Writes `piece` at `offset` of slot `index` into a fresh partial chunk over `base`.
    func startPartial(_ index: UInt64, over base: ChunkID, offset: Int, from piece: UnsafeRawBufferPointer)
        throws(StoreError)
    {
        let blocks = blockRange(offset, piece.count)
        let fresh = try withBlockAligned(blocks, offset, piece, source: { _ in base }) {
            lo, content throws(StoreError) in
            try place(index, lo, content, label: false)
        }
        var owned = BlockSet(count: chunkSize / Self.blockSize)
        owned.insert(blocks)
        partials.set(index, PartialChunk(chunk: fresh, base: base, owned: owned, since: .now))
    }

    /// Writes `piece` at `offset` of the partial chunk of slot `index`. Caller holds the stripe
    /// exclusively.
    func writePartial(_ index: UInt64, _ partial: PartialChunk, offset: Int, from piece: UnsafeRawBufferPointer)
        throws(StoreError)
    {
        let blocks = blockRange(offset, piece.count)
        if partial.owned.containsAll(blocks) {
            try io.write(partial.chunk, offset: offset, from: piece)
        } else {
            try withBlockAligned(
                blocks, offset, piece, source: { partial.owned.contains($0) ? partial.chunk : partial.base }
            ) {
                lo, content throws(StoreError) in try io.write(partial.chunk, offset: lo, from: content)
            }
            partials.markOwned(index, blocks)
        }
        touch(partial.chunk)
    }

    /// Reads `piece.count` bytes at `offset` of a partial chunk: owned runs from it, the rest from its base.
    func readPartial(_ partial: PartialChunk, offset: Int, into piece: UnsafeMutableRawBufferPointer) throws(StoreError)
    {
        let bs = Self.blockSize
        let end = offset + piece.count
        var at = offset
        while at < end {
            let own = partial.owned.contains(at / bs)
            var runEnd = (at / bs + 1) * bs
            while runEnd < end && partial.owned.contains(runEnd / bs) == own { runEnd += bs }
            runEnd = min(runEnd, end)
            let part = UnsafeMutableRawBufferPointer(rebasing: piece[(at - offset)..<(runEnd - offset)])
            try io.read(own ? partial.chunk : partial.base, offset: at, into: part)
            at = runEnd
        }
    }

    /// Makes the partial chunk of slot `index` (if any) whole and labelled. Caller holds the stripe
    /// exclusively (or every stripe). A failure leaves it partial; the blocks copied so far stay copied.
    func foldIfPartial(_ index: UInt64) throws(StoreError) {
        guard !partials.isEmpty, let p = partials[index] else { return }
        let bs = Self.blockSize
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: bs)
        defer { buffer.deallocate() }
        for run in p.owned.missingRuns {
            let lo = run.lowerBound * bs
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<run.count * bs])
            var unreadable: [Int] = []
            do throws(StoreError) {
                try io.read(p.base, offset: lo, into: part)
            } catch .corrupt {
                for at in stride(from: 0, to: part.count, by: bs) {
                    let block = UnsafeMutableRawBufferPointer(rebasing: part[at..<at + bs])
                    do throws(StoreError) {
                        try io.read(p.base, offset: lo + at, into: block)
                    } catch .corrupt {
                        block.initializeMemory(as: UInt8.self, repeating: 0)
                        unreadable.append(lo + at)
                    }
                }
            }
            try io.write(p.chunk, offset: lo, from: UnsafeRawBufferPointer(part))
            for bad in unreadable { try io.markUnreadable(p.chunk, offset: bad, length: bs) }
            partials.markOwned(index, run)
        }
        let birth = state.withLock { $0.map.entry(index)?.birth } ?? epoch
        try io.setLabel(p.chunk, ChunkLabel(volume: id, index: index, epoch: birth))
        touch(p.chunk)
        partials.remove(index)
    }

    /// Folds every partial chunk (`quiesced`: the caller holds every stripe).
    func foldAll(quiesced: Bool) throws(StoreError) {
        for index in partials.indexes {
            if !quiesced { stripes.lockExclusive(index) }
            defer { if !quiesced { stripes.unlock(index) } }
            try foldIfPartial(index)
        }
    }

    /// True while every partial chunk is younger than `foldDelay`: the periodic flush waits.
    var defersFolding: Bool { partials.oldest.map { ContinuousClock.now - $0 < Self.foldDelay } ?? false }

    /// Bytes of partial chunks not written yet (what folding still has to copy).
    public var unfoldedBytes: UInt64 {
        partials.indexes.reduce(0) { sum, index in
            sum + UInt64(partials[index].map { $0.owned.missingRuns.reduce(0) { $0 + $1.count } } ?? 0)
                * UInt64(Self.blockSize)
        }
    }

    // MARK: Helpers

    /// The blocks `count` bytes at `offset` touch.
    private func blockRange(_ offset: Int, _ count: Int) -> Range<Int> {
        offset / Self.blockSize..<(offset + count + Self.blockSize - 1) / Self.blockSize
    }

    /// Calls `body` with the block-aligned content of `blocks` that `piece` at `offset` makes: the piece
    /// itself when it is aligned, else a buffer whose partly covered edge blocks are read first from
    /// `source(block)`.
    private func withBlockAligned<T>(
        _ blocks: Range<Int>, _ offset: Int, _ piece: UnsafeRawBufferPointer, source: (Int) -> ChunkID,
        _ body: (Int, UnsafeRawBufferPointer) throws(StoreError) -> T
    ) throws(StoreError) -> T {
        let bs = Self.blockSize
        let lo = blocks.lowerBound * bs
        let hi = blocks.upperBound * bs
        if lo == offset && hi == offset + piece.count { return try body(lo, piece) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: hi - lo, alignment: bs)
        defer { buffer.deallocate() }
        for block in Set([blocks.lowerBound, blocks.upperBound - 1]) {
            let at = block * bs
            if at >= offset && at + bs <= offset + piece.count { continue }  // covered whole
            try io.read(
                source(block), offset: at,
                into: UnsafeMutableRawBufferPointer(rebasing: buffer[(at - lo)..<(at - lo + bs)]))
        }
        UnsafeMutableRawBufferPointer(rebasing: buffer[(offset - lo)..<(offset - lo + piece.count)]).copyMemory(
            from: piece)
        return try body(lo, UnsafeRawBufferPointer(buffer))
    }
}
