// Volume writes — a write in place, copy-on-write of a shared chunk (whole, or a partial chunk over the
// old version: VolumePartials.swift), placing new chunks on the pool, and the bookkeeping of what the
// next flush must sync, commit and free. The invariants and lock order are Volume.swift's.
import Foundation
import Synchronization
import TesseraCatalog
import TesseraCore

extension Volume {
    // MARK: Writing

    /// Writes `buffer` at `offset`, growing the volume when the write ends past its size.
    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(StoreError) {
        let end = offset + UInt64(buffer.count)
        writeTime.store(Self.now().bitPattern, ordering: .relaxed)
        writeTimePending.store(true, ordering: .releasing)
        var done = 0
        while done < buffer.count {
            let pos = offset + UInt64(done)
            let index = pos / UInt64(chunkSize)
            let inChunk = Int(pos % UInt64(chunkSize))
            let n = min(chunkSize - inChunk, buffer.count - done)
            do {
                try writePiece(index, inChunk, UnsafeRawBufferPointer(rebasing: buffer[done..<done + n]))
            } catch {
                // A failed write(2) does not extend the file; zero what landed past the end so it can
                // never reappear when the volume grows.
                let size = self.size
                if done > 0 && end > size { try? zeroRange(max(size, offset), end) }
                throw error
            }
            done += n
        }
        // The size grows once the data is in (a reader never sees a new end before its bytes).
        if end > size {
            state.withLock { s in
                if end > UInt64(s.record.size) {
                    s.record.size = Int64(end)
                    s.metaDirty = true
                }
            }
        }
    }

    private func writePiece(_ index: UInt64, _ inChunk: Int, _ piece: UnsafeRawBufferPointer) throws(StoreError) {
        let whole = piece.count == chunkSize
        if !whole || !isAllZero(piece) {
            // Fast path: an unshared chunk of our own, written in place under the shared stripe.
            stripes.lockShared(index)
            let mine = state.withLock { s -> ChunkID? in
                guard let e = s.map.entry(index), e.chunk.isReal, !isShared(e, s) else { return nil }
                return e.chunk
            }
            // A partial chunk is written under the exclusive stripe (its ownership changes).
            if let mine, partials.isEmpty || partials[index] == nil {
                defer { stripes.unlock(index) }
                try io.write(mine, offset: inChunk, from: piece)
                touch(mine)
                return
            }
            stripes.unlock(index)
        }
        stripes.lockExclusive(index)
        defer { stripes.unlock(index) }
        if !whole {
            if let partial = partials[index] {
                try writePartial(index, partial, offset: inChunk, from: piece)
                return
            }
            if let base = copyOnWriteBase(index) {
                try startPartial(index, over: base, offset: inChunk, from: piece)
                return
            }
        }
        try rewrite(index, covering: inChunk..<inChunk + piece.count) { buffer, base throws(StoreError) in
            if let buffer {
                UnsafeMutableRawBufferPointer(rebasing: buffer[inChunk..<inChunk + piece.count]).copyMemory(from: piece)
                return .whole
            }
            return isAllZero(piece)
                ? (base.isNone ? .unchanged : (whole ? .zeros : .needsBase))
                : (whole || base.isNone ? .piece(inChunk, piece) : .needsBase)
        }
    }

    /// How `rewrite` should produce the new content of a chunk.
    enum Rewrite {
        /// Nothing to do (the visible content is already right).
        case unchanged
        /// The chunk becomes all zeros.
        case zeros
        /// New chunk = base with this piece written over it; when base is none, just the piece.
        case piece(Int, UnsafeRawBufferPointer)
        /// Call again with the base content in a chunk-sized buffer to edit.
        case needsBase
        /// The edited buffer is the new content.
        case whole
    }

