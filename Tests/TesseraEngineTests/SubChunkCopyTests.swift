// Sub-chunk copy-on-write: a small write to a chunk a snapshot or a clone's parent still sees writes
// only its blocks into a partial chunk; the rest reads from the base until a flush folds it. Checked
// against shadow models under snapshots, clones, copies, frequent epochs, many threads on one chunk,
// and crashes, with exact space accounting.

import Foundation
import TesseraCatalog
import TesseraCore
import TesseraTestSupport
import Testing

@testable import TesseraEngine

@Suite("Sub-chunk copy-on-write", .serialized)
struct SubChunkCopyTests {
    static let cs = SnapshotFocusedTests.cs
    typealias Fixture = SnapshotFocusedTests.Fixture

    /// A 4 KiB write after a snapshot writes one block, folds at the flush, and both images stay right.
    @Test func smallWriteAfterASnapshotCopiesNothingUntilTheFlush() throws {
        let f = try Fixture()
        let cs = Self.cs
        try f.withEngine { (e: Engine) throws in
            let v = try e.createVolumes(name: "v", size: 4 * cs, pool: "small")[0]
            let old = [UInt8].pattern(Int(4 * cs), seed: 1)
            try v.write(old, at: 0)
            try e.createSnapshot(name: "s", volumes: ["v"])
            var model = ShadowModel(size: 4 * cs)
            model.write(at: 0, old)
            let piece = [UInt8].pattern(4096, seed: 2)
            try v.write(piece, at: cs + 8192)
            model.write(at: cs + 8192, piece)
            #expect(v.unfoldedBytes == cs - 4096, "one block written, the rest falls through to the base")
            // Unaligned: the edges of the blocks it touches come from the base.
            let odd = [UInt8].pattern(5000, seed: 3)
            try v.write(odd, at: 2 * cs + 1000)
            model.write(at: 2 * cs + 1000, odd)
            #expect(v.unfoldedBytes == (cs - 4096) + (cs - 2 * 4096))
            expectBytes(try v.contents(), model.read(at: 0, count: Int(4 * cs)), "live, partial")
            expectBytes(try SnapshotFocusedTests.snapshotRead(e, "s", "v", at: 0, count: Int(4 * cs)), old, "snapshot")
            try v.flush()
            #expect(v.unfoldedBytes == 0)
            expectBytes(try v.contents(), model.read(at: 0, count: Int(4 * cs)), "live, folded")
            expectBytes(try SnapshotFocusedTests.snapshotRead(e, "s", "v", at: 0, count: Int(4 * cs)), old, "snapshot")
            try SnapshotFocusedTests.expectExactAccounting(e, "after the fold")
        }
        // The fold is what the catalog committed: a restart reads the same.
        try f.withEngine { (e: Engine) throws in
            let v = try #require(e.volume(named: "v"))
            var model = ShadowModel(size: 4 * cs)
            model.write(at: 0, .pattern(Int(4 * cs), seed: 1))
            model.write(at: cs + 8192, .pattern(4096, seed: 2))
            model.write(at: 2 * cs + 1000, .pattern(5000, seed: 3))
            expectBytes(try v.contents(), model.read(at: 0, count: Int(4 * cs)), "after restart")
            try SnapshotFocusedTests.expectExactAccounting(e, "after restart")
        }
    }

