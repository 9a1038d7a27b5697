// CacheLayer beyond the conformance suite: durability across a crash, scan resistance, the dirty limit
// and age, reads that never wait behind write-back, write-back errors, read-ahead.

import Foundation
import TesseraCore
import TesseraTestSupport
import Testing

@Suite("CacheLayer")
struct CacheLayerTests {
    static let cs = 64 * 1024
    static let bs = CacheLayer.blockSize

    static func chunk(_ n: Int) -> ChunkID { ChunkID(unit: UnitID(1), serial: UInt64(n) + 1) }

    static func write(_ store: any ChunkStore, _ c: ChunkID, at offset: Int, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try store.write(c, offset: offset, from: $0) }
    }

    static func read(_ store: any ChunkStore, _ c: ChunkID, at offset: Int, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0xEE, count: count)
        try out.withUnsafeMutableBytes { try store.read(c, offset: offset, into: $0) }
        return out
    }

    /// What a chunk of the MemoryStore holds now, zero-padded to the chunk size (absent: zeros).
    static func contents(_ memory: MemoryStore, _ c: ChunkID) -> [UInt8] {
        let bytes = memory.contents(of: c) ?? []
        return bytes + [UInt8](repeating: 0, count: cs - bytes.count)
    }

    /// Polls `condition` every 5 ms for at most `seconds`.
    static func eventually(_ seconds: Double = 5, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(5000)
        }
        return condition()
    }

    // MARK: Durability

    /// Threads write, zero, read and flush their own chunks through a small cache (evictions, throttled
    /// and age-based write-back all happen) over a MemoryStore that then loses power: every byte a flush
    /// covered reads back exactly; bytes written after a thread's last flush may hold either version.
    @Test(arguments: [false, true], [1, 2, 3] as [UInt64])
    func flushedDataSurvivesACrash(wholeChunks: Bool, seed: UInt64) throws {
        let memory = MemoryStore(chunkSize: Self.cs, wholeChunks: wholeChunks)
        let cache = CacheLayer(
            over: memory, .init(capacity: 6 * Self.cs, dirtyAge: .milliseconds(20), readAhead: 16 * 1024))
        defer { cache.stop() }
        let threads = 4
        let perThread = 4
        let size = UInt64(perThread * Self.cs)
        print("CacheLayer crash model: seed \(seed), wholeChunks \(wholeChunks)")
        let results = Locked<[Int: (live: ShadowModel, durable: ShadowModel)]>([:])
        let errors = Locked<[String]>([])
        Threads.run(threads) { t in
            var rng = SplitMix64(seed: seed &* 7919 &+ UInt64(t))
            var live = ShadowModel(size: size)
            var durable = live
            let chunks = (0..<perThread).map { Self.chunk(t * perThread + $0) }
            do {
                for step in 0..<250 {
                    let i = Int(rng.next() % UInt64(perThread))
                    let c = chunks[i]
                    let base = UInt64(i * Self.cs)
                    let dice = rng.next() % 100
                    if dice < 55 {
                        let length = Int(rng.next() % UInt64(3 * Self.bs)) + 1
                        let offset = Int(rng.next() % UInt64(Self.cs - length + 1))
                        let data = rng.bytes(length)
                        try Self.write(cache, c, at: offset, data)
                        live.write(at: base + UInt64(offset), data)
                        durable.forget(at: base + UInt64(offset), length: UInt64(length))
                    } else if dice < 65 {
                        let length = Int(rng.next() % UInt64(Self.cs / 2)) + 1
                        let offset = Int(rng.next() % UInt64(Self.cs - length + 1))
                        try cache.zero(c, offset: offset, length: length)
                        live.discard(at: base + UInt64(offset), length: UInt64(length))
                        durable.forget(at: base + UInt64(offset), length: UInt64(length))
                    } else if dice < 85 {
                        // Sequential or random reads: both must match the live model.
                        let sequential = dice < 75
                        let length = sequential ? Self.bs : Int(rng.next() % UInt64(2 * Self.bs)) + 1
                        for k in 0..<(sequential ? 4 : 1) {
                            let offset = sequential ? k * Self.bs : Int(rng.next() % UInt64(Self.cs - length + 1))
                            var got: [UInt8]
                            do {
                                got = try Self.read(cache, c, at: offset, count: length)
                            } catch StoreError.missing {
                                got = [UInt8](repeating: 0, count: length)  // never written: zeros in the model
                            }
                            if let m = live.firstMismatch(got, at: base + UInt64(offset)) {
                                errors.withLock { $0.append("thread \(t) step \(step) read \(c)+\(offset): \(m)") }
                            }
                        }
                    } else if dice < 95 {
                        try cache.flush(chunks: Set(chunks))
                        durable = live
                    } else {
                        try cache.flush()
                        durable = live
                    }
                }
            } catch {
                errors.withLock { $0.append("thread \(t): \(error)") }
            }
            results.withLock { $0[t] = (live, durable) }
        }
        #expect(errors.value == [])
        // Before the crash the cache shows the live state exactly.
        for (t, models) in results.value {
            for i in 0..<perThread {
                let c = Self.chunk(t * perThread + i)
                let got = (try? Self.read(cache, c, at: 0, count: Self.cs)) ?? [UInt8](repeating: 0, count: Self.cs)
                let m = models.live.firstMismatch(got, at: UInt64(i * Self.cs))
                #expect(m == nil, "live, thread \(t) chunk \(i): \(m.map { "\($0)" } ?? "")")
            }
        }
        cache.stop()
        memory.crash()
        for (t, models) in results.value {
            for i in 0..<perThread {
                let got = Self.contents(memory, Self.chunk(t * perThread + i))
                let m = models.durable.firstMismatch(got, at: UInt64(i * Self.cs))
                #expect(m == nil, "after crash, seed \(seed), thread \(t) chunk \(i): \(m.map { "\($0)" } ?? "")")
            }
        }
    }

    /// Threads share chunks, each owning every Nth block, with partial-block writes (old bytes read
    /// from below), whole-chunk reads (fills of other threads' blocks), evictions and background
    /// write-back racing: a fill or a write-back must never bring back an older version of a block.
    @Test(arguments: [false, true])
    func sharedChunksNeverGoBackInTime(wholeChunks: Bool) throws {
        let memory = MemoryStore(chunkSize: Self.cs, wholeChunks: wholeChunks)
        let cache = CacheLayer(over: memory, .init(capacity: 3 * Self.cs, dirtyAge: .milliseconds(5), readAhead: 8192))
        defer { cache.stop() }
        let threads = 4
        let chunks = (0..<4).map(Self.chunk)
        let blocks = Self.cs / Self.bs
        let errors = Locked<[String]>([])
        let finals = Locked<[Int: [ChunkID: [Int: [UInt8]]]]>([:])
        Threads.run(threads) { t in
            var rng = SplitMix64(seed: 99 &+ UInt64(t))
            var mine: [ChunkID: [Int: [UInt8]]] = [:]  // block → its 4 KiB as last written
            do {
                for step in 0..<200 {
                    let c = chunks[Int(rng.next() % UInt64(chunks.count))]
                    let b = Int(rng.next() % UInt64(blocks / threads)) * threads + t
                    var block = mine[c]?[b] ?? [UInt8](repeating: 0, count: Self.bs)
                    if rng.next() % 4 == 0 {
                        // Read the whole chunk: fills blocks of other threads too.
                        _ = try? Self.read(cache, c, at: 0, count: Self.cs)
                    }
                    let lo = Int(rng.next() % UInt64(Self.bs))
                    let hi = min(Self.bs, lo + Int(rng.next() % 600) + 1)
                    let piece = rng.bytes(hi - lo)
                    try Self.write(cache, c, at: b * Self.bs + lo, piece)
                    block.replaceSubrange(lo..<hi, with: piece)
                    mine[c, default: [:]][b] = block
                    let back = try Self.read(cache, c, at: b * Self.bs, count: Self.bs)
                    if back != block {
                        errors.withLock { $0.append("thread \(t) step \(step): \(c) block \(b) went back") }
                    }
                    if step % 50 == 49 { try cache.flush() }
                }
            } catch {
                errors.withLock { $0.append("thread \(t): \(error)") }
            }
            finals.withLock { $0[t] = mine }
        }
        #expect(errors.value == [])
        try cache.flush()
        for (_, mine) in finals.value {
            for (c, owned) in mine {
                let below = Self.contents(memory, c)
                for (b, block) in owned {
                    #expect(Array(below[b * Self.bs..<(b + 1) * Self.bs]) == block, "\(c) block \(b) after flush")
                }
            }
        }
    }

    /// A miss whose inner read is slow must not cache what it read once a newer write has been written
    /// back and evicted meanwhile: the write-back waits for the fill (the chunk's stripe).
    @Test(arguments: [false, true])
    func aSlowFillNeverBringsBackOlderData(wholeChunks: Bool) throws {
        let memory = MemoryStore(chunkSize: Self.cs, wholeChunks: wholeChunks)
        let slow = SlowStore(wrapping: memory)
        // Bigger than a chunk: the stale fill's own blocks must not push out block 0 again.
        let cache = CacheLayer(over: slow, .init(capacity: 24 * Self.bs, readAhead: 0))
        defer { cache.stop() }
        let x = Self.chunk(0)
        let others = [Self.chunk(1), Self.chunk(2)]
        try Self.write(memory, x, at: 0, pattern(Self.cs, seed: 1))
        for c in others { try Self.write(memory, c, at: 0, pattern(Self.cs, seed: c.rawValue)) }
        slow.stallReads(1, for: .milliseconds(400))
        let reader = Thread { _ = try? Self.read(cache, x, at: 0, count: Self.bs) }
        reader.start()
        #expect(Self.eventually { slow.readStalled }, "the slow fill has read the old bytes")
        let newer = pattern(Self.bs, seed: 3)
        try Self.write(cache, x, at: 0, newer)
        try cache.flush(chunks: [x])
        let evictions = cache.stats.evictions
        for c in others {
            for b in 0..<Self.cs / Self.bs { _ = try Self.read(cache, c, at: b * Self.bs, count: Self.bs) }
        }
        #expect(cache.stats.evictions > evictions, "block 0 of x left RAM")
        #expect(Self.eventually { !reader.isExecuting && reader.isFinished })
        let fresh = try Self.read(cache, x, at: 0, count: Self.bs) == newer
        #expect(fresh, "block 0 of x went back to its old bytes")
    }

    // MARK: Eviction

    /// A hot set read a few times survives a scan of ten times the capacity read once.
    @Test func aScanDoesNotEvictTheHotSet() throws {
        let memory = MemoryStore(chunkSize: Self.cs)
        let capacityChunks = 4
        let cache = CacheLayer(over: memory, .init(capacity: capacityChunks * Self.cs, readAhead: 0))
        defer { cache.stop() }
        let hot = Self.chunk(0)
        let scan = (1...10 * capacityChunks).map(Self.chunk)
        for c in [hot] + scan { try Self.write(memory, c, at: 0, pattern(Self.cs, seed: c.rawValue)) }
        for _ in 0..<3 {
            for b in 0..<Self.cs / Self.bs { _ = try Self.read(cache, hot, at: b * Self.bs, count: Self.bs) }
        }
        for c in scan {
            #expect(try Self.read(cache, c, at: 0, count: Self.cs) == pattern(Self.cs, seed: c.rawValue))
        }
        #expect(cache.stats.evictions >= UInt64(9 * capacityChunks * Self.cs / Self.bs), "the scan went through")
        let before = cache.stats
        #expect(try Self.read(cache, hot, at: 0, count: Self.cs) == pattern(Self.cs, seed: hot.rawValue))
        let after = cache.stats
        #expect(after.hits - before.hits == UInt64(Self.cs / Self.bs), "every hot block still in RAM")
        #expect(after.misses == before.misses)
    }

    // MARK: Dirty data

    @Test func dirtyBytesStayUnderTheLimit() throws {
        let memory = MemoryStore(chunkSize: Self.cs)
        let limit = 8 * Self.bs
        let cache = CacheLayer(
            over: memory, .init(capacity: 32 * Self.bs, dirtyLimit: limit, dirtyAge: .seconds(3600), readAhead: 0))
        defer { cache.stop() }
        var rng = SplitMix64(seed: 5)
        var expected = (0..<6).map { _ in [UInt8](repeating: 0, count: Self.cs) }
        for _ in 0..<300 {
            let i = Int(rng.next() % 6)
            let length = Int(rng.next() % UInt64(2 * Self.bs)) + 1
            let offset = Int(rng.next() % UInt64(Self.cs - length + 1))
            let data = rng.bytes(length)
            try Self.write(cache, Self.chunk(i), at: offset, data)
            expected[i].replaceSubrange(offset..<offset + length, with: data)
            let dirty = cache.stats.dirtyBytes
            #expect(dirty <= limit, "\(dirty) dirty bytes")
        }
        #expect(cache.stats.writeBacks > 0)
        try cache.flush()
        #expect(cache.stats.dirtyBytes == 0)
        for i in 0..<6 where memory.contents(of: Self.chunk(i)) != nil {
            #expect(Self.contents(memory, Self.chunk(i)) == expected[i])
        }
    }

    @Test func oldDirtyDataIsWrittenBackWithoutAFlush() throws {
        let memory = MemoryStore(chunkSize: Self.cs)
        let cache = CacheLayer(over: memory, .init(capacity: 16 * Self.cs, dirtyAge: .milliseconds(30)))
        defer { cache.stop() }
        let c = Self.chunk(0)
        let data = pattern(10_000, seed: 3)
        try Self.write(cache, c, at: 500, data)
        #expect(cache.stats.dirtyBytes > 0)
        #expect(memory.contents(of: c) == nil, "write-back, not write-through")
        let flushes = memory.flushCount
        #expect(Self.eventually { cache.stats.dirtyBytes == 0 }, "written back within 5 s")
        #expect(Array(Self.contents(memory, c)[500..<10_500]) == data)
        #expect(memory.flushCount == flushes, "the flusher writes back; only flush() makes durable")
    }

    // MARK: Reads never wait for write-back

    @Test func cachedReadsDoNotWaitBehindAWriteBack() throws {
        let memory = MemoryStore(chunkSize: Self.cs)
        let faulty = FaultyStore(wrapping: memory)
        let cache = CacheLayer(over: faulty, .init(capacity: 16 * Self.cs, dirtyAge: .seconds(3600), readAhead: 0))
        defer { cache.stop() }
        let (a, b) = (Self.chunk(0), Self.chunk(1))
        try Self.write(cache, a, at: 0, pattern(Self.cs, seed: 1))
        try Self.write(cache, b, at: 0, pattern(Self.cs, seed: 2))
        try cache.flush()
        let newer = pattern(Self.cs, seed: 3)
        try Self.write(cache, a, at: 0, newer)
        faulty.resetCounters()
        faulty.delay = .milliseconds(500)
        let writingBack = Locked<Result<Void, StoreError>?>(nil)
        let thread = Thread {
            do throws(StoreError) {
                try cache.flush(chunks: [a])
                writingBack.withLock { $0 = .success(()) }
            } catch {
                writingBack.withLock { $0 = .failure(error) }
            }
        }
        thread.start()
        #expect(Self.eventually { faulty.counters.calls[.write, default: 0] > 0 }, "write-back of A started")
        let before = cache.stats
        let clock = ContinuousClock()
        var readA: [UInt8] = []
        var readB: [UInt8] = []
        let elapsedA = try clock.measure { readA = try Self.read(cache, a, at: 0, count: Self.cs) }
        let elapsedB = try clock.measure { readB = try Self.read(cache, b, at: 4096, count: 8192) }
        let elapsedW = try clock.measure { try Self.write(cache, a, at: 8192, [7]) }
        #expect(elapsedA < .milliseconds(100), "cached read of the chunk under write-back took \(elapsedA)")
        #expect(elapsedB < .milliseconds(100), "cached read of another chunk took \(elapsedB)")
        #expect(elapsedW < .milliseconds(100), "a write to the chunk under write-back took \(elapsedW)")
        #expect(writingBack.value == nil, "the write-back was still in flight")
        #expect(readA == newer)
        #expect(readB == Array(pattern(Self.cs, seed: 2)[4096..<12_288]))
        #expect(cache.stats.misses == before.misses, "all from RAM")
        #expect(Self.eventually(10) { writingBack.value != nil })
        if case .failure(let e) = writingBack.value { Issue.record("flush failed: \(e)") }
        faulty.delay = nil
        let landed = Self.contents(memory, a)
        let diff = (0..<Self.cs).first { landed[$0] != newer[$0] }
        #expect(
            diff == nil,
            "the flush wrote what was dirty when it started; first difference at \(diff ?? -1): \(diff.map { landed[$0] } ?? 0)"
        )
        try cache.flush()
        var latest = newer
        latest[8192] = 7
        let landedLater = Self.contents(memory, a) == latest
        #expect(landedLater, "after the second flush")
    }

    // MARK: Write-back errors

    @Test(arguments: [false, true], [FaultyStore.Fault.io, .noSpace])
    func aFailedWriteBackKeepsTheDataAndFailsTheFlush(wholeChunks: Bool, fault: FaultyStore.Fault) throws {
        let memory = MemoryStore(chunkSize: Self.cs, wholeChunks: wholeChunks)
        let faulty = FaultyStore(wrapping: memory)
        let cache = CacheLayer(over: faulty, .init(capacity: 16 * Self.cs, dirtyAge: .milliseconds(10)))
        defer { cache.stop() }
        let c = Self.chunk(0)
        faulty.rules = [.init([.write, .replace], .always, fault)]
        let data = pattern(20_000, seed: 4)
        try Self.write(cache, c, at: 3000, data)
        // The flusher tries (and fails) in the background meanwhile: nothing may be dropped.
        #expect(Self.eventually { cache.stats.writeBackErrors > 0 })
        let expected: StoreError = fault == .io ? .io(errno: 5, chunk: c) : .noSpace
        #expect(throws: expected) { try cache.flush() }
        #expect(throws: expected) { try cache.flush(chunks: [c]) }
        #expect(try Self.read(cache, c, at: 3000, count: data.count) == data, "still readable from RAM")
        #expect(cache.stats.dirtyBytes > 0)
        #expect(memory.contents(of: c) == nil)
        faulty.rules = []
        try cache.flush(chunks: [c])
        #expect(cache.stats.dirtyBytes == 0)
        memory.crash()
        #expect(Array(Self.contents(memory, c)[3000..<23_000]) == data, "durable once the fault cleared")
    }

    // MARK: Read-ahead

    @Test func sequentialReadsArePrefetched() throws {
        let memory = MemoryStore(chunkSize: Self.cs)
        let cache = CacheLayer(over: memory, .init(capacity: 16 * Self.cs, readAhead: 32 * 1024))
        defer { cache.stop() }
        let c = Self.chunk(0)
        let data = pattern(Self.cs, seed: 8)
        try Self.write(memory, c, at: 0, data)
        // Backwards: not sequential, nothing prefetched.
        let r = Self.chunk(1)
        try Self.write(memory, r, at: 0, data)
        for b in (0..<Self.cs / Self.bs).reversed() { _ = try Self.read(cache, r, at: b * Self.bs, count: Self.bs) }
        #expect(cache.stats.readAheadBlocks == 0)
        // Forwards: the second read starts where the first ended.
        var got: [UInt8] = []
        for b in 0..<2 { got += try Self.read(cache, c, at: b * Self.bs, count: Self.bs) }
        #expect(Self.eventually { cache.stats.readAheadBlocks >= 8 }, "the next 32 KiB came in")
        for b in 2..<Self.cs / Self.bs {
            got += try Self.read(cache, c, at: b * Self.bs, count: Self.bs)
            _ = Self.eventually(1) { cache.stats.readAheadBlocks >= UInt64(min(b + 8, 16) - 2) }
        }
        #expect(got == data)
        let stats = cache.stats
        #expect(stats.readAheadHits >= 8, "\(stats)")
        #expect(stats.readAheadHits <= stats.readAheadBlocks)
    }

    // MARK: Labels

    /// A new chunk's label waits in the cache with its data and goes down right after its first
    /// write-back: no write-through per new chunk, and the label is never below without its data.
    @Test(arguments: [false, true])
    func aNewChunksLabelWaitsForItsWriteBack(whole: Bool) throws {
        let memory = MemoryStore(chunkSize: Self.cs, wholeChunks: whole)
        let cache = CacheLayer(over: memory, .init(capacity: 16 * Self.cs, dirtyAge: .seconds(3600), readAhead: 0))
        defer { cache.stop() }
        let c = Self.chunk(0)
        let label = ChunkLabel(volume: VolumeID(7), index: 3, epoch: 1)
        try Self.write(cache, c, at: 4096, [9, 9, 9])
        try cache.setLabel(c, label)
        #expect(memory.contents(of: c) == nil, "still only in the cache")
        #expect(try cache.label(of: c) == label)
        try cache.flush(chunks: [c])
        #expect(memory.contents(of: c) != nil)
        #expect(try memory.label(of: c) == label, "label set below with the data")
        memory.crash()
        #expect(try memory.label(of: c) == label, "and durable after the flush")
        // A chunk that already exists below takes its label at once.
        let d = Self.chunk(1)
        try Self.write(cache, d, at: 0, [1])
        try cache.flush()
        try cache.setLabel(d, label)
        #expect(try memory.label(of: d) == label)
        // A deleted chunk forgets its waiting label.
        let e = Self.chunk(2)
        try Self.write(cache, e, at: 0, [2])
        try cache.setLabel(e, label)
        try cache.delete(e)
        try cache.flush()
        #expect(memory.contents(of: e) == nil)
    }
}
