// Images of any byte size (POSIX sizes): truncate/ftruncate to a size that is not a multiple of 512,
// then growing again — by truncate, by a write past the end, or by fallocate — must read zeros past the
// old end, inside the last chunk as well as in the chunks after it. Checked against a ShadowModel on a
// plain volume, under a snapshot taken before the shrink (which still reads its old bytes), and on a
// clone (whose parent keeps its bytes); then after a restart. Also: the size rules (the data path takes
// any byte size, the control plane whole sectors), and SEEK_DATA/SEEK_HOLE and allocation at odd sizes.

import TesseraCatalog
import TesseraCore
import TesseraTestSupport
import Testing

@testable import TesseraEngine

@Suite("Odd sizes", .serialized)
struct OddSizeTests {
    static let cs = SnapshotFocusedTests.cs
    typealias Fixture = SnapshotFocusedTests.Fixture

    enum Grow: String, CaseIterable, CustomTestStringConvertible {
        case truncate, writePastEnd, fallocate
        var testDescription: String { rawValue }
    }
    enum Sharing: String, CaseIterable, CustomTestStringConvertible {
        case none, snapshot, clone
        var testDescription: String { rawValue }
    }

    /// Shrink points: inside the first chunk, one byte into a chunk, one byte short of a chunk's end,
    /// odd offsets in the middle, and 1 byte.
    static let shrinkSizes: [UInt64] = [1001, cs + 1, 2 * cs - 1, 4097, 3 * cs + 7, 1, 2 * cs + 513]

    @Test(arguments: Grow.allCases, Sharing.allCases)
    func shrinkToAnOddSizeThenGrowReadsZeros(grow: Grow, sharing: Sharing) throws {
        let f = try Fixture()
        let cs = Self.cs
        let full = 4 * cs
        let original = [UInt8].pattern(Int(full), seed: 7)
        var model = ShadowModel(size: full)
        model.write(at: 0, original)
        let target = sharing == .clone ? "c" : "v"
        try f.withEngine { (e: Engine) throws in
            let v = try e.createVolumes(name: "v", size: full, pool: "small")[0]
            try v.write(original, at: 0)
            switch sharing {
            case .none: break
            case .snapshot: try e.createSnapshot(name: "s", volumes: ["v"])
            case .clone: _ = try e.clone("v", as: "c")
            }
            let t = try #require(e.volume(named: target))
            for (step, size) in Self.shrinkSizes.enumerated() {
                let when = "\(grow)/\(sharing): step \(step), shrink to \(size)"
                try e.resize(t, to: size)
                model.resize(to: size)
                #expect(t.size == size, "\(when): size")
                expectBytes(try t.contents(), model.bytes, "\(when): right after the shrink")
                // Grow back to the full size by one of the three gestures; the model says zeros.
                switch grow {
                case .truncate:
                    try e.resize(t, to: full)
                    model.resize(to: full)
                case .writePastEnd:
                    let mark = [UInt8].pattern(3, seed: 100 + UInt64(step))
                    try t.write(mark, at: full - 3)
                    model.write(at: full - 3, mark)
                case .fallocate:
                    t.extend(to: full)
                    model.resize(to: full)
                }
                #expect(t.size == full, "\(when): size after growing")
                expectBytes(try t.contents(), model.bytes, "\(when): after growing by \(grow)")
                // New data in the regrown tail of the last chunk stays exactly where it was written.
                let patch = [UInt8].pattern(300, seed: 200 + UInt64(step))
                try t.write(patch, at: size + 17)
                model.write(at: size + 17, patch)
                expectBytes(try t.contents(), model.bytes, "\(when): after a write into the regrown tail")
            }
            // A last odd shrink that stays: the size and the bytes survive the restart below.
            try e.resize(t, to: 2 * cs + 1001)
            model.resize(to: 2 * cs + 1001)
            if sharing == .snapshot {
                expectBytes(
                    try SnapshotFocusedTests.snapshotRead(e, "s", "v", at: 0, count: Int(full)), original,
                    "\(grow): the snapshot taken before the shrinks still reads its bytes")
            }
            if sharing == .clone {
                expectBytes(try v.contents(), original, "\(grow): the clone's parent keeps its bytes")
            }
            try SnapshotFocusedTests.expectExactAccounting(e, "\(grow)/\(sharing) before the restart")
        }
        try f.withEngine { (e: Engine) throws in
            let t = try #require(e.volume(named: target))
            #expect(t.size == 2 * cs + 1001, "\(grow)/\(sharing): odd size after the restart")
            expectBytes(try t.contents(), model.bytes, "\(grow)/\(sharing): image after the restart")
            try e.resize(t, to: full)
            model.resize(to: full)
            expectBytes(try t.contents(), model.bytes, "\(grow)/\(sharing): grown after the restart")
            if sharing == .snapshot {
                expectBytes(
                    try SnapshotFocusedTests.snapshotRead(e, "s", "v", at: 0, count: Int(full)), original,
                    "\(grow): the snapshot after the restart")
                // Back to the snapshot: its bytes, size and all, then an odd shrink and growth of that.
                try e.revert("v", to: "s")
                expectBytes(try t.contents(), original, "\(grow): reverted to the snapshot")
                try e.resize(t, to: cs + 333)
                try e.resize(t, to: full)
                expectBytes(
                    try t.contents(), Array(original[0..<Int(cs + 333)]) + .zeros(Int(full - cs - 333)),
                    "\(grow): reverted, shrunk to an odd size, grown")
                expectBytes(
                    try SnapshotFocusedTests.snapshotRead(e, "s", "v", at: 0, count: Int(full)), original,
                    "\(grow): the snapshot after the revert and shrink")
            }
            try SnapshotFocusedTests.expectExactAccounting(e, "\(grow)/\(sharing) after the restart")
        }
    }

