// CompressionLayer — every chunk stored as one zstd-compressed object on the inner store.
//
// Address space: physical chunks (below the thin map, under the checksum layer when both are used).
// Our chunks are `chunkSize` bytes; the inner store's are larger by the header, rounded up to 4 KiB
// (`innerChunkSize(for:)`), so a chunk that does not compress still fits raw.
//
// Stored object, one per chunk, written with `inner.replace` and read with `inner.readAll`
// (little-endian):
//   0  magic "TSZC"   4  format version (1)   5  codec (0 raw, 1 zstd)   6  reserved, 2 zero bytes
//   8  logical length: the chunk's bytes up to its last non-zero byte (trailing zeros cost nothing)
//   12 stored length: payload bytes after the header
//   16 CRC32C of header bytes 0..<16 followed by the payload
//   20 payload: the logical bytes, as one zstd frame or raw
//
// States of a chunk: absent → present (one object). An all-zero chunk is a header alone (logical 0).
// Invariants:
// - The object is only ever replaced whole, by the inner store's atomic `replace`: a crash leaves the
//   old or the new chunk. A failed inner call changes nothing, and the counters move only on success.
// - Codec zstd only when the frame is strictly shorter than the logical bytes, else raw. zstd writes
//   into a buffer of logical − 1 bytes: its worst case fails cleanly (raw is stored) and never needs
//   more room than the inner chunk has.
// - Chunks that do not shrink cost little: one of at least 64 KiB logical bytes is first judged by a
//   sample, four 4 KiB slices spread over it; when zstd cannot take 1/32 off the sample, the chunk is
//   stored raw without compressing it whole (counted in `incompressibleChunks`). Encrypted or already
//   compressed data then costs a 16 KiB trial instead of a whole chunk's; a chunk that only repeats over
//   distances longer than a slice is stored raw too (rare in images; the bytes are kept either way).
// - A read returns bytes only after the header was sane, the CRC matched and the frame decompressed to
//   exactly `logical` bytes; anything else is `.corrupt(offset: 0)`. The decompressor never sees bytes
//   that failed the CRC. Wrong bytes are never returned.
// - Pieces (read, write, zero) cost a whole chunk: reads decompress it under the chunk's stripe held
//   shared; writes and zeroes are read-modify-write under the stripe held exclusively, so two writers
//   of one chunk never lose each other's bytes. `prefersWholeChunks` is always true.
// - zstd contexts are used by one thread at a time: taken from a small pool for one call, returned
//   after it, freed at deinit (or at once when the pool is full).
// Cost: a 4 KiB write is readAll + decompress + compress + replace of the whole chunk, which is why
// callers should move whole chunks here (`prefersWholeChunks`). Durability is the inner store's: flush
// passes through, and `replace` reaches the medium as the inner store's replace does.
// Every method of ChunkStore is written out here (no default pass-through), so a method added to the
// protocol cannot silently bypass compression.
// Lock order: stripe → context pool (short, never across I/O or compression).
import CLinux
import CZstd
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

public final class CompressionLayer: ChunkStore {
    /// Bytes before the payload of every stored object.
    public static let headerSize = 20
    /// zstd levels accepted by `init(over:level:)`.
    public static let levels = 1...19
    public static let defaultLevel = 3

    public let chunkSize: Int
    public let inner: any ChunkStore
    /// The zstd level new objects are compressed at.
    public let level: Int

    private static let magic: [UInt8] = Array("TSZC".utf8)
    private static let version: UInt8 = 1
    private enum Codec: UInt8 {
        case raw = 0
        case zstd = 1
    }

    private let stripes = StripedLocks()
    private let compressors = ContextPool(make: { ZSTD_createCCtx() }, free: { _ = ZSTD_freeCCtx($0) })
    private let decompressors = ContextPool(make: { ZSTD_createDCtx() }, free: { _ = ZSTD_freeDCtx($0) })
    private let logicalWritten = Atomic<UInt64>(0)
    private let storedWritten = Atomic<UInt64>(0)
    private let failures = Atomic<Int>(0)
    private let skips = Atomic<UInt64>(0)

