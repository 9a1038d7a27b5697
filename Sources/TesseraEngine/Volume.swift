// Volume — the thin volume engine for one image: logical bytes → logical chunks → physical chunks,
// with birth-epoch snapshots and fall-through clones.
//
// Address space: above the map, volume bytes; below it, chunks of the pool's placement units
// (PoolLayer). The bottom of the volume's stack (VolumeBottom.swift): per-volume layers sit above it.
// Files: this one holds the state, attributes, resolution and reads; VolumeWrites (writes, copy-on-
// write, placement), VolumePartials (sub-chunk copy-on-write), VolumeSpace (discard, resize, seek),
// VolumeCopies (copy_file_range), VolumeEpochs (snapshots, holds, revert), VolumeFlush (durability).
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
    let catalog: Catalog
    let shares: ShareTable
    /// For a clone: the volume its empty slots fall through to, and the epoch it sees there.
    public let parent: Volume?
    public let parentEpoch: UInt64
    let stripes = StripedLocks()
    let flushLock = Lock(())
    /// `record.size`, readable without `state` (kept equal by `State.record`'s observer).
    private let sizeMirror: SizeMirror
    /// The time of the latest write (a Double's bits) and whether the record does not have it yet.
    let writeTime = Atomic<UInt64>(0)
    let writeTimePending = Atomic<Bool>(false)
    /// Chunks written, zeroed or created since the last flush: what this volume's fsync syncs. Striped
    /// by chunk so concurrent writers do not meet on one lock.
    let touched = (0..<16).map { _ in Lock(Set<ChunkID>()) }
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

    static func now() -> Double { Date().timeIntervalSince1970 }

    /// Folds the latest write's time into the record (under `state`).
    func takeWriteTime(_ s: inout State) {
        guard writeTimePending.exchange(false, ordering: .acquiringAndReleasing) else { return }
        s.record.mtime = Double(bitPattern: writeTime.load(ordering: .relaxed))
        s.timeDirty = true
    }

    // MARK: Resolution

    func isShared(_ e: MapEntry, _ s: State) -> Bool {
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
}
