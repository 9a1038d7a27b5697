// The test doubles are tested too: a model or fault injector that is wrong makes every test built on it
// meaningless.

import TesseraCore
import TesseraTestSupport
import Testing

@Suite("MemoryStore crash simulation")
struct MemoryStoreTests {
    func write(_ s: MemoryStore, _ c: UInt64, at offset: Int, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try s.write(ChunkID(c), offset: offset, from: $0) }
    }
    func read(_ s: MemoryStore, _ c: UInt64, at offset: Int, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withUnsafeMutableBytes { try s.read(ChunkID(c), offset: offset, into: $0) }
        return out
    }

    @Test func crashDropsEverythingNotFlushed() throws {
        let s = MemoryStore(chunkSize: 4096)
        try write(s, 1, at: 0, [1, 1, 1, 1])
        try write(s, 2, at: 0, [2, 2])
        try write(s, 3, at: 0, [3])
        try s.flush()
        #expect(s.unflushedCount == 0)
        try write(s, 1, at: 2, [9, 9])  // overwrite: undone
        try write(s, 4, at: 0, [4])  // new chunk: gone
        try s.zero(ChunkID(2), offset: 0, length: 2)  // zero: undone
        try s.delete(ChunkID(3))  // delete: undone
        #expect(s.unflushedCount == 4)
        s.crash()
        #expect(try s.allChunks() == [ChunkID(1), ChunkID(2), ChunkID(3)])
        #expect(try read(s, 1, at: 0, count: 4) == [1, 1, 1, 1])
        #expect(try read(s, 2, at: 0, count: 2) == [2, 2])
        #expect(try read(s, 3, at: 0, count: 1) == [3])
        #expect(s.unflushedCount == 0)
        #expect(try s.usage().usedBytes == 7)
    }

    @Test func flushedDeleteStaysDeleted() throws {
        let s = MemoryStore(chunkSize: 4096)
        try write(s, 1, at: 0, [1])
        try s.flush()
        try s.delete(ChunkID(1))
        try s.flush()
        s.crash()
        #expect(s.chunkCount == 0)
    }

    @Test func capacityRefusesWithNoSpaceAndChangesNothing() throws {
        let s = MemoryStore(chunkSize: 4096, capacity: 6000)
        try write(s, 1, at: 0, [UInt8](repeating: 1, count: 4096))
        #expect(throws: StoreError.noSpace) { try write(s, 2, at: 0, [UInt8](repeating: 2, count: 2000)) }
        #expect(s.chunkCount == 1)
        try write(s, 2, at: 0, [UInt8](repeating: 2, count: 1904))
        #expect(try s.usage().freeBytes == 0)
        try s.zero(ChunkID(1), offset: 2048, length: 2048)  // frees the tail
        #expect(try s.usage().usedBytes == 2048 + 1904)
    }
}

@Suite("FaultyStore")
struct FaultyStoreTests {
    func writeOnce(_ s: FaultyStore, _ c: UInt64) throws {
        try [UInt8(truncatingIfNeeded: c)].withUnsafeBytes { try s.write(ChunkID(c), offset: 0, from: $0) }
    }

