// FileStore — chunks in slots of one preallocated regular file or one raw block device.
//
// Address space: physical chunks (ChunkID). Layout, all integers little-endian:
//
//   0           header block, 4096 bytes: magic "TESSERAF" · format version u32 · entry size u32 (64) ·
//               chunk size u64 · slot count u64 · table offset u64 (4096) · data offset u64 · flags u32
//               (1 = free slots were not zeroed at format) · reserved u32 · UUID (16 bytes) · zeros ·
//               CRC32C of bytes 0..<124 at byte 124
//   4096        slot table: one 64-byte entry per slot, entry i describes slot i: chunk u64 (0 = free) ·
//               sequence u64 · label volume i64 · label index u64 · label epoch u64 · flags u32
//               (1 = labeled, 2 = the free slot may hold stale bytes) · slot index u32 · zeros ·
//               CRC32C of bytes 0..<60 at byte 60. An all-zero entry is a never-used slot.
//   data offset the slots, chunkSize bytes each, data offset = 4096 + table rounded up to 4 KiB.
//
// An entry is 64-byte aligned, so it never straddles a 512-byte sector: the medium writes it whole
// (the CRC catches the rare device that does not; such a slot is "damaged": never used, never listed).
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
import CLinux
import Synchronization
import SystemPackage
import TesseraCore

#if canImport(Glibc)
    import Glibc
#endif

public final class FileStore: ChunkStore, StoreMaintenance {
    public static let formatVersion: UInt32 = 1
    static let magic: [UInt8] = Array("TESSERAF".utf8)
    static let headerBytes = 4096
    static let entryBytes = 64
    static let flagNotZeroed: UInt32 = 1
    static let entryLabeled: UInt32 = 1
    static let entryStale: UInt32 = 2

    public let chunkSize: Int
    public let path: String
    /// Number of data slots (chunks the store can hold).
    public let slotCount: Int
    public let isBlockDevice: Bool
    /// The store's identity, set at format (32 hex digits).
    public let uuid: String
    /// Table entries that failed their checksum at open: their slots are never used nor listed.
    public let damagedSlots: Int
    private let fd: FileDescriptor
    private let dataOffset: Int

    private enum Kind: UInt8 {
        case free, dirty, allocating, used, clearing, damaged
    }
    private struct Clear {
        var slot: UInt32
        /// The slot still holds bytes (left behind by replace): punch it once its replacement is durable.
        var punch: Bool
        /// The slot may hold stale bytes: zero it before reuse.
        var dirty: Bool
    }
    private struct State {
        var slotOf: [ChunkID: UInt32] = [:]
        var chunkIn: [UInt64]
        var kind: [Kind]
        var labels: [ChunkID: ChunkLabel] = [:]
        var free: [UInt32] = []
        var claims: Set<UInt32> = []
        var clears: [Clear] = []
        var nextSequence: UInt64 = 1
    }
    private let state: Lock<State>
    private let flushLock = Lock(())
    /// Set after every data write, zeroing and punch; flush takes it before its first fdatasync.
    private let dataDirty = Atomic<Bool>(false)

    // MARK: Setup

