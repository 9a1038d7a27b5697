// CompressionLayer beyond the conformance suite: what really lands on the inner store, damage to the
// stored object (always `.corrupt`, never wrong bytes), levels, threads, inner failures, statistics.

import TesseraCore
import TesseraTestSupport
import Testing

@Suite("CompressionLayer")
struct CompressionLayerTests {
    static let cs = 64 * 1024
    static let header = CompressionLayer.headerSize

    func stack(level: Int = CompressionLayer.defaultLevel) -> (CompressionLayer, MemoryStore) {
        let inner = MemoryStore(chunkSize: CompressionLayer.innerChunkSize(for: Self.cs), wholeChunks: true)
        return (CompressionLayer(over: inner, level: level), inner)
    }

    /// Text-like bytes: a few words in a seeded order, which zstd shrinks several times over.
    func text(_ count: Int, seed: UInt64) -> [UInt8] {
        let words = ["chunk ", "store ", "layer ", "volume ", "tessera ", "snapshot ", "zstd ", "mirror\n"].map {
            Array($0.utf8)
        }
        var rng = SplitMix64(seed: seed)
        var out: [UInt8] = []
        out.reserveCapacity(count + 16)
        while out.count < count { out += words[Int(rng.next() % UInt64(words.count))] }
        return Array(out.prefix(count))
    }

