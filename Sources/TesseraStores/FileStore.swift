// FileStore — chunks in slots of one preallocated regular file or one raw block device.
//
// Address space: physical chunks (ChunkID). On the medium: a header block, a table of one entry per slot,
// then the slots (FileStoreFormat.swift). Formatting and opening: FileStoreSetup.swift; the data path and
// flush: FileStoreIO.swift.
//
// When two entries claim one chunk (a replace interrupted between its two table writes), the higher
// sequence wins and the other is cleared at the next flush.
//
// State (memory, rebuilt from the table at open): chunk → slot; per slot its chunk and kind (free,
// free-but-dirty, allocating, used, clearing, damaged); a free list (stack, lowest slot first); labels;
// claims = used slots whose entry must be (re)written; clears = slots whose entry must be cleared.
//
// Invariants and crash rules (daemon SIGKILL and power cut):
// - A slot is zeroed when it is allocated (fallocate ZERO_RANGE on a file, which also re-reserves the
//   space a delete punched; on a block device only a slot that may hold stale bytes), before any
//   claim names it, so a chunk never reads another chunk's bytes where it was not written.
// - Table entries are written only by flush, in this order:
//     A. fdatasync: every write, zeroing and punch that returned before the flush is durable;
//     B. write the claims (new chunks, replaced chunks, labels) · fdatasync;
//     C. punch the slots that replaces left behind, write the clears (deletes, replaced-out slots,
//        losers of a duplicate claim) · fdatasync; only then do those slots join the free list.
//   So a claim is never durable before its data (A before B), a replaced chunk's old slot is cleared
//   only once its new entry is durable (B before C), and a deleted slot is never reused while the
//   table on the medium may still point at it (C before free). Cleared entries carry "may hold stale
//   bytes": a crash between a punch and its sync cannot hand old bytes to the next chunk.
// - replace writes the new content into a fresh slot; the switch is the new entry (B), one aligned
//   write with a higher sequence. A crash leaves the old or the new content, never a mix.
// - Between flushes the table on the medium lags memory; writes into an existing slot go straight to
//   the slot. Nothing promises durability except flush (the ChunkStore contract).
// - Every slot reads zeros until written: a file is preallocated (fallocate mode 0, unwritten extents);
//   a block device is zeroed at format (fast zero-out), or else flag 1 marks every never-used slot dirty.
// - delete punches the slot (fallocate PUNCH_HOLE|KEEP_SIZE: a hole in the file, a discard that reads
//   zeros on a device; BLKDISCARD is not used because it does not promise zeros). A failed punch leaves
//   the slot dirty; it is zeroed at reuse.
// - O_DIRECT is never used: FUSE hands us unaligned buffers; fdatasync flushes the page cache and the
//   device cache.
// - flush(chunks:) flushes everything: one file takes one fdatasync whatever the chunks.
// - The file or device is held with flock (and O_EXCL on a block device): one process at a time.
// Lock order: flushLock → state. flushLock is held across flush's I/O (flushes are serialised so that
// "returned" means "everything before me is durable"); state is never held across a syscall.
import Synchronization
import SystemPackage
import TesseraCore

#if canImport(Glibc)
    import Glibc
#endif

public final class FileStore: ChunkStore, StoreMaintenance {
    public let chunkSize: Int
    public let path: String
    /// Number of data slots (chunks the store can hold).
    public let slotCount: Int
    public let isBlockDevice: Bool
    /// The store's identity, set at format (32 hex digits).
    public let uuid: String
    /// Table entries that failed their checksum at open: their slots are never used nor listed.
    public let damagedSlots: Int
    let fd: FileDescriptor
    let dataOffset: Int

    enum Kind: UInt8 {
        case free, dirty, allocating, used, clearing, damaged
    }
    struct Clear {
        var slot: UInt32
        /// The slot still holds bytes (left behind by replace): punch it once its replacement is durable.
        var punch: Bool
        /// The slot may hold stale bytes: zero it before reuse.
        var dirty: Bool
    }
    struct State {
        var slotOf: [ChunkID: UInt32] = [:]
        var chunkIn: [UInt64]
        var kind: [Kind]
        var labels: [ChunkID: ChunkLabel] = [:]
        var free: [UInt32] = []
        var claims: Set<UInt32> = []
        var clears: [Clear] = []
        var nextSequence: UInt64 = 1
    }
    let state: Lock<State>
    let flushLock = Lock(())
    /// Set after every data write, zeroing and punch; flush takes it before its first fdatasync.
    let dataDirty = Atomic<Bool>(false)