    /// Formats `path` as a new file store and opens it.
    ///
    /// - A path that does not exist becomes a regular file of `size` bytes, preallocated.
    /// - An empty regular file is grown to `size` and preallocated.
    /// - A block device is used whole, or its first `size` bytes (`size` must not exceed the device).
    /// Refuses a directory, a non-empty file that is not a file store, a path too small for the header
    /// and one chunk, and a file store or device that already holds one unless `force` is set.
    public static func create(path: String, size: UInt64?, chunkSize: Int, force: Bool = false)
        throws(StoreSetupError) -> FileStore
    {
        precondition(chunkSize > 0 && chunkSize % 4096 == 0, "chunk size must be a positive multiple of 4 KiB")
        var st = stat()
        var created = false
        let raw: Int32
        if stat(path, &st) != 0 {
            guard errno == ENOENT else { throw StoreSetupError("cannot use \(path): \(lastError())") }
            guard size != nil else { throw StoreSetupError("\(path) does not exist: a size is needed to create it") }
            raw = Glibc.open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if raw < 0 { throw StoreSetupError("cannot create \(path): \(lastError())") }
            created = true
            st.st_mode = S_IFREG
        } else {
            raw = try openExisting(path, st)
        }
        let fd = FileDescriptor(rawValue: raw)
        let isDevice = (st.st_mode & S_IFMT) == S_IFBLK
        do throws(StoreSetupError) {
            try lock(fd, path)
            // Size of what we format, and what is already there.
            var target: UInt64
            if isDevice {
                var bytes: UInt64 = 0
                if tessera_block_device_size(raw, &bytes) != 0 {
                    throw StoreSetupError("cannot read the size of \(path): \(lastError())")
                }
                if let size, size > bytes {
                    throw StoreSetupError("\(path) holds \(bytes) bytes, less than the \(size) asked for")
                }
                target = size ?? bytes
                if case .ours(let id) = sniff(fd), !force {
                    throw StoreSetupError(
                        "\(path) already holds a Tessera file store (\(id)); use force to format it again")
                }
            } else {
                let current = UInt64(st.st_size)
                if current > 0 {
                    switch sniff(fd) {
                    case .ours(let id):
                        guard force else {
                            throw StoreSetupError(
                                "\(path) already holds a Tessera file store (\(id)); use force to format it again")
                        }
                    case .foreign:
                        throw StoreSetupError(
                            "\(path) is not empty and is not a Tessera file store; refusing to overwrite it")
                    }
                    if ftruncate(raw, 0) != 0 { throw StoreSetupError("cannot truncate \(path): \(lastError())") }
                }
                guard let t = size ?? (current > 0 ? current : nil) else {
                    throw StoreSetupError("\(path) is empty: a size is needed to format it")
                }
                target = t
            }
            guard let layout = Layout(size: target, chunkSize: chunkSize) else {
                throw StoreSetupError(
                    "\(target) bytes at \(path) is too small for the header and one chunk of \(chunkSize) bytes "
                        + "(at least \(Layout.minimumSize(chunkSize: chunkSize)) bytes)")
            }
            target = UInt64(layout.end)
            var flags: UInt32 = 0
            if isDevice {
                // Wipe the old header first: a format interrupted halfway leaves no store, not a wrong one.
                try writeZeros(fd, at: 0, count: headerBytes, path)
                try syncSetup(fd, path)
                try writeZeros(fd, at: headerBytes, count: layout.dataOffset - headerBytes, path)
                let dataBytes = off_t(layout.slots) * off_t(chunkSize)
                if tessera_punch_hole(raw, off_t(layout.dataOffset), dataBytes) != 0 { flags |= flagNotZeroed }
            } else if tessera_allocate(raw, 0, off_t(target)) != 0 {
                let e = errno
                _ = ftruncate(raw, 0)
                if e == ENOSPC || e == EDQUOT {
                    throw StoreSetupError(
                        "not enough space on the filesystem holding \(path) for \(target) bytes (ENOSPC)")
                }
                throw StoreSetupError("cannot preallocate \(target) bytes for \(path): \(String(cString: strerror(e)))")
            }
            try syncSetup(fd, path)
            let header = Header(
                chunkSize: UInt64(chunkSize), slots: UInt64(layout.slots),
                dataOffset: UInt64(layout.dataOffset), flags: flags, uuid: randomUUID())
            do {
                _ = try fd.writeAll(toAbsoluteOffset: 0, header.encoded())
            } catch {
                throw StoreSetupError("cannot write the header of \(path): \(error)")
            }
            try syncSetup(fd, path)
            if created, !fsyncParent(of: path) {
                throw StoreSetupError("cannot sync the directory of \(path): \(lastError())")
            }
            return try FileStore(fd: fd, path: path, header: header, isBlockDevice: isDevice)
        } catch {
            try? fd.close()
            if created { unlink(path) }
            throw error
        }
    }

