// One conformance suite for the ChunkStore contract, run against every store and every stack.
// A new store or layer adds one case to StoreKind and one line to StoreFixture.make.

import TesseraCore
import TesseraStores
import TesseraTestSupport
import Testing

/// Every store and stack the suite runs against.
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case memory
    case directory
    case checksumOverMemory
    case checksumOverDirectory
    case poolOverTwoMemoryStores
    case poolOverDirectory
    /// What the engine builds for a pool of directory stores.
    case poolOverChecksumOverDirectory
    case faultyOverMemory
    /// A checksum layer over a store that wants whole chunks (what object stores get).
    case checksumOverWholeChunkMemory
    /// Compression over a store that takes whole objects (what an object store gets).
    case compressionOverMemory
    /// Checksums above compression: the checksum layer then works in whole chunks too.
    case checksumOverCompressionOverMemory
    case compressionOverDirectory
    /// A preallocated file of slots.
    case file
    /// What the engine builds over a file store.
    case checksumOverFile
    /// The RAM cache, 8 chunks big: the suite's writes overflow it (evictions, throttled write-back).
    case cacheOverMemory
    case cacheOverChecksumOverDirectory
    /// A cache over a store that wants whole chunks: fills by readAll, write-back by replace.
    case cacheOverWholeChunkMemory

    var testDescription: String { rawValue }

    /// Whether the stack stores fewer bytes than it is given (usage may fall below the data written).
    var compresses: Bool {
        switch self {
        case .compressionOverMemory, .checksumOverCompressionOverMemory, .compressionOverDirectory: return true
        default: return false
        }
    }
}

/// A store under test, with what keeps it alive (temporary directories) and how to name its chunks.
final class StoreFixture {
    static let chunkSize = 64 * 1024

    let store: any ChunkStore
    let kind: StoreKind
    /// Store IDs a chunk may name; a PoolLayer routes by them, plain stores ignore them.
    private let storeIDs: [Int64]
    private let dirs: [TemporaryDirectory]

    private init(_ kind: StoreKind, _ store: any ChunkStore, storeIDs: [Int64], dirs: [TemporaryDirectory] = []) {
        self.kind = kind
        self.store = store
        self.storeIDs = storeIDs
        self.dirs = dirs
    }

    deinit { (store as? CacheLayer)?.stop() }

    static func cache(over inner: any ChunkStore) -> CacheLayer {
        CacheLayer(over: inner, .init(capacity: 8 * chunkSize))
    }

