// StoreConformance — the ChunkStore contract as one suite of checks, shared by every test target that
// has a store to hold to it (TesseraCoreTests: memory, directory, file and the layer stacks;
// TesseraS3Tests: S3Store and the stacks over it). A test target keeps only its fixture (how to make
// each kind of store) and one parameterized test that runs every `ConformanceCase` on every kind, so a
// case added here runs everywhere at once and no copy can fall behind.
//
// Address space: none of its own; each check works on the store it is handed, through chunks named by
// `ConformanceSubject.chunk`. Invariants: a check assumes a fresh, empty store and leaves behind whatever
// it wrote (the fixture cleans up); failures are Swift Testing issues (`#expect`), so a failed
// expectation does not stop the check, and a thrown error (other than an expected one) fails the test.

import TesseraCore
import Testing

/// A store under test and how to name its chunks.
public struct ConformanceSubject: Sendable {
    public let store: any ChunkStore
    /// The `n`th test chunk (n ≥ 0), distinct for distinct `n`; a stack may spread them over its stores.
    public let chunk: @Sendable (Int) -> ChunkID
    /// Bytes per chunk of `store`.
    public let chunkSize: Int
    /// Whether the stack stores fewer bytes than it is given (usage may fall below the data written).
    public let compresses: Bool

    public init(
        store: any ChunkStore, chunkSize: Int, compresses: Bool = false, chunk: @escaping @Sendable (Int) -> ChunkID
    ) {
        self.store = store
        self.chunkSize = chunkSize
        self.compresses = compresses
        self.chunk = chunk
    }

    public func write(_ chunk: ChunkID, at offset: Int, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try store.write(chunk, offset: offset, from: $0) }
    }

    public func read(_ chunk: ChunkID, at offset: Int, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0xEE, count: count)
        try out.withUnsafeMutableBytes { try store.read(chunk, offset: offset, into: $0) }
        return out
    }
}

/// What a test target makes per kind of store: the subject, and whatever must live as long as the check
/// runs (temporary directories, an S3 prefix, a cache's write-back thread).
public protocol ConformanceFixture: AnyObject {
    var subject: ConformanceSubject { get }
}

/// `count` seeded random bytes, never a zero byte, so "reads zero" and "reads the pattern" cannot be confused.
public func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    return rng.bytes(count).map { $0 | 1 }
}

/// Every case of the contract; a test target runs `allCases` against each of its kinds of store.
public enum ConformanceCase: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case writeReadRoundTripAtOffsets
    case replaceAndReadAllMoveWholeChunks
    case unwrittenBytesReadZero
    case readOfAbsentChunkThrowsMissing
    case zeroClearsTheRangeAndKeepsTheRest
    case zeroOnAbsentChunkIsANoOp
    case zeroOfLengthZeroChangesNothing
    case deleteThenReadThrowsMissing
    case deleteOfAbsentChunkSucceeds
    case allChunksListsExactlyWhatExists
    case flushSucceedsAndKeepsData
    case concurrentWritesToDifferentChunks
    case usageReportsSaneNumbers
    case labelsRoundTripAndFollowTheChunk
    case checkOfAGoodChunkPassesAndOfAnAbsentOneThrows

    public var testDescription: String { rawValue }

    /// Runs this case against `fixture`'s subject (a fresh, empty store), keeping the fixture alive throughout.
    public func run(on fixture: some ConformanceFixture) throws {
        try withExtendedLifetime(fixture) { try run(on: fixture.subject) }
    }

    /// Runs this case against `subject` (a fresh, empty store).
    public func run(on subject: ConformanceSubject) throws {
        typealias C = StoreConformance
        switch self {
        case .writeReadRoundTripAtOffsets: try C.writeReadRoundTripAtOffsets(subject)
        case .replaceAndReadAllMoveWholeChunks: try C.replaceAndReadAllMoveWholeChunks(subject)
        case .unwrittenBytesReadZero: try C.unwrittenBytesReadZero(subject)
        case .readOfAbsentChunkThrowsMissing: try C.readOfAbsentChunkThrowsMissing(subject)
        case .zeroClearsTheRangeAndKeepsTheRest: try C.zeroClearsTheRangeAndKeepsTheRest(subject)
        case .zeroOnAbsentChunkIsANoOp: try C.zeroOnAbsentChunkIsANoOp(subject)
        case .zeroOfLengthZeroChangesNothing: try C.zeroOfLengthZeroChangesNothing(subject)
        case .deleteThenReadThrowsMissing: try C.deleteThenReadThrowsMissing(subject)
        case .deleteOfAbsentChunkSucceeds: try C.deleteOfAbsentChunkSucceeds(subject)
        case .allChunksListsExactlyWhatExists: try C.allChunksListsExactlyWhatExists(subject)
        case .flushSucceedsAndKeepsData: try C.flushSucceedsAndKeepsData(subject)
        case .concurrentWritesToDifferentChunks: try C.concurrentWritesToDifferentChunks(subject)
        case .usageReportsSaneNumbers: try C.usageReportsSaneNumbers(subject)
        case .labelsRoundTripAndFollowTheChunk: try C.labelsRoundTripAndFollowTheChunk(subject)
        case .checkOfAGoodChunkPassesAndOfAnAbsentOneThrows:
            try C.checkOfAGoodChunkPassesAndOfAnAbsentOneThrows(subject)
        }
    }
}

