// The model test of the volume engine: several threads drive one Volume with random writes (aligned and
// not, 1 byte to 3 chunks, some all-zero), reads, discards and flushes, each thread in its own region of
// the volume, and every result is compared with a ShadowModel. Between rounds the threads stop, the whole
// image is compared, and the volume is resized (to any byte size). Every failure message carries the seed.
//
// Regions are disjoint in bytes but not chunk-aligned, so neighbouring threads share chunks at their
// edges (concurrent I/O inside one chunk, allocation races). The model stays deterministic because each
// byte has one writer. Resizes change every region, so they happen only between rounds.
//
// Two stacks: Engine over a DirectoryStore in a temporary data directory (ends with a restart of the
// engine: the image must come back identical), and a hand-wired Volume over FaultyStore(MemoryStore)
// with random I/O errors (every injected fault must surface as a thrown StoreError; ranges not hit by a
// fault must still match; ends with a simulated power cut).

import Foundation
import TesseraCatalog
import TesseraCore
import TesseraTestSupport
import Testing

@testable import TesseraEngine

struct ModelParameters {
    var threads = 4
    var chunkSize = 16 * 1024
    /// Bytes each thread owns; not a multiple of the chunk size on purpose.
    var regionSize: UInt64 = 5 * 16 * 1024 + 8 * 1024 + 100
    var rounds = 8
    var opsPerRound = 100
    /// Wall-clock bound per run; rounds stop early when it is spent.
    var budget: Duration = .seconds(4)
    var volumeSpan: UInt64 { UInt64(threads) * regionSize }
}

/// One model run: the volume, its shadow, and what went wrong.
final class ModelRun: Sendable {
    let volume: Volume
    let seed: UInt64
    let p: ModelParameters
    let shadow: Locked<ShadowModel>
    let problems = Locked<[String]>([])
    /// StoreErrors thrown by the volume (only expected with fault injection).
    let thrown = Locked<Int>(0)
    /// Thrown errors by case (io, noSpace, corrupt …), for the summary line.
    let thrownKinds = Locked<[String: Int]>([:])
    let expectFaults: Bool
    let opsDone = Locked<Int>(0)
    let roundsDone = Locked<Int>(0)

    init(volume: Volume, seed: UInt64, parameters: ModelParameters, expectFaults: Bool) {
        self.volume = volume
        self.seed = seed
        self.p = parameters
        self.expectFaults = expectFaults
        shadow = Locked(ShadowModel(size: volume.size))
    }

    var cs: UInt64 { UInt64(p.chunkSize) }
    var failed: Bool { !problems.value.isEmpty }

    func problem(_ text: String, _ log: [String] = []) {
        let recent = log.suffix(12).joined(separator: "\n    ")
        problems.withLock { $0.append("seed \(seed): \(text)\(log.isEmpty ? "" : "\n  recent ops:\n    \(recent)")") }
    }

    /// A StoreError from the volume: fine with fault injection (counted), a failure otherwise.
    func caught(_ error: StoreError, _ what: String, _ log: [String]) {
        thrown.withLock { $0 += 1 }
        let kind = "\(error)".prefix { $0 != "(" }
        thrownKinds.withLock { $0[String(kind), default: 0] += 1 }
        if !expectFaults { problem("\(what) threw \(error)", log) }
    }

    /// Reads [offset, offset+count) and compares with the shadow; `floor` is a size the volume is known
    /// to have reached (the read may not be shorter than that allows).
    func verify(_ offset: UInt64, _ count: Int, floor: UInt64, _ what: String, _ log: [String]) {
        let got: [UInt8]
        do { got = try volume.read(at: offset, count: count) } catch {
            caught(error, "read-back after \(what)", log)
            return
        }
        let minimum = offset < floor ? Int(min(UInt64(count), floor - offset)) : 0
        if got.count < minimum || got.count > count {
            problem(
                "\(what): read of \(count) at \(offset) returned \(got.count) bytes, expected at least \(minimum)", log)
            return
        }
        if let m = shadow.withLock({ $0.firstMismatch(got, at: offset) }) {
            problem("\(what): \(m) (read \(count) at \(offset))", log)
        }
    }

    /// The whole image, single-threaded (between rounds and at the end).
    func verifyAll(_ when: String) {
        let size = volume.size
        let expected = shadow.withLock { $0.size }
        if size != expected { problem("\(when): volume size \(size), model size \(expected)") }
        let end = max(size, p.volumeSpan) + 1000
        var pos: UInt64 = 0
        while pos < end && !failed {
            let n = Int(min(256 * 1024, end - pos))
            verify(pos, n, floor: size, when, [])
            pos += UInt64(n)
        }
        let mapped = UInt64(volume.mappedChunks)
        let limit = (size + cs - 1) / cs
        if mapped > limit { problem("\(when): \(mapped) chunks mapped, but the size \(size) holds only \(limit)") }
    }