    /// A snapshot or a clone of an image whose size is odd: its view ends there, and a clone of it
    /// grown later reads zeros past that end.
    @Test func cloneOfAnOddSizedSnapshotGrowsWithZeros() throws {
        let f = try Fixture()
        let cs = Self.cs
        try f.withEngine { (e: Engine) throws in
            let v = try e.createVolumes(name: "v", size: 2 * cs, pool: "small")[0]
            try v.write(.pattern(Int(2 * cs), seed: 3), at: 0)
            try e.resize(v, to: cs + 999)
            try e.createSnapshot(name: "s", volumes: ["v"])
            let img = try #require(e.snapshotImages("s")?.first)
            #expect(img.size == cs + 999, "the snapshot keeps the odd size")
            try v.write(.pattern(Int(2 * cs), seed: 4), at: 0)  // the live volume moves on (and grows)
            let c = try e.clone("s/v", as: "c")
            #expect(c.size == cs + 999)
            try e.resize(c, to: 3 * cs)
            expectBytes(
                try c.contents(),
                Array([UInt8].pattern(Int(2 * cs), seed: 3)[0..<Int(cs + 999)]) + .zeros(Int(2 * cs - 999)),
                "clone of the odd-sized snapshot, grown")
            try SnapshotFocusedTests.expectExactAccounting(e, "clone of an odd-sized snapshot")
        }
    }

    /// The data path (FUSE truncate, O_TRUNC, writes) takes any byte size; the control plane (`volume
    /// create`, `volume resize`) asks for whole sectors; both stop at the limit.
    @Test func sizeRules() throws {
        let t = try TestData(chunkSize: Self.cs)
        try t.withEngine { (engine: Engine) throws in
            let v = try engine.createVolumes(name: "v", size: 4096)[0]
            for size: UInt64 in [1001, 1, 4097, 0, 513, Engine.maxVolumeSize] {
                try engine.resize(v, to: size)
                #expect(v.size == size, "resize to \(size)")
            }
            expectCode(.invalid, "past the limit") { try engine.resize(v, to: Engine.maxVolumeSize + 1) }
            #expect(v.size == Engine.maxVolumeSize, "a refused resize changes nothing")
            expectCode(.invalid, "volume resize keeps whole sectors") { try engine.resizeVolume("v", to: 1001) }
            expectCode(.invalid, "volume create keeps whole sectors") {
                _ = try engine.createVolumes(name: "w", size: 1000)
            }
            #expect(engine.volume(named: "w") == nil)
            #expect(v.size == Engine.maxVolumeSize, "a refused volume resize changes nothing")
            #expect(throws: Never.self) { try Engine.checkSize(1001) }
            #expect(throws: TesseraError.self) { try Engine.checkSectorSize(1001) }
            try engine.resize(v, to: 1001)
        }
        try t.withEngine { (engine: Engine) throws in
            #expect(engine.volume(named: "v")?.size == 1001, "an odd size survives the restart")
        }
    }

    /// SEEK_DATA/SEEK_HOLE and the allocation count when the end falls inside a chunk.
    @Test func seekAndAllocationAtAnOddEnd() throws {
        let t = try TestData(chunkSize: Self.cs)
        let cs = Self.cs
        try t.withEngine { (engine: Engine) throws in
            let v = try engine.createVolumes(name: "v", size: 512)[0]
            try v.write([1], at: 0)
            try v.write([2], at: 2 * cs + 500)  // grows the image to 2 cs + 501: an odd end in chunk 2
            #expect(v.size == 2 * cs + 501)
            #expect(v.seek(from: 0, data: false) == cs, "the hole after chunk 0")
            #expect(v.seek(from: cs, data: true) == 2 * cs, "data in the last, partial chunk")
            #expect(v.seek(from: 2 * cs + 7, data: false) == 2 * cs + 501, "SEEK_HOLE in the last chunk is the end")
            #expect(v.seek(from: 2 * cs + 501, data: true) == nil, "SEEK_DATA at the end: ENXIO")
            #expect(v.seek(from: 2 * cs + 500, data: true) == 2 * cs + 500)
            #expect(v.allocatedBytes == 2 * cs)
            // Shrink to one byte into chunk 1 (never written): chunk 2 goes, nothing new is allocated.
            try engine.resize(v, to: cs + 1)
            #expect(v.mappedChunks == 1)
            #expect(v.seek(from: cs, data: true) == nil, "no data past chunk 0")
            #expect(v.seek(from: 5, data: false) == cs)
            try engine.resize(v, to: 3 * cs + 5)
            #expect(v.seek(from: cs, data: true) == nil, "growing again brings no data back")
            #expect(v.seek(from: 1, data: true) == 1, "chunk 0 keeps its data")
            #expect(v.seek(from: cs, data: false) == cs)
            #expect(v.seek(from: 3 * cs, data: false) == 3 * cs, "a hole in the last, partial chunk")
            #expect(v.seek(from: 3 * cs + 5, data: false) == nil, "SEEK_HOLE at the end: ENXIO")
            #expect(v.allocatedBytes == cs, "growing allocates nothing")
            expectBytes(try v.read(at: 2 * cs + 490, count: 20), .zeros(20), "the old byte of chunk 2 is gone")
        }
    }
}