    /// Random small writes, discards and resizes with a snapshot every few operations (frequent
    /// epochs), some snapshots deleted, a clone and a copy taken on the way: every image matches its
    /// model at every step, and the space accounting is exact.
    @Test(arguments: [1, 2, 3] as [UInt64])
    func frequentEpochs(seed: UInt64) throws {
        let f = try Fixture()
        let cs = Self.cs
        let size = 6 * cs
        var rng = SplitMix64(seed: seed)
        try f.withEngine { (e: Engine) throws in
            let v = try e.createVolumes(name: "v", size: size, pool: "small")[0]
            var model = ShadowModel(size: size)
            let base = rng.bytes(Int(size))
            try v.write(base, at: 0)
            model.write(at: 0, base)
            var snaps: [(name: String, model: ShadowModel)] = []
            for round in 0..<30 {
                for _ in 0..<8 {
                    let offset = rng.next() % size
                    let length = 1 + rng.next() % 9000
                    let dice = rng.next() % 10
                    if dice < 7 {
                        let data = rng.chance(0.1) ? [UInt8].zeros(Int(length)) : rng.bytes(Int(length))
                        try v.write(data, at: offset)
                        model.write(at: offset, data)
                    } else if dice < 9 {
                        try v.discard(at: offset, length: length)
                        model.discard(at: offset, length: length)
                    } else {
                        let newSize = size - rng.next() % cs
                        try v.resize(to: newSize)
                        model.resize(to: newSize)
                    }
                    let got = try v.read(at: offset, count: Int(length))
                    if let m = model.firstMismatch(got, at: offset) {
                        Issue.record("seed \(seed) round \(round): live \(m)")
                        return
                    }
                }
                if round % 2 == 0 {
                    let name = "s\(round)"
                    try e.createSnapshot(name: name, volumes: ["v"])
                    snaps.append((name, model))
                }
                if snaps.count > 4 {
                    let gone = snaps.removeFirst()
                    try e.deleteSnapshot(gone.name)
                }
                for s in snaps {
                    let image = try SnapshotFocusedTests.snapshotRead(e, s.name, "v", at: 0, count: Int(s.model.size))
                    if let m = s.model.firstMismatch(image, at: 0) {
                        Issue.record("seed \(seed) round \(round): snapshot \(s.name) \(m)")
                        return
                    }
                }
            }
            // A clone of the newest snapshot: its small writes are partial over the parent's chunks.
            let last = try #require(snaps.last)
            let c = try e.clone("\(last.name)/v", as: "c")
            var cloneModel = last.model
            for _ in 0..<20 {
                let offset = rng.next() % cloneModel.size
                let data = rng.bytes(Int(1 + rng.next() % 6000))
                try c.write(data, at: offset)
                cloneModel.write(at: offset, data)
            }
            #expect(c.unfoldedBytes > 0, "the clone's small writes are partial chunks")
            expectBytes(try c.contents(), cloneModel.read(at: 0, count: Int(cloneModel.size)), "clone, partial")
            // A copy of the live volume while it has partial chunks: shared chunks are folded first.
            try v.write(rng.bytes(3000), at: 100)
            model.write(at: 100, Array(try v.read(at: 100, count: 3000)))
            let copy = try e.createVolumes(name: "copy", size: (model.size + 511) / 512 * 512, pool: "small")[0]
            _ = try copy.copy(from: v, at: 0, to: 0, length: model.size)
            expectBytes(try copy.read(at: 0, count: Int(model.size)), model.read(at: 0, count: Int(model.size)), "copy")
            try e.flushAll()
            expectBytes(try c.contents(), cloneModel.read(at: 0, count: Int(cloneModel.size)), "clone, folded")
            expectBytes(try v.contents(), model.read(at: 0, count: Int(model.size)), "live, folded")
            try SnapshotFocusedTests.expectExactAccounting(e, "seed \(seed)")
            try e.deleteVolume("c")
            try e.deleteVolume("v", withSnapshots: true)
            expectBytes(
                try copy.read(at: 0, count: Int(model.size)), model.read(at: 0, count: Int(model.size)),
                "copy after its source went")
            try SnapshotFocusedTests.expectExactAccounting(e, "seed \(seed) after the source went")
        }
    }

