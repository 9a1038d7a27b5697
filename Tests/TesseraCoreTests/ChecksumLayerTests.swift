// ChecksumLayer beyond the conformance suite: damage below the layer is detected, never returned as data.

import TesseraCore
import TesseraTestSupport
import Testing

@Suite("ChecksumLayer")
struct ChecksumLayerTests {
    static let cs = 64 * 1024

    func stack() -> (ChecksumLayer, MemoryStore) {
        let inner = MemoryStore(chunkSize: ChecksumLayer.innerChunkSize(for: Self.cs))
        return (ChecksumLayer(over: inner), inner)
    }

    /// Flips one byte of the chunk directly on the inner store, behind the layer's back.
    func damage(_ inner: MemoryStore, _ c: ChunkID, at offset: Int) throws {
        var b: [UInt8] = [0]
        try b.withUnsafeMutableBytes { try inner.read(c, offset: offset, into: $0) }
        b[0] ^= 0x40
        try b.withUnsafeBytes { try inner.write(c, offset: offset, from: $0) }
    }

    @Test(arguments: [0, 4095, 4096, 30_000, 64 * 1024 - 1])
    func aDamagedByteIsReportedNotReturned(offset: Int) throws {
        let (layer, inner) = stack()
        let c = ChunkID(9)
        let data = pattern(Self.cs, seed: 1)
        try data.withUnsafeBytes { try layer.write(c, offset: 0, from: $0) }
        try damage(inner, c, at: offset)
        let block = offset / 4096 * 4096
        var out = [UInt8](repeating: 0, count: 10)
        #expect(throws: StoreError.corrupt(chunk: c, offset: block)) {
            try out.withUnsafeMutableBytes { try layer.read(c, offset: offset, into: $0) }
        }
        #expect(try layer.check(c) == .corrupt(offsets: [block]))
        #expect(layer.mismatches >= 2)
        // Other blocks still read fine.
        let other = (block + 8192) % Self.cs
        var fine = [UInt8](repeating: 0, count: 4096)
        try fine.withUnsafeMutableBytes { try layer.read(c, offset: other, into: $0) }
        #expect(fine == Array(data[other..<other + 4096]))
        // Rewriting the whole block heals it.
        try Array(data[block..<block + 4096]).withUnsafeBytes { try layer.write(c, offset: block, from: $0) }
        #expect(try layer.check(c) == .ok)
    }

    @Test func aFreshLayerOverOldDataStillVerifies() throws {
        let (layer, inner) = stack()
        let c = ChunkID(3)
        let data = pattern(20_000, seed: 2)
        try data.withUnsafeBytes { try layer.write(c, offset: 1000, from: $0) }
        // A new layer object (a restart) reads the slot table from the inner store.
        let again = ChecksumLayer(over: inner)
        var out = [UInt8](repeating: 0, count: 20_000)
        try out.withUnsafeMutableBytes { try again.read(c, offset: 1000, into: $0) }
        #expect(out == data)
        #expect(try again.check(c) == .ok)
        try damage(inner, c, at: 15_000)
        let fresh = ChecksumLayer(over: inner)
        #expect(try fresh.check(c) == .corrupt(offsets: [12_288]))
    }

    /// Failed writes leave the old bytes on the medium (FaultyStore fails before writing). However many
    /// writes to a block fail in a row, the block must still read back as its last good contents.
    @Test(arguments: [1, 2, 3])
    func failedWritesNeverMakeGoodDataReadAsCorrupt(failures: Int) throws {
        let inner = MemoryStore(chunkSize: ChecksumLayer.innerChunkSize(for: Self.cs))
        let faulty = FaultyStore(wrapping: inner)
        let layer = ChecksumLayer(over: faulty)
        let c = ChunkID(5)
        let good = pattern(4096, seed: 1)
        try good.withUnsafeBytes { try layer.write(c, offset: 0, from: $0) }
        faulty.rules = [.init([.write], .always)]
        for i in 0..<failures {
            #expect(throws: StoreError.self) {
                try pattern(4096, seed: UInt64(10 + i)).withUnsafeBytes { try layer.write(c, offset: 0, from: $0) }
            }
        }
        faulty.rules = []
        var out = [UInt8](repeating: 0, count: 4096)
        try out.withUnsafeMutableBytes { try layer.read(c, offset: 0, into: $0) }
        #expect(out == good, "after \(failures) failed write(s)")
        #expect(try ChecksumLayer(over: inner).check(c) == .ok, "a restarted layer agrees")
    }

    /// The same with the data write failing after the slot table was written (a torn two-step write).
    @Test(arguments: [1, 2, 3])
    func failedDataWritesAfterTheSlotsNeverMakeGoodDataReadAsCorrupt(failures: Int) throws {
        let inner = MemoryStore(chunkSize: ChecksumLayer.innerChunkSize(for: Self.cs))
        let faulty = FaultyStore(wrapping: inner)
        let layer = ChecksumLayer(over: faulty)
        let c = ChunkID(5)
        let good = pattern(4096, seed: 1)
        try good.withUnsafeBytes { try layer.write(c, offset: 0, from: $0) }
        for i in 0..<failures {
            faulty.resetCounters()
            faulty.rules = [.init([.write], .nthCall(2))]  // call 1 = slots, call 2 = data
            #expect(throws: StoreError.self) {
                try pattern(4096, seed: UInt64(10 + i)).withUnsafeBytes { try layer.write(c, offset: 0, from: $0) }
            }
        }
        faulty.rules = []
        var out = [UInt8](repeating: 0, count: 4096)
        try out.withUnsafeMutableBytes { try layer.read(c, offset: 0, into: $0) }
        #expect(out == good, "after \(failures) torn write(s)")
        #expect(try ChecksumLayer(over: inner).check(c) == .ok, "a restarted layer agrees")
    }

    func wholeOrPiecewise(_ whole: Bool) -> (ChecksumLayer, MemoryStore) {
        let inner = MemoryStore(chunkSize: ChecksumLayer.innerChunkSize(for: Self.cs), wholeChunks: whole)
        return (ChecksumLayer(over: inner), inner)
    }

    func read(_ layer: ChecksumLayer, _ c: ChunkID, _ offset: Int, _ count: Int) throws(StoreError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        try out.withMutableStoreBytes { (p) throws(StoreError) in try layer.read(c, offset: offset, into: p) }
        return out
    }

    func write(_ layer: ChecksumLayer, _ c: ChunkID, _ offset: Int, _ bytes: [UInt8]) throws(StoreError) {
        try bytes.withStoreBytes { (p) throws(StoreError) in try layer.write(c, offset: offset, from: p) }
    }

    /// A block marked unreadable reads as corrupt (and is counted by check) until a whole-block write;
    /// a partial write into it fails; the other blocks are untouched.
    @Test(arguments: [false, true])
    func aMarkedBlockStaysUnreadableUntilRewrittenWhole(whole: Bool) throws {
        let (layer, inner) = wholeOrPiecewise(whole)
        let c = ChunkID(5)
        let data = pattern(Self.cs, seed: 4)
        try write(layer, c, 0, data)
        try layer.markUnreadable(c, offset: 8192, length: 8192)
        #expect(try layer.check(c) == .corrupt(offsets: [8192, 12288]))
        #expect(throws: StoreError.corrupt(chunk: c, offset: 12288)) { try read(layer, c, 12288, 10) }
        #expect(throws: StoreError.self) { _ = try layer.readAll(c) }
        #expect(try read(layer, c, 0, 8192) == Array(data[0..<8192]))
        #expect(try read(layer, c, 16384, Self.cs - 16384) == Array(data[16384...]))
        // A fresh layer (a restart) still sees the mark.
        let again = ChecksumLayer(over: inner)
        #expect(try again.check(c) == .corrupt(offsets: [8192, 12288]))
        // Partly covering a marked block: refused, nothing changes.
        #expect(throws: StoreError.corrupt(chunk: c, offset: 8192)) { try write(again, c, 8000, pattern(200, seed: 9)) }
        #expect(try again.check(c) == .corrupt(offsets: [8192, 12288]))
        // A whole-block write heals that block only; a whole-block zero heals the other.
        let fresh = pattern(4096, seed: 5)
        try write(again, c, 8192, fresh)
        #expect(try read(again, c, 8192, 4096) == fresh)
        #expect(try again.check(c) == .corrupt(offsets: [12288]))
        try again.zero(c, offset: 12288, length: 4096)
        #expect(try again.check(c) == .ok)
        #expect(try read(again, c, 12288, 4096) == [UInt8](repeating: 0, count: 4096))
        #expect(try read(again, c, 0, 8192) == Array(data[0..<8192]))
    }

    /// On a whole-chunk store, a bad block spoils only itself: other blocks read, a write elsewhere
    /// works and keeps the bad block bad (never rewritten with fresh checksums).
    @Test func aBadBlockOfAWholeChunkSpoilsOnlyItself() throws {
        let (layer, inner) = wholeOrPiecewise(true)
        let c = ChunkID(6)
        let data = pattern(Self.cs, seed: 6)
        try write(layer, c, 0, data)
        try damage(inner, c, at: 4096 + 17)
        #expect(try layer.check(c) == .corrupt(offsets: [4096]))
        #expect(try read(layer, c, 8192, 4096) == Array(data[8192..<12288]))
        #expect(throws: StoreError.corrupt(chunk: c, offset: 4096)) { try read(layer, c, 0, 8192) }
        let piece = pattern(100, seed: 7)
        try write(layer, c, 20_000, piece)
        #expect(try read(layer, c, 20_000, 100) == piece)
        #expect(try layer.check(c) == .corrupt(offsets: [4096]))
        #expect(throws: StoreError.corrupt(chunk: c, offset: 4096)) { try write(layer, c, 4000, piece) }
        try write(layer, c, 4096, Array(data[4096..<8192]))
        #expect(try layer.check(c) == .ok)
        var expected = data
        expected.replaceSubrange(20_000..<20_100, with: piece)
        #expect(try layer.readAll(c) == expected)
    }
}