    // MARK: One thread's work

    func runThread(_ t: Int, rng: inout SplitMix64, ops: Int, deadline: ContinuousClock.Instant) {
        let lo = UInt64(t) * p.regionSize
        let hi = lo + p.regionSize
        var floor = volume.size  // no shrink happens while threads run
        var log: [String] = []
        defer { opsDone.withLock { $0 += log.count } }
        for i in 0..<ops {
            if failed || ContinuousClock.now > deadline { return }
            let dice = rng.next() % 100
            if dice < 45 {
                let (offset, data, kind) = makeWrite(lo, hi, &rng)
                let what = "t\(t)#\(i) write \(kind) \(data.count) at \(offset)"
                log.append(what)
                do {
                    try volume.write(data, at: offset)
                    shadow.withLock { $0.write(at: offset, data) }
                    floor = max(floor, offset + UInt64(data.count))
                } catch {
                    // A failed write does not grow the volume; inside it, the bytes are unknown.
                    caught(error, what, log)
                    shadow.withLock { $0.failedWrite(at: offset, length: data.count) }
                }
                let from = max(lo, offset >= 100 ? offset - 100 : 0)
                let to = min(hi, offset + UInt64(data.count) + 100)
                verify(from, Int(to - from), floor: floor, what, log)
            } else if dice < 70 {
                let (offset, count) = makeRange(lo, hi, maxLength: 3 * cs, &rng)
                let what = "t\(t)#\(i) read \(count) at \(offset)"
                log.append(what)
                verify(offset, Int(count), floor: floor, what, log)
            } else if dice < 88 {
                var (offset, count) = makeRange(lo, hi, maxLength: 4 * cs, &rng)
                if rng.chance(0.4) {  // chunk-aligned, so whole chunks get freed
                    let a = (offset + cs - 1) / cs * cs
                    let b = min(hi, a + (1 + rng.next() % 3) * cs) / cs * cs
                    if a < b { (offset, count) = (a, b - a) }
                }
                let what = "t\(t)#\(i) discard \(count) at \(offset)"
                log.append(what)
                do {
                    try volume.discard(at: offset, length: count)
                    shadow.withLock { $0.discard(at: offset, length: count) }
                } catch {
                    caught(error, what, log)
                    shadow.withLock { $0.forget(at: offset, length: count) }
                }
                verify(offset, Int(count), floor: floor, what, log)
            } else if dice < 92 {
                log.append("t\(t)#\(i) flush")
                do { try volume.flush() } catch { caught(error, "t\(t)#\(i) flush", log) }
            } else {
                let what = "t\(t)#\(i) read region"
                log.append(what)
                verify(lo, Int(hi - lo), floor: floor, what, log)
            }
        }
    }

    /// A random range inside [lo, hi), 1...maxLength bytes.
    func makeRange(_ lo: UInt64, _ hi: UInt64, maxLength: UInt64, _ rng: inout SplitMix64) -> (UInt64, UInt64) {
        let offset = lo + rng.next() % (hi - lo)
        let length = 1 + rng.next() % min(maxLength, hi - offset)
        return (offset, length)
    }

    func makeWrite(_ lo: UInt64, _ hi: UInt64, _ rng: inout SplitMix64) -> (UInt64, [UInt8], String) {
        var offset: UInt64
        var length: UInt64
        var kind: String
        let shape = rng.next() % 100
        if shape < 25 {
            // Whole chunks, chunk-aligned.
            let first = (lo + cs - 1) / cs
            let last = hi / cs  // exclusive
            let c = first + rng.next() % (last - first)
            let n = min(1 + rng.next() % 3, last - c)
            (offset, length, kind) = (c * cs, n * cs, "chunk-aligned")
        } else if shape < 40 {
            // 4 KiB-aligned, like a filesystem on the image.
            let first = (lo + 4095) / 4096
            let last = hi / 4096
            let b = first + rng.next() % (last - first)
            let n = min(1 + rng.next() % (3 * cs / 4096), last - b)
            (offset, length, kind) = (b * 4096, n * 4096, "4K-aligned")
        } else {
            (offset, length) = makeRange(lo, hi, maxLength: 3 * cs, &rng)
            kind = "unaligned"
        }
        let content = rng.next() % 100
        var data: [UInt8]
        if content < 20 {
            data = .zeros(Int(length))
            kind += " zeros"
        } else if content < 25 {
            data = .zeros(Int(length))
            data[Int(rng.next() % length)] = 0x5A
            kind += " one-byte"
        } else {
            data = rng.bytes(Int(length))
        }
        return (offset, data, kind)
    }