    /// Opens the file store at `path`, checking its header: magic, format version, chunk size and that
    /// the file or device is as large as the slot count needs.
    public static func open(path: String, chunkSize: Int) throws(StoreSetupError) -> FileStore {
        var st = stat()
        if stat(path, &st) != 0 { throw StoreSetupError("cannot open file store \(path): \(lastError())") }
        let fd = FileDescriptor(rawValue: try openExisting(path, st))
        do throws(StoreSetupError) {
            try lock(fd, path)
            // Whatever a killed predecessor left in the page cache becomes durable before we act on it.
            try syncSetup(fd, path)
            var raw = [UInt8](repeating: 0, count: headerBytes)
            let n = (try? raw.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: 0, into: $0) }) ?? 0
            guard n == headerBytes, Array(raw[0..<8]) == magic else {
                throw StoreSetupError("\(path) is not a Tessera file store (no TESSERAF header)")
            }
            let header = try Header(decoding: raw, path: path)
            guard header.chunkSize == UInt64(chunkSize) else {
                throw StoreSetupError(
                    "\(path) holds chunks of \(header.chunkSize) bytes, not the \(chunkSize) expected")
            }
            let size: UInt64
            if (st.st_mode & S_IFMT) == S_IFBLK {
                var bytes: UInt64 = 0
                if tessera_block_device_size(fd.rawValue, &bytes) != 0 {
                    throw StoreSetupError("cannot read the size of \(path): \(lastError())")
                }
                size = bytes
            } else {
                size = UInt64(st.st_size)
            }
            guard header.slots >= 1, header.slots <= UInt64(UInt32.max),
                let layout = Layout(slots: Int(header.slots), chunkSize: chunkSize),
                UInt64(layout.dataOffset) == header.dataOffset
            else {
                throw StoreSetupError("the header of \(path) is inconsistent (slot count \(header.slots))")
            }
            guard UInt64(layout.end) <= size else {
                throw StoreSetupError(
                    "\(path) has \(size) bytes but its \(header.slots) slots need \(layout.end): truncated?")
            }
            return try FileStore(fd: fd, path: path, header: header, isBlockDevice: (st.st_mode & S_IFMT) == S_IFBLK)
        } catch {
            try? fd.close()
            throw error
        }
    }

    /// Loads the slot table and builds the free map.
    private init(fd: FileDescriptor, path: String, header: Header, isBlockDevice: Bool) throws(StoreSetupError) {
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

    // MARK: Data path

    private func position(_ slot: UInt32, _ offset: Int = 0) -> Int { dataOffset + Int(slot) * chunkSize + offset }

    public func read(_ chunk: ChunkID, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) {
        guard let slot = state.withLock({ $0.slotOf[chunk] }) else { throw .missing(chunk: chunk) }
        var done = 0
        while done < buffer.count {
            let n: Int
            do {
                n = try fd.read(
                    fromAbsoluteOffset: Int64(position(slot, offset + done)),
                    into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
            } catch {
                throw StoreError.from(errno: (error as? Errno)?.rawValue ?? EIO, chunk: chunk)
            }
            // Slots lie inside the file: an end of file means it was truncated under us.
            if n == 0 { throw .io(errno: EIO, chunk: chunk) }
            done += n
        }
    }

    public func write(_ chunk: ChunkID, offset: Int, from buffer: UnsafeRawBufferPointer) throws(StoreError) {
        let slot = try slotForWrite(chunk)
        try writeAll(buffer, at: position(slot, offset), chunk)
        dataDirty.store(true, ordering: .releasing)
    }

    /// Writes into a fresh slot, then switches the chunk to it; the next flush makes the switch durable,
    /// then punches and clears the old slot (see the header). Needs one free slot: `.noSpace` otherwise.
    public func replace(_ chunk: ChunkID, with buffer: UnsafeRawBufferPointer) throws(StoreError) {
        let slot = try takeSlot(chunk)
        do {
            try writeAll(buffer, at: position(slot), chunk)
        } catch {
            release(slot, dirty: true)
            throw error
        }
        dataDirty.store(true, ordering: .releasing)
        state.withLock { s in
            if let old = s.slotOf[chunk] {
                s.kind[Int(old)] = .clearing
                s.chunkIn[Int(old)] = 0
                s.claims.remove(old)
                s.clears.append(Clear(slot: old, punch: true, dirty: true))
            }
            s.slotOf[chunk] = slot
            s.chunkIn[Int(slot)] = chunk.rawValue
            s.kind[Int(slot)] = .used
            s.claims.insert(slot)
        }
    }

    public func readAll(_ chunk: ChunkID) throws(StoreError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: chunkSize)
        try out.withMutableStoreBytes { (buffer) throws(StoreError) in try read(chunk, offset: 0, into: buffer) }
        return out
    }

    /// Slots take pieces: a 4 KiB write is one pwrite.
    public func prefersWholeChunks(_ chunk: ChunkID) -> Bool { false }

    /// Zeroes the range in place (ZERO_RANGE): the slot is the store's space whatever it holds, so it stays
    /// reserved and a later write into it cannot run out of room on the filesystem.
    public func zero(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        guard length > 0 else { return }
        guard let slot = state.withLock({ $0.slotOf[chunk] }) else { return }
        try zeroBytes(at: position(slot, offset), count: length, chunk)
        dataDirty.store(true, ordering: .releasing)
    }

    /// Punches the slot now (the chunk is gone either way once this returns); the slot is free for
    /// reuse only after a flush has made its cleared entry durable.
    /// No checksums here: a block cannot be marked unreadable (only the checksum layer above can).
    public func markUnreadable(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        throw .io(errno: EOPNOTSUPP, chunk: chunk)
    }

    public func delete(_ chunk: ChunkID) throws(StoreError) {
        guard let slot = state.withLock({ $0.slotOf[chunk] }) else { return }
        let punched = tessera_punch_hole(fd.rawValue, off_t(position(slot)), off_t(chunkSize)) == 0
        dataDirty.store(true, ordering: .releasing)
        state.withLock { s in
            s.slotOf[chunk] = nil
            s.labels[chunk] = nil
            s.chunkIn[Int(slot)] = 0
            s.kind[Int(slot)] = .clearing
            s.claims.remove(slot)
            s.clears.append(Clear(slot: slot, punch: false, dirty: !punched))
        }
    }

    /// The slot of `chunk`, allocating (and zeroing) one on its first write.
    private func slotForWrite(_ chunk: ChunkID) throws(StoreError) -> UInt32 {
        if let slot = state.withLock({ $0.slotOf[chunk] }) { return slot }
        let slot = try takeSlot(chunk)
        return state.withLock { s in
            if let existing = s.slotOf[chunk] {
                // Another writer of the same chunk won the race; ours is zeroed, so it is clean.
                s.kind[Int(slot)] = .free
                s.free.append(slot)
                return existing
            }
            s.slotOf[chunk] = slot
            s.chunkIn[Int(slot)] = chunk.rawValue
            s.kind[Int(slot)] = .used
            // The claim may reach the table before this write's data: the slot then reads as zeros,
            // which is what an unacknowledged write may leave.
            s.claims.insert(slot)
            return slot
        }
    }

    /// Takes a free slot and makes it read zeros (see the header). `.noSpace` when none is left.
    private func takeSlot(_ chunk: ChunkID) throws(StoreError) -> UInt32 {
        let (slot, dirty) = try state.withLock { s throws(StoreError) in
            guard let slot = s.free.popLast() else { throw StoreError.noSpace }
            let dirty = s.kind[Int(slot)] == .dirty
            s.kind[Int(slot)] = .allocating
            return (slot, dirty)
        }
        if !isBlockDevice || dirty {
            do {
                try zeroBytes(at: position(slot), count: chunkSize, chunk)
            } catch {
                release(slot, dirty: dirty)
                throw error
            }
            // The zeros must be durable before any claim naming the slot is: flush's first fdatasync.
            dataDirty.store(true, ordering: .releasing)
        }
        return slot
    }

    /// Puts an allocating slot back on the free list.
    private func release(_ slot: UInt32, dirty: Bool) {
        state.withLock { s in
            s.kind[Int(slot)] = dirty ? .dirty : .free
            s.free.append(slot)
        }
    }

    private func writeAll(_ buffer: UnsafeRawBufferPointer, at position: Int, _ chunk: ChunkID) throws(StoreError) {
        var done = 0
        while done < buffer.count {
            do {
                done += try fd.write(
                    toAbsoluteOffset: Int64(position + done),
                    UnsafeRawBufferPointer(rebasing: buffer[done...]))
            } catch {
                throw StoreError.from(errno: (error as? Errno)?.rawValue ?? EIO, chunk: chunk)
            }
        }
    }

    /// Makes the range read zeros, keeping it allocated: fallocate ZERO_RANGE; where the filesystem
    /// lacks it, a hole then fallocate; where a device refuses (unaligned range), written zeros.
    private func zeroBytes(at position: Int, count: Int, _ chunk: ChunkID) throws(StoreError) {
        if tessera_zero_range(fd.rawValue, off_t(position), off_t(count)) == 0 { return }
        if errno == ENOSPC || errno == EDQUOT { throw .noSpace }
        if !isBlockDevice, tessera_punch_hole(fd.rawValue, off_t(position), off_t(count)) == 0 {
            if tessera_allocate(fd.rawValue, off_t(position), off_t(count)) != 0, errno == ENOSPC || errno == EDQUOT {
                throw .noSpace
            }
            return
        }
        do throws(StoreError) {
            try Self.writeZeros(fd, at: position, count: count)
        } catch {
            if case .io(let code, _) = error { throw .io(errno: code, chunk: chunk) }
            throw error
        }
    }

    // MARK: Flush

    public func flush() throws(StoreError) {
        // Held across I/O on purpose: flush is the durability barrier (see the header).
        try flushLock.withLock { _ throws(StoreError) in try flushLocked() }
    }

    /// Flushes the whole store: the chunks share one file, whose fdatasync costs the same for a subset.
    public func flush(chunks: Set<ChunkID>) throws(StoreError) {
        try flush()
    }

    /// Steps A, B and C of the header. On failure the claims and clears not yet durable go back to
    /// be retried by the next flush.
    private func flushLocked() throws(StoreError) {
        // Claims and clears are taken together: a replace's clear is then never written before its claim.
        let (claims, taken) = state.withLock { s in
            var claims: [(UInt32, [UInt8])] = []
            for slot in s.claims.sorted() {
                let chunk = ChunkID(s.chunkIn[Int(slot)])
                guard s.kind[Int(slot)] == .used, chunk.isReal else { continue }
                claims.append(
                    (
                        slot,
                        Entry.encode(
                            chunk: chunk, sequence: s.nextSequence, label: s.labels[chunk],
                            flags: 0, slot: slot)
                    ))
                s.nextSequence += 1
            }
            s.claims = []
            let clears = s.clears
            s.clears = []
            return (claims, clears)
        }
        // Every zeroing that made a slot ready, and every delete's punch, set dataDirty before its claim
        // or clear was published; an earlier flush that took the flag synced before we got flushLock.
        let data = dataDirty.exchange(false, ordering: .acquiringAndReleasing)
        var clears = taken
        func restore(claims again: Bool) {
            dataDirty.store(true, ordering: .releasing)
            state.withLock { s in
                if again {
                    for (slot, _) in claims where s.kind[Int(slot)] == .used { s.claims.insert(slot) }
                }
                s.clears += clears
            }
        }
        if data {
            do throws(StoreError) {
                try sync()  // A
            } catch {
                restore(claims: true)
                throw error
            }
        }
        if !claims.isEmpty {
            do throws(StoreError) {
                try writeEntries(claims)
                try sync()  // B
            } catch {
                restore(claims: true)
                throw error
            }
        }
        guard !clears.isEmpty else { return }
        for i in clears.indices where clears[i].punch {
            if tessera_punch_hole(fd.rawValue, off_t(position(clears[i].slot)), off_t(chunkSize)) != 0 {
                clears[i].dirty = true
            }
        }
        do throws(StoreError) {
            try writeEntries(
                clears.map {
                    (
                        $0.slot,
                        Entry.encode(
                            chunk: .none, sequence: 0, label: nil,
                            flags: Self.entryStale, slot: $0.slot)
                    )
                })
            try sync()  // C
        } catch {
            restore(claims: false)
            throw error
        }
        state.withLock { s in
            for c in clears {
                s.kind[Int(c.slot)] = c.dirty ? .dirty : .free
                s.free.append(c.slot)
            }
        }
    }

    private func sync() throws(StoreError) {
        if fdatasync(fd.rawValue) != 0 { throw StoreError.from(errno: errno, chunk: .none) }
    }

    /// Writes table entries, one pwrite per run of consecutive slots.
    private func writeEntries(_ entries: [(UInt32, [UInt8])]) throws(StoreError) {
        let sorted = entries.sorted { $0.0 < $1.0 }
        var i = 0
        while i < sorted.count {
            var run = sorted[i].1
            var j = i + 1
            while j < sorted.count, sorted[j].0 == sorted[j - 1].0 + 1 {
                run += sorted[j].1
                j += 1
            }
            let at = Self.headerBytes + Int(sorted[i].0) * Self.entryBytes
            try run.withStoreBytes { (p) throws(StoreError) in try writeAll(p, at: at, .none) }
            i = j
        }
    }

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

    // MARK: On-medium formats

    /// Where the table and the slots go for a given size or slot count.
    struct Layout {
        let slots: Int
        let dataOffset: Int
        let end: Int

        init?(slots: Int, chunkSize: Int) {
            guard slots >= 1 else { return nil }
            self.slots = slots
            dataOffset = FileStore.headerBytes + (slots * FileStore.entryBytes + 4095) / 4096 * 4096
            end = dataOffset + slots * chunkSize
        }

        /// The most slots that fit in `size` bytes.
        init?(size: UInt64, chunkSize: Int) {
            guard size > UInt64(FileStore.headerBytes) else { return nil }
            var n = Int(
                min(
                    (size - UInt64(FileStore.headerBytes)) / UInt64(chunkSize + FileStore.entryBytes),
                    UInt64(UInt32.max)))
            while n >= 1, let l = Layout(slots: n, chunkSize: chunkSize), UInt64(l.end) > size { n -= 1 }
            self.init(slots: n, chunkSize: chunkSize)
        }

        static func minimumSize(chunkSize: Int) -> Int { FileStore.headerBytes + 4096 + chunkSize }
    }

    struct Header {
        var chunkSize: UInt64
        var slots: UInt64
        var dataOffset: UInt64
        var flags: UInt32
        var uuid: [UInt8]

        init(chunkSize: UInt64, slots: UInt64, dataOffset: UInt64, flags: UInt32, uuid: [UInt8]) {
            self.chunkSize = chunkSize
            self.slots = slots
            self.dataOffset = dataOffset
            self.flags = flags
            self.uuid = uuid
        }

        init(decoding raw: [UInt8], path: String) throws(StoreSetupError) {
            guard raw.loadLE(UInt32.self, at: 124) == crc(raw, 0..<124) else {
                throw StoreSetupError("the header of \(path) is damaged (checksum mismatch)")
            }
            let version = raw.loadLE(UInt32.self, at: 8)
            guard version == FileStore.formatVersion else {
                throw StoreSetupError(
                    "\(path) has file store format version \(version); this build reads version \(FileStore.formatVersion)"
                )
            }
            guard raw.loadLE(UInt32.self, at: 12) == UInt32(FileStore.entryBytes),
                raw.loadLE(UInt64.self, at: 32) == UInt64(FileStore.headerBytes)
            else {
                throw StoreSetupError("the header of \(path) is inconsistent (entry size or table offset)")
            }
            chunkSize = raw.loadLE(UInt64.self, at: 16)
            slots = raw.loadLE(UInt64.self, at: 24)
            dataOffset = raw.loadLE(UInt64.self, at: 40)
            flags = raw.loadLE(UInt32.self, at: 48)
            uuid = Array(raw[56..<72])
        }

        func encoded() -> [UInt8] {
            var raw = [UInt8](repeating: 0, count: FileStore.headerBytes)
            raw.replaceSubrange(0..<8, with: FileStore.magic)
            raw.storeLE(FileStore.formatVersion, at: 8)
            raw.storeLE(UInt32(FileStore.entryBytes), at: 12)
            raw.storeLE(chunkSize, at: 16)
            raw.storeLE(slots, at: 24)
            raw.storeLE(UInt64(FileStore.headerBytes), at: 32)
            raw.storeLE(dataOffset, at: 40)
            raw.storeLE(flags, at: 48)
            raw.replaceSubrange(56..<72, with: uuid)
            raw.storeLE(crc(raw, 0..<124), at: 124)
            return raw
        }
    }

    enum Entry {
        case never
        case damaged
        case entry(chunk: ChunkID, sequence: UInt64, label: ChunkLabel?, flags: UInt32)

        init(decoding raw: [UInt8], at base: Int, slot: UInt32) {
            if raw[base..<base + FileStore.entryBytes].allSatisfy({ $0 == 0 }) {
                self = .never
                return
            }
            guard raw.loadLE(UInt32.self, at: base + 60) == crc(raw, base..<base + 60),
                raw.loadLE(UInt32.self, at: base + 44) == slot
            else {
                self = .damaged
                return
            }
            let flags = raw.loadLE(UInt32.self, at: base + 40)
            let label =
                flags & FileStore.entryLabeled == 0
                ? nil
                : ChunkLabel(
                    volume: VolumeID(Int64(bitPattern: raw.loadLE(UInt64.self, at: base + 16))),
                    index: raw.loadLE(UInt64.self, at: base + 24), epoch: raw.loadLE(UInt64.self, at: base + 32))
            self = .entry(
                chunk: ChunkID(raw.loadLE(UInt64.self, at: base)),
                sequence: raw.loadLE(UInt64.self, at: base + 8), label: label, flags: flags)
        }

        static func encode(chunk: ChunkID, sequence: UInt64, label: ChunkLabel?, flags: UInt32, slot: UInt32) -> [UInt8]
        {
            var raw = [UInt8](repeating: 0, count: FileStore.entryBytes)
            raw.storeLE(chunk.rawValue, at: 0)
            raw.storeLE(sequence, at: 8)
            if let label {
                raw.storeLE(UInt64(bitPattern: label.volume.rawValue), at: 16)
                raw.storeLE(label.index, at: 24)
                raw.storeLE(label.epoch, at: 32)
            }
            raw.storeLE(flags | (label == nil ? 0 : FileStore.entryLabeled), at: 40)
            raw.storeLE(slot, at: 44)
            raw.storeLE(crc(raw, 0..<60), at: 60)
            return raw
        }
    }

    // MARK: Setup helpers

    private enum Sniffed { case ours(String), foreign }

    /// Whether the first block holds a file store header (its UUID) or anything else.
    private static func sniff(_ fd: FileDescriptor) -> Sniffed {
        var raw = [UInt8](repeating: 0, count: headerBytes)
        let n = (try? raw.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: 0, into: $0) }) ?? 0
        guard n >= 72, Array(raw[0..<8]) == magic else { return .foreign }
        return .ours("UUID " + raw[56..<72].map { hex2($0) }.joined())
    }

    /// Opens an existing path that must be a regular file or a block device; a block device is opened
    /// O_EXCL, which the kernel refuses while it is mounted or held by another program.
    private static func openExisting(_ path: String, _ st: stat) throws(StoreSetupError) -> Int32 {
        let type = st.st_mode & S_IFMT
        if type == S_IFDIR {
            throw StoreSetupError("\(path) is a directory; a file store needs a regular file or a block device")
        }
        guard type == S_IFREG || type == S_IFBLK else {
            throw StoreSetupError("\(path) is neither a regular file nor a block device")
        }
        let raw = Glibc.open(path, O_RDWR | O_CLOEXEC | (type == S_IFBLK ? O_EXCL : 0))
        if raw < 0 {
            if errno == EBUSY { throw StoreSetupError("\(path) is in use (mounted or held by another program)") }
            throw StoreSetupError("cannot open \(path): \(lastError())")
        }
        return raw
    }

    /// Takes the store's flock. Retries for a second before calling the store busy: a lock belongs to the
    /// open file description, which a child forked by another thread holds until its exec closes it, so
    /// a store just closed in this process can look locked for a moment.
    private static func lock(_ fd: FileDescriptor, _ path: String) throws(StoreSetupError) {
        for attempt in 0..<20 {
            if flock(fd.rawValue, LOCK_EX | LOCK_NB) == 0 { return }
            guard errno == EWOULDBLOCK else { throw StoreSetupError("cannot lock \(path): \(lastError())") }
            if attempt < 19 { usleep(50_000) }
        }
        throw StoreSetupError("\(path) is in use by another Tessera process")
    }

    private static func syncSetup(_ fd: FileDescriptor, _ path: String) throws(StoreSetupError) {
        if fdatasync(fd.rawValue) != 0 { throw StoreSetupError("cannot sync \(path): \(lastError())") }
    }

    private static func writeZeros(_ fd: FileDescriptor, at position: Int, count: Int, _ path: String)
        throws(StoreSetupError)
    {
        do throws(StoreError) {
            try writeZeros(fd, at: position, count: count)
        } catch {
            throw StoreSetupError("cannot write \(path): \(error)")
        }
    }

    /// Writes `count` zero bytes at `position`, 64 KiB at a time.
    static func writeZeros(_ fd: FileDescriptor, at position: Int, count: Int) throws(StoreError) {
        var done = 0
        while done < count {
            let n = min(count - done, zeros.count)
            do {
                let wrote = try zeros.withUnsafeBytes { z in
                    try fd.write(toAbsoluteOffset: Int64(position + done), UnsafeRawBufferPointer(rebasing: z[0..<n]))
                }
                done += wrote
            } catch {
                throw StoreError.from(errno: (error as? Errno)?.rawValue ?? EIO, chunk: .none)
            }
        }
    }

    private static let zeros = [UInt8](repeating: 0, count: 64 * 1024)

    private static func randomUUID() -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) }
        bytes[6] = bytes[6] & 0x0f | 0x40  // version 4
        bytes[8] = bytes[8] & 0x3f | 0x80  // RFC 4122 variant
        return bytes
    }

    static func hex2(_ b: UInt8) -> String { DirectoryStore.hex2(b) }
}

private func crc(_ raw: [UInt8], _ range: Range<Int>) -> UInt32 {
    raw.withUnsafeBytes { p in tessera_crc32c(0, p.baseAddress! + range.lowerBound, range.count) }
}

private func lastError() -> String { String(cString: strerror(errno)) }

/// fsync of the directory holding `path`, so a new file's entry is durable.
private func fsyncParent(of path: String) -> Bool {
    let parent = path.lastIndex(of: "/").map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
    return fsyncPath(parent)
}

extension Array where Element == UInt8 {
    fileprivate func loadLE<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        var v: T = 0
        for i in 0..<MemoryLayout<T>.size { v |= T(self[offset + i]) << (8 * i) }
        return v
    }

    fileprivate mutating func storeLE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        for i in 0..<MemoryLayout<T>.size { self[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
    }
}
