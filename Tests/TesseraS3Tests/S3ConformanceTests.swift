// The ChunkStore conformance suite (Tests/TesseraCoreTests/StoreConformanceTests.swift), case for case,
// over an S3Store and over ChecksumLayer(over: S3Store) — what the engine stacks on an object store.
// Replicated rather than shared because a test target cannot import another's sources and the core's
// tests must not link the HTTP stack; keep the two in step when a case is added there.

import TesseraCore
import TesseraS3
import TesseraTestSupport
import Testing

enum S3StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case s3
    case checksumOverS3
    var testDescription: String { rawValue }
}

/// The store under test over a fresh S3 prefix, with the helpers the suite's cases use.
final class S3StoreFixture {
    static let chunkSize = 64 * 1024
    let store: any ChunkStore
    let s3: S3Fixture

    private init(_ store: any ChunkStore, _ s3: S3Fixture) {
        self.store = store
        self.s3 = s3
    }

    static func make(_ kind: S3StoreKind) throws -> S3StoreFixture {
        switch kind {
        case .s3:
            let s3 = try S3Fixture(chunkSize: chunkSize)
            return S3StoreFixture(s3.store, s3)
        case .checksumOverS3:
            let s3 = try S3Fixture(chunkSize: ChecksumLayer.innerChunkSize(for: chunkSize))
            return S3StoreFixture(ChecksumLayer(over: s3.store), s3)
        }
    }

    func chunk(_ n: Int) -> ChunkID { ChunkID(store: StoreID(1), serial: UInt64(n) + 1) }

    func write(_ chunk: ChunkID, at offset: Int, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try store.write(chunk, offset: offset, from: $0) }
    }

    func read(_ chunk: ChunkID, at offset: Int, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0xEE, count: count)
        try out.withUnsafeMutableBytes { try store.read(chunk, offset: offset, into: $0) }
        return out
    }
}

@Suite("S3 ChunkStore conformance")
struct S3ConformanceTests {
    static let cs = S3StoreFixture.chunkSize

    /// (offset, length) pairs inside one chunk: aligned, unaligned, straddling 4 KiB blocks, the edges.
    static let ranges: [(Int, Int)] = [
        (0, 1), (0, 4096), (0, cs), (1, 1), (4095, 2), (4096, 4096), (5000, 10_000),
        (cs - 1, 1), (cs - 4096, 4096), (12_345, cs - 12_345),
    ]

    @Test(arguments: S3StoreKind.allCases)
    func writeReadRoundTripAtOffsets(kind: S3StoreKind) throws {
        let f = try S3StoreFixture.make(kind)
        for (i, (offset, length)) in Self.ranges.enumerated() {
            let c = f.chunk(i)
            let data = s3Pattern(length, seed: UInt64(i))
            try f.write(c, at: offset, data)
            #expect(try f.read(c, at: offset, count: length) == data, "range \(offset)+\(length)")
        }
        // Overwrite part of an existing chunk: the rest keeps its bytes.
        let c = f.chunk(100)
        let first = s3Pattern(Self.cs, seed: 100)
        try f.write(c, at: 0, first)
        let patch = s3Pattern(777, seed: 101)
        try f.write(c, at: 3000, patch)
        var expected = first
        expected.replaceSubrange(3000..<3777, with: patch)
        #expect(try f.read(c, at: 0, count: Self.cs) == expected)
    }

    @Test(arguments: S3StoreKind.allCases)
    func unwrittenBytesReadZero(kind: S3StoreKind) throws {
        let f = try S3StoreFixture.make(kind)
        let c = f.chunk(0)
        let data = s3Pattern(100, seed: 1)
        try f.write(c, at: 10_000, data)
        let all = try f.read(c, at: 0, count: Self.cs)
        #expect(all[0..<10_000].allSatisfy { $0 == 0 }, "before the write")
        #expect(Array(all[10_000..<10_100]) == data)
        #expect(all[10_100...].allSatisfy { $0 == 0 }, "after the write (past the end of a sparse chunk)")
        // A read wholly past the written extent.
        #expect(try f.read(c, at: Self.cs - 512, count: 512) == [UInt8](repeating: 0, count: 512))
    }

    @Test(arguments: S3StoreKind.allCases)
    func readOfAbsentChunkThrowsMissing(kind: S3StoreKind) throws {
        let f = try S3StoreFixture.make(kind)
        let c = f.chunk(3)
        #expect(throws: StoreError.missing(chunk: c)) { _ = try f.read(c, at: 0, count: 16) }
    }

