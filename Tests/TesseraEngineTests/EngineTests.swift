// Engine tests: durability across restarts, garbage collection of uncommitted chunks, thin allocation
// (zeros, discard, resize), SEEK_DATA/SEEK_HOLE, batch creation, validation, and the data-directory lock.
// Every test has its own data directory; engines are released (and their lock with them) by withEngine.

import Foundation
import TesseraCatalog
import TesseraCore
import TesseraTestSupport
import Testing

@testable import TesseraEngine

@Suite("Engine")
struct EngineTests {
    static let cs: UInt64 = 64 * 1024

    // MARK: Durability and recovery

    @Test func flushedDataSurvivesARestart() throws {
        let t = try TestData(chunkSize: Self.cs)
        let cs = Self.cs
        let writes: [(UInt64, [UInt8])] = [
            (0, .pattern(100, seed: 1)), (cs - 10, .pattern(20, seed: 2)), (3 * cs, .pattern(Int(cs), seed: 3)),
            (5 * cs + 4096, .pattern(3 * Int(cs), seed: 4)),
            (10 * cs + 7, .pattern(9, seed: 5)),  // past the end: grows the volume
        ]
        var image: [UInt8] = []
        try t.withEngine { (engine: Engine) throws in
            let v = try engine.createVolumes(name: "vm1", size: 8 * cs)[0]
            for (offset, data) in writes { try v.write(data, at: offset) }
            #expect(v.size == 10 * cs + 16)
            try v.flush()
            image = try v.contents()
            #expect(try engine.storedChunks() == v.mappedChunks)
        }
        try t.withEngine { (engine: Engine) throws in
            let v = try #require(engine.volume(named: "vm1"))
            #expect(v.size == 10 * cs + 16)
            expectBytes(try v.contents(), image)
            for (offset, data) in writes { #expect(try v.read(at: offset, count: data.count) == data) }
            #expect(v.mappedChunks == 8)  // chunks 0, 3, 5, 6, 7, 8, 10 and the one holding cs-10…cs+10
            #expect(try engine.storedChunks() == 8)
        }
    }

    @Test func unflushedChunksAreCollectedAtTheNextStart() throws {
        let t = try TestData(chunkSize: Self.cs)
        let cs = Self.cs
        let kept = [UInt8].pattern(2 * Int(cs), seed: 10)
        try t.withEngine { (engine: Engine) throws in
            let v = try engine.createVolumes(name: "vm1", size: 8 * cs)[0]
            try v.write(kept, at: 0)  // chunks 0 and 1
            try v.flush()
            // Never flushed: new chunks 4, 5, 6 and growth past the end (chunk 9).
            try v.write(.pattern(3 * Int(cs), seed: 11), at: 4 * cs)
            try v.write(.pattern(10, seed: 12), at: 9 * cs)
            #expect(v.mappedChunks == 6)
            #expect(try engine.storedChunks() == 6, "the data reached the store; only the map is not committed")
        }  // dropped without a flush, like a killed daemon
        try t.withEngine { (engine: Engine) throws in
            let v = try #require(engine.volume(named: "vm1"))
            #expect(v.size == 8 * cs, "the size that was committed")
            #expect(v.mappedChunks == 2)
            #expect(try engine.storedChunks() == 2, "uncommitted chunks were collected")
            expectBytes(try v.read(at: 0, count: kept.count), kept, "flushed data intact")
            expectBytes(try v.read(at: 4 * cs, count: 3 * Int(cs)), .zeros(3 * Int(cs)))
            // New chunks after the collection get fresh IDs and work normally.
            try v.write(.pattern(100, seed: 13), at: 6 * cs)
            try v.flush()
            #expect(try engine.storedChunks() == 3)
        }
        try t.withEngine { (engine: Engine) throws in
            let v = try #require(engine.volume(named: "vm1"))
            expectBytes(try v.read(at: 6 * cs, count: 100), .pattern(100, seed: 13))
            expectBytes(try v.read(at: 0, count: kept.count), kept)
        }
    }

    @Test func chunkIDsAreNeverReusedAcrossRestarts() throws {
        let t = try TestData(chunkSize: Self.cs)
        var first: Set<UInt64> = []
        try t.withEngine { (engine: Engine) throws in
            let v = try engine.createVolumes(name: "a", size: 4 * Self.cs)[0]
            try v.write(.pattern(Int(Self.cs), seed: 1), at: 0)
            try v.write(.pattern(Int(Self.cs), seed: 2), at: Self.cs)  // never flushed: collected
            try v.flush()
            first = try engine.catalog.referencedChunks()
        }
        try t.withEngine { (engine: Engine) throws in
            let v = try #require(engine.volume(named: "a"))
            try v.write(.pattern(Int(Self.cs), seed: 3), at: 2 * Self.cs)
            try v.flush()
            let now = try engine.catalog.referencedChunks()
            let fresh = now.subtracting(first)
            #expect(fresh.count == 1)
            #expect(fresh.allSatisfy { id in first.allSatisfy { $0 < id } }, "a new ID is above every earlier one")
        }
    }

    // MARK: Thin allocation

    @Test func zeroWritesAllocateNothing() throws {
        let t = try TestData(chunkSize: Self.cs)
        let cs = Int(Self.cs)
        try t.withEngine { (engine: Engine) throws in
            let v = try engine.createVolumes(name: "z", size: 8 * Self.cs)[0]
            try v.write(.zeros(cs), at: 0)  // a whole chunk
            try v.write(.zeros(100), at: Self.cs + 5)  // part of a chunk
            try v.write(.zeros(3 * cs), at: 2 * Self.cs + 17)  // several chunks, unaligned
            try v.write(.zeros(4096), at: 20 * Self.cs)  // past the end: grows, allocates nothing
            #expect(v.mappedChunks == 0)
            #expect(v.allocatedBytes == 0)
            #expect(v.size == 20 * Self.cs + 4096)
            try v.flush()
            #expect(try engine.storedChunks() == 0)
            expectBytes(try v.contents(), .zeros(Int(v.size)))
            // A whole chunk of zeros over data frees the chunk; a partial one just writes zeros.
            try v.write(.pattern(2 * cs, seed: 1), at: 4 * Self.cs)
            try v.flush()
            #expect(try engine.storedChunks() == 2)
            try v.write(.zeros(cs), at: 4 * Self.cs)
            try v.write(.zeros(10), at: 5 * Self.cs)
            #expect(v.mappedChunks == 1)
            try v.flush()
            #expect(try engine.storedChunks() == 1)
            expectBytes(try v.read(at: 4 * Self.cs, count: cs + 10), .zeros(cs + 10))
            expectBytes(
                try v.read(at: 5 * Self.cs + 10, count: cs - 10), Array([UInt8].pattern(2 * cs, seed: 1)[(cs + 10)...]))
        }
    }

    @Test func discardFreesWholeChunksAndZeroesPartialOnes() throws {
        let t = try TestData(chunkSize: Self.cs)
        let cs = Int(Self.cs)
        let data = [UInt8].pattern(4 * cs, seed: 7)
        try t.withEngine { (engine: Engine) throws in
            let v = try engine.createVolumes(name: "d", size: 4 * Self.cs)[0]
            try v.write(data, at: 0)
            try v.flush()
            #expect(try engine.storedChunks() == 4)
            // From the middle of chunk 0 to the middle of chunk 3: chunks 1 and 2 go, 0 and 3 are zeroed in part.
            try v.discard(at: Self.cs / 2, length: 3 * Self.cs)
            #expect(v.mappedChunks == 2)
            #expect(v.size == 4 * Self.cs, "discard keeps the size")
            try v.flush()
            #expect(try engine.storedChunks() == 2, "freed chunks are deleted once the map commits")
            var expected = data
            expected.replaceSubrange(cs / 2..<cs / 2 + 3 * cs, with: [UInt8].zeros(3 * cs))
            expectBytes(try v.contents(), expected)
            // Discard past the end, of nothing, or of length 0 changes nothing.
            try v.discard(at: 10 * Self.cs, length: Self.cs)
            try v.discard(at: 0, length: 0)
            try v.discard(at: 4 * Self.cs - 1, length: 1 << 40)
            expected[4 * cs - 1] = 0
            expectBytes(try v.contents(), expected)
            #expect(v.size == 4 * Self.cs)
        }
        try t.withEngine { (engine: Engine) throws in
            let v = try #require(engine.volume(named: "d"))
            #expect(v.mappedChunks == 2)
            #expect(try engine.storedChunks() == 2)
        }
    }

    @Test func shrinkThenGrowReadsZeros() throws {
        let t = try TestData(chunkSize: Self.cs)
        let cs = Int(Self.cs)
        let data = [UInt8].pattern(4 * cs, seed: 3)
        let cut = UInt64(cs + cs / 2 + 512)  // inside chunk 1, a multiple of 512
        try t.withEngine { (engine: Engine) throws in
            let v = try engine.createVolumes(name: "r", size: 4 * Self.cs)[0]
            try v.write(data, at: 0)
            try engine.resizeVolume("r", to: cut, shrink: true)
            #expect(v.size == cut)
            #expect(v.mappedChunks == 2)
            #expect(try engine.storedChunks() == 2, "resize is durable and frees the chunks past the end")
            expectBytes(try v.read(at: 0, count: 4 * cs), Array(data[0..<Int(cut)]), "short read at the new end")
            try engine.resizeVolume("r", to: 4 * Self.cs)
            var expected = Array(data[0..<Int(cut)])
            expected += [UInt8].zeros(4 * cs - Int(cut))
            expectBytes(try v.contents(), expected, "the old tail does not come back")
            #expect(v.mappedChunks == 2, "growing allocates nothing")
        }
        try t.withEngine { (engine: Engine) throws in
            let v = try #require(engine.volume(named: "r"))
            #expect(v.size == 4 * Self.cs)
            expectBytes(try v.contents(), Array(data[0..<Int(cut)]) + [UInt8].zeros(4 * cs - Int(cut)))
        }
    }

    @Test func resizeToZeroFreesEverything() throws {
        let t = try TestData(chunkSize: Self.cs)
        try t.withEngine { (engine: Engine) throws in
            let v = try engine.createVolumes(name: "r", size: 4 * Self.cs)[0]
            try v.write(.pattern(3 * Int(Self.cs), seed: 1), at: 100)
            try engine.resize(v, to: 0)
            #expect(v.size == 0)
            #expect(v.mappedChunks == 0)
            #expect(try engine.storedChunks() == 0)
            expectBytes(try v.read(at: 0, count: 10), [])
            expectCode(.invalid, "the CLI path refuses 0") { try engine.resizeVolume("r", to: 0) }
        }
    }

    // MARK: SEEK_DATA / SEEK_HOLE

    @Test func seekDataAndHole() throws {
        let t = try TestData(chunkSize: Self.cs)
        let cs = Self.cs
        try t.withEngine { (engine: Engine) throws in
            // Chunks: 0 hole, 1-2 data, 3-4 hole, 5 data, 6 hole, 7 data (partial, the last chunk).
            let size = 7 * cs + cs / 2
            let v = try engine.createVolumes(name: "s", size: size)[0]
            try v.write([1], at: cs + 5)
            try v.write([1], at: 2 * cs)
            try v.write([1], at: 5 * cs + cs - 1)
            try v.write([1], at: 7 * cs)
            #expect(v.seek(from: 0, data: true) == cs)
            #expect(v.seek(from: cs + 10, data: true) == cs + 10)
            #expect(v.seek(from: 0, data: false) == 0)
            #expect(v.seek(from: cs, data: false) == 3 * cs)
            #expect(v.seek(from: 3 * cs, data: true) == 5 * cs)
            #expect(v.seek(from: 5 * cs + 1, data: false) == 6 * cs)
            #expect(v.seek(from: 6 * cs, data: true) == 7 * cs)
            #expect(v.seek(from: 7 * cs + 1, data: false) == size, "the end counts as a hole")
            #expect(v.seek(from: size, data: true) == nil, "ENXIO at the end")
            #expect(v.seek(from: size, data: false) == nil)
            #expect(v.seek(from: size + 1_000_000, data: true) == nil)
            try v.discard(at: 7 * cs, length: cs)  // partial last chunk: zeroed, still mapped
            try v.discard(at: 5 * cs, length: cs)  // whole chunk: freed
            #expect(v.seek(from: 3 * cs, data: true) == 7 * cs)
            try v.resize(to: 7 * cs)
            #expect(v.seek(from: 3 * cs, data: true) == nil, "no data after the last hole")
        }
    }

    @Test func seekOnAHugeSparseVolumeIsQuick() throws {
        let t = try TestData(chunkSize: Self.cs)
        try t.withEngine { (engine: Engine) throws in
            let size: UInt64 = 64 << 40  // 64 TiB, as the issue asks
            let v = try engine.createVolumes(name: "big", size: size)[0]
            try v.write([9], at: size - 1)
            expectBytes(try v.read(at: size - 2, count: 10), [0, 9])
            let clock = ContinuousClock()
            let elapsed = clock.measure {
                #expect(v.seek(from: 0, data: true) == size - Self.cs)
                #expect(v.seek(from: 0, data: false) == 0)
            }
            #expect(elapsed < .seconds(2), "seek must jump over empty pages, not walk a billion slots")
            try v.discard(at: 0, length: size)
            #expect(v.mappedChunks == 0)
        }
    }

    @Test func copySkipsHolesAndCopiesData() throws {
        let t = try TestData(chunkSize: Self.cs)
        let cs = Self.cs
        try t.withEngine { (engine: Engine) throws in
            let src = try engine.createVolumes(name: "src", size: 4 * cs)[0]
            let dst = try engine.createVolumes(name: "dst", size: 4 * cs)[0]
            try src.write(.pattern(Int(cs), seed: 1), at: 0)
            try src.write(.pattern(100, seed: 2), at: 2 * cs + 50)
            try dst.write(.pattern(Int(4 * cs), seed: 3), at: 0)  // old data in the destination
            let n = try dst.copy(from: src, at: 0, to: 0, length: 3 * cs)
            #expect(n == 3 * cs)
            expectBytes(try dst.read(at: 0, count: Int(3 * cs)), try src.read(at: 0, count: Int(3 * cs)))
            #expect(dst.seek(from: cs, data: false) == cs, "the source's hole is a hole in the copy")
            expectBytes(
                try dst.read(at: 3 * cs, count: Int(cs)), Array([UInt8].pattern(Int(4 * cs), seed: 3)[Int(3 * cs)...]))
            // Unaligned, and short at the source's end.
            let m = try dst.copy(from: src, at: 4 * cs - 10, to: 7, length: 100)
            #expect(m == 10)
        }
    }

    // MARK: Creating volumes

    @Test func createWithCountMakesNumberedVolumesAllOrNone() throws {
        let t = try TestData(chunkSize: Self.cs)
        try t.withEngine { (engine: Engine) throws in
            let made = try engine.createVolumes(name: "web", count: 3, size: 1 << 30)
            #expect(made.map(\.name) == ["web-1", "web-2", "web-3"])
            _ = try engine.createVolumes(name: "db-2", size: 1 << 20)
            expectCode(.exists) { _ = try engine.createVolumes(name: "db", count: 4, size: 1 << 20) }
            #expect(
                engine.allVolumes().map(\.name).sorted() == ["db-2", "web-1", "web-2", "web-3"],
                "a batch with one taken name creates none")
            expectCode(.invalid) { _ = try engine.createVolumes(name: "x", count: 0, size: 1 << 20) }
            expectCode(.invalid) { _ = try engine.createVolumes(name: "x", count: 10_001, size: 1 << 20) }
            // A count whose generated names become invalid (too long) is refused as a whole.
            expectCode(.invalid) {
                _ = try engine.createVolumes(name: String(repeating: "n", count: 199), count: 10, size: 1 << 20)
            }
            #expect(engine.allVolumes().count == 4)
        }
        try t.withEngine { (engine: Engine) throws in
            #expect(try engine.catalog.volumes().map(\.name).sorted() == ["db-2", "web-1", "web-2", "web-3"])
            #expect(engine.volume(named: "web-2")?.size == 1 << 30)
        }
    }