    static func make(_ kind: StoreKind) throws -> StoreFixture {
        let cs = chunkSize
        switch kind {
        case .memory:
            return StoreFixture(kind, MemoryStore(chunkSize: cs), storeIDs: [1, 2])
        case .directory:
            let dir = try TemporaryDirectory()
            return StoreFixture(kind, try DirectoryStore(root: dir.path, chunkSize: cs), storeIDs: [1, 2], dirs: [dir])
        case .checksumOverMemory:
            let inner = MemoryStore(chunkSize: ChecksumLayer.innerChunkSize(for: cs))
            return StoreFixture(kind, ChecksumLayer(over: inner), storeIDs: [1, 2])
        case .checksumOverDirectory:
            let dir = try TemporaryDirectory()
            let inner = try DirectoryStore(root: dir.path, chunkSize: ChecksumLayer.innerChunkSize(for: cs))
            return StoreFixture(kind, ChecksumLayer(over: inner), storeIDs: [1, 2], dirs: [dir])
        case .poolOverChecksumOverDirectory:
            let dir = try TemporaryDirectory()
            let inner = try DirectoryStore(root: dir.path, chunkSize: ChecksumLayer.innerChunkSize(for: cs))
            let pool = PoolLayer(chunkSize: cs)
            pool.add(StoreID(3), store: ChecksumLayer(over: inner), nextSerial: 1)
            return StoreFixture(kind, pool, storeIDs: [3], dirs: [dir])
        case .poolOverTwoMemoryStores:
            let pool = PoolLayer(chunkSize: cs)
            pool.add(StoreID(1), store: MemoryStore(chunkSize: cs), nextSerial: 1)
            pool.add(StoreID(2), store: MemoryStore(chunkSize: cs), nextSerial: 1)
            return StoreFixture(kind, pool, storeIDs: [1, 2])
        case .poolOverDirectory:
            let dir = try TemporaryDirectory()
            let pool = PoolLayer(chunkSize: cs)
            pool.add(StoreID(7), store: try DirectoryStore(root: dir.path, chunkSize: cs), nextSerial: 1)
            return StoreFixture(kind, pool, storeIDs: [7], dirs: [dir])
        case .checksumOverWholeChunkMemory:
            let inner = MemoryStore(chunkSize: ChecksumLayer.innerChunkSize(for: cs), wholeChunks: true)
            return StoreFixture(kind, ChecksumLayer(over: inner), storeIDs: [1, 2])
        case .compressionOverMemory:
            let inner = MemoryStore(chunkSize: CompressionLayer.innerChunkSize(for: cs), wholeChunks: true)
            return StoreFixture(kind, CompressionLayer(over: inner), storeIDs: [1, 2])
        case .checksumOverCompressionOverMemory:
            let compressed = ChecksumLayer.innerChunkSize(for: cs)
            let inner = MemoryStore(chunkSize: CompressionLayer.innerChunkSize(for: compressed), wholeChunks: true)
            return StoreFixture(kind, ChecksumLayer(over: CompressionLayer(over: inner)), storeIDs: [1, 2])
        case .compressionOverDirectory:
            let dir = try TemporaryDirectory()
            let inner = try DirectoryStore(root: dir.path, chunkSize: CompressionLayer.innerChunkSize(for: cs))
            return StoreFixture(kind, CompressionLayer(over: inner), storeIDs: [1, 2], dirs: [dir])
        case .file:
            let dir = try TemporaryDirectory()
            let store = try FileStore.create(path: dir.path + "/store", size: 256 * UInt64(cs), chunkSize: cs)
            return StoreFixture(kind, store, storeIDs: [1, 2], dirs: [dir])
        case .checksumOverFile:
            let dir = try TemporaryDirectory()
            let inner = ChecksumLayer.innerChunkSize(for: cs)
            let store = try FileStore.create(path: dir.path + "/store", size: 256 * UInt64(inner), chunkSize: inner)
            return StoreFixture(kind, ChecksumLayer(over: store), storeIDs: [1, 2], dirs: [dir])
        case .faultyOverMemory:
            return StoreFixture(kind, FaultyStore(wrapping: MemoryStore(chunkSize: cs), seed: 1), storeIDs: [1, 2])
        case .cacheOverMemory:
            return StoreFixture(kind, cache(over: MemoryStore(chunkSize: cs)), storeIDs: [1, 2])
        case .cacheOverChecksumOverDirectory:
            let dir = try TemporaryDirectory()
            let inner = try DirectoryStore(root: dir.path, chunkSize: ChecksumLayer.innerChunkSize(for: cs))
            return StoreFixture(kind, cache(over: ChecksumLayer(over: inner)), storeIDs: [1, 2], dirs: [dir])
        case .cacheOverWholeChunkMemory:
            return StoreFixture(kind, cache(over: MemoryStore(chunkSize: cs, wholeChunks: true)), storeIDs: [1, 2])
        }
    }

    /// The `n`th test chunk (n ≥ 0); consecutive numbers alternate between the stack's stores.
    func chunk(_ n: Int) -> ChunkID {
        ChunkID(store: StoreID(storeIDs[n % storeIDs.count]), serial: UInt64(n) + 1)
    }

    func write(_ chunk: ChunkID, at offset: Int, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try store.write(chunk, offset: offset, from: $0) }
    }

    func read(_ chunk: ChunkID, at offset: Int, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0xEE, count: count)
        try out.withUnsafeMutableBytes { try store.read(chunk, offset: offset, into: $0) }
        return out
    }
}

func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    // Never a zero byte, so "reads zero" and "reads the pattern" cannot be confused.
    return rng.bytes(count).map { $0 | 1 }
}

@Suite("ChunkStore conformance")
struct StoreConformanceTests {
    static let cs = StoreFixture.chunkSize

    /// (offset, length) pairs inside one chunk: aligned, unaligned, straddling 4 KiB blocks, the edges.
    static let ranges: [(Int, Int)] = [
        (0, 1), (0, 4096), (0, cs), (1, 1), (4095, 2), (4096, 4096), (5000, 10_000),
        (cs - 1, 1), (cs - 4096, 4096), (12_345, cs - 12_345),
    ]