    @Test func nthCallFailsOnlyThatCallAndChangesNothingBelow() throws {
        let mem = MemoryStore(chunkSize: 4096)
        let s = FaultyStore(wrapping: mem, rules: [.init([.write], .nthCall(3), .noSpace)])
        try writeOnce(s, 1)
        try writeOnce(s, 2)
        #expect(throws: StoreError.noSpace) { try writeOnce(s, 3) }
        try writeOnce(s, 4)
        #expect(
            try mem.allChunks() == [ChunkID(1), ChunkID(2), ChunkID(4)], "the failed write never reached the store")
        #expect(s.counters.calls[.write] == 4)
        #expect(s.counters.faults[.write] == 1)
        #expect(s.counters.totalFaults == 1)
    }

    @Test func ioFaultNamesTheChunk() throws {
        let s = FaultyStore(wrapping: MemoryStore(chunkSize: 4096), rules: [.init([.write, .flush], .always, .io)])
        #expect(throws: StoreError.io(errno: 5, chunk: ChunkID(8))) { try writeOnce(s, 8) }
        #expect(throws: StoreError.io(errno: 5, chunk: .none)) { try s.flush() }
        s.rules = []
        try writeOnce(s, 8)
        try s.flush()
    }

    @Test func fromCallFailsEveryLaterCall() throws {
        let s = FaultyStore(wrapping: MemoryStore(chunkSize: 4096), rules: [.init([.flush], .fromCall(2))])
        try s.flush()
        for _ in 0..<3 { #expect(throws: StoreError.self) { try s.flush() } }
        #expect(s.counters.faults[.flush] == 3)
    }

    @Test(arguments: [1, 2, 3] as [UInt64])
    func probabilityIsSeededAndRoughlyRight(seed: UInt64) throws {
        func failures(_ seed: UInt64) -> [Int] {
            let s = FaultyStore(
                wrapping: MemoryStore(chunkSize: 4096), seed: seed, rules: [.init([.write], .probability(0.25))])
            return (1...400).filter { i in (try? writeOnce(s, UInt64(i))) == nil }
        }
        let a = failures(seed)
        #expect(a == failures(seed), "same seed, same failures (seed \(seed))")
        #expect(a != failures(seed + 100), "another seed, other failures (seed \(seed))")
        #expect((60...140).contains(a.count), "about a quarter of 400 writes fail (seed \(seed)): \(a.count)")
    }

    @Test func delaySlowsEveryCall() throws {
        let s = FaultyStore(wrapping: MemoryStore(chunkSize: 4096), delay: .milliseconds(20))
        let clock = ContinuousClock()
        let t = try clock.measure {
            try writeOnce(s, 1)
            try s.flush()
        }
        #expect(t >= .milliseconds(40))
        s.delay = nil
        try writeOnce(s, 2)
    }
}

@Suite("ShadowModel")
struct ShadowModelTests {
    @Test func mirrorsVolumeSemantics() {
        var m = ShadowModel(size: 100)
        #expect(m.read(at: 0, count: 10) == [UInt8](repeating: 0, count: 10), "never written reads zero")
        m.write(at: 98, [1, 2, 3, 4])
        #expect(m.size == 102, "writing past the end grows")
        #expect(m.read(at: 96, count: 100) == [0, 0, 1, 2, 3, 4], "short read at the end")
        #expect(m.read(at: 102, count: 1) == [])
        m.discard(at: 99, length: 1000)
        #expect(m.size == 102, "discard keeps the size")
        #expect(m.read(at: 98, count: 4) == [1, 0, 0, 0])
        m.write(at: 0, [5, 5, 5, 5])
        m.resize(to: 2)
        m.resize(to: 6)
        #expect(m.read(at: 0, count: 6) == [5, 5, 0, 0, 0, 0], "shrink then grow reads zeros")
        m.write(at: 10, [7])
        #expect(m.read(at: 6, count: 5) == [0, 0, 0, 0, 7], "the gap before a write past the end is zero")
    }

    @Test func undefinedBytesAreSkippedUntilRedefined() {
        var m = ShadowModel(size: 10)
        m.failedWrite(at: 8, length: 4)
        #expect(m.size == 10, "a failed write does not grow the image")
        #expect(m.undefinedBytes == 2)
        #expect(m.firstMismatch([0, 0, 9, 9], at: 6) == nil)
        #expect(m.firstMismatch([1], at: 0)?.offset == 0)
        m.write(at: 9, [3])
        #expect(m.undefinedBytes == 1)
        #expect(m.firstMismatch([4], at: 9)?.expected == 3)
        m.resize(to: 9)
        #expect(m.undefinedBytes == 1)
        m.discard(at: 0, length: 100)
        #expect(m.undefinedBytes == 0)
        #expect(m.firstMismatch([0, 0], at: 20) == nil, "past the end is zero")
        #expect(m.firstMismatch([0, 1], at: 20)?.offset == 21)
    }

    @Test func splitMixIsDeterministic() {
        var a = SplitMix64(seed: 42)
        var b = SplitMix64(seed: 42)
        #expect((0..<100).map { _ in a.next() } == (0..<100).map { _ in b.next() })
        // Known first output of SplitMix64 for seed 0 (Vigna's reference implementation).
        var z = SplitMix64(seed: 0)
        #expect(z.next() == 0xE220_A839_7B1D_CDAF)
        var c = SplitMix64(seed: 1)
        #expect(c.bytes(13).count == 13)
    }
}