    @Test(arguments: [
        "", ".", "..", ".hidden", "a/b", "nul\u{0}", "tab\t", "disk.img", String(repeating: "x", count: 201),
    ])
    func badNamesAreRefused(name: String) throws {
        let t = try TestData(chunkSize: Self.cs)
        try t.withEngine { (engine: Engine) throws in
            expectCode(.invalid, "name '\(name)'") { _ = try engine.createVolumes(name: name, size: 1 << 20) }
            #expect(engine.allVolumes().isEmpty)
            #expect(try engine.catalog.volumes().isEmpty)
        }
    }

    @Test(arguments: [0, 1, 511, 513, 1000, (1 << 50) + 512, UInt64.max - 511] as [UInt64])
    func badSizesAreRefused(size: UInt64) throws {
        let t = try TestData(chunkSize: Self.cs)
        try t.withEngine { (engine: Engine) throws in
            expectCode(.invalid, "size \(size)") { _ = try engine.createVolumes(name: "v", size: size) }
            #expect(engine.allVolumes().isEmpty)
        }
    }

    @Test func goodSizesAndOtherRefusals() throws {
        let t = try TestData(chunkSize: Self.cs)
        try t.withEngine { (engine: Engine) throws in
            _ = try engine.createVolumes(name: "small", size: 512)
            _ = try engine.createVolumes(name: "huge", size: 1 << 50)
            _ = try engine.createVolumes(name: "odd", size: 512 * 12_345)
            expectCode(.exists) { _ = try engine.createVolumes(name: "small", size: 512) }
            expectCode(.notFound) { _ = try engine.createVolumes(name: "p", size: 512, pool: "nope") }
            expectCode(.notFound) { try engine.resizeVolume("ghost", to: 512) }
            expectCode(.notFound) { try engine.deleteVolume("ghost") }
            expectCode(.invalid) { try engine.resizeVolume("small", to: 1000) }
            expectCode(.invalid) { try engine.resizeVolume("small", to: 1 << 51) }
            #expect(engine.volume(named: "small")?.size == 512)
        }
    }