    @Test(arguments: StoreKind.allCases)
    func writeReadRoundTripAtOffsets(kind: StoreKind) throws {
        let f = try StoreFixture.make(kind)
        for (i, (offset, length)) in Self.ranges.enumerated() {
            let c = f.chunk(i)
            let data = pattern(length, seed: UInt64(i))
            try f.write(c, at: offset, data)
            #expect(try f.read(c, at: offset, count: length) == data, "range \(offset)+\(length)")
        }
        // Overwrite part of an existing chunk: the rest keeps its bytes.
        let c = f.chunk(100)
        let first = pattern(Self.cs, seed: 100)
        try f.write(c, at: 0, first)
        let patch = pattern(777, seed: 101)
        try f.write(c, at: 3000, patch)
        var expected = first
        expected.replaceSubrange(3000..<3777, with: patch)
        #expect(try f.read(c, at: 0, count: Self.cs) == expected)
    }

    @Test(arguments: StoreKind.allCases)
    func replaceAndReadAllMoveWholeChunks(kind: StoreKind) throws {
        let f = try StoreFixture.make(kind)
        let c = f.chunk(0)
        // Replace creates an absent chunk.
        let first = pattern(Self.cs, seed: 40)
        try first.withUnsafeBytes { try f.store.replace(c, with: $0) }
        #expect(try f.read(c, at: 0, count: Self.cs) == first)
        var all = try f.store.readAll(c)
        all += [UInt8](repeating: 0, count: Self.cs - all.count)
        #expect(all == first)
        // A shorter replacement: the tail reads as zeros, nothing of the old content survives.
        let second = pattern(5000, seed: 41)
        try second.withUnsafeBytes { try f.store.replace(c, with: $0) }
        var expected = second + [UInt8](repeating: 0, count: Self.cs - 5000)
        #expect(try f.read(c, at: 0, count: Self.cs) == expected)
        all = try f.store.readAll(c)
        #expect(all.count <= Self.cs)
        #expect(all + [UInt8](repeating: 0, count: Self.cs - all.count) == expected)
        // Pieces after a replace work as usual.
        try f.write(c, at: 6000, [9, 9])
        expected[6000] = 9
        expected[6001] = 9
        #expect(try f.read(c, at: 0, count: Self.cs) == expected)
        #expect(throws: StoreError.missing(chunk: f.chunk(1))) { _ = try f.store.readAll(f.chunk(1)) }
        #expect(Set(try f.store.allChunks()) == [c])
    }

    @Test(arguments: StoreKind.allCases)
    func unwrittenBytesReadZero(kind: StoreKind) throws {
        let f = try StoreFixture.make(kind)
        let c = f.chunk(0)
        let data = pattern(100, seed: 1)
        try f.write(c, at: 10_000, data)
        let all = try f.read(c, at: 0, count: Self.cs)
        #expect(all[0..<10_000].allSatisfy { $0 == 0 }, "before the write")
        #expect(Array(all[10_000..<10_100]) == data)
        #expect(all[10_100...].allSatisfy { $0 == 0 }, "after the write (past the end of a sparse chunk)")
        // A read wholly past the written extent.
        #expect(try f.read(c, at: Self.cs - 512, count: 512) == [UInt8](repeating: 0, count: 512))
    }

    @Test(arguments: StoreKind.allCases)
    func readOfAbsentChunkThrowsMissing(kind: StoreKind) throws {
        let f = try StoreFixture.make(kind)
        let c = f.chunk(3)
        #expect(throws: StoreError.missing(chunk: c)) { _ = try f.read(c, at: 0, count: 16) }
    }

    @Test(arguments: StoreKind.allCases)
    func zeroClearsTheRangeAndKeepsTheRest(kind: StoreKind) throws {
        let f = try StoreFixture.make(kind)
        let ranges: [(Int, Int)] = [
            (0, 4096), (100, 50), (4000, 9000), (8192, 8192), (Self.cs - 300, 300), (0, Self.cs),
        ]
        for (i, (offset, length)) in ranges.enumerated() {
            let c = f.chunk(i)
            let data = pattern(Self.cs, seed: UInt64(i))
            try f.write(c, at: 0, data)
            try f.store.zero(c, offset: offset, length: length)
            var expected = data
            expected.replaceSubrange(offset..<offset + length, with: repeatElement(0, count: length))
            #expect(try f.read(c, at: 0, count: Self.cs) == expected, "zero \(offset)+\(length)")
        }
        // Zero past the written extent of a chunk: harmless, the chunk still exists.
        let c = f.chunk(50)
        try f.write(c, at: 0, [1, 2, 3])
        try f.store.zero(c, offset: 8192, length: 4096)
        #expect(try f.read(c, at: 0, count: 4) == [1, 2, 3, 0])
    }

