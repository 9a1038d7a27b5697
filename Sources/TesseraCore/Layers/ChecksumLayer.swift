// ChecksumLayer — a CRC32C for every 4 KiB block of every chunk, verified on every read.
//
// Address space: physical chunks. The inner store's chunks are `tableBytes` longer than ours: data
// first, then a slot table with one 8-byte slot per block: (current CRC, previous CRC).
//
// States of a block: never written (slot 0/0, data zeros) → written (slot = crc of its data, or of
// the data it held before the last write that may not have reached the medium).
// Write order: the slot first — (new CRC, old CRC) — then the data. A daemon killed between the two
// leaves data that matches one of the two CRCs, so an interrupted write never reads as corruption.
// Zeroing works the same way (slot (crc of zeros, old), then the hole).
// Unreadable on purpose (`markUnreadable`, a copy-on-write carrying a block it could not read): slot
// (poison, poison), then the hole; poison is the complement of the CRC of zeros, so the block fails
// verification until a whole-block write or zero gives it a real CRC. A partial write into a block that
// fails verification fails too (its old bytes are needed and unknown).
// Invariants:
// - A read returns bytes only after every block they come from matched its slot; otherwise it throws
//   `.corrupt` and counts the failure. Wrong bytes are never returned.
// - A chunk's I/O holds its stripe: shared to read, exclusive to write or zero, so a reader never sees
//   a block half rewritten and two writers never interleave slot and data.
// - Slot tables are cached (write-through, bounded); the copy on the inner store is the truth.
// Whole-chunk stores (object stores, compression; `inner.prefersWholeChunks`): data and table travel
// together in one `readAll` / `replace`, which the store makes atomic, so a slot holds one CRC (both
// halves equal) and a partial write is read-modify-write of the whole chunk under the exclusive stripe.
// A bad block there spoils only itself: reads of other blocks work, a write covering it whole repairs
// it, and the rewrite carries every other bad block over as poison (never as laundered bytes).
// Limitation: after a machine crash (not a daemon kill), a block written but never fsynced may have
// reached the medium without its slot, or the reverse; it then reads as corrupt until rewritten.
// Lock order: stripe → tables (short).
import CLinux
import Synchronization

public final class ChecksumLayer: ChunkStore {
    public static let blockSize = 4096
    public let chunkSize: Int
    public let inner: any ChunkStore
    private let blocks: Int
    private let tableBytes: Int
    private let stripes = StripedLocks()
    private let maxCachedTables: Int

    private final class Table: @unchecked Sendable {
        // Guarded by the chunk's stripe: read under shared, written under exclusive.
        var slots: [UInt64]
        /// Blocks whose last write failed: the medium may hold either version, so the next write takes
        /// the "old" checksum from what is really there rather than from the slot.
        var uncertain: Set<Int> = []
        init(_ slots: [UInt64]) { self.slots = slots }
    }
    private let tables = Lock<[ChunkID: Table]>([:])
    private let failures = Atomic<Int>(0)
    private static let zeroCRC: UInt32 = {
        let zeros = [UInt8](repeating: 0, count: blockSize)
        return zeros.withUnsafeBytes { tessera_crc32c(0, $0.baseAddress, $0.count) }
    }()
    /// The slot of a block marked unreadable: matches no zero block, and is never "never written".
    private static let poisonSlot: UInt64 = UInt64(~zeroCRC) << 32 | UInt64(~zeroCRC)

    /// The inner chunk size a ChecksumLayer of `chunkSize` needs.
    public static func innerChunkSize(for chunkSize: Int) -> Int {
        chunkSize + tableBytes(for: chunkSize)
    }

    private static func tableBytes(for chunkSize: Int) -> Int {
        let raw = chunkSize / blockSize * 8
        return (raw + blockSize - 1) / blockSize * blockSize
    }

    /// What the layer's messages call the store below it ("store NAME"; the engine names it).
    let place: String