    /// The inner chunk size a CompressionLayer of `chunkSize` (a multiple of 4 KiB) needs: room for the
    /// header and the chunk stored raw, in whole 4 KiB blocks.
    public static func innerChunkSize(for chunkSize: Int) -> Int {
        (chunkSize + headerSize + 4095) / 4096 * 4096
    }

    /// A compression layer over `inner`, whose chunk size should come from `innerChunkSize(for:)`; ours
    /// is the largest multiple of 4 KiB that fits beside the header.
    /// - Parameter level: zstd level for new objects, in `levels` (1 fast … 19 small).
    /// What the layer's messages call the store below it ("store NAME"; the engine names it).
    let place: String

    /// - Parameter place: the store below, as messages name it ("store NAME").
    public init(over inner: any ChunkStore, level: Int = CompressionLayer.defaultLevel, place: String = "its store") {
        self.place = place
        precondition(Self.levels.contains(level), "zstd level \(level) outside \(Self.levels)")
        chunkSize = (inner.chunkSize - Self.headerSize) / 4096 * 4096
        precondition(
            chunkSize > 0 && chunkSize <= Int(UInt32.max) && Self.innerChunkSize(for: chunkSize) <= inner.chunkSize,
            "inner chunk size must come from CompressionLayer.innerChunkSize(for:)")
        self.inner = inner
        self.level = level
    }

    // MARK: Statistics (for `store show`)

    /// Logical bytes (up to each chunk's last non-zero byte) of every object written since start.
    public var uncompressedBytesWritten: UInt64 { logicalWritten.load(ordering: .relaxed) }
    /// Bytes of every object written since start, headers included: what the inner store received.
    public var storedBytesWritten: UInt64 { storedWritten.load(ordering: .relaxed) }
    /// Objects that failed their header, CRC or decompression since start.
    public var mismatches: Int { failures.load(ordering: .relaxed) }
    /// Chunks written raw since start because a sample of them did not shrink (see the header).
    public var incompressibleChunks: UInt64 { skips.load(ordering: .relaxed) }

    /// The compression achieved on what the store holds now, from the headers of up to `sample` chunks
    /// spread evenly over the inner store (all of them when `sample` ≥ their number). Reads each sampled
    /// object whole (`inner.readAll`), without the chunk's stripe: an object is replaced atomically.
    /// - Returns: `logical`, the sampled chunks' bytes up to their last non-zero byte; `stored`, their
    ///   objects' bytes, headers included. A chunk deleted meanwhile or with a damaged header is
    ///   skipped (`check` reports damage). Errors of the inner store pass on.
    public func ratio(sample: Int) throws(StoreError) -> (logical: UInt64, stored: UInt64) {
        let all = try inner.allChunks()
        guard sample > 0, !all.isEmpty else { return (0, 0) }
        let picks = all.count <= sample ? all : (0..<sample).map { all[$0 * all.count / sample] }
        var logical: UInt64 = 0
        var stored: UInt64 = 0
        for chunk in picks {
            let object: [UInt8]
            do throws(StoreError) {
                object = try inner.readAll(chunk)
            } catch .missing {
                continue
            }
            guard let h = object.withUnsafeBytes({ Header(parsing: $0, chunkSize: chunkSize) }) else { continue }
            logical += UInt64(h.logical)
            stored += UInt64(Self.headerSize + h.stored)
        }
        return (logical, stored)
    }

    // MARK: Objects

    private struct Header {
        var codec: Codec
        var logical: Int
        var stored: Int
        var crc: UInt32