    /// Changes what `index` holds, within `covering` (bytes of the chunk; nil: all of it). Caller holds
    /// the index's stripe exclusively. An unshared own chunk is edited in place; otherwise a new chunk
    /// is written (copy-on-write) and the slot moves to it.
    /// A base block that fails its checksum: covered whole, it is simply replaced; outside `covering`,
    /// the new version carries it as unreadable (the copy never turns a loss into zeros); touched but
    /// not covered, the change fails with `.corrupt` (the block's other bytes are lost).
    func rewrite(
        _ index: UInt64, covering: Range<Int>? = nil,
        _ plan: (UnsafeMutableRawBufferPointer?, ChunkID) throws(StoreError) -> Rewrite
    ) throws(StoreError) {
        let covering = covering ?? 0..<chunkSize
        try foldIfPartial(index)
        let (entry, shared, falls) = state.withLock { s in
            let e = s.map.entry(index)
            return (e, e.map { isShared($0, s) } ?? false, parent != nil && index < s.parentLimit)
        }
        var base = ChunkID.none
        if let entry {
            base = entry.chunk.isTombstone ? .none : entry.chunk
        } else if let parent, falls {
            base = parent.resolve(index, at: parentEpoch)
        }
        let inPlace = entry.map { $0.chunk.isReal && !shared } ?? false
        var decision = try plan(nil, base)
        var edited: UnsafeMutableRawBufferPointer?
        defer { edited?.deallocate() }
        var unreadable: [Int] = []  // base blocks (byte offsets) the new version carries as lost
        if case .needsBase = decision {
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
            edited = buffer
            if base.isNone {
                buffer.initializeMemory(as: UInt8.self, repeating: 0)
            } else {
                for bad in try readSalvaging(base, into: buffer) {
                    let block = bad..<bad + Self.blockSize
                    if covering.lowerBound <= bad && block.upperBound <= covering.upperBound { continue }
                    if covering.overlaps(block) { throw .corrupt(chunk: base, offset: bad) }
                    unreadable.append(bad)
                }
            }
            decision = try plan(buffer, base)
        }
        switch decision {
        case .unchanged, .needsBase:
            return
        case .zeros:
            setLive(index, falls ? MapEntry(chunk: .tombstone, birth: epoch) : nil)
        case .piece(let offset, let piece):
            if inPlace {
                try io.write(base, offset: offset, from: piece)
                touch(base)
            } else {
                try place(index, offset, piece)
            }
        case .whole:
            let content = UnsafeRawBufferPointer(edited!)
            if inPlace {
                // Only what the plan changed: a bad block elsewhere stays as it is on the store.
                try io.write(
                    base, offset: covering.lowerBound, from: UnsafeRawBufferPointer(rebasing: content[covering]))
                touch(base)
            } else if isAllZero(content) && unreadable.isEmpty {
                setLive(index, falls ? MapEntry(chunk: .tombstone, birth: epoch) : nil)
            } else {
                try place(index, 0, content, unreadable: unreadable)
            }
        }
    }

    /// Checksum block size: the unit in which a chunk can be partly unreadable.
    static let blockSize = 4096

    /// Reads the whole of `chunk`; when it has blocks that fail their checksum, reads it block by block,
    /// leaves zeros for those, and returns their byte offsets (empty when all is well).
    private func readSalvaging(_ chunk: ChunkID, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) -> [Int]
    {
        do throws(StoreError) {
            try io.read(chunk, offset: 0, into: buffer)
            return []
        } catch .corrupt {}
        var bad: [Int] = []
        for offset in stride(from: 0, to: chunkSize, by: Self.blockSize) {
            let block = UnsafeMutableRawBufferPointer(rebasing: buffer[offset..<offset + Self.blockSize])
            do throws(StoreError) {
                try io.read(chunk, offset: offset, into: block)
            } catch .corrupt {
                block.initializeMemory(as: UInt8.self, repeating: 0)
                bad.append(offset)
            }
        }
        return bad
    }