    /// Loads the slot table and builds the free map.
    init(fd: FileDescriptor, path: String, header: Header, isBlockDevice: Bool) throws(StoreSetupError) {
        self.fd = fd
        self.path = path
        self.isBlockDevice = isBlockDevice
        chunkSize = Int(header.chunkSize)
        slotCount = Int(header.slots)
        dataOffset = Int(header.dataOffset)
        uuid = header.uuid.map { Self.hex2($0) }.joined()
        var s = State(
            chunkIn: [UInt64](repeating: 0, count: slotCount),
            kind: [Kind](repeating: .free, count: slotCount))
        var sequences = [UInt64](repeating: 0, count: slotCount)
        var damaged = 0
        let perRead = 16384
        var buffer = [UInt8](repeating: 0, count: perRead * Self.entryBytes)
        var first = 0
        while first < slotCount {
            let count = min(perRead, slotCount - first)
            let bytes = count * Self.entryBytes
            let n =
                (try? buffer.withUnsafeMutableBytes { b in
                    try fd.read(
                        fromAbsoluteOffset: Int64(Self.headerBytes + first * Self.entryBytes),
                        into: UnsafeMutableRawBufferPointer(rebasing: b[0..<bytes]))
                }) ?? -1
            guard n == bytes else { throw StoreSetupError("cannot read the slot table of \(path)") }
            for i in 0..<count {
                let slot = first + i
                let e = Entry(decoding: buffer, at: i * Self.entryBytes, slot: UInt32(slot))
                switch e {
                case .never:
                    s.kind[slot] = header.flags & Self.flagNotZeroed != 0 ? .dirty : .free
                case .damaged:
                    s.kind[slot] = .damaged
                    damaged += 1
                case .entry(let chunk, let sequence, let label, let flags):
                    s.nextSequence = max(s.nextSequence, sequence + 1)
                    guard chunk.isReal else {
                        if chunk.isNone {
                            s.kind[slot] = flags & Self.entryStale != 0 ? .dirty : .free
                        } else {
                            s.kind[slot] = .damaged
                            damaged += 1
                        }
                        continue
                    }
                    if let other = s.slotOf[chunk] {
                        // An interrupted replace: the higher sequence wins, the other is cleared at the next flush.
                        let (winner, loser) = sequences[Int(other)] > sequence ? (Int(other), slot) : (slot, Int(other))
                        s.kind[loser] = .clearing
                        s.chunkIn[loser] = 0
                        s.clears.append(Clear(slot: UInt32(loser), punch: true, dirty: true))
                        if winner == Int(other) { continue }
                    }
                    s.slotOf[chunk] = UInt32(slot)
                    s.chunkIn[slot] = chunk.rawValue
                    s.kind[slot] = .used
                    sequences[slot] = sequence
                    s.labels[chunk] = label
                }
            }
            first += count
        }
        for slot in stride(from: slotCount - 1, through: 0, by: -1)
        where s.kind[slot] == .free || s.kind[slot] == .dirty {
            s.free.append(UInt32(slot))
        }
        damagedSlots = damaged
        state = Lock(s)
        if damaged > 0 {
            Log.error("file store \(path): \(damaged) slot table entries are damaged; their slots are not used")
        }
    }

    deinit { try? fd.close() }

    // MARK: Metadata

    public func setLabel(_ chunk: ChunkID, _ label: ChunkLabel) throws(StoreError) {
        try state.withLock { s throws(StoreError) in
            guard let slot = s.slotOf[chunk] else { throw StoreError.missing(chunk: chunk) }
            s.labels[chunk] = label
            s.claims.insert(slot)
        }
    }

    public func label(of chunk: ChunkID) throws(StoreError) -> ChunkLabel? {
        try state.withLock { s throws(StoreError) in
            guard s.slotOf[chunk] != nil else { throw StoreError.missing(chunk: chunk) }
            return s.labels[chunk]
        }
    }

    /// A file store keeps no checksums of its own (the ChecksumLayer above it does).
    public func check(_ chunk: ChunkID) throws(StoreError) -> ChunkCheck {
        guard state.withLock({ $0.slotOf[chunk] }) != nil else { throw .missing(chunk: chunk) }
        return .unchecked
    }

    /// Whole slots: a used slot counts chunkSize bytes. Slots freed since the last flush count as neither
    /// used nor free until that flush.
    public func usage() throws(StoreError) -> StoreUsage {
        let (used, free) = state.withLock { ($0.slotOf.count, $0.free.count) }
        let cs = UInt64(chunkSize)
        return StoreUsage(
            totalBytes: UInt64(slotCount) * cs, freeBytes: UInt64(free) * cs, usedBytes: UInt64(used) * cs)
    }

    // MARK: Maintenance

    /// Reads the header block back from the medium (a dead device or filesystem answers EIO).
    public func probe() throws(StoreError) {
        var byte: UInt8 = 0
        if pread(fd.rawValue, &byte, 1, 0) != 1 { throw StoreError.from(errno: errno == 0 ? EIO : errno, chunk: .none) }
    }

    /// The file's one descriptor holds its lock and its layout; it is not swapped under running I/O.
    public func reopen() {}

    /// A file store's size is fixed when it is created (preallocated).
    public func setQuota(_ bytes: UInt64?) -> Bool { false }

    public func allChunks() throws(StoreError) -> [ChunkID] {
        state.withLock { Array($0.slotOf.keys) }
    }
}
