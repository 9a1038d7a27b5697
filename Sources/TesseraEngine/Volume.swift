// Volume — the thin volume engine for one image: logical bytes → logical chunks → physical chunks,
// with birth-epoch snapshots and fall-through clones.
//
// Address space: above the map, volume bytes; below it, physical chunks of the pool (PoolLayer). The
// bottom of the volume's stack (VolumeBottom.swift): per-volume layers sit above it.
//
// State (in `state`): the record (name, size, owner, mode, mtime, epoch), the live ChunkMap (chunk +
// birth epoch per slot), the holds (epochs that snapshots and clones see), retained versions (chunks
// that left the live map but a hold still sees: live for epochs birth ..< death), and what the next
// flush must commit (map changes, retained adds/removes, share deltas, chunks to delete).
//
// Snapshots (as ZFS): a snapshot records the current epoch E as a hold and moves the volume to E+1 —
// O(1), whatever the size. A live chunk born at b is shared iff some hold h ≥ b exists (or another
// map shares it: ShareTable); a shared chunk is never written in place: the first write copies it
// (copy-on-write) and the old version moves to `retained`. Reading a snapshot at epoch s takes the
// live entry if born ≤ s, else the retained version with birth ≤ s < death: no chains.
// Clones: a clone's empty slots fall through to (parent, parentEpoch); the parent holds that epoch.
// A clone marks discarded slots with a tombstone so they read zeros instead of the parent's data.
//
// Invariants:
// - Data before metadata: a new chunk is written (and labelled) on its store before the map entry that
//   points at it exists; `flush()` makes the stores durable before it commits the map, and deletes
//   freed chunks only after the commit that unmapped them. A committed map never points at garbage.
// - A chunk is deleted only when no live slot, retained version or share count refers to it.
// - Never-written ranges read as zeros; writing zeros where nothing is visible allocates nothing;
//   writing a whole chunk of zeros frees it. Bytes past `size` in the last chunk are zero.
// - No SQL on the I/O path: the catalog is touched by `flush()` only.
// Lock order: flushLock → chunk stripe (shared for I/O, exclusive to change a slot; all stripes for a
// snapshot) → own state → parent's state → a `touched` stripe. `state` is held for a few instructions,
// never across I/O.
// Hot path: a 4 KiB read takes `state` once (resolve); a write in place takes it once (is the chunk
// ours and unshared?). The size is read from an atomic mirror, the time of the latest write is an
// atomic folded into the record at the next flush or attribute read, and the chunks to sync at the next
// flush are recorded in striped sets, so no lock is shared by every request of the volume.
import Foundation
import Synchronization
import TesseraCatalog
import TesseraCore

public final class Volume: Sendable {
    public let id: VolumeID
    public let chunkSize: Int
    public let poolName: String
    /// Hands out new chunk IDs (and knows their serials); never used for I/O.
    let pool: PoolLayer
    /// The top of the pool's layer stack (the RAM cache over the pool, or the pool itself): all I/O.
    let io: any ChunkStore
    private let catalog: Catalog
    let shares: ShareTable
    /// For a clone: the volume its empty slots fall through to, and the epoch it sees there.
    public let parent: Volume?
    public let parentEpoch: UInt64
    let stripes = StripedLocks()
    private let flushLock = Lock(())
    /// `record.size`, readable without `state` (kept equal by `State.record`'s observer).
    private let sizeMirror: SizeMirror
    /// The time of the latest write (a Double's bits) and whether the record does not have it yet.
    private let writeTime = Atomic<UInt64>(0)
    private let writeTimePending = Atomic<Bool>(false)
    /// Chunks written, zeroed or created since the last flush: what this volume's fsync syncs. Striped
    /// by chunk so concurrent writers do not meet on one lock.
    private let touched = (0..<16).map { _ in Lock(Set<ChunkID>()) }
    /// Live chunks that are partial copies of the chunk they replaced (sub-chunk copy-on-write).
    let partials = PartialChunks()
    /// How long a partial chunk may stay unfolded before the periodic flush folds it (a burst of small
    /// writes after a snapshot copies nothing meanwhile); fsync, snapshots and unmount fold at once.
    static let foldDelay: Duration = .seconds(15)

