// CacheFills — how the cache brings blocks in from the inner store: read misses, and the old bytes under a
// write that covers part of a block that is not cached.
//
// A fill holds the chunk's stripe shared from the inner read to the insert, and inserts only blocks that
// are absent (`fillAbsent`): a write-back (stripe exclusive) cannot change the bytes below meanwhile, and
// a block written in RAM meanwhile keeps its newer bytes. A chunk that exists only here (dirty, never
// written back) reads as zeros below and caches nothing as clean.
// Whole-chunk inner stores: a miss fills the whole chunk with one readAll. A chunk with a bad block
// (`.corrupt` from readAll) is read again for just the blocks asked, uncached, so that the other blocks
// stay readable.

extension CacheLayer {
    /// The miss path: fetches the blocks of `blocks` not in RAM, caches them, and copies out the request.
    func fill(_ chunk: ChunkID, _ blocks: Range<Int>, _ offset: Int, _ buffer: UnsafeMutableRawBufferPointer)
        throws(StoreError)
    {
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
            data.withUnsafeBytes { d in
                state.withLock { s in
                    if stored { _ = s.fillAbsent(chunk, 0..<blocksPerChunk, from: d.baseAddress!, prefetched: false) }
                    s.copyOut(chunk, blocks, fetched: d.baseAddress!, first: 0, offset, buffer)
                }
            }
            return
        }
        var b = blocks.lowerBound
        while b < blocks.upperBound {
            let from = b
            guard let run = state.withLock({ s in s.serve(chunk, from..<blocks.upperBound, offset, buffer) }) else {
                return
            }
            let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: run.count * bs, alignment: 4096)
            defer { scratch.deallocate() }
            let stored = try readBelow(chunk, offset: run.lowerBound * bs, into: scratch)
            state.withLock { s in
                if stored { _ = s.fillAbsent(chunk, run, from: scratch.baseAddress!, prefetched: false) }
                s.copyOut(chunk, run, fetched: scratch.baseAddress!, first: run.lowerBound, offset, buffer)
            }
            b = run.upperBound
        }
    }

    /// A whole chunk with a bad block: a read of other blocks must still work, so ask the inner store
    /// (whose checksum layer verifies only what is asked) for just `blocks`, and cache none of it.
    /// Caller holds the stripe shared.
    private func fillUncached(
        _ chunk: ChunkID, _ blocks: Range<Int>, _ offset: Int, _ buffer: UnsafeMutableRawBufferPointer
    ) throws(StoreError) {
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: blocks.count * Self.blockSize, alignment: 4096)
        defer { scratch.deallocate() }
        _ = try readBelow(chunk, offset: blocks.lowerBound * Self.blockSize, into: scratch)
        state.withLock { s in
            s.copyOut(chunk, blocks, fetched: scratch.baseAddress!, first: blocks.lowerBound, offset, buffer)
        }
    }

    /// Reads from the inner store. A chunk that exists only here (dirty, never written back) reads as
    /// zeros below; returns false then (nothing to cache as clean).
    private func readBelow(_ chunk: ChunkID, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError)
        -> Bool
    {
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
    func readWhole(_ chunk: ChunkID, absentReadsZero: Bool) throws(StoreError) -> (data: [UInt8], stored: Bool) {
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

    /// The old bytes of one block (zeros where the chunk does not exist yet). Caller holds the stripe.
    func readBase(_ chunk: ChunkID, block: Int, into base: UnsafeMutableRawBufferPointer) throws(StoreError) {
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
                    state.withLock { s in
                        _ = s.fillAbsent(chunk, 0..<blocksPerChunk, from: d.baseAddress!, prefetched: false)
                    }
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
}