    /// - Parameter place: the store below, as messages name it ("store NAME").
    public init(over inner: any ChunkStore, maxCachedTables: Int = 8192, place: String = "its store") {
        self.place = place
        // Find the table size t with tableBytes(inner - t) == t (it grows with the chunk size).
        var t = Self.blockSize
        while t < inner.chunkSize && Self.tableBytes(for: inner.chunkSize - t) != t { t += Self.blockSize }
        tableBytes = t
        chunkSize = inner.chunkSize - t
        precondition(
            chunkSize > 0 && chunkSize % Self.blockSize == 0 && Self.innerChunkSize(for: chunkSize) == inner.chunkSize,
            "inner chunk size must come from ChecksumLayer.innerChunkSize(for:)")
        self.inner = inner
        blocks = chunkSize / Self.blockSize
        self.maxCachedTables = maxCachedTables
    }

    /// Checksum mismatches seen since start.
    public var mismatches: Int { failures.load(ordering: .relaxed) }

    private static func crc(_ p: UnsafeRawBufferPointer) -> UInt32 { tessera_crc32c(0, p.baseAddress, p.count) }

    /// The slot table of `chunk` (all zero for a chunk that does not exist yet).
    private func table(_ chunk: ChunkID) throws(StoreError) -> Table {
        if let t = tables.withLock({ $0[chunk] }) { return t }
        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: blocks * 8, alignment: 8)
        defer { raw.deallocate() }
        raw.initializeMemory(as: UInt8.self, repeating: 0)
        do throws(StoreError) {
            try inner.read(chunk, offset: chunkSize, into: raw)
        } catch .missing {
            // A chunk about to be created: every block is "never written".
        }
        let t = Table((0..<blocks).map { UInt64(littleEndian: raw.load(fromByteOffset: $0 * 8, as: UInt64.self)) })
        return tables.withLock { cache in
            if let existing = cache[chunk] { return existing }
            if cache.count >= maxCachedTables, let victim = cache.keys.first { cache[victim] = nil }
            cache[chunk] = t
            return t
        }
    }

    private func verify(_ chunk: ChunkID, _ t: Table, block: Int, _ data: UnsafeRawBufferPointer) -> Bool {
        let slot = t.slots[block]
        let current = UInt32(truncatingIfNeeded: slot)
        let previous = UInt32(truncatingIfNeeded: slot >> 32)
        let c = Self.crc(data)
        if c == current || c == previous { return true }
        // A 0 checksum means "never written": that version of the block is all zeros.
        return (current == 0 || previous == 0) && c == Self.zeroCRC
    }

    private func corrupt(_ chunk: ChunkID, _ offset: Int) -> StoreError {
        failures.add(1, ordering: .relaxed)
        Log.error("checksum mismatch: \(chunk) on \(place) at byte \(offset)")
        return .corrupt(chunk: chunk, offset: offset)
    }

    // MARK: Whole chunks (data and table in one inner object)

    /// Reads and verifies the whole chunk: data (chunkSize bytes, zero-padded) and the blocks that fail
    /// their checksum (their bytes zeroed), in block order. An object the layer below cannot decode
    /// (compression) counts as every block bad. Caller holds the stripe.
    private func loadWhole(_ chunk: ChunkID) throws(StoreError) -> (data: [UInt8], bad: [Int]) {
        var raw: [UInt8]
        do throws(StoreError) {
            raw = try inner.readAll(chunk)
        } catch .corrupt {
            failures.add(1, ordering: .relaxed)
            Log.error("undecodable object: \(chunk) on \(place)")
            return ([UInt8](repeating: 0, count: chunkSize), Array(0..<blocks))
        }
        if raw.count < inner.chunkSize { raw.append(contentsOf: repeatElement(0, count: inner.chunkSize - raw.count)) }
        let slots = raw.withUnsafeBytes { p in
            (0..<blocks).map {
                UInt64(littleEndian: p.loadUnaligned(fromByteOffset: chunkSize + $0 * 8, as: UInt64.self))
            }
        }
        let t = Table(slots)
        var bad: [Int] = []
        raw.withUnsafeMutableBytes { p in
            for b in 0..<blocks {
                let piece = UnsafeMutableRawBufferPointer(rebasing: p[b * Self.blockSize..<(b + 1) * Self.blockSize])
                if !verify(chunk, t, block: b, UnsafeRawBufferPointer(piece)) {
                    _ = corrupt(chunk, b * Self.blockSize)
                    bad.append(b)
                    piece.initializeMemory(as: UInt8.self, repeating: 0)
                }
            }
        }
        raw.removeLast(raw.count - chunkSize)
        return (raw, bad)
    }

    /// The whole chunk's data, or `.corrupt` at its first bad block (readAll's contract).
    private func loadWholeVerified(_ chunk: ChunkID) throws(StoreError) -> [UInt8] {
        let (data, bad) = try loadWhole(chunk)
        if let b = bad.first { throw .corrupt(chunk: chunk, offset: b * Self.blockSize) }
        return data
    }

    /// Stores `data` (chunkSize bytes) with a fresh table in one atomic replace; the blocks in
    /// `unreadable` are stored as zeros with the poison slot. Caller holds the stripe exclusively.
    private func storeWhole(_ chunk: ChunkID, _ data: [UInt8], unreadable: [Int] = []) throws(StoreError) {
        var raw = data
        raw.reserveCapacity(inner.chunkSize)
        raw.append(contentsOf: repeatElement(0, count: inner.chunkSize - chunkSize))
        raw.withUnsafeMutableBytes { p in
            for b in unreadable {
                _ = UnsafeMutableRawBufferPointer(rebasing: p[b * Self.blockSize..<(b + 1) * Self.blockSize])
                    .initializeMemory(as: UInt8.self, repeating: 0)
            }
            for b in 0..<blocks {
                let c = Self.crc(UnsafeRawBufferPointer(rebasing: p[b * Self.blockSize..<(b + 1) * Self.blockSize]))
                p.storeBytes(
                    of: (UInt64(c) << 32 | UInt64(c)).littleEndian, toByteOffset: chunkSize + b * 8, as: UInt64.self)
            }
            for b in unreadable {
                p.storeBytes(of: Self.poisonSlot.littleEndian, toByteOffset: chunkSize + b * 8, as: UInt64.self)
            }
        }
        tables.withLock { _ = $0.removeValue(forKey: chunk) }
        try raw.withStoreBytes { (p) throws(StoreError) in try inner.replace(chunk, with: p) }
    }

    /// The blocks of `bad` that a change of `range` must carry over as unreadable; throws `.corrupt` when
    /// the range touches a bad block without covering it whole (its old bytes are lost).
    private func carried(_ chunk: ChunkID, _ bad: [Int], past range: Range<Int>) throws(StoreError) -> [Int] {
        var keep: [Int] = []
        for b in bad {
            let block = b * Self.blockSize..<(b + 1) * Self.blockSize
            if range.lowerBound <= block.lowerBound && block.upperBound <= range.upperBound { continue }
            if range.overlaps(block) { throw .corrupt(chunk: chunk, offset: block.lowerBound) }
            keep.append(b)
        }
        return keep
    }

    /// Read-modify-write of a whole-chunk store: `patch` edits the chunk's data in place, within `range`.
    private func modifyWhole(
        _ chunk: ChunkID, create: Bool, range: Range<Int>,
        _ patch: (UnsafeMutableRawBufferPointer) -> Void
    ) throws(StoreError) {
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        var data: [UInt8]
        var keep: [Int] = []
        do throws(StoreError) {
            let loaded = try loadWhole(chunk)
            data = loaded.data
            keep = try carried(chunk, loaded.bad, past: range)
        } catch .missing {
            guard create else { return }
            data = [UInt8](repeating: 0, count: chunkSize)
        }
        data.withUnsafeMutableBytes { patch($0) }
        try storeWhole(chunk, data, unreadable: keep)
    }

    public func replace(_ chunk: ChunkID, with buffer: UnsafeRawBufferPointer) throws(StoreError) {
        precondition(buffer.count <= chunkSize)
        var data = [UInt8](repeating: 0, count: chunkSize)
        data.withUnsafeMutableBytes { $0.copyMemory(from: buffer) }
        if inner.prefersWholeChunks(chunk) {
            stripes.lockExclusive(chunk.rawValue)
            defer { stripes.unlock(chunk.rawValue) }
            return try storeWhole(chunk, data)
        }
        // A piecewise store: an overwrite of every block keeps the per-block crash rules.
        try data.withStoreBytes { (p) throws(StoreError) in try write(chunk, offset: 0, from: p) }
    }

    public func readAll(_ chunk: ChunkID) throws(StoreError) -> [UInt8] {
        if inner.prefersWholeChunks(chunk) {
            stripes.lockShared(chunk.rawValue)
            defer { stripes.unlock(chunk.rawValue) }
            return try loadWholeVerified(chunk)
        }
        var data = [UInt8](repeating: 0, count: chunkSize)
        try data.withMutableStoreBytes { (p) throws(StoreError) in try read(chunk, offset: 0, into: p) }
        return data
    }

    public func prefersWholeChunks(_ chunk: ChunkID) -> Bool { inner.prefersWholeChunks(chunk) }

    // MARK: Pieces

    public func read(_ chunk: ChunkID, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) {
        if inner.prefersWholeChunks(chunk) {
            // Only the blocks asked for must be good.
            stripes.lockShared(chunk.rawValue)
            let loaded: (data: [UInt8], bad: [Int])
            do throws(StoreError) { loaded = try loadWhole(chunk) } catch {
                stripes.unlock(chunk.rawValue)
                throw error
            }
            stripes.unlock(chunk.rawValue)
            let range = offset..<offset + buffer.count
            if let b = loaded.bad.first(where: { range.overlaps($0 * Self.blockSize..<($0 + 1) * Self.blockSize) }) {
                throw .corrupt(chunk: chunk, offset: b * Self.blockSize)
            }
            loaded.data.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[range])) }
            return
        }
        let first = offset / Self.blockSize
        let end = (offset + buffer.count + Self.blockSize - 1) / Self.blockSize
        let aligned = offset % Self.blockSize == 0 && buffer.count % Self.blockSize == 0
        stripes.lockShared(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        let t = try table(chunk)
        if aligned {
            try inner.read(chunk, offset: offset, into: buffer)
            for b in first..<end {
                let piece = UnsafeRawBufferPointer(
                    rebasing: buffer[(b - first) * Self.blockSize..<(b - first + 1) * Self.blockSize])
                if !verify(chunk, t, block: b, piece) { throw corrupt(chunk, b * Self.blockSize) }
            }
            return
        }
        // Unaligned: read the covering blocks, verify them, copy out the part asked for.
        let span = UnsafeMutableRawBufferPointer.allocate(byteCount: (end - first) * Self.blockSize, alignment: 4096)
        defer { span.deallocate() }
        try inner.read(chunk, offset: first * Self.blockSize, into: span)
        for b in first..<end {
            let piece = UnsafeRawBufferPointer(
                rebasing: span[(b - first) * Self.blockSize..<(b - first + 1) * Self.blockSize])
            if !verify(chunk, t, block: b, piece) { throw corrupt(chunk, b * Self.blockSize) }
        }
        let skip = offset - first * Self.blockSize
        buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: span[skip..<skip + buffer.count]))
    }

    /// Writes slots `first..<end` of `t` through to the inner chunk (one pwrite).
    private func storeSlots(_ chunk: ChunkID, _ t: Table, _ first: Int, _ end: Int) throws(StoreError) {
        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: (end - first) * 8, alignment: 8)
        defer { raw.deallocate() }
        for b in first..<end {
            raw.storeBytes(of: t.slots[b].littleEndian, toByteOffset: (b - first) * 8, as: UInt64.self)
        }
        try inner.write(chunk, offset: chunkSize + first * 8, from: UnsafeRawBufferPointer(raw))
    }

    private static func rotate(_ slot: UInt64, to crc: UInt32) -> UInt64 {
        let current = UInt32(truncatingIfNeeded: slot)
        if current == crc && slot != 0 { return slot }
        return UInt64(current) << 32 | UInt64(crc)
    }

    public func write(_ chunk: ChunkID, offset: Int, from buffer: UnsafeRawBufferPointer) throws(StoreError) {
        if inner.prefersWholeChunks(chunk) {
            return try modifyWhole(chunk, create: true, range: offset..<offset + buffer.count) { data in
                UnsafeMutableRawBufferPointer(rebasing: data[offset..<offset + buffer.count]).copyMemory(from: buffer)
            }
        }
        let first = offset / Self.blockSize
        let end = (offset + buffer.count + Self.blockSize - 1) / Self.blockSize
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        let t = try table(chunk)
        var newCRCs = [UInt32](repeating: 0, count: end - first)
        let block = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.blockSize, alignment: 4096)
        defer { block.deallocate() }
        for b in first..<end {
            let start = b * Self.blockSize
            let lo = max(offset, start)
            let hi = min(offset + buffer.count, start + Self.blockSize)
            if t.uncertain.contains(b) {
                // Re-anchor the slot on what the medium holds now.
                try inner.read(chunk, offset: start, into: block)
                t.slots[b] = UInt64(Self.crc(UnsafeRawBufferPointer(block)))
            }
            if lo == start && hi == start + Self.blockSize {
                newCRCs[b - first] = Self.crc(UnsafeRawBufferPointer(rebasing: buffer[lo - offset..<hi - offset]))
                continue
            }
            // Partly covered: merge with the verified old block to know the new checksum.
            if t.uncertain.contains(b) {
                // Already read above: the medium's bytes are the base.
            } else if t.slots[b] == 0 {
                block.initializeMemory(as: UInt8.self, repeating: 0)
            } else {
                try inner.read(chunk, offset: start, into: block)
                if !verify(chunk, t, block: b, UnsafeRawBufferPointer(block)) { throw corrupt(chunk, start) }
            }
            UnsafeMutableRawBufferPointer(rebasing: block[lo - start..<hi - start])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: buffer[lo - offset..<hi - offset]))
            newCRCs[b - first] = Self.crc(UnsafeRawBufferPointer(block))
        }
        let old = Array(t.slots[first..<end])
        for b in first..<end { t.slots[b] = Self.rotate(t.slots[b], to: newCRCs[b - first]) }
        do throws(StoreError) {
            try storeSlots(chunk, t, first, end)  // slots first …
            try inner.write(chunk, offset: offset, from: buffer)  // … then data
            for b in first..<end { t.uncertain.remove(b) }
        } catch {
            // The medium holds the old or the new bytes: keep both acceptable, and re-anchor next time.
            for b in first..<end {
                t.slots[b] = UInt64(UInt32(truncatingIfNeeded: old[b - first])) << 32 | UInt64(newCRCs[b - first])
                t.uncertain.insert(b)
            }
            throw error
        }
    }

    public func zero(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        if inner.prefersWholeChunks(chunk) {
            return try modifyWhole(chunk, create: false, range: offset..<offset + length) { data in
                _ = UnsafeMutableRawBufferPointer(rebasing: data[offset..<offset + length]).initializeMemory(
                    as: UInt8.self, repeating: 0)
            }
        }
        do throws(StoreError) {
            _ = try inner.label(of: chunk)  // cheap existence test: an absent chunk stays absent
        } catch .missing {
            return
        }
        let first = (offset + Self.blockSize - 1) / Self.blockSize
        let end = (offset + length) / Self.blockSize
        // Partial blocks at the edges are rewritten with zeros through the checksummed write path.
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.blockSize, alignment: 4096)
        defer { zeros.deallocate() }
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        let headEnd = min(offset + length, first * Self.blockSize)
        if offset < headEnd {
            try zeroPart(chunk, offset, headEnd - offset, zeros)
        }
        if first >= end {
            let tailStart = max(offset, headEnd)
            if tailStart < offset + length { try zeroPart(chunk, tailStart, offset + length - tailStart, zeros) }
            return
        }
        if (offset + length) % Self.blockSize != 0 {
            try zeroPart(chunk, end * Self.blockSize, (offset + length) - end * Self.blockSize, zeros)
        }
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        let t = try table(chunk)
        // Re-anchor blocks whose last write failed on what the medium holds (reads only: a failure
        // here changes nothing).
        for b in first..<end where t.uncertain.contains(b) {
            try inner.read(chunk, offset: b * Self.blockSize, into: zeros)
            t.slots[b] = UInt64(Self.crc(UnsafeRawBufferPointer(zeros)))
        }
        let old = Array(t.slots[first..<end])
        for b in first..<end { t.slots[b] = Self.rotate(t.slots[b], to: Self.zeroCRC) }
        do throws(StoreError) {
            try storeSlots(chunk, t, first, end)
            try inner.zero(chunk, offset: first * Self.blockSize, length: (end - first) * Self.blockSize)
            for b in first..<end { t.uncertain.remove(b) }
        } catch {
            for b in first..<end {
                t.slots[b] = UInt64(UInt32(truncatingIfNeeded: old[b - first])) << 32 | UInt64(Self.zeroCRC)
                t.uncertain.insert(b)
            }
            throw error
        }
    }

    private func zeroPart(_ chunk: ChunkID, _ offset: Int, _ length: Int, _ zeros: UnsafeMutableRawBufferPointer)
        throws(StoreError)
    {
        try write(chunk, offset: offset, from: UnsafeRawBufferPointer(rebasing: zeros[0..<length]))
    }

    public func markUnreadable(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        precondition(offset % Self.blockSize == 0 && length % Self.blockSize == 0, "unreadable ranges are whole blocks")
        let first = offset / Self.blockSize
        let end = (offset + length) / Self.blockSize
        guard first < end else { return }
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        if inner.prefersWholeChunks(chunk) {
            let loaded = try loadWhole(chunk)
            return try storeWhole(chunk, loaded.data, unreadable: Array(Set(loaded.bad).union(first..<end)).sorted())
        }
        let t = try table(chunk)
        // Whatever reaches the medium, the table here says poison: the blocks stay unreadable (never
        // re-anchored on bytes that may be the lost ones) until a whole-block write.
        for b in first..<end {
            t.slots[b] = Self.poisonSlot
            t.uncertain.remove(b)
        }
        try storeSlots(chunk, t, first, end)  // slots first: from here the blocks fail verification …
        try inner.zero(chunk, offset: offset, length: length)  // … and their bytes go
    }

    public func delete(_ chunk: ChunkID) throws(StoreError) {
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        tables.withLock { _ = $0.removeValue(forKey: chunk) }
        try inner.delete(chunk)
    }

    public func flush() throws(StoreError) { try inner.flush() }
    public func flush(chunks: Set<ChunkID>) throws(StoreError) { try inner.flush(chunks: chunks) }
    public func usage() throws(StoreError) -> StoreUsage { try inner.usage() }
    public func allChunks() throws(StoreError) -> [ChunkID] { try inner.allChunks() }
    public func setLabel(_ chunk: ChunkID, _ label: ChunkLabel) throws(StoreError) { try inner.setLabel(chunk, label) }
    public func label(of chunk: ChunkID) throws(StoreError) -> ChunkLabel? { try inner.label(of: chunk) }

    public func check(_ chunk: ChunkID) throws(StoreError) -> ChunkCheck {
        if inner.prefersWholeChunks(chunk) {
            stripes.lockShared(chunk.rawValue)
            defer { stripes.unlock(chunk.rawValue) }
            let bad = try loadWhole(chunk).bad
            return bad.isEmpty ? .ok : .corrupt(offsets: bad.map { $0 * Self.blockSize })
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        stripes.lockShared(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        let t = try table(chunk)
        try inner.read(chunk, offset: 0, into: buffer)
        var bad: [Int] = []
        for b in 0..<blocks {
            let piece = UnsafeRawBufferPointer(rebasing: buffer[b * Self.blockSize..<(b + 1) * Self.blockSize])
            if !verify(chunk, t, block: b, piece) { bad.append(b * Self.blockSize) }
        }
        if !bad.isEmpty { failures.add(bad.count, ordering: .relaxed) }
        return bad.isEmpty ? .ok : .corrupt(offsets: bad)
    }
}
