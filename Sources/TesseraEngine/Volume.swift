// Volume — the thin volume engine for one image: logical bytes → logical chunks → physical chunks.
//
// Address space: above the map, volume bytes; below it, physical chunks of the pool (PoolLayer).
//
// State (in `state`): the record (name, size, owner, mode, mtime), the in-memory ChunkMap, the map
// changes not yet committed to the catalog, chunks freed but not yet deleted, xattrs, open count.
//
// Invariants:
// - Data before metadata: a new chunk is written to its store before the map entry that points at it
//   exists; `flush()` makes the stores durable before it commits the map, and deletes freed chunks
//   only after the commit that unmapped them. A committed map never points at garbage.
// - A slot maps to `.none` for never-written or discarded ranges; they read as zeros. Writing zeros
//   into an unmapped chunk allocates nothing; writing a whole chunk of zeros frees it.
// - Bytes of the last chunk beyond `size` are always zero (shrinking zeroes them), so growing never
//   exposes old data.
// - No SQL on the I/O path: the catalog is touched by `flush()` only (at fsync and on the engine's timer).
// Lock order: flushLock → chunk stripe (shared for I/O, exclusive to change a slot) → state.
// `state` is held for a few instructions only, never across I/O.
import Foundation
import Synchronization
import TesseraCatalog
import TesseraCore

public final class Volume: Sendable {
    public let id: VolumeID
    public let chunkSize: Int
    public let poolName: String
    let pool: PoolLayer
    private let catalog: Catalog
    private let stripes = StripedLocks()
    private let flushLock = Mutex(())

    struct State {
        var record: VolumeRecord
        var map: ChunkMap
        var changes: [UInt64: ChunkID] = [:]
        var metaDirty = false
        var pendingFree: [ChunkID] = []
        var xattrs: [String: [UInt8]]
        var openCount = 0
        var unlinked = false
    }
    private let state: Mutex<State>

    init(record: VolumeRecord, map: ChunkMap, xattrs: [String: [UInt8]], poolName: String, pool: PoolLayer,
         catalog: Catalog) {
        id = VolumeID(record.id!)
        chunkSize = Int(record.chunkSize)
        self.poolName = poolName
        self.pool = pool
        self.catalog = catalog
        state = Mutex(State(record: record, map: map, xattrs: xattrs))
    }

    // MARK: Attributes

    public var record: VolumeRecord { state.withLock { $0.record } }
    public var name: String { state.withLock { $0.record.name } }
    public var size: UInt64 { state.withLock { UInt64($0.record.size) } }
    /// Bytes held by mapped chunks (what `st_blocks` reports).
    public var allocatedBytes: UInt64 { state.withLock { UInt64($0.map.count) * UInt64(chunkSize) } }
    public var mappedChunks: Int { state.withLock { $0.map.count } }
    public var isOpen: Bool { state.withLock { $0.openCount > 0 } }
    /// Every mapped (index, chunk), in index order (fsck).
    public var mapEntries: [(index: UInt64, chunk: ChunkID)] { state.withLock { $0.map.allEntries } }
    public var isUnlinked: Bool { state.withLock { $0.unlinked } }
    /// True when changes wait for the next flush.
    public var isDirty: Bool { state.withLock { !$0.changes.isEmpty || $0.metaDirty || !$0.pendingFree.isEmpty } }

    func update(_ body: (inout VolumeRecord) -> Void) -> VolumeRecord {
        state.withLock { s in
            body(&s.record)
            return s.record
        }
    }

    public func opened() { state.withLock { $0.openCount += 1 } }
    /// Returns true when this was the last open of an unlinked volume (its space may now be freed).
    public func closed() -> Bool {
        state.withLock { s in
            s.openCount -= 1
            return s.openCount == 0 && s.unlinked
        }
    }
    func markUnlinked() { state.withLock { $0.unlinked = true } }

    public var xattrs: [String: [UInt8]] { state.withLock { $0.xattrs } }
    func setXattrInMemory(_ name: String, _ value: [UInt8]?) { state.withLock { $0.xattrs[name] = value } }

    private static func now() -> Double { Date().timeIntervalSince1970 }

    // MARK: Data path

    private func slot(_ index: UInt64) -> ChunkID { state.withLock { $0.map[index] } }