    // MARK: Rounds

    /// Runs the rounds. `between` runs single-threaded after each round (faults paused by the caller).
    func run(between: (inout SplitMix64) -> Void) {
        var rng = SplitMix64(seed: seed)
        let deadline = ContinuousClock.now + p.budget
        for round in 0..<p.rounds {
            if failed || ContinuousClock.now > deadline { break }
            let rngs = Locked((0..<p.threads).map { _ in rng.split() })
            let ops = p.opsPerRound
            Threads.run(p.threads) { t in
                var r = rngs.withLock { $0[t] }
                self.runThread(t, rng: &r, ops: ops, deadline: deadline)
            }
            if failed { break }
            between(&rng)
            verifyAll("after round \(round)")
            // Resize: shrink into the regions or grow past them; the next round writes past the end again.
            if rng.chance(0.6) {
                // Any byte size (a file may end anywhere), a whole sector now and then.
                var newSize = p.volumeSpan / 4 + rng.next() % p.volumeSpan
                if rng.chance(0.25) { newSize = newSize / 512 * 512 }
                do {
                    try volume.resize(to: newSize)
                    shadow.withLock { $0.resize(to: newSize) }
                } catch {
                    problem("round \(round): resize to \(newSize) threw \(error)")
                }
                verifyAll("after resize to \(newSize) in round \(round)")
            }
            if rng.chance(0.5) {
                do { try volume.flush() } catch { problem("round \(round): flush threw \(error)") }
            }
            roundsDone.withLock { $0 = round + 1 }
        }
    }

    /// One line per run, so a run cut short by its time budget is visible.
    var summary: String {
        let kinds = thrownKinds.value.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        return
            "seed \(seed): \(roundsDone.value)/\(p.rounds) rounds, \(opsDone.value) ops, \(thrown.value) store errors"
            + (kinds.isEmpty ? "" : " (\(kinds))")
    }

    func report(sourceLocation: SourceLocation = #_sourceLocation) {
        for text in problems.value.prefix(5) { Issue.record(Comment(rawValue: text), sourceLocation: sourceLocation) }
    }
}