    @Test(arguments: S3StoreKind.allCases)
    func zeroClearsTheRangeAndKeepsTheRest(kind: S3StoreKind) throws {
        let f = try S3StoreFixture.make(kind)
        let ranges: [(Int, Int)] = [
            (0, 4096), (100, 50), (4000, 9000), (8192, 8192), (Self.cs - 300, 300), (0, Self.cs),
        ]
        for (i, (offset, length)) in ranges.enumerated() {
            let c = f.chunk(i)
            let data = s3Pattern(Self.cs, seed: UInt64(i))
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

    @Test(arguments: S3StoreKind.allCases)
    func zeroOnAbsentChunkIsANoOp(kind: S3StoreKind) throws {
        let f = try S3StoreFixture.make(kind)
        let c = f.chunk(5)
        try f.store.zero(c, offset: 0, length: Self.cs)
        #expect(throws: StoreError.missing(chunk: c)) { _ = try f.read(c, at: 0, count: 1) }
        #expect(try f.store.allChunks().isEmpty)
    }

    @Test(arguments: S3StoreKind.allCases)
    func zeroOfLengthZeroChangesNothing(kind: S3StoreKind) throws {
        let f = try S3StoreFixture.make(kind)
        let c = f.chunk(6)
        let data = s3Pattern(8192, seed: 6)
        try f.write(c, at: 0, data)
        try f.store.zero(c, offset: 100, length: 0)
        try f.store.zero(c, offset: 0, length: 0)
        #expect(try f.read(c, at: 0, count: 8192) == data)
    }

    @Test(arguments: S3StoreKind.allCases)
    func deleteThenReadThrowsMissing(kind: S3StoreKind) throws {
        let f = try S3StoreFixture.make(kind)
        let c = f.chunk(1)
        try f.write(c, at: 0, s3Pattern(4096, seed: 9))
        try f.store.delete(c)
        #expect(throws: StoreError.missing(chunk: c)) { _ = try f.read(c, at: 0, count: 1) }
        // A chunk written again after delete starts from zeros, not from its old bytes.
        try f.write(c, at: 4096, [7])
        #expect(try f.read(c, at: 0, count: 4) == [0, 0, 0, 0])
        #expect(try f.read(c, at: 4096, count: 1) == [7])
    }

    @Test(arguments: S3StoreKind.allCases)
    func deleteOfAbsentChunkSucceeds(kind: S3StoreKind) throws {
        let f = try S3StoreFixture.make(kind)
        try f.store.delete(f.chunk(9))
        try f.store.delete(f.chunk(9))
    }

    @Test(arguments: S3StoreKind.allCases)
    func allChunksListsExactlyWhatExists(kind: S3StoreKind) throws {
        let f = try S3StoreFixture.make(kind)
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

    @Test(arguments: S3StoreKind.allCases)
    func flushSucceedsAndKeepsData(kind: S3StoreKind) throws {
        let f = try S3StoreFixture.make(kind)
        try f.store.flush()  // nothing to flush
        let data = s3Pattern(Self.cs, seed: 3)
        for n in 0..<4 { try f.write(f.chunk(n), at: 0, data) }
        try f.store.zero(f.chunk(1), offset: 0, length: 4096)
        try f.store.delete(f.chunk(2))
        try f.store.flush()
        try f.store.flush()
        #expect(try f.read(f.chunk(0), at: 0, count: Self.cs) == data)
        #expect(try f.read(f.chunk(1), at: 0, count: 4096) == [UInt8](repeating: 0, count: 4096))
        #expect(throws: StoreError.missing(chunk: f.chunk(2))) { _ = try f.read(f.chunk(2), at: 0, count: 1) }
    }

    @Test(arguments: S3StoreKind.allCases)
    func concurrentWritesToDifferentChunks(kind: S3StoreKind) throws {
        let f = try S3StoreFixture.make(kind)
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
                    let data = s3Pattern(5000, seed: UInt64(t * 1000 + i * 10 + piece))
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
                for piece in 0..<4 { expected += s3Pattern(5000, seed: UInt64(t * 1000 + i * 10 + piece)) }
                #expect(try f.read(c, at: 0, count: expected.count) == expected, "thread \(t) chunk \(c)")
            }
        }
        #expect(try f.store.allChunks().count == threads * perThread)
    }

    @Test(arguments: S3StoreKind.allCases)
    func usageReportsSaneNumbers(kind: S3StoreKind) throws {
        let f = try S3StoreFixture.make(kind)
        let empty = try f.store.usage()
        #expect(empty.totalBytes > 0)
        #expect(empty.freeBytes <= empty.totalBytes)
        #expect(empty.usedBytes == 0, "no chunks yet")
        for n in 0..<4 { try f.write(f.chunk(n), at: 0, s3Pattern(Self.cs, seed: UInt64(n))) }
        try f.store.flush()
        let full = try f.store.usage()
        #expect(full.freeBytes <= full.totalBytes)
        #expect(full.usedBytes >= UInt64(4 * Self.cs), "four full chunks written")
        #expect(full.usedBytes <= UInt64(4 * Self.cs) * 2, "no more than the chunks plus metadata")
        for n in 0..<4 { try f.store.delete(f.chunk(n)) }
        #expect(try f.store.usage().usedBytes == 0, "deleted chunks use nothing")
    }

    @Test(arguments: S3StoreKind.allCases)
    func labelsRoundTripAndFollowTheChunk(kind: S3StoreKind) throws {
        let f = try S3StoreFixture.make(kind)
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

    @Test(arguments: S3StoreKind.allCases)
    func checkOfAGoodChunkPassesAndOfAnAbsentOneThrows(kind: S3StoreKind) throws {
        let f = try S3StoreFixture.make(kind)
        let c = f.chunk(8)
        #expect(throws: StoreError.missing(chunk: c)) { _ = try f.store.check(c) }
        try f.write(c, at: 5000, s3Pattern(9000, seed: 8))
        try f.store.zero(c, offset: 6000, length: 100)
        let result = try f.store.check(c)
        #expect(result == .ok || result == .unchecked, "\(result)")
    }
}