    /// Reads up to `buffer.count` bytes at `offset`; returns how many (short at end of volume).
    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) -> Int {
        let size = self.size
        guard offset < size else { return 0 }
        let total = Int(min(UInt64(buffer.count), size - offset))
        var done = 0
        while done < total {
            let pos = offset + UInt64(done)
            let index = pos / UInt64(chunkSize)
            let inChunk = Int(pos % UInt64(chunkSize))
            let n = min(chunkSize - inChunk, total - done)
            let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[done..<done + n])
            stripes.lockShared(index)
            defer { stripes.unlock(index) }
            let chunk = slot(index)
            if chunk.isNone {
                piece.initializeMemory(as: UInt8.self, repeating: 0)
            } else {
                try pool.read(chunk, offset: inChunk, into: piece)
            }
            done += n
        }
        return total
    }

    /// Writes `buffer` at `offset`, growing the volume when the write ends past its size.
    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(StoreError) {
        let end = offset + UInt64(buffer.count)
        let now = Self.now()
        state.withLock { s in
            s.record.mtime = now
            s.metaDirty = true
        }
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
        state.withLock { s in if end > UInt64(s.record.size) { s.record.size = Int64(end) } }
    }

    private func writePiece(_ index: UInt64, _ inChunk: Int, _ piece: UnsafeRawBufferPointer) throws(StoreError) {
        let wholeChunk = piece.count == chunkSize
        if !wholeChunk || !isAllZero(piece) {
            // Fast path: the chunk exists; write in place under the shared stripe.
            stripes.lockShared(index)
            let chunk = slot(index)
            if !chunk.isNone {
                defer { stripes.unlock(index) }
                try pool.write(chunk, offset: inChunk, from: piece)
                return
            }
            stripes.unlock(index)
        }
        // Slow path: the slot changes (allocate, or free on a whole chunk of zeros).
        stripes.lockExclusive(index)
        defer { stripes.unlock(index) }
        let chunk = slot(index)
        let zeros = isAllZero(piece)
        if wholeChunk && zeros {
            if !chunk.isNone { unmap(index, chunk) }
            return
        }
        if !chunk.isNone {
            try pool.write(chunk, offset: inChunk, from: piece)
            return
        }
        if zeros { return }  // unmapped already reads as zeros: allocate nothing
        let fresh = try pool.allocate()
        do {
            try pool.write(fresh, offset: inChunk, from: piece)  // data first …
            try pool.setLabel(fresh, ChunkLabel(volume: id, index: index, epoch: 0))
        } catch {
            try? pool.delete(fresh)  // never mapped: nothing may keep it
            throw error
        }
        state.withLock { s in  // … then the map
            s.map[index] = fresh
            s.changes[index] = fresh
        }
    }

    /// Caller holds the exclusive stripe of `index`.
    private func unmap(_ index: UInt64, _ chunk: ChunkID) {
        state.withLock { s in
            s.map[index] = .none
            s.changes[index] = ChunkID.none
            s.pendingFree.append(chunk)
        }
    }

    /// Makes `[offset, offset+length)` read as zeros and frees every whole chunk inside it
    /// (punch hole, zero range, discard). Does not change the size.
    public func discard(at offset: UInt64, length: UInt64) throws(StoreError) {
        let size = self.size
        guard offset < size, length > 0 else { return }
        try zeroRange(offset, min(size, offset + length))
    }

    /// Zeroes `[offset, end)` whatever the size: partial chunks in place, whole chunks freed.
    private func zeroRange(_ offset: UInt64, _ end: UInt64) throws(StoreError) {
        let cs = UInt64(chunkSize)
        let firstWhole = (offset + cs - 1) / cs
        let endWhole = end / cs
        // Partial head and tail: zero inside the chunk.
        var partials: [(UInt64, Int, Int)] = []
        if firstWhole > endWhole {  // inside one chunk
            partials.append((offset / cs, Int(offset % cs), Int(end - offset)))
        } else {
            if offset % cs != 0 { partials.append((offset / cs, Int(offset % cs), Int(cs - offset % cs))) }
            if end % cs != 0 && endWhole >= firstWhole { partials.append((endWhole, 0, Int(end % cs))) }
        }
        for (index, inChunk, n) in partials {
            stripes.lockShared(index)
            defer { stripes.unlock(index) }
            let chunk = slot(index)
            if !chunk.isNone { try pool.zero(chunk, offset: inChunk, length: n) }
        }
        // Whole chunks: free only what is mapped (never walk a 64 TiB range slot by slot).
        guard firstWhole < endWhole else { return }
        let mapped = state.withLock { $0.map.entries(in: firstWhole..<endWhole) }
        for (index, _) in mapped {
            stripes.lockExclusive(index)
            let chunk = slot(index)
            if !chunk.isNone { unmap(index, chunk) }
            stripes.unlock(index)
        }
        state.withLock { $0.metaDirty = true }
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
            if newSize % cs != 0 {
                let index = newSize / cs
                stripes.lockShared(index)
                defer { stripes.unlock(index) }
                let chunk = slot(index)
                if !chunk.isNone {
                    let inChunk = Int(newSize % cs)
                    try pool.zero(chunk, offset: inChunk, length: chunkSize - inChunk)
                }
            }
            let firstGone = (newSize + cs - 1) / cs
            let mapped = state.withLock { $0.map.entries(in: firstGone..<UInt64.max) }
            for (index, _) in mapped {
                stripes.lockExclusive(index)
                let chunk = slot(index)
                if !chunk.isNone { unmap(index, chunk) }
                stripes.unlock(index)
            }
        }
        state.withLock { s in
            s.record.size = Int64(newSize)
            s.record.mtime = Self.now()
            s.metaDirty = true
        }
    }

    /// SEEK_DATA (`data: true`) or SEEK_HOLE from `offset`. nil means ENXIO (offset at or past the end,
    /// or no data after it). Chunk-granular: a hole is never reported where data is.
    public func seek(from offset: UInt64, data: Bool) -> UInt64? {
        state.withLock { s in
            let size = UInt64(s.record.size)
            guard offset < size else { return nil }
            let cs = UInt64(chunkSize)
            let chunks = (size + cs - 1) / cs
            let index = offset / cs
            if data {
                if !s.map[index].isNone { return offset }
                guard let next = s.map.nextMapped(from: index + 1, below: chunks) else { return nil }
                return next * cs
            } else {
                if s.map[index].isNone { return offset }
                let next = s.map.nextUnmapped(from: index + 1, below: chunks)
                return min(size, next * cs)
            }
        }
    }

    /// Copies `length` bytes from `source` at `sourceOffset` to this volume at `offset`, skipping
    /// holes of the source (they become holes here). Returns bytes copied (short at the source's end).
    public func copy(from source: Volume, at sourceOffset: UInt64, to offset: UInt64, length: UInt64)
        throws(StoreError) -> UInt64
    {
        let srcSize = source.size
        guard sourceOffset < srcSize else { return 0 }
        let total = min(length, srcSize - sourceOffset)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        var done: UInt64 = 0
        while done < total {
            let pos = sourceOffset + done
            let n = min(UInt64(source.chunkSize) - pos % UInt64(source.chunkSize), total - done, UInt64(chunkSize))
            let isHole = source.seek(from: pos, data: true).map { $0 >= pos + n } ?? true
            if isHole {
                extend(to: offset + done + n)
                try discard(at: offset + done, length: n)
            } else {
                let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(n)])
                _ = try source.read(at: pos, into: piece)
                try write(at: offset + done, from: UnsafeRawBufferPointer(piece))
            }
            done += n
        }
        return total
    }

    // MARK: Durability

    /// The durability barrier: when it returns, every write, discard and resize that returned before
    /// the call survives a crash. Stores first, then the map (data before metadata), then deletes.
    public func flush() throws(StoreError) {
        try flushLock.withLock { _ throws(StoreError) in try flushLocked() }
    }

    private func flushLocked() throws(StoreError) {
        let (changes, metaDirty, frees, record, unlinked) = state.withLock { s in
            let taken = (s.changes, s.metaDirty, s.pendingFree, s.record, s.unlinked)
            s.changes = [:]
            s.metaDirty = false
            s.pendingFree = []
            return taken
        }
        if unlinked { return }  // its row is gone; its chunks go at last close
        guard !changes.isEmpty || metaDirty || !frees.isEmpty else {
            try pool.flush()
            return
        }
        do throws(StoreError) {
            try pool.flush()
            do {
                try catalog.commitVolume(
                    id, size: UInt64(record.size), mtime: record.mtime, changes: changes,
                    nextSerials: pool.nextSerials())
            } catch {
                Log.error("\(record.name): map commit failed: \(error)")
                throw StoreError.io(errno: 5, chunk: .none)
            }
        } catch {
            state.withLock { s in  // put the work back; newer changes win
                s.changes.merge(changes) { newer, _ in newer }
                s.metaDirty = true
                s.pendingFree = frees + s.pendingFree
            }
            throw error
        }
        for chunk in frees {
            do { try pool.delete(chunk) } catch { Log.error("\(record.name): cannot delete freed \(chunk): \(error)") }
        }
    }

    /// Frees every chunk (after the volume's row is gone from the catalog).
    func releaseAllChunks() {
        let chunks = state.withLock { s in
            let all = s.map.allEntries.map(\.chunk) + s.pendingFree
            s.map = ChunkMap()
            s.pendingFree = []
            s.changes = [:]
            return all
        }
        for chunk in chunks {
            do { try pool.delete(chunk) } catch { Log.error("cannot delete \(chunk): \(error)") }
        }
    }
}