/// The checks, one per contract case; each expects a fresh, empty store.
public enum StoreConformance {
    /// (offset, length) pairs inside one chunk: aligned, unaligned, straddling 4 KiB blocks, the edges.
    static func ranges(_ cs: Int) -> [(Int, Int)] {
        [
            (0, 1), (0, 4096), (0, cs), (1, 1), (4095, 2), (4096, 4096), (5000, 10_000),
            (cs - 1, 1), (cs - 4096, 4096), (12_345, cs - 12_345),
        ]
    }

    public static func writeReadRoundTripAtOffsets(_ f: ConformanceSubject) throws {
        let cs = f.chunkSize
        for (i, (offset, length)) in ranges(cs).enumerated() {
            let c = f.chunk(i)
            let data = pattern(length, seed: UInt64(i))
            try f.write(c, at: offset, data)
            #expect(try f.read(c, at: offset, count: length) == data, "range \(offset)+\(length)")
        }
        // Overwrite part of an existing chunk: the rest keeps its bytes.
        let c = f.chunk(100)
        let first = pattern(cs, seed: 100)
        try f.write(c, at: 0, first)
        let patch = pattern(777, seed: 101)
        try f.write(c, at: 3000, patch)
        var expected = first
        expected.replaceSubrange(3000..<3777, with: patch)
        #expect(try f.read(c, at: 0, count: cs) == expected)
    }

    public static func replaceAndReadAllMoveWholeChunks(_ f: ConformanceSubject) throws {
        let cs = f.chunkSize
        let c = f.chunk(0)
        // Replace creates an absent chunk.
        let first = pattern(cs, seed: 40)
        try first.withUnsafeBytes { try f.store.replace(c, with: $0) }
        #expect(try f.read(c, at: 0, count: cs) == first)
        var all = try f.store.readAll(c)
        all += [UInt8](repeating: 0, count: cs - all.count)
        #expect(all == first)
        // A shorter replacement: the tail reads as zeros, nothing of the old content survives.
        let second = pattern(5000, seed: 41)
        try second.withUnsafeBytes { try f.store.replace(c, with: $0) }
        var expected = second + [UInt8](repeating: 0, count: cs - 5000)
        #expect(try f.read(c, at: 0, count: cs) == expected)
        all = try f.store.readAll(c)
        #expect(all.count <= cs)
        #expect(all + [UInt8](repeating: 0, count: cs - all.count) == expected)
        // Pieces after a replace work as usual.
        try f.write(c, at: 6000, [9, 9])
        expected[6000] = 9
        expected[6001] = 9
        #expect(try f.read(c, at: 0, count: cs) == expected)
        #expect(throws: StoreError.missing(chunk: f.chunk(1))) { _ = try f.store.readAll(f.chunk(1)) }
        #expect(Set(try f.store.allChunks()) == [c])
    }

    public static func unwrittenBytesReadZero(_ f: ConformanceSubject) throws {
        let cs = f.chunkSize
        let c = f.chunk(0)
        let data = pattern(100, seed: 1)
        try f.write(c, at: 10_000, data)
        let all = try f.read(c, at: 0, count: cs)
        #expect(all[0..<10_000].allSatisfy { $0 == 0 }, "before the write")
        #expect(Array(all[10_000..<10_100]) == data)
        #expect(all[10_100...].allSatisfy { $0 == 0 }, "after the write (past the end of a sparse chunk)")
        // A read wholly past the written extent.
        #expect(try f.read(c, at: cs - 512, count: 512) == [UInt8](repeating: 0, count: 512))
    }

    public static func readOfAbsentChunkThrowsMissing(_ f: ConformanceSubject) throws {
        let c = f.chunk(3)
        #expect(throws: StoreError.missing(chunk: c)) { _ = try f.read(c, at: 0, count: 16) }
    }

    public static func zeroClearsTheRangeAndKeepsTheRest(_ f: ConformanceSubject) throws {
        let cs = f.chunkSize
        let ranges: [(Int, Int)] = [
            (0, 4096), (100, 50), (4000, 9000), (8192, 8192), (cs - 300, 300), (0, cs),
        ]
        for (i, (offset, length)) in ranges.enumerated() {
            let c = f.chunk(i)
            let data = pattern(cs, seed: UInt64(i))
            try f.write(c, at: 0, data)
            try f.store.zero(c, offset: offset, length: length)
            var expected = data
            expected.replaceSubrange(offset..<offset + length, with: repeatElement(0, count: length))
            #expect(try f.read(c, at: 0, count: cs) == expected, "zero \(offset)+\(length)")
        }
        // Zero past the written extent of a chunk: harmless, the chunk still exists.
        let c = f.chunk(50)
        try f.write(c, at: 0, [1, 2, 3])
        try f.store.zero(c, offset: 8192, length: 4096)
        #expect(try f.read(c, at: 0, count: 4) == [1, 2, 3, 0])
    }