    /// Eight threads write interleaved 512-byte slices of one chunk right after a snapshot (they meet
    /// in every block: edges merged from the base, ownership changing), while readers check the
    /// snapshot and a flusher folds under them. The end state is exactly the model's.
    @Test func manyThreadsOnOneChunk() throws {
        let f = try Fixture()
        let cs = Self.cs
        try f.withEngine { (e: Engine) throws in
            let v = try e.createVolumes(name: "v", size: 2 * cs, pool: "small")[0]
            let old = [UInt8].pattern(Int(2 * cs), seed: 7)
            try v.write(old, at: 0)
            for round in 0..<4 {
                try e.createSnapshot(name: "r\(round)", volumes: ["v"])
                let before = try v.contents()
                let threads = 8
                let slice = 512
                let failures = Lock([String]())
                let group = DispatchGroup()
                for t in 0..<threads {
                    group.enter()
                    Thread.detachNewThread {
                        defer { group.leave() }
                        // Thread t owns slices t, t+8, t+16, … of chunk 1, written in a shuffled order.
                        var rng = SplitMix64(seed: UInt64(round * 100 + t))
                        var mine = Array(stride(from: t, to: Int(cs) / slice, by: threads))
                        mine.shuffle(using: &rng)
                        for s in mine {
                            let bytes = [UInt8](repeating: UInt8(1 + t + round * 8), count: slice)
                            do { try v.write(bytes, at: cs + UInt64(s * slice)) } catch {
                                failures.withLock { $0.append("write: \(error)") }
                            }
                        }
                    }
                }
                group.enter()
                Thread.detachNewThread {
                    defer { group.leave() }
                    for _ in 0..<20 {
                        do {
                            let snap = try SnapshotFocusedTests.snapshotRead(
                                e, "r\(round)", "v", at: 0, count: Int(2 * cs))
                            if snap != before { failures.withLock { $0.append("snapshot r\(round) changed") } }
                            try v.flush()
                        } catch { failures.withLock { $0.append("reader: \(error)") } }
                    }
                }
                group.wait()
                #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 }.prefix(3))")
                var expected = before
                for s in 0..<Int(cs) / slice {
                    for i in 0..<slice { expected[Int(cs) + s * slice + i] = UInt8(1 + s % threads + round * 8) }
                }
                expectBytes(try v.contents(), expected, "round \(round), before the fold")
                try v.flush()
                #expect(v.unfoldedBytes == 0)
                expectBytes(try v.contents(), expected, "round \(round), folded")
            }
            try SnapshotFocusedTests.expectExactAccounting(e, "after the threads")
        }
    }

    /// A crash before the fold loses the unfolded writes (never fsynced) and leaves the last flush
    /// intact; a crash after the flush keeps them.
    @Test(arguments: [false, true])
    func crashBeforeAndAfterTheFold(checksums: Bool) throws {
        let cs = 16 * 1024
        let memory = MemoryStore(chunkSize: checksums ? ChecksumLayer.innerChunkSize(for: cs) : cs)
        let wired = try HandWiredVolume(store: checksums ? ChecksumLayer(over: memory) : memory, size: UInt64(4 * cs))
        let old = [UInt8].pattern(4 * cs, seed: 11)
        try wired.volume.write(old, at: 0)
        try wired.volume.flush()
        wired.volume.holdAndAdvance(wired.volume.epoch)  // a hold keeps the base, as a snapshot would
        try wired.volume.write(.pattern(4096, seed: 12), at: UInt64(cs + 4096))
        #expect(wired.volume.unfoldedBytes == UInt64(cs - 4096))
        memory.crash()
        try wired.reload(store: checksums ? ChecksumLayer(over: memory) : memory)
        expectBytes(try wired.volume.contents(), old, "a crash before the fold: the last flush")

        wired.volume.holdAndAdvance(wired.volume.epoch)
        var expected = old
        let piece = [UInt8].pattern(6000, seed: 13)
        try wired.volume.write(piece, at: UInt64(2 * cs + 100))
        expected.replaceSubrange((2 * cs + 100)..<(2 * cs + 6100), with: piece)
        try wired.volume.flush()
        memory.crash()
        try wired.reload(store: checksums ? ChecksumLayer(over: memory) : memory)
        expectBytes(try wired.volume.contents(), expected, "a crash after the flush: folded and committed")
    }
}