@Suite("Volume model", .serialized)
struct VolumeModelTests {
    @Test(arguments: [1, 2, 3, 4, 5] as [UInt64])
    func engineOverDirectoryStore(seed: UInt64) throws {
        let p = ModelParameters()
        let t = try TestData(chunkSize: UInt64(p.chunkSize))
        var image: [UInt8] = []
        var size: UInt64 = 0
        try t.withEngine { (engine: Engine) throws in
            // The volume starts at half the regions, so the upper threads grow it by writing past the end.
            let v = try engine.createVolumes(name: "model", size: p.volumeSpan / 2 / 512 * 512)[0]
            let run = ModelRun(volume: v, seed: seed, parameters: p, expectFaults: false)
            run.run { _ in }
            if !run.failed {
                do { try v.flush() } catch { run.problem("final flush threw \(error)") }
                run.verifyAll("at the end")
                let stored = try engine.storedChunks()
                #expect(
                    stored == v.mappedChunks,
                    "seed \(seed): chunks on the store = chunks in the map after flush (no leak)")
            }
            run.report()
            print("engine model", run.summary)
            #expect(run.thrown.value == 0, "seed \(seed)")
            image = try v.contents()
            size = v.size
        }
        // Restart: the flushed image comes back byte for byte.
        try t.withEngine { (engine: Engine) throws in
            let v = try #require(engine.volume(named: "model"), "seed \(seed)")
            #expect(v.size == size, "seed \(seed): size after restart")
            let again = try v.contents()
            expectBytes(again, image, "seed \(seed): image after restart")
            #expect(try engine.storedChunks() == v.mappedChunks, "seed \(seed)")
        }
    }

    /// `checksums`: a ChecksumLayer sits between the pool and the faulty store (as the engine stacks it
    /// over directory stores), so its two-step writes and its verified reads also meet the faults.
    @Test(arguments: [11, 12, 13] as [UInt64], [false, true])
    func volumeOverFaultyStore(seed: UInt64, checksums: Bool) throws {
        var p = ModelParameters()
        p.budget = .seconds(3)
        let memory = MemoryStore(
            chunkSize: checksums ? ChecksumLayer.innerChunkSize(for: p.chunkSize) : p.chunkSize)
        let faultRules: [FaultyStore.Rule] = [
            .init([.write], .probability(0.04), .io),
            .init([.write], .probability(0.01), .noSpace),
            .init([.zero], .probability(0.04), .io),
            .init([.read], .probability(0.01), .io),
            .init([.flush], .probability(0.1), .io),
            .init([.setLabel, .label], .probability(0.03), .io),
        ]
        let faulty = FaultyStore(wrapping: memory, seed: seed, rules: faultRules)
        let top: any ChunkStore = checksums ? ChecksumLayer(over: faulty) : faulty
        let wired = try HandWiredVolume(store: top, size: p.volumeSpan / 2)
        let run = ModelRun(volume: wired.volume, seed: seed, parameters: p, expectFaults: true)
        run.run { _ in faulty.rules = [] }  // resizes and full checks run without faults …
        faulty.rules = []
        if !run.failed {
            do { try wired.volume.flush() } catch { run.problem("final flush (no faults) threw \(error)") }
            run.verifyAll("at the end")
        }
        run.report()
        print("faulty model\(checksums ? " with checksums" : "")", run.summary)
        let injected = faulty.counters.totalFaults
        let thrown = run.thrown.value
        #expect(injected > 0, "seed \(seed): the run injected no fault at all; raise the probabilities")
        // Each volume call stops at its first store error, so every injected fault is exactly one throw:
        // more throws than faults would be invented errors, fewer would be a fault swallowed.
        #expect(thrown == injected, "seed \(seed): \(injected) faults injected, \(thrown) errors reached the caller")
        // After the final flush every chunk on the store is mapped, except those orphaned by a failed label
        // (written, then the label failed: see FailureTests.failedFirstWriteLeavesNoOrphan).
        // With checksums, a new chunk exists from its slot-table write, so a failed data write orphans it too.
        let orphans = memory.chunkCount - wired.volume.mappedChunks
        let f = faulty.counters.faults
        let allowed = (f[.setLabel] ?? 0) + (checksums ? f[.write] ?? 0 : 0)
        #expect(orphans >= 0 && orphans <= allowed, "seed \(seed): \(orphans) chunk(s) on the store are not mapped")

        // Power cut right after the final flush, then a restart from the catalog: nothing may change.
        memory.crash()
        let before = run.shadow.value
        try wired.reload(store: checksums ? ChecksumLayer(over: faulty) : faulty)
        let after = try wired.volume.read(at: 0, count: Int(before.size) + 1000)
        #expect(after.count == Int(before.size), "seed \(seed): size after crash")
        if let m = before.firstMismatch(after, at: 0) { Issue.record("seed \(seed): after crash and restart, \(m)") }
    }

    /// Single-threaded: random operations with flushes, then a power cut (MemoryStore.crash) and a restart
    /// from the catalog. The image must be exactly the one of the last successful flush: acknowledged-and-
    /// flushed data survives, and nothing written after the flush leaks in half-done.
    @Test(arguments: [21, 22, 23] as [UInt64], [false, true])
    func crashRestoresTheLastFlush(seed: UInt64, checksums: Bool) throws {
        var rng = SplitMix64(seed: seed)
        let cs = 16 * 1024
        let memory = MemoryStore(chunkSize: checksums ? ChecksumLayer.innerChunkSize(for: cs) : cs)
        let wired = try HandWiredVolume(store: checksums ? ChecksumLayer(over: memory) : memory, size: UInt64(8 * cs))
        var model = ShadowModel(size: UInt64(8 * cs))
        var flushed = model
        for cycle in 0..<4 {
            for i in 0..<150 {
                let v = wired.volume
                let dice = rng.next() % 100
                let offset = rng.next() % UInt64(10 * cs)
                let length = 1 + rng.next() % UInt64(2 * cs)
                if dice < 55 {
                    let data = rng.chance(0.2) ? [UInt8].zeros(Int(length)) : rng.bytes(Int(length))
                    try v.write(data, at: offset)
                    model.write(at: offset, data)
                } else if dice < 75 {
                    try v.discard(at: offset, length: length)
                    model.discard(at: offset, length: length)
                } else if dice < 85 {
                    let newSize = rng.next() % UInt64(10 * cs)  // any byte size
                    try v.resize(to: newSize)
                    model.resize(to: newSize)
                } else {
                    try v.flush()
                    flushed = model
                }
                let got = try v.read(at: offset, count: Int(length))
                if let m = model.firstMismatch(got, at: offset) {
                    Issue.record("seed \(seed) cycle \(cycle) op \(i): \(m)")
                    return
                }
            }
            memory.crash()
            try wired.reload(store: checksums ? ChecksumLayer(over: memory) : memory)
            model = flushed
            #expect(wired.volume.size == model.size, "seed \(seed) cycle \(cycle): size after crash")
            let image = try wired.volume.read(at: 0, count: Int(model.size) + 100)
            if let m = model.firstMismatch(image, at: 0) {
                Issue.record("seed \(seed) cycle \(cycle): after crash, \(m)")
                return
            }
        }
    }
}