    public static func zeroOnAbsentChunkIsANoOp(_ f: ConformanceSubject) throws {
        let c = f.chunk(5)
        try f.store.zero(c, offset: 0, length: f.chunkSize)
        #expect(throws: StoreError.missing(chunk: c)) { _ = try f.read(c, at: 0, count: 1) }
        #expect(try f.store.allChunks().isEmpty)
    }

    public static func zeroOfLengthZeroChangesNothing(_ f: ConformanceSubject) throws {
        let c = f.chunk(6)
        let data = pattern(8192, seed: 6)
        try f.write(c, at: 0, data)
        try f.store.zero(c, offset: 100, length: 0)
        try f.store.zero(c, offset: 0, length: 0)
        #expect(try f.read(c, at: 0, count: 8192) == data)
    }

    public static func deleteThenReadThrowsMissing(_ f: ConformanceSubject) throws {
        let c = f.chunk(1)
        try f.write(c, at: 0, pattern(4096, seed: 9))
        try f.store.delete(c)
        #expect(throws: StoreError.missing(chunk: c)) { _ = try f.read(c, at: 0, count: 1) }
        // A chunk written again after delete starts from zeros, not from its old bytes.
        try f.write(c, at: 4096, [7])
        #expect(try f.read(c, at: 0, count: 4) == [0, 0, 0, 0])
        #expect(try f.read(c, at: 4096, count: 1) == [7])
    }

    public static func deleteOfAbsentChunkSucceeds(_ f: ConformanceSubject) throws {
        try f.store.delete(f.chunk(9))
        try f.store.delete(f.chunk(9))
    }

    public static func allChunksListsExactlyWhatExists(_ f: ConformanceSubject) throws {
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

    public static func flushSucceedsAndKeepsData(_ f: ConformanceSubject) throws {
        let cs = f.chunkSize
        try f.store.flush()  // nothing to flush
        let data = pattern(cs, seed: 3)
        for n in 0..<4 { try f.write(f.chunk(n), at: 0, data) }
        try f.store.zero(f.chunk(1), offset: 0, length: 4096)
        try f.store.delete(f.chunk(2))
        try f.store.flush()
        try f.store.flush()
        #expect(try f.read(f.chunk(0), at: 0, count: cs) == data)
        #expect(try f.read(f.chunk(1), at: 0, count: 4096) == [UInt8](repeating: 0, count: 4096))
        #expect(throws: StoreError.missing(chunk: f.chunk(2))) { _ = try f.read(f.chunk(2), at: 0, count: 1) }
    }

    public static func concurrentWritesToDifferentChunks(_ f: ConformanceSubject) throws {
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

    public static func usageReportsSaneNumbers(_ f: ConformanceSubject) throws {
        let cs = f.chunkSize
        let empty = try f.store.usage()
        #expect(empty.totalBytes > 0)
        #expect(empty.freeBytes <= empty.totalBytes)
        #expect(empty.usedBytes == 0, "no chunks yet")
        for n in 0..<4 { try f.write(f.chunk(n), at: 0, pattern(cs, seed: UInt64(n))) }
        try f.store.flush()
        let full = try f.store.usage()
        #expect(full.freeBytes <= full.totalBytes)
        if f.compresses {
            // The pattern carries 7 bits per byte: zstd stores less than was written, but not nothing.
            #expect(full.usedBytes >= UInt64(4 * cs) / 2, "four full chunks written, compressed")
        } else {
            #expect(full.usedBytes >= UInt64(4 * cs), "four full chunks written")
        }
        #expect(full.usedBytes <= UInt64(4 * cs) * 2, "no more than the chunks plus metadata")
        for n in 0..<4 { try f.store.delete(f.chunk(n)) }
        #expect(try f.store.usage().usedBytes == 0, "deleted chunks use nothing")
    }

    public static func labelsRoundTripAndFollowTheChunk(_ f: ConformanceSubject) throws {
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

    public static func checkOfAGoodChunkPassesAndOfAnAbsentOneThrows(_ f: ConformanceSubject) throws {
        let c = f.chunk(8)
        #expect(throws: StoreError.missing(chunk: c)) { _ = try f.store.check(c) }
        try f.write(c, at: 5000, pattern(9000, seed: 8))
        try f.store.zero(c, offset: 6000, length: 100)
        let result = try f.store.check(c)
        #expect(result == .ok || result == .unchecked, "\(result)")
    }
}