    /// Writes `content` at `offset` of a fresh chunk, labels it, marks the blocks at `unreadable` (byte
    /// offsets) unreadable, then points `index` at it.
    /// A store that answers "no space" is marked full, one that fails as a dead medium does (EIO, EROFS,
    /// a timeout) is marked unreachable by the pool, and the chunk goes to the next one; the client sees
    /// the error only when every store of the pool refused.
    /// A partial chunk (`label` false) is labelled when it is folded.
    @discardableResult
    func place(
        _ index: UInt64, _ offset: Int, _ content: UnsafeRawBufferPointer,
        unreadable: [Int] = [], label: Bool = true
    ) throws(StoreError) -> ChunkID {
        let born = epoch
        var tried: Set<UnitID> = []
        var refusal = StoreError.noSpace
        while true {
            let fresh = try pool.allocate()
            // Back to a unit that said no: the pool is full (or every unit with room is down).
            if tried.contains(fresh.unit) { throw refusal }
            do {
                try io.write(fresh, offset: offset, from: content)  // data first …
                if label { try io.setLabel(fresh, ChunkLabel(volume: id, index: index, epoch: born)) }
                for bad in unreadable { try io.markUnreadable(fresh, offset: bad, length: Self.blockSize) }
                touch(fresh)
                setLive(index, MapEntry(chunk: fresh, birth: born))  // … then the map
                return fresh
            } catch {
                // Never mapped: nothing may keep it. A store that does not answer at all is not asked
                // (it would only time out again); what it may keep is unreferenced, and garbage
                // collection removes it at the next open.
                let outage = StoreHealth.isOutage(error)
                if !StoreHealth.isUnanswered(error) { try? io.delete(fresh) }
                // No room (marked full after the delete, which clears it), or the store is down (the
                // pool has marked it unreachable): try another.
                if case .noSpace = error {
                    pool.setFull(fresh.unit, true)
                } else if !outage {
                    throw error
                }
                refusal = error
                tried.insert(fresh.unit)
            }
        }
    }

    /// Records that this volume's next flush must make `chunk` durable (after the write returned).
    func touch(_ chunk: ChunkID) {
        touched[Int(chunk.rawValue % UInt64(touched.count))].withLock { _ = $0.insert(chunk) }
    }

    /// Takes every chunk touched since the last flush.
    func takeTouched() -> Set<ChunkID> {
        var all = Set<ChunkID>()
        for stripe in touched {
            stripe.withLock {
                all.formUnion($0); $0 = []
            }
        }
        return all
    }

    /// Puts chunks back for the next flush (this one failed).
    func retouch(_ chunks: Set<ChunkID>) { for c in chunks { touch(c) } }

    /// Points `index` at `new` (nil: empty), releasing what it held. Caller holds the stripe exclusively.
    func setLive(_ index: UInt64, _ new: MapEntry?) {
        assert(partials[index] == nil, "a partial chunk leaves its slot only once folded")
        state.withLock { s in
            if let old = s.map.entry(index) {
                if old.chunk.isTombstone { s.tombstones -= 1 }
                release(&s, index, old)
            }
            s.map.set(index, new)
            if new?.chunk.isTombstone == true { s.tombstones += 1 }
            s.changes.updateValue(new, forKey: index)
        }
    }

    /// A live entry leaves the map: a hold may still see it (retain it), another map may share it
    /// (drop one reference), or nothing does (delete after the next commit).
    func release(_ s: inout State, _ index: UInt64, _ old: MapEntry) {
        if let m = s.maxHold, old.birth <= m {
            let v = Version(chunk: old.chunk, birth: old.birth, death: s.epoch)
            s.retained[index, default: []].append(v)
            let key = RetainedKey(index: index, birth: old.birth)
            s.retainedAdds[key] = v
            s.retainedRemoves.remove(key)
        } else {
            drop(&s, old.chunk)
        }
    }

    func drop(_ s: inout State, _ chunk: ChunkID) {
        guard chunk.isReal else { return }
        if shares.extra(chunk) > 0 {
            shares.add(chunk, -1)
            s.shareDeltas[chunk, default: 0] -= 1
        } else {
            s.pendingFree.append(chunk)
        }
    }
}