    struct Version: Equatable {
        var chunk: ChunkID
        var birth: UInt64
        var death: UInt64
        func visible(at epoch: UInt64) -> Bool { birth <= epoch && epoch < death }
    }
    struct RetainedKey: Hashable {
        var index: UInt64
        var birth: UInt64
    }
    final class SizeMirror: Sendable {
        let bytes: Atomic<UInt64>
        init(_ size: UInt64) { bytes = Atomic(size) }
    }
    struct State {
        let sizeMirror: SizeMirror
        var record: VolumeRecord {
            didSet { sizeMirror.bytes.store(UInt64(record.size), ordering: .releasing) }
        }
        var map: ChunkMap
        var tombstones = 0
        var holds: [UInt64] = []
        var retained: [UInt64: [Version]] = [:]
        var parentLimit: UInt64
        var changes: [UInt64: MapEntry?] = [:]
        var retainedAdds: [RetainedKey: Version] = [:]
        var retainedRemoves: Set<RetainedKey> = []
        var shareDeltas: [ChunkID: Int] = [:]
        var metaDirty = false
        /// Only the modification time changed (a write in place): an fdatasync need not commit it.
        var timeDirty = false
        var pendingFree: [ChunkID] = []
        /// Freed chunks deleted since the last commit: the next commit drops their freed records.
        var deletedFrees: [ChunkID] = []
        var xattrs: [String: [UInt8]]
        var openCount = 0
        var unlinked = false
        var epoch: UInt64 { UInt64(record.epoch) }
        var maxHold: UInt64? { holds.last }
    }
    let state: Lock<State>

    init(
        record: VolumeRecord, map: ChunkMap, retained: [RetainedRecord] = [], xattrs: [String: [UInt8]],
        poolName: String, pool: PoolLayer, io: (any ChunkStore)? = nil, catalog: Catalog,
        shares: ShareTable = ShareTable(),
        parent: Volume? = nil
    ) {
        id = VolumeID(record.id!)
        chunkSize = Int(record.chunkSize)
        self.poolName = poolName
        self.pool = pool
        self.io = io ?? pool
        self.catalog = catalog
        self.shares = shares
        self.parent = parent
        parentEpoch = UInt64(record.parentEpoch ?? 0)
        sizeMirror = SizeMirror(UInt64(record.size))
        var s = State(
            sizeMirror: sizeMirror, record: record, map: map,
            parentLimit: record.parentLimit.map { UInt64($0) } ?? UInt64.max,
            xattrs: xattrs)
        s.tombstones = map.records(in: 0..<UInt64.max).filter { $0.entry.chunk.isTombstone }.count
        for r in retained {
            s.retained[UInt64(r.idx), default: []].append(
                Version(chunk: ChunkID(UInt64(bitPattern: r.chunk)), birth: UInt64(r.birth), death: UInt64(r.death)))
        }
        state = Lock(s)
    }

    // MARK: Attributes

    public var record: VolumeRecord {
        state.withLock { s in
            takeWriteTime(&s)
            return s.record
        }
    }
    public var name: String { state.withLock { $0.record.name } }
    public var size: UInt64 { sizeMirror.bytes.load(ordering: .acquiring) }
    public var epoch: UInt64 { state.withLock { $0.epoch } }
    /// Bytes held by this volume's own live chunks (what `st_blocks` reports).
    public var allocatedBytes: UInt64 { state.withLock { UInt64($0.map.count - $0.tombstones) * UInt64(chunkSize) } }
    public var mappedChunks: Int { state.withLock { $0.map.count - $0.tombstones } }
    public var isOpen: Bool { state.withLock { $0.openCount > 0 } }
    public var isUnlinked: Bool { state.withLock { $0.unlinked } }
    /// Every occupied (index, chunk), in index order, tombstones included (fsck skips them).
    public var mapEntries: [(index: UInt64, chunk: ChunkID)] { state.withLock { $0.map.allEntries } }
    /// Every retained version's (index, chunk) (fsck, garbage collection).
    public var retainedEntries: [(index: UInt64, chunk: ChunkID)] {
        state.withLock { s in s.retained.flatMap { idx, vs in vs.map { (idx, $0.chunk) } } }
    }
    /// True when changes wait for the next flush.
    public var isDirty: Bool {
        writeTimePending.load(ordering: .relaxed)
            || state.withLock { s in
                !s.changes.isEmpty || s.metaDirty || s.timeDirty || !s.pendingFree.isEmpty || !s.retainedAdds.isEmpty
                    || !s.retainedRemoves.isEmpty || !s.shareDeltas.isEmpty
            }
    }
    public var holds: [UInt64] { state.withLock { $0.holds } }