        /// The header at the front of `object`, or nil when it is not one this layer could have written
        /// for a chunk of `chunkSize` (bad magic, version, codec, lengths, or bytes after the payload).
        init?(parsing object: UnsafeRawBufferPointer, chunkSize: Int) {
            guard object.count >= CompressionLayer.headerSize,
                object[0..<4].elementsEqual(CompressionLayer.magic),
                object[4] == CompressionLayer.version,
                let codec = Codec(rawValue: object[5]),
                object[6] == 0, object[7] == 0
            else { return nil }
            let logical = Int(UInt32(littleEndian: object.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
            let stored = Int(UInt32(littleEndian: object.loadUnaligned(fromByteOffset: 12, as: UInt32.self)))
            let end = CompressionLayer.headerSize + stored
            guard logical <= chunkSize, end <= object.count,
                codec == .raw ? stored == logical : stored < logical
            else { return nil }
            // A store may hand back the object zero-padded (readAll's contract); anything else is damage.
            guard isAllZero(UnsafeRawBufferPointer(rebasing: object[end...])) else { return nil }
            self.codec = codec
            self.logical = logical
            self.stored = stored
            crc = UInt32(littleEndian: object.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
        }
    }

    /// CRC32C of the header's first 16 bytes, then the payload.
    private static func crc(_ object: UnsafeRawBufferPointer, stored: Int) -> UInt32 {
        let head = tessera_crc32c(0, object.baseAddress, 16)
        return tessera_crc32c(head, object.baseAddress! + headerSize, stored)
    }

    private static let sampleSlice = 4096
    private static let sampleSlices = 4

    /// True when zstd cannot take 1/32 off a sample of `data`'s first `logical` bytes (≥ 4 samples long):
    /// `sampleSlices` slices spread evenly from its start to its end.
    private func looksIncompressible(_ data: UnsafeRawBufferPointer, logical: Int) -> Bool {
        let size = Self.sampleSlice * Self.sampleSlices
        let room = size - size / 32
        return withUnsafeTemporaryAllocation(byteCount: size + room, alignment: 16) { scratch in
            let sample = scratch.baseAddress!
            for i in 0..<Self.sampleSlices {
                let from = i * (logical - Self.sampleSlice) / (Self.sampleSlices - 1)
                (sample + i * Self.sampleSlice).copyMemory(from: data.baseAddress! + from, byteCount: Self.sampleSlice)
            }
            let n = compressors.with { ctx in
                ZSTD_compressCCtx(ctx, sample + size, room, sample, size, Int32(level))
            }
            return ZSTD_isError(n) != 0 || n >= room
        }
    }

    /// The stored object for `data` (≤ chunkSize bytes; its trailing zeros are dropped), and whether it
    /// went raw on its sample alone.
    private func encode(_ data: UnsafeRawBufferPointer) -> (object: [UInt8], skipped: Bool) {
        var logical = data.count
        // Whole zero 4 KiB blocks at the end go fast (memcmp), the last bytes one by one.
        while logical >= 4096 && isAllZero(UnsafeRawBufferPointer(rebasing: data[logical - 4096..<logical])) {
            logical -= 4096
        }
        while logical > 0 && data[logical - 1] == 0 { logical -= 1 }
        let level = Int32(level)
        let skipped = logical >= 4 * Self.sampleSlices * Self.sampleSlice && looksIncompressible(data, logical: logical)
        let object = [UInt8](unsafeUninitializedCapacity: Self.headerSize + logical) { out, count in
            let object = UnsafeMutableRawBufferPointer(out)
            let payload = object.baseAddress! + Self.headerSize
            var codec = Codec.raw
            var stored = logical
            if logical > 1 && !skipped {
                // Only a frame shorter than the data is worth keeping: give zstd logical − 1 bytes.
                let n = compressors.with { ctx in
                    ZSTD_compressCCtx(ctx, payload, logical - 1, data.baseAddress, logical, level)
                }
                if ZSTD_isError(n) == 0 && n < logical {
                    codec = .zstd
                    stored = n
                }
            }
            if codec == .raw && logical > 0 { payload.copyMemory(from: data.baseAddress!, byteCount: logical) }
            for i in 0..<4 { object[i] = Self.magic[i] }
            object[4] = Self.version
            object[5] = codec.rawValue
            object[6] = 0
            object[7] = 0
            object.storeBytes(of: UInt32(logical).littleEndian, toByteOffset: 8, as: UInt32.self)
            object.storeBytes(of: UInt32(stored).littleEndian, toByteOffset: 12, as: UInt32.self)
            let crc = Self.crc(UnsafeRawBufferPointer(object), stored: stored)
            object.storeBytes(of: crc.littleEndian, toByteOffset: 16, as: UInt32.self)
            count = Self.headerSize + stored
        }
        return (object, skipped)
    }

    /// The logical bytes held in `object`, verified (header, CRC, exact decompressed length).
    private func decode(_ chunk: ChunkID, _ object: [UInt8]) throws(StoreError) -> [UInt8] {
        let decoded: [UInt8]? = object.withUnsafeBytes { p in
            guard let h = Header(parsing: p, chunkSize: chunkSize), h.crc == Self.crc(p, stored: h.stored) else {
                return nil
            }
            let payload = p.baseAddress! + Self.headerSize
            if h.codec == .raw { return Array(UnsafeRawBufferPointer(start: payload, count: h.stored)) }
            var ok = false
            let data = [UInt8](unsafeUninitializedCapacity: h.logical) { out, count in
                let n = decompressors.with { ctx in
                    ZSTD_decompressDCtx(ctx, out.baseAddress, h.logical, payload, h.stored)
                }
                ok = ZSTD_isError(n) == 0 && n == h.logical
                count = ok ? h.logical : 0
            }
            return ok ? data : nil
        }
        guard let decoded else {
            failures.add(1, ordering: .relaxed)
            Log.error(
                "compressed chunk damaged: \(chunk) on \(place), \(object.count) bytes stored")
            throw .corrupt(chunk: chunk, offset: 0)
        }
        return decoded
    }

    /// The chunk's logical bytes (trailing zeros omitted). Caller holds the stripe.
    private func load(_ chunk: ChunkID) throws(StoreError) -> [UInt8] {
        try decode(chunk, try inner.readAll(chunk))
    }

    /// Replaces the chunk's object with one holding `data`. Caller holds the stripe exclusively.
    private func store(_ chunk: ChunkID, _ data: UnsafeRawBufferPointer) throws(StoreError) {
        let (object, skipped) = encode(data)
        try object.withStoreBytes { (p) throws(StoreError) in try inner.replace(chunk, with: p) }
        if skipped { skips.add(1, ordering: .relaxed) }
        let logical = object.withUnsafeBytes {
            UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        }
        logicalWritten.add(UInt64(logical), ordering: .relaxed)
        storedWritten.add(UInt64(object.count), ordering: .relaxed)
    }

    /// Read-modify-write of a whole chunk: `patch` edits its logical bytes and says whether it changed
    /// anything. An absent chunk starts empty when `create`, else stays absent.
    private func modify(_ chunk: ChunkID, create: Bool, _ patch: (inout [UInt8]) -> Bool) throws(StoreError) {
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        var data: [UInt8]
        do throws(StoreError) {
            data = try load(chunk)
        } catch .missing {
            guard create else { return }
            data = []
        }
        guard patch(&data) else { return }
        try data.withStoreBytes { (p) throws(StoreError) in try store(chunk, p) }
    }

    // MARK: Whole chunks

    public func replace(_ chunk: ChunkID, with buffer: UnsafeRawBufferPointer) throws(StoreError) {
        precondition(buffer.count <= chunkSize)
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        try store(chunk, buffer)
    }

    public func readAll(_ chunk: ChunkID) throws(StoreError) -> [UInt8] {
        stripes.lockShared(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        return try load(chunk)
    }

    /// Always: a piece costs a whole chunk here.
    public func prefersWholeChunks(_ chunk: ChunkID) -> Bool { true }

    // MARK: Pieces

    public func read(_ chunk: ChunkID, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) {
        precondition(offset >= 0 && offset + buffer.count <= chunkSize)
        let data = try readAll(chunk)
        let have = max(0, min(buffer.count, data.count - offset))
        if have > 0 {
            data.withUnsafeBytes {
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[offset..<offset + have]))
            }
        }
        if have < buffer.count {
            UnsafeMutableRawBufferPointer(rebasing: buffer[have...]).initializeMemory(as: UInt8.self, repeating: 0)
        }
    }

    public func write(_ chunk: ChunkID, offset: Int, from buffer: UnsafeRawBufferPointer) throws(StoreError) {
        precondition(offset >= 0 && offset + buffer.count <= chunkSize)
        try modify(chunk, create: true) { data in
            let end = offset + buffer.count
            if data.count < end { data.append(contentsOf: repeatElement(0, count: end - data.count)) }
            data.withUnsafeMutableBytes {
                UnsafeMutableRawBufferPointer(rebasing: $0[offset..<end]).copyMemory(from: buffer)
            }
            return true
        }
    }

    public func zero(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        precondition(offset >= 0 && length >= 0 && offset + length <= chunkSize)
        guard length > 0 else { return }
        try modify(chunk, create: false) { data in
            // Past the logical bytes everything already reads as zeros.
            let end = min(data.count, offset + length)
            guard offset < end else { return false }
            data.withUnsafeMutableBytes {
                _ = UnsafeMutableRawBufferPointer(rebasing: $0[offset..<end]).initializeMemory(
                    as: UInt8.self, repeating: 0)
            }
            return true
        }
    }

    /// No checksums here: a block cannot be marked unreadable (only the checksum layer above can).
    public func markUnreadable(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        throw .io(errno: EOPNOTSUPP, chunk: chunk)
    }

    public func delete(_ chunk: ChunkID) throws(StoreError) {
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        try inner.delete(chunk)
    }

    public func flush() throws(StoreError) { try inner.flush() }
    public func flush(chunks: Set<ChunkID>) throws(StoreError) { try inner.flush(chunks: chunks) }
    public func usage() throws(StoreError) -> StoreUsage { try inner.usage() }
    public func allChunks() throws(StoreError) -> [ChunkID] { try inner.allChunks() }
    public func setLabel(_ chunk: ChunkID, _ label: ChunkLabel) throws(StoreError) { try inner.setLabel(chunk, label) }
    public func label(of chunk: ChunkID) throws(StoreError) -> ChunkLabel? { try inner.label(of: chunk) }

    /// Reads the object and verifies header, CRC and decompression: `.ok`, or `.corrupt(offsets: [0])`
    /// (the object is one unit). An absent chunk throws `.missing`.
    public func check(_ chunk: ChunkID) throws(StoreError) -> ChunkCheck {
        do throws(StoreError) {
            _ = try readAll(chunk)
            return .ok
        } catch .corrupt {
            return .corrupt(offsets: [0])
        }
    }
}

/// zstd contexts (ZSTD_CCtx or ZSTD_DCtx) for one call at a time each. A context is not thread-safe;
/// creating one per call costs an allocation of up to megabytes, so a few are kept.
private final class ContextPool: Sendable {
    /// `@unchecked Sendable`: a context is owned by the pool or by exactly one thread between `with`'s
    /// take and give; it is never touched by two threads at once.
    private struct Context: @unchecked Sendable {
        let pointer: OpaquePointer
    }
    /// Contexts kept for reuse; more are created under load and freed when returned to a full pool.
    private static let kept = 8
    private let idle = Lock<[Context]>([])
    private let make: @Sendable () -> OpaquePointer?
    private let free: @Sendable (OpaquePointer) -> Void

    init(make: @escaping @Sendable () -> OpaquePointer?, free: @escaping @Sendable (OpaquePointer) -> Void) {
        self.make = make
        self.free = free
    }

    deinit {
        for c in idle.withLock({ $0 }) { free(c.pointer) }
    }

    /// Calls `body` with a context no other thread uses meanwhile.
    func with<R>(_ body: (OpaquePointer) -> R) -> R {
        let context: Context
        if let c = idle.withLock({ $0.popLast() }) {
            context = c
        } else {
            guard let p = make() else { fatalError("zstd: out of memory creating a context") }
            context = Context(pointer: p)
        }
        let result = body(context.pointer)
        let kept = idle.withLock { pool in
            guard pool.count < Self.kept else { return false }
            pool.append(context)
            return true
        }
        if !kept { free(context.pointer) }
        return result
    }
}