    @Test func deleteFreesChunksAndRefusesAnOpenVolume() throws {
        let t = try TestData(chunkSize: Self.cs)
        try t.withEngine { (engine: Engine) throws in
            let v = try engine.createVolumes(name: "gone", size: 4 * Self.cs)[0]
            let w = try engine.createVolumes(name: "kept", size: 4 * Self.cs)[0]
            try v.write(.pattern(3 * Int(Self.cs), seed: 1), at: 0)
            try w.write(.pattern(100, seed: 2), at: 0)
            try engine.flushAll()
            #expect(try engine.storedChunks() == 4)
            v.opened()
            expectCode(.busy) { try engine.deleteVolume("gone") }
            engine.closed(v)
            try engine.deleteVolume("gone")
            #expect(engine.volume(named: "gone") == nil)
            #expect(try engine.storedChunks() == 1)
        }
        try t.withEngine { (engine: Engine) throws in
            #expect(engine.allVolumes().map(\.name) == ["kept"])
            #expect(try engine.storedChunks() == 1)
            expectBytes(try #require(engine.volume(named: "kept")).read(at: 0, count: 100), .pattern(100, seed: 2))
        }
    }

    @Test func renameIsDurable() throws {
        let t = try TestData(chunkSize: Self.cs)
        try t.withEngine { (engine: Engine) throws in
            let v = try engine.createVolumes(name: "old", size: Self.cs)[0]
            try v.write([1, 2, 3], at: 0)
            try v.flush()
            try engine.renameVolume("old", to: "new")
            #expect(engine.volume(named: "old") == nil)
            #expect(engine.volume(named: "new") === v)
            _ = try engine.createVolumes(name: "other", size: Self.cs)
            expectCode(.exists) { try engine.renameVolume("new", to: "other", noReplace: true) }
            expectCode(.invalid) { try engine.renameVolume("new", to: "bad/name") }
        }
        try t.withEngine { (engine: Engine) throws in
            expectBytes(try #require(engine.volume(named: "new")).read(at: 0, count: 3), [1, 2, 3])
        }
    }

    // MARK: The data directory

    @Test func aSecondEngineOnTheSameDataIsBusy() throws {
        let t = try TestData(chunkSize: Self.cs)
        try t.withEngine { (_: Engine) throws in
            expectCode(.busy) { _ = try Engine(t.data) }
        }
        // Once the first one is gone, the directory can be opened again.
        try t.withEngine { (engine: Engine) throws in #expect(engine.allVolumes().isEmpty) }
    }

    @Test func missingOrDoubleInitialisedDataDirectory() throws {
        let dir = try TemporaryDirectory()
        expectCode(.catalog) { _ = try Engine(DataDirectory(path: dir.path + "/absent")) }
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/absent"), "opening never creates")
        let data = DataDirectory(path: dir.path + "/d")
        try Engine.initialize(data, chunkSize: Self.cs)
        expectCode(.exists) { try Engine.initialize(data, chunkSize: Self.cs) }
        // A data directory whose catalog is gone is refused, not silently re-created.
        try FileManager.default.removeItem(atPath: data.catalogPath)
        expectCode(.catalog) { _ = try Engine(data) }
        #expect(!FileManager.default.fileExists(atPath: data.catalogPath))
    }

    @Test func xattrsPersistAcrossRestarts() throws {
        let t = try TestData(chunkSize: Self.cs)
        let name = "trusted.libvirt.security.dac"
        try t.withEngine { (engine: Engine) throws in
            let v = try engine.createVolumes(name: "x", size: Self.cs)[0]
            try engine.setXattr(v, name: name, value: Array("+107:+107".utf8))
            #expect(v.xattrs[name] == Array("+107:+107".utf8))
        }
        try t.withEngine { (engine: Engine) throws in
            #expect(engine.volume(named: "x")?.xattrs[name] == Array("+107:+107".utf8))
        }
    }
}