    func update(_ body: (inout VolumeRecord) -> Void) -> VolumeRecord {
        state.withLock { s in
            takeWriteTime(&s)  // first, so that a time set here wins over an earlier write's
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

    /// Folds the latest write's time into the record (under `state`).
    private func takeWriteTime(_ s: inout State) {
        guard writeTimePending.exchange(false, ordering: .acquiringAndReleasing) else { return }
        s.record.mtime = Double(bitPattern: writeTime.load(ordering: .relaxed))
        s.timeDirty = true
    }

    // MARK: Resolution

    private func isShared(_ e: MapEntry, _ s: State) -> Bool {
        guard e.chunk.isReal else { return false }
        if let m = s.maxHold, e.birth <= m { return true }
        return shares.extra(e.chunk) > 0
    }

    /// What this volume itself says about `index` at `epoch` (nil = live): found, and the chunk
    /// (`.none` for a tombstone). Not found means "empty here" (zeros, or the parent's for a clone).
    private static func own(_ s: State, _ index: UInt64, at epoch: UInt64?) -> ChunkID? {
        if let e = s.map.entry(index), epoch.map({ e.birth <= $0 }) ?? true {
            return e.chunk.isTombstone ? ChunkID.none : e.chunk
        }
        if let epoch, let v = s.retained[index]?.first(where: { $0.visible(at: epoch) }) {
            return v.chunk.isTombstone ? ChunkID.none : v.chunk
        }
        return nil
    }

    /// The chunk whose bytes `index` reads at `epoch` (nil = live), following a clone to its parent;
    /// `.none` reads as zeros. Caller holds the index's stripe.
    func resolve(_ index: UInt64, at epoch: UInt64? = nil) -> ChunkID {
        let (found, fallsThrough) = state.withLock { s in (Self.own(s, index, at: epoch), index < s.parentLimit) }
        if let found { return found }
        guard let parent, fallsThrough else { return .none }
        return parent.resolve(index, at: parentEpoch)
    }

    // MARK: Reading

    /// Reads up to `buffer.count` bytes at `offset` of the live volume, or of its image at `epoch`
    /// whose size was `viewSize`; returns how many (short at the end).
    public func read(
        at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer, epoch: UInt64?,
        viewSize: UInt64?
    ) throws(StoreError) -> Int {
        let size = viewSize ?? self.size
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
            let chunk = resolve(index, at: epoch)
            if chunk.isNone {
                piece.initializeMemory(as: UInt8.self, repeating: 0)
            } else if epoch == nil, let partial = partials[index], partial.chunk == chunk {
                try readPartial(partial, offset: inChunk, into: piece)
            } else {
                try io.read(chunk, offset: inChunk, into: piece)
            }
            done += n
        }
        return total
    }

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
    private func rewrite(
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
    private func takeTouched() -> Set<ChunkID> {
        var all = Set<ChunkID>()
        for stripe in touched {
            stripe.withLock {
                all.formUnion($0); $0 = []
            }
        }
        return all
    }

    /// Puts chunks back for the next flush (this one failed).
    private func retouch(_ chunks: Set<ChunkID>) { for c in chunks { touch(c) } }

    /// Points `index` at `new` (nil: empty), releasing what it held. Caller holds the stripe exclusively.
    private func setLive(_ index: UInt64, _ new: MapEntry?) {
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
    private func release(_ s: inout State, _ index: UInt64, _ old: MapEntry) {
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

    private func drop(_ s: inout State, _ chunk: ChunkID) {
        guard chunk.isReal else { return }
        if shares.extra(chunk) > 0 {
            shares.add(chunk, -1)
            s.shareDeltas[chunk, default: 0] -= 1
        } else {
            s.pendingFree.append(chunk)
        }
    }

    // MARK: Discard, resize

    /// Makes `[offset, offset+length)` read as zeros and frees every whole chunk inside it
    /// (punch hole, zero range, discard). Does not change the size.
    public func discard(at offset: UInt64, length: UInt64) throws(StoreError) {
        let size = self.size
        guard offset < size, length > 0 else { return }
        try zeroRange(offset, min(size, offset + length))
        state.withLock { $0.metaDirty = true }
    }

    private func zeroRange(_ offset: UInt64, _ end: UInt64) throws(StoreError) {
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

    // MARK: Copies inside the mount

    /// Copies `length` bytes from `source` at `sourceOffset` to this volume at `offset`. Whole chunks
    /// that line up are shared, not copied (the copy costs a map entry); the rest is copied, and holes
    /// of the source become holes here. Returns bytes copied (short at the source's end).
    public func copy(
        from source: Volume, at sourceOffset: UInt64, to offset: UInt64, length: UInt64,
        sourceEpoch: UInt64?, sourceSize: UInt64?
    ) throws(StoreError) -> UInt64 {
        let srcSize = sourceSize ?? source.size
        guard sourceOffset < srcSize else { return 0 }
        let total = min(length, srcSize - sourceOffset)
        let cs = UInt64(chunkSize)
        let canShare = source.pool === pool && source.chunkSize == chunkSize && sourceOffset % cs == offset % cs
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        var done: UInt64 = 0
        while done < total {
            let pos = sourceOffset + done
            let n = min(UInt64(source.chunkSize) - pos % UInt64(source.chunkSize), total - done, cs)
            if canShare && n == cs && !(source === self && pos == offset + done && sourceEpoch == nil) {
                try share(from: source, index: pos / cs, at: sourceEpoch, to: (offset + done) / cs)
                done += n
                continue
            }
            let isHole =
                source.seek(from: pos, data: true, epoch: sourceEpoch, viewSize: srcSize).map { $0 >= pos + n } ?? true
            if isHole {
                extend(to: offset + done + n)
                try discard(at: offset + done, length: n)
            } else {
                let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(n)])
                _ = try source.read(at: pos, into: piece, epoch: sourceEpoch, viewSize: srcSize)
                try write(at: offset + done, from: UnsafeRawBufferPointer(piece))
            }
            done += n
        }
        return total
    }

    /// Makes slot `target` of this volume refer to the chunk `source` shows at `index` (one more
    /// reference to it), or empties it when that is a hole.
    private func share(from source: Volume, index: UInt64, at sourceEpoch: UInt64?, to target: UInt64)
        throws(StoreError)
    {
        source.stripes.lockExclusive(index)
        do {
            // A partial chunk is shared only once whole (the other map must never see its holes).
            if sourceEpoch == nil { try source.foldIfPartial(index) }
        } catch {
            source.stripes.unlock(index)
            throw error
        }
        let chunk = source.resolve(index, at: sourceEpoch)
        if chunk.isReal { shares.add(chunk, 1) }  // from now on neither side writes it in place
        source.stripes.unlock(index)
        extend(to: (target + 1) * UInt64(chunkSize))
        stripes.lockExclusive(target)
        defer { stripes.unlock(target) }
        if chunk.isReal {
            do throws(StoreError) { try foldIfPartial(target) } catch {
                shares.add(chunk, -1)
                throw error
            }
            let born = epoch
            state.withLock { $0.shareDeltas[chunk, default: 0] += 1 }
            setLive(target, MapEntry(chunk: chunk, birth: born))
            touch(chunk)  // the source may not have synced it yet: our map must not commit before its data
        } else {
            try rewrite(target) { _, base throws(StoreError) in base.isNone ? .unchanged : .zeros }
        }
        state.withLock { $0.metaDirty = true }
    }

    // MARK: Snapshots

    /// Stops all I/O on the volume (every stripe held) for an instant-consistent snapshot.
    func quiesce() { stripes.lockAll() }
    func resume() { stripes.unlockAll() }

    /// The epoch and size a snapshot taken now captures. Caller has quiesced and flushed.
    func captureInstant() -> (epoch: UInt64, size: UInt64) {
        state.withLock { s in (s.epoch, UInt64(s.record.size)) }
    }

    /// After the snapshot committed: hold `epoch` and write new data in `epoch + 1`.
    func holdAndAdvance(_ epoch: UInt64) {
        state.withLock { s in
            s.holds.append(epoch)
            s.holds.sort()
            if s.record.epoch <= Int64(epoch) { s.record.epoch = Int64(epoch + 1) }
        }
    }

    /// Adds a hold without changing the epoch (loading the catalog, cloning from a snapshot).
    func addHold(_ epoch: UInt64) {
        state.withLock { s in
            s.holds.append(epoch)
            s.holds.sort()
        }
    }

    /// Drops one hold of `epoch`; versions no remaining hold sees are released (deleted after the next
    /// commit). Returns the bytes that go.
    @discardableResult
    func removeHold(_ epoch: UInt64) -> UInt64 {
        state.withLock { s in
            if let i = s.holds.firstIndex(of: epoch) { s.holds.remove(at: i) }
            var freed: UInt64 = 0
            for (index, versions) in s.retained {
                var keep: [Version] = []
                for v in versions {
                    if s.holds.contains(where: { v.visible(at: $0) }) {
                        keep.append(v)
                        continue
                    }
                    let key = RetainedKey(index: index, birth: v.birth)
                    s.retainedAdds[key] = nil
                    s.retainedRemoves.insert(key)
                    if v.chunk.isReal && shares.extra(v.chunk) == 0 { freed += UInt64(chunkSize) }
                    drop(&s, v.chunk)
                }
                s.retained[index] = keep.isEmpty ? nil : keep
            }
            return freed
        }
    }

    /// Bytes that only the hold at `epoch` keeps (what deleting that snapshot would free).
    func exclusiveBytes(ofHold epoch: UInt64) -> UInt64 {
        state.withLock { s in
            var others = s.holds
            if let i = others.firstIndex(of: epoch) { others.remove(at: i) }
            // A chunk goes when every reference to it is a version only this hold sees.
            var refs: [ChunkID: Int] = [:]
            for v in s.retained.values.joined() where v.chunk.isReal && v.visible(at: epoch) {
                if !others.contains(where: { v.visible(at: $0) }) { refs[v.chunk, default: 0] += 1 }
            }
            let freed = refs.filter { chunk, n in n == 1 + shares.extra(chunk) }.count
            return UInt64(freed) * UInt64(chunkSize)
        }
    }

    /// Live bytes no snapshot, clone or other volume shares (what deleting the volume would free now).
    public var exclusiveBytes: UInt64 {
        state.withLock { s in
            UInt64(s.map.records(in: 0..<UInt64.max).filter { $0.entry.chunk.isReal && !isShared($0.entry, s) }.count)
                * UInt64(chunkSize)
        }
    }

    /// Bytes of retained versions (space snapshots hold beyond the live data).
    public var retainedBytes: UInt64 {
        state.withLock { s in UInt64(s.retained.values.joined().filter { $0.chunk.isReal }.count) * UInt64(chunkSize) }
    }

    /// Brings the live volume back to what it was at `epoch` (size `size`). Caller has quiesced it and
    /// made sure it is not open. Chunks the snapshot sees become shared with it, so later writes copy.
    func revert(to epoch: UInt64, size: UInt64) {
        state.withLock { s in
            var indexes = Set(s.map.records(in: 0..<UInt64.max).map(\.index))
            for (i, vs) in s.retained where vs.contains(where: { $0.visible(at: epoch) }) { indexes.insert(i) }
            let born = s.epoch
            for index in indexes.sorted() {
                let live = s.map.entry(index)
                let then: MapEntry?
                if let e = live, e.birth <= epoch {
                    continue  // unchanged since the snapshot
                } else if let v = s.retained[index]?.first(where: { $0.visible(at: epoch) }) {
                    then = MapEntry(chunk: v.chunk, birth: born)
                    if v.chunk.isReal {
                        shares.add(v.chunk, 1)
                        s.shareDeltas[v.chunk, default: 0] += 1
                    }
                } else {
                    then = nil
                }
                if let live {
                    if live.chunk.isTombstone { s.tombstones -= 1 }
                    release(&s, index, live)
                }
                s.map.set(index, then)
                if then?.chunk.isTombstone == true { s.tombstones += 1 }
                s.changes.updateValue(then, forKey: index)
            }
            s.record.size = Int64(size)
            s.record.mtime = Self.now()
            s.metaDirty = true
        }
    }

    // MARK: Durability

    /// The durability barrier: when it returns, every write, discard and resize that returned before
    /// the call survives a crash. Stores first, then the map (data before metadata), then deletes.
    /// With `dataOnly` (fdatasync), a modification time that is all that changed is left for a later
    /// flush: the data is as durable, and no catalog commit is paid for the time alone.
    /// `quiesced`: the caller holds every stripe (a snapshot, a revert, a clone of the live volume).
    public func flush(dataOnly: Bool = false) throws(StoreError) { try flush(dataOnly: dataOnly, quiesced: false) }

    func flush(dataOnly: Bool = false, quiesced: Bool) throws(StoreError) {
        try flushLock.withLock { _ throws(StoreError) in try flushLocked(dataOnly: dataOnly, quiesced: quiesced) }
    }

    private func flushLocked(dataOnly: Bool, quiesced: Bool) throws(StoreError) {
        let taken: Taken = state.withLock { s in
            takeWriteTime(&s)
            let commitTime = s.timeDirty && !dataOnly
            let t = (
                s.changes, s.metaDirty || commitTime, s.pendingFree, s.record, s.unlinked, s.retainedAdds,
                s.retainedRemoves, s.shareDeltas, s.parentLimit, s.deletedFrees
            )
            s.deletedFrees = []
            s.changes = [:]
            s.metaDirty = false
            if commitTime { s.timeDirty = false }
            s.pendingFree = []
            s.retainedAdds = [:]
            s.retainedRemoves = []
            s.shareDeltas = [:]
            return t
        }
        let (changes, metaDirty, frees, record, unlinked, adds, removes, deltas, parentLimit, deleted) = taken
        if unlinked { return }  // its row is gone; its chunks go at last close
        // A partial chunk commits only once folded: whole and labelled.
        do throws(StoreError) {
            if !partials.isEmpty {
                for (index, entry) in changes {
                    guard let entry, partials[index]?.chunk == entry.chunk else { continue }
                    if !quiesced { stripes.lockExclusive(index) }
                    defer { if !quiesced { stripes.unlock(index) } }
                    try foldIfPartial(index)
                }
            }
        } catch {
            putBack(taken)
            throw error
        }
        // Taken after the map changes (and the folds): a new chunk is touched before its slot changes,
        // so every chunk those changes point at is in here (data before metadata).
        let touched = takeTouched()
        guard !changes.isEmpty || metaDirty || !frees.isEmpty || !adds.isEmpty || !removes.isEmpty || !deltas.isEmpty
        else {
            do throws(StoreError) {
                try io.flush(chunks: touched)
            } catch {
                retouch(touched)
                throw error
            }
            state.withLock { $0.deletedFrees += deleted }  // forgotten with the next commit
            return
        }
        do throws(StoreError) {
            try io.flush(chunks: touched)
            var commit = Catalog.VolumeCommit(size: UInt64(record.size), mtime: record.mtime)
            commit.epoch = UInt64(record.epoch)
            commit.parentLimit = parentLimit == UInt64.max ? nil : parentLimit
            commit.changes = changes
            commit.retainedAdds = adds.map { key, v in
                RetainedRecord(
                    volumeId: id.rawValue, idx: Int64(key.index), birth: Int64(v.birth),
                    chunk: Int64(bitPattern: v.chunk.rawValue), death: Int64(v.death))
            }
            commit.retainedRemoves = removes.map { ($0.index, $0.birth) }
            commit.shareDeltas = deltas
            commit.nextSerials = pool.nextSerials()
            commit.frees = frees
            commit.deleted = deleted
            do {
                try catalog.commitVolume(id, commit)
            } catch {
                Log.error("\(record.name): map commit failed: \(error)")
                throw StoreError.io(errno: 5, chunk: .none)
            }
        } catch {
            putBack(taken)
            retouch(touched)
            throw error
        }
        do throws(StoreError) {
            let gone = try releaseSpace(of: frees)
            state.withLock { $0.deletedFrees += gone }
        } catch {
            // The map is committed; the stores' flush of the deletes is what failed. Report it, and let
            // the next flush try those chunks' stores again.
            retouch(Set(frees))
            throw error
        }
    }

    /// What a flush takes from the state to commit.
    private typealias Taken = (
        changes: [UInt64: MapEntry?], metaDirty: Bool, frees: [ChunkID], record: VolumeRecord, unlinked: Bool,
        adds: [RetainedKey: Version], removes: Set<RetainedKey>, deltas: [ChunkID: Int], parentLimit: UInt64,
        deleted: [ChunkID]
    )

    /// Puts back what a failed flush took; newer changes win.
    private func putBack(_ t: Taken) {
        state.withLock { s in
            for (k, v) in t.changes where s.changes[k] == nil { s.changes.updateValue(v, forKey: k) }
            s.metaDirty = true
            s.pendingFree = t.frees + s.pendingFree
            for (k, v) in t.adds where s.retainedAdds[k] == nil && !s.retainedRemoves.contains(k) {
                s.retainedAdds[k] = v
            }
            for k in t.removes where s.retainedAdds[k] == nil { s.retainedRemoves.insert(k) }
            for (c, d) in t.deltas { s.shareDeltas[c, default: 0] += d }
            s.deletedFrees += t.deleted
        }
    }

    /// Deletes freed chunks, then flushes their stores so the space is really free again (a file store
    /// reuses a slot only once its delete is durable). A failed delete only logs: the maps no longer
    /// point at the chunk, and garbage collection at the next open removes it (its freed record is the
    /// proof). A failed flush throws. Returns the chunks deleted.
    @discardableResult
    private func releaseSpace(of chunks: [ChunkID]) throws(StoreError) -> [ChunkID] {
        guard !chunks.isEmpty else { return [] }
        var gone: [ChunkID] = []
        for chunk in chunks {
            do {
                try io.delete(chunk)
                gone.append(chunk)
            } catch { Log.error("\(name): cannot delete freed \(chunk): \(error)") }
        }
        try io.flush(chunks: Set(chunks))
        return gone
    }

    /// Frees every chunk (after the volume's row is gone from the catalog). Returns the share-count
    /// changes the catalog must record (unflushed ones and the references dropped here).
    func releaseAllChunks() -> [ChunkID: Int] {
        partials.removeAll()  // their bases are the holds' or the parent's, not theirs to free
        let (chunks, pending) = state.withLock { s in
            var all = s.pendingFree
            for (_, e) in s.map.records(in: 0..<UInt64.max) { all.append(e.chunk) }
            for v in s.retained.values.joined() { all.append(v.chunk) }
            let pending = s.shareDeltas
            s.map = ChunkMap()
            s.retained = [:]
            s.pendingFree = []
            s.changes = [:]
            s.shareDeltas = [:]
            return (all.filter(\.isReal), pending)
        }
        var deltas = pending
        var freed: [ChunkID] = []
        for chunk in chunks {
            if shares.extra(chunk) > 0 {
                shares.add(chunk, -1)
                deltas[chunk, default: 0] -= 1
                continue
            }
            freed.append(chunk)
        }
        do { try releaseSpace(of: freed) } catch {
            Log.error("\(name): cannot flush the deletes of its chunks: \(error)")
        }
        return deltas
    }
}