    /// Full-entropy bytes (no zero byte at the end, so the whole chunk is logical).
    func noise(_ count: Int, seed: UInt64) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        var b = rng.bytes(count)
        b[count - 1] |= 1
        return b
    }

    func write(_ store: any ChunkStore, _ c: ChunkID, at offset: Int = 0, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try store.write(c, offset: offset, from: $0) }
    }

    func read(_ store: any ChunkStore, _ c: ChunkID, at offset: Int = 0, count: Int = cs) throws -> [UInt8] {
        var out = [UInt8](repeating: 0xEE, count: count)
        try out.withUnsafeMutableBytes { try store.read(c, offset: offset, into: $0) }
        return out
    }

    func padded(_ bytes: [UInt8], to count: Int = cs) -> [UInt8] {
        bytes + [UInt8](repeating: 0, count: count - bytes.count)
    }

    /// Replaces the stored object behind the layer's back.
    func tamper(_ inner: MemoryStore, _ c: ChunkID, _ edit: (inout [UInt8]) -> Void) throws {
        var object = try #require(inner.contents(of: c))
        edit(&object)
        try object.withUnsafeBytes { try inner.replace(c, with: $0) }
    }

    /// Runs `body` and expects `.corrupt` from it, and nothing else (no bytes, no other error).
    func expectCorrupt(_ what: String, _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("\(what): returned bytes from a damaged object")
        } catch let e as StoreError {
            if case .corrupt = e {} else { Issue.record("\(what): \(e), expected .corrupt") }
        } catch {
            Issue.record("\(what): \(error)")
        }
    }

    // MARK: What lands on the inner store

    @Test func compressibleDataShrinksOnTheInnerStore() throws {
        let (layer, inner) = stack()
        let c = ChunkID(1)
        let data = text(Self.cs, seed: 1)
        try write(layer, c, data)
        let object = try #require(inner.contents(of: c))
        #expect(object.count < Self.cs / 4, "stored \(object.count) bytes for \(Self.cs)")
        #expect(Array(object[0..<4]) == Array("TSZC".utf8))
        #expect(object[5] == 1, "codec zstd")
        #expect(try read(layer, c) == data)
        #expect(try layer.readAll(c) == data)
    }

    @Test func randomDataIsStoredRawAndRoundTrips() throws {
        let (layer, inner) = stack()
        let c = ChunkID(2)
        let data = noise(Self.cs, seed: 2)
        try write(layer, c, data)
        let object = try #require(inner.contents(of: c))
        #expect(object.count == Self.header + Self.cs)
        #expect(object[5] == 0, "codec raw")
        #expect(Array(object[Self.header...]) == data)
        #expect(try read(layer, c) == data)
        #expect(try read(layer, c, at: 1234, count: 5000) == Array(data[1234..<6234]))
        // A short random piece in a chunk stays raw too, and only its logical bytes are stored.
        let d = ChunkID(3)
        try write(layer, d, noise(300, seed: 3))
        #expect(inner.contents(of: d)?.count == Self.header + 300)
        #expect(try read(layer, d, count: 400) == padded(noise(300, seed: 3), to: 400))
    }

    /// A chunk whose sample does not shrink goes raw without a whole-chunk trial, and is counted; one
    /// whose sample shrinks is compressed; a chunk shorter than four samples is tried whole, uncounted.
    @Test func incompressibleChunksSkipCompression() throws {
        let (layer, inner) = stack()
        let random = noise(Self.cs, seed: 50)
        try write(layer, ChunkID(500), random)
        #expect(layer.incompressibleChunks == 1)
        let object = try #require(inner.contents(of: ChunkID(500)))
        #expect(object[5] == 0, "codec raw")
        #expect(Array(object[Self.header...]) == random)
        #expect(try read(layer, ChunkID(500)) == random)
        #expect(try layer.check(ChunkID(500)) == .ok)
        let mixed = noise(Self.cs / 2, seed: 51) + text(Self.cs / 2, seed: 52)
        try write(layer, ChunkID(501), mixed)
        #expect(layer.incompressibleChunks == 1)
        #expect(try #require(inner.contents(of: ChunkID(501)))[5] == 1, "codec zstd")
        #expect(try read(layer, ChunkID(501)) == mixed)
        try write(layer, ChunkID(502), noise(20_000, seed: 53))
        #expect(layer.incompressibleChunks == 1)
        #expect(try #require(inner.contents(of: ChunkID(502)))[5] == 0, "codec raw")
        #expect(try read(layer, ChunkID(502), count: 20_000) == noise(20_000, seed: 53))
    }

    @Test func anAllZeroChunkStoresJustAHeader() throws {
        let (layer, inner) = stack()
        let c = ChunkID(4)
        try write(layer, c, [UInt8](repeating: 0, count: Self.cs))
        #expect(inner.contents(of: c)?.count == Self.header)
        #expect(try layer.readAll(c) == [])
        #expect(try read(layer, c) == [UInt8](repeating: 0, count: Self.cs))
        // Zeroing a written chunk's every byte brings it back to a header.
        let d = ChunkID(5)
        try write(layer, d, text(Self.cs, seed: 5))
        try layer.zero(d, offset: 0, length: Self.cs)
        #expect(inner.contents(of: d)?.count == Self.header)
        #expect(try layer.check(d) == .ok)
        // Trailing zeros of a written chunk cost nothing.
        let e = ChunkID(6)
        try write(layer, e, noise(1000, seed: 6) + [UInt8](repeating: 0, count: 20_000))
        #expect(inner.contents(of: e)?.count == Self.header + 1000)
    }

    @Test func aFreshLayerReadsWhatAnEarlierOneWrote() throws {
        let (layer, inner) = stack(level: 19)
        let data = text(Self.cs, seed: 7)
        try write(layer, ChunkID(7), data)
        let again = CompressionLayer(over: inner, level: 1)
        #expect(try read(again, ChunkID(7)) == data)
        #expect(try again.check(ChunkID(7)) == .ok)
    }

    // MARK: Damage

    /// Offsets into the stored object, as fractions of it for the payload part: every header field, the
    /// payload's first and last byte and one in the middle.
    static let damageAt: [Int] = [0, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 19, header, -2, -1]

    @Test(arguments: damageAt, [false, true])
    func aFlippedByteAnywhereIsCorruptNeverWrongBytes(at spot: Int, compressible: Bool) throws {
        let (layer, inner) = stack()
        let c = ChunkID(8)
        let data = compressible ? text(Self.cs, seed: 8) : noise(Self.cs, seed: 8)
        try write(layer, c, data)
        let size = try #require(inner.contents(of: c)).count
        let at = spot == -2 ? size / 2 : spot == -1 ? size - 1 : spot
        try tamper(inner, c) { $0[at] ^= 0x10 }
        let before = layer.mismatches
        expectCorrupt("read at \(at) of \(size)") { _ = try read(layer, c, at: 0, count: 16) }
        expectCorrupt("readAll at \(at) of \(size)") { _ = try layer.readAll(c) }
        expectCorrupt("write at \(at) of \(size)") { try write(layer, c, at: 10, [1, 2, 3]) }
        #expect(try layer.check(c) == .corrupt(offsets: [0]))
        #expect(layer.mismatches >= before + 3)
        #expect(inner.contents(of: c)?.count == size, "a failed write leaves the damaged object alone")
        // Replacing the whole chunk heals it.
        try data.withUnsafeBytes { try layer.replace(c, with: $0) }
        #expect(try read(layer, c) == data)
    }

    @Test(arguments: [header, -2, -1])
    func damageUnderAChecksumLayerIsStillCorrupt(at spot: Int) throws {
        let compressed = ChecksumLayer.innerChunkSize(for: Self.cs)
        let inner = MemoryStore(chunkSize: CompressionLayer.innerChunkSize(for: compressed), wholeChunks: true)
        let top = ChecksumLayer(over: CompressionLayer(over: inner))
        let c = ChunkID(9)
        try write(top, c, text(Self.cs, seed: 9))
        let size = try #require(inner.contents(of: c)).count
        let at = spot == -2 ? size / 2 : spot == -1 ? size - 1 : spot
        try tamper(inner, c) { $0[at] ^= 0x01 }
        expectCorrupt("read through checksum") { _ = try read(top, c, at: 4096, count: 4096) }
        expectCorrupt("readAll through checksum") { _ = try top.readAll(c) }
        let result = try top.check(c)
        #expect(result != .ok && result != .unchecked, "\(result)")
    }

    @Test(arguments: [false, true])
    func aTruncatedObjectIsCorrupt(compressible: Bool) throws {
        let (layer, inner) = stack()
        let c = ChunkID(10)
        let data = compressible ? text(Self.cs, seed: 10) : noise(Self.cs, seed: 10)
        try write(layer, c, data)
        let object = try #require(inner.contents(of: c))
        for keep in [0, 1, 10, Self.header - 1, Self.header, Self.header + 1, object.count / 2, object.count - 1] {
            try tamper(inner, c) { $0 = Array(object.prefix(keep)) }
            expectCorrupt("object cut to \(keep) of \(object.count)") { _ = try read(layer, c, count: 16) }
            #expect(try layer.check(c) == .corrupt(offsets: [0]), "cut to \(keep)")
        }
        // Bytes after the payload: zeros are the readAll contract's padding, anything else is damage.
        try tamper(inner, c) { $0 = object + [0, 0, 0] }
        #expect(try read(layer, c) == data)
        try tamper(inner, c) { $0 = object + [0, 7] }
        expectCorrupt("object with a tail") { _ = try read(layer, c, count: 16) }
    }

    // MARK: Levels

    @Test(arguments: [1, 19])
    func levelsRoundTrip(level: Int) throws {
        let (layer, inner) = stack(level: level)
        #expect(layer.level == level)
        let words = text(Self.cs, seed: 11)
        let random = noise(Self.cs, seed: 12)
        try write(layer, ChunkID(11), words)
        try write(layer, ChunkID(12), random)
        try write(layer, ChunkID(13), at: 5000, text(7000, seed: 13))
        try write(layer, ChunkID(13), at: 6000, noise(100, seed: 14))
        #expect(try read(layer, ChunkID(11)) == words)
        #expect(try read(layer, ChunkID(12)) == random)
        var expected = [UInt8](repeating: 0, count: 5000) + text(7000, seed: 13)
        expected.replaceSubrange(6000..<6100, with: noise(100, seed: 14))
        #expect(try read(layer, ChunkID(13), count: 12_000) == expected)
        #expect(try #require(inner.contents(of: ChunkID(11))).count < Self.cs / 4)
    }

    // MARK: Threads

    @Test func concurrentWritersOnDifferentChunks() throws {
        let (layer, _) = stack()
        let threads = 4
        let errors = Locked<[String]>([])
        Threads.run(threads) { t in
            for i in 0..<8 {
                let c = ChunkID(UInt64(100 + t * 8 + i))
                for piece in 0..<4 {
                    let bytes = text(4000, seed: UInt64(t * 100 + i * 10 + piece))
                    do {
                        try bytes.withUnsafeBytes { try layer.write(c, offset: piece * 4000 + 3, from: $0) }
                    } catch {
                        errors.withLock { $0.append("thread \(t) \(c): \(error)") }
                    }
                }
            }
        }
        #expect(errors.value == [])
        for t in 0..<threads {
            for i in 0..<8 {
                var expected: [UInt8] = [0, 0, 0]
                for piece in 0..<4 { expected += text(4000, seed: UInt64(t * 100 + i * 10 + piece)) }
                #expect(try read(layer, ChunkID(UInt64(100 + t * 8 + i)), count: expected.count) == expected)
            }
        }
    }

    /// Readers of one chunk while a writer keeps replacing it: each read sees one whole version.
    @Test func concurrentReadersOnOneChunkSeeWholeVersions() throws {
        let (layer, _) = stack()
        let c = ChunkID(200)
        let versions = [text(Self.cs, seed: 20), noise(Self.cs, seed: 21), padded(text(9000, seed: 22))]
        try write(layer, c, versions[0])
        let errors = Locked<[String]>([])
        Threads.run(4) { t in
            for round in 0..<40 {
                do {
                    if t == 0 {
                        try versions[round % versions.count].withUnsafeBytes { try layer.replace(c, with: $0) }
                    } else {
                        var got = [UInt8](repeating: 0xEE, count: Self.cs)
                        try got.withUnsafeMutableBytes { try layer.read(c, offset: 0, into: $0) }
                        if !versions.contains(got) {
                            errors.withLock { $0.append("reader \(t) round \(round): a mixed version") }
                        }
                        let all = try layer.readAll(c)
                        if !versions.contains(padded(all)) {
                            errors.withLock { $0.append("reader \(t) round \(round): readAll mixed") }
                        }
                    }
                } catch {
                    errors.withLock { $0.append("thread \(t) round \(round): \(error)") }
                }
            }
        }
        #expect(errors.value == [])
    }

    // MARK: Inner failures

    @Test(arguments: [FaultyStore.Fault.noSpace, .io])
    func innerWriteFailuresReachTheCallerAndChangeNothing(fault: FaultyStore.Fault) throws {
        let memory = MemoryStore(chunkSize: CompressionLayer.innerChunkSize(for: Self.cs), wholeChunks: true)
        let faulty = FaultyStore(wrapping: memory)
        let layer = CompressionLayer(over: faulty)
        let c = ChunkID(300)
        let good = text(Self.cs, seed: 30)
        try write(layer, c, good)
        let object = memory.contents(of: c)
        let counted = (layer.uncompressedBytesWritten, layer.storedBytesWritten)
        faulty.rules = [.init([.replace], .always, fault)]
        let expected: StoreError = fault == .noSpace ? .noSpace : .io(errno: 5, chunk: c)
        #expect(throws: expected) { try write(layer, c, at: 100, [1, 2, 3]) }
        #expect(throws: expected) { try layer.zero(c, offset: 0, length: 4096) }
        #expect(throws: expected) { try good.withUnsafeBytes { try layer.replace(c, with: $0) } }
        let fresh = ChunkID(301)
        let expectedFresh: StoreError = fault == .noSpace ? .noSpace : .io(errno: 5, chunk: fresh)
        #expect(throws: expectedFresh) { try write(layer, fresh, [1]) }
        faulty.rules = []
        #expect(memory.contents(of: c) == object, "the stored object is untouched")
        #expect(memory.contents(of: fresh) == nil, "a failed first write creates nothing")
        #expect(try read(layer, c) == good)
        #expect(layer.uncompressedBytesWritten == counted.0 && layer.storedBytesWritten == counted.1)
        faulty.rules = [.init([.replace], .always, fault)]
        #expect(throws: expected) { try write(layer, c, noise(Self.cs, seed: 32)) }
        #expect(layer.incompressibleChunks == 0, "a failed put counts nothing")
    }

    @Test func innerReadFailuresReachTheCaller() throws {
        let memory = MemoryStore(chunkSize: CompressionLayer.innerChunkSize(for: Self.cs), wholeChunks: true)
        let faulty = FaultyStore(wrapping: memory)
        let layer = CompressionLayer(over: faulty)
        let c = ChunkID(310)
        try write(layer, c, text(Self.cs, seed: 31))
        let object = memory.contents(of: c)
        faulty.rules = [.init([.readAll], .always, .io)]
        #expect(throws: StoreError.io(errno: 5, chunk: c)) { _ = try read(layer, c, count: 10) }
        #expect(throws: StoreError.io(errno: 5, chunk: c)) { try write(layer, c, at: 0, [9]) }
        #expect(throws: StoreError.io(errno: 5, chunk: c)) { _ = try layer.check(c) }
        #expect(faulty.counters.calls[.replace] == 1, "no replace after a failed read")
        #expect(memory.contents(of: c) == object)
    }

    // MARK: Statistics

    @Test func countersAndRatioDescribeWhatIsStored() throws {
        let (layer, inner) = stack()
        let empty = try layer.ratio(sample: 10)
        #expect(empty.logical == 0 && empty.stored == 0)
        let chunks: [(ChunkID, [UInt8])] = [
            (ChunkID(400), text(Self.cs, seed: 40)),
            (ChunkID(401), noise(Self.cs, seed: 41)),
            (ChunkID(402), [UInt8](repeating: 0, count: 512)),
            (ChunkID(403), text(10_000, seed: 43)),
        ]
        for (c, bytes) in chunks { try write(layer, c, bytes) }
        let logical = UInt64(Self.cs + Self.cs + 0 + 10_000)
        let stored = chunks.reduce(UInt64(0)) { $0 + UInt64(inner.contents(of: $1.0)!.count) }
        #expect(layer.uncompressedBytesWritten == logical)
        #expect(layer.storedBytesWritten == stored)
        let all = try layer.ratio(sample: 10)
        #expect(all.logical == logical && all.stored == stored)
        #expect(all.stored < all.logical, "text compresses, noise stays raw: overall it shrinks")
        // A sample of two reads two chunks.
        let some = try layer.ratio(sample: 2)
        #expect(some.stored > 0 && some.stored < stored)
        // Ratio sees the store as it is now; counters add up every write since start.
        try write(layer, ChunkID(401), text(Self.cs, seed: 44))
        #expect(layer.uncompressedBytesWritten == logical + UInt64(Self.cs))
        #expect(try layer.ratio(sample: 10).stored < stored)
        // A damaged header is skipped, not counted.
        try tamper(inner, ChunkID(400)) { $0[0] = 0 }
        let skipped = try layer.ratio(sample: 10)
        #expect(skipped.logical == UInt64(Self.cs + 10_000))
    }
}