    @Test(arguments: StoreKind.allCases)
    func zeroOnAbsentChunkIsANoOp(kind: StoreKind) throws {
        let f = try StoreFixture.make(kind)
        let c = f.chunk(5)
        try f.store.zero(c, offset: 0, length: Self.cs)
        #expect(throws: StoreError.missing(chunk: c)) { _ = try f.read(c, at: 0, count: 1) }
        #expect(try f.store.allChunks().isEmpty)
    }

    @Test(arguments: StoreKind.allCases)
    func zeroOfLengthZeroChangesNothing(kind: StoreKind) throws {
        let f = try StoreFixture.make(kind)
        let c = f.chunk(6)
        let data = pattern(8192, seed: 6)
        try f.write(c, at: 0, data)
        try f.store.zero(c, offset: 100, length: 0)
        try f.store.zero(c, offset: 0, length: 0)
        #expect(try f.read(c, at: 0, count: 8192) == data)
    }

    @Test(arguments: StoreKind.allCases)
    func deleteThenReadThrowsMissing(kind: StoreKind) throws {
        let f = try StoreFixture.make(kind)
        let c = f.chunk(1)
        try f.write(c, at: 0, pattern(4096, seed: 9))
        try f.store.delete(c)
        #expect(throws: StoreError.missing(chunk: c)) { _ = try f.read(c, at: 0, count: 1) }
        // A chunk written again after delete starts from zeros, not from its old bytes.
        try f.write(c, at: 4096, [7])
        #expect(try f.read(c, at: 0, count: 4) == [0, 0, 0, 0])
        #expect(try f.read(c, at: 4096, count: 1) == [7])
    }

    @Test(arguments: StoreKind.allCases)
    func deleteOfAbsentChunkSucceeds(kind: StoreKind) throws {
        let f = try StoreFixture.make(kind)
        try f.store.delete(f.chunk(9))
        try f.store.delete(f.chunk(9))
    }

    @Test(arguments: StoreKind.allCases)
    func allChunksListsExactlyWhatExists(kind: StoreKind) throws {
        let f = try StoreFixture.make(kind)
        #expect(try f.store.allChunks().isEmpty)
        let written = (0..<20).map(f.chunk)
        for c in written { try f.write(c, at: Int(c.serial) * 100, [UInt8(c.serial)]) }
        try f.store.zero(f.chunk(40), offset: 0, length: 10)  // absent: must not appear
        let deleted = [written[3], written[11]]
        for c in deleted { try f.store.delete(c) }
        let expected = Set(written).subtracting(deleted)
        let listed = try f.store.allChunks()
        #expect(Set(listed) == expected)
        #expect(listed.count == expected.count, "no duplicates")
    }

    @Test(arguments: StoreKind.allCases)
    func flushSucceedsAndKeepsData(kind: StoreKind) throws {
        let f = try StoreFixture.make(kind)
        try f.store.flush()  // nothing to flush
        let data = pattern(Self.cs, seed: 3)
        for n in 0..<4 { try f.write(f.chunk(n), at: 0, data) }
        try f.store.zero(f.chunk(1), offset: 0, length: 4096)
        try f.store.delete(f.chunk(2))
        try f.store.flush()
        try f.store.flush()
        #expect(try f.read(f.chunk(0), at: 0, count: Self.cs) == data)
        #expect(try f.read(f.chunk(1), at: 0, count: 4096) == [UInt8](repeating: 0, count: 4096))
        #expect(throws: StoreError.missing(chunk: f.chunk(2))) { _ = try f.read(f.chunk(2), at: 0, count: 1) }
    }

