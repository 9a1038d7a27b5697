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
}