    @Test(arguments: StoreKind.allCases)
    func concurrentWritesToDifferentChunks(kind: StoreKind) throws {
        let f = try StoreFixture.make(kind)
        let threads = 6
        let perThread = 12
        let errors = Locked<[String]>([])
        let store = f.store
        let chunkOf = { (t: Int, i: Int) in f.chunk(t * perThread + i) }
        let chunks = (0..<threads).map { t in (0..<perThread).map { chunkOf(t, $0) } }
        Threads.run(threads) { t in
            for (i, c) in chunks[t].enumerated() {
                // Several writes per chunk, unaligned, plus a flush now and then, from every thread.
                for piece in 0..<4 {
                    let data = pattern(5000, seed: UInt64(t * 1000 + i * 10 + piece))
                    do {
                        try data.withUnsafeBytes { try store.write(c, offset: piece * 5000 + 7, from: $0) }
                        if piece == 2 && i % 4 == 0 { try store.flush() }
                    } catch {
                        errors.withLock { $0.append("thread \(t) chunk \(c): \(error)") }
                    }
                }
            }
        }
        #expect(errors.value == [])
        for t in 0..<threads {
            for (i, c) in chunks[t].enumerated() {
                var expected = [UInt8](repeating: 0, count: 7)
                for piece in 0..<4 { expected += pattern(5000, seed: UInt64(t * 1000 + i * 10 + piece)) }
                #expect(try f.read(c, at: 0, count: expected.count) == expected, "thread \(t) chunk \(c)")
            }
        }
        #expect(try f.store.allChunks().count == threads * perThread)
    }

    @Test(arguments: StoreKind.allCases)
    func usageReportsSaneNumbers(kind: StoreKind) throws {
        let f = try StoreFixture.make(kind)
        let empty = try f.store.usage()
        #expect(empty.totalBytes > 0)
        #expect(empty.freeBytes <= empty.totalBytes)
        #expect(empty.usedBytes == 0, "no chunks yet")
        for n in 0..<4 { try f.write(f.chunk(n), at: 0, pattern(Self.cs, seed: UInt64(n))) }
        try f.store.flush()
        let full = try f.store.usage()
        #expect(full.freeBytes <= full.totalBytes)
        if kind.compresses {
            // The pattern carries 7 bits per byte: zstd stores less than was written, but not nothing.
            #expect(full.usedBytes >= UInt64(4 * Self.cs) / 2, "four full chunks written, compressed")
        } else {
            #expect(full.usedBytes >= UInt64(4 * Self.cs), "four full chunks written")
        }
        #expect(full.usedBytes <= UInt64(4 * Self.cs) * 2, "no more than the chunks plus metadata")
        for n in 0..<4 { try f.store.delete(f.chunk(n)) }
        #expect(try f.store.usage().usedBytes == 0, "deleted chunks use nothing")
    }

    @Test(arguments: StoreKind.allCases)
    func labelsRoundTripAndFollowTheChunk(kind: StoreKind) throws {
        let f = try StoreFixture.make(kind)
        let c = f.chunk(4)
        #expect(throws: StoreError.missing(chunk: c)) {
            try f.store.setLabel(c, ChunkLabel(volume: VolumeID(1), index: 0, epoch: 0))
        }
        #expect(throws: StoreError.missing(chunk: c)) { _ = try f.store.label(of: c) }
        try f.write(c, at: 0, [1])
        #expect(try f.store.label(of: c) == nil, "no label until one is set")
        let label = ChunkLabel(volume: VolumeID(42), index: 1 << 40, epoch: 7)
        try f.store.setLabel(c, label)
        #expect(try f.store.label(of: c) == label)
        try f.write(c, at: 100, [2])
        try f.store.flush()
        #expect(try f.store.label(of: c) == label, "writes keep the label")
        try f.store.delete(c)
        try f.write(c, at: 0, [3])
        #expect(try f.store.label(of: c) == nil, "a deleted chunk's label goes with it")
    }

    @Test(arguments: StoreKind.allCases)
    func checkOfAGoodChunkPassesAndOfAnAbsentOneThrows(kind: StoreKind) throws {
        let f = try StoreFixture.make(kind)
        let c = f.chunk(8)
        #expect(throws: StoreError.missing(chunk: c)) { _ = try f.store.check(c) }
        try f.write(c, at: 5000, pattern(9000, seed: 8))
        try f.store.zero(c, offset: 6000, length: 100)
        let result = try f.store.check(c)
        #expect(result == .ok || result == .unchecked, "\(result)")
    }
}
