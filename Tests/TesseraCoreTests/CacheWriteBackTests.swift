// CacheLayer's write-back to whole-chunk stores, side by side: never more in flight than the bound, a
// block rewritten while its chunk is in flight written again, a flush that waits for what is in flight,
// and a failed write-back among many reported by the flush, nothing dropped.

import Foundation
import TesseraCore
import TesseraTestSupport
import Testing

@Suite("CacheLayer write-back")
struct CacheWriteBackTests {
    static let cs = CacheLayerTests.cs
    static let bs = CacheLayerTests.bs

    static func chunk(_ n: Int) -> ChunkID { CacheLayerTests.chunk(n) }

    /// Runs `body` on a thread of its own; `result` holds its outcome once it returned.
    final class Background: Sendable {
        let result = Locked<Result<Void, StoreError>?>(nil)
        init(_ body: @escaping @Sendable () throws(StoreError) -> Void) {
            let result = self.result
            Thread {
                do throws(StoreError) {
                    try body()
                    result.withLock { $0 = .success(()) }
                } catch {
                    result.withLock { $0 = .failure(error) }
                }
            }.start()
        }
        var finished: Bool { result.value != nil }
    }

    /// A flush of many dirty chunks, then writers past the dirty limit racing the flusher and flushes:
    /// puts overlap (with a bound above 1) and never exceed the bound; everything lands.
    @Test(arguments: [1, 3])
    func writeBacksRunSideBySideWithinTheBound(bound: Int) throws {
        let memory = MemoryStore(chunkSize: Self.cs, wholeChunks: true)
        let slow = SlowStore(wrapping: memory, putDelay: .milliseconds(40))
        let cache = CacheLayer(
            over: slow,
            .init(
                capacity: 64 * Self.cs, dirtyLimit: 64 * Self.cs, dirtyAge: .seconds(3600), readAhead: 0,
                writeBackConcurrency: bound))
        defer { cache.stop() }
        for n in 0..<12 { try CacheLayerTests.write(cache, Self.chunk(n), at: 0, pattern(Self.cs, seed: UInt64(n))) }
        #expect(slow.putsFinished == 0, "write-back, not write-through")
        try cache.flush()
        #expect(slow.maxPutsInFlight <= bound)
        #expect(bound == 1 || slow.maxPutsInFlight > 1, "puts overlapped: \(slow.maxPutsInFlight)")
        for n in 0..<12 {
            #expect(CacheLayerTests.contents(memory, Self.chunk(n)) == pattern(Self.cs, seed: UInt64(n)))
        }

        let busy = CacheLayer(
            over: slow,
            .init(
                capacity: 16 * Self.cs, dirtyLimit: 4 * Self.cs, dirtyAge: .milliseconds(1), readAhead: 0,
                writeBackConcurrency: bound))
        defer { busy.stop() }
        slow.putDelay = .milliseconds(5)
        slow.resetMaximum()
        let errors = Locked<[String]>([])
        Threads.run(4) { t in
            do {
                for round in 0..<3 {
                    for i in 0..<6 {
                        let c = Self.chunk(100 + t * 6 + i)
                        try CacheLayerTests.write(
                            busy, c, at: 0, pattern(Self.cs, seed: UInt64(1000 * round + 100 + t * 6 + i)))
                    }
                    if t == 0 { try busy.flush() }
                }
            } catch {
                errors.withLock { $0.append("thread \(t): \(error)") }
            }
        }
        try busy.flush()
        #expect(errors.value == [])
        #expect(slow.maxPutsInFlight <= bound, "\(slow.maxPutsInFlight) puts at once")
        for n in 100..<124 {
            #expect(CacheLayerTests.contents(memory, Self.chunk(n)) == pattern(Self.cs, seed: UInt64(2000 + n)))
        }
    }

    /// A cache over a whole-chunk MemoryStore behind a SlowStore whose gate is shut, and chunk 0 written
    /// whole (`first`) in RAM only.
    static func oneDirtyChunkBehindAShutGate(dirtyAge: Duration) throws -> (MemoryStore, SlowStore, CacheLayer, [UInt8])
    {
        let memory = MemoryStore(chunkSize: cs, wholeChunks: true)
        let slow = SlowStore(wrapping: memory)
        let cache = CacheLayer(over: slow, .init(capacity: 16 * cs, dirtyAge: dirtyAge, readAhead: 0))
        slow.gateShut = true
        let first = pattern(cs, seed: 1)
        try CacheLayerTests.write(cache, chunk(0), at: 0, first)
        return (memory, slow, cache, first)
    }

    /// The flusher's write-back of a chunk is held in flight while a writer changes part of it: the newer
    /// blocks stay dirty and go down in a later write-back, without any flush.
    @Test func aRewriteDuringAnInFlightWriteBackIsWrittenAgain() throws {
        let (memory, slow, cache, first) = try Self.oneDirtyChunkBehindAShutGate(dirtyAge: .milliseconds(20))
        defer { cache.stop() }
        let c = Self.chunk(0)
        #expect(CacheLayerTests.eventually { slow.putsInFlight == 1 }, "the flusher's put is in flight")
        let newer = pattern(3 * Self.bs, seed: 2)
        try CacheLayerTests.write(cache, c, at: 5 * Self.bs, newer)
        slow.gateShut = false
        var latest = first
        latest.replaceSubrange(5 * Self.bs..<8 * Self.bs, with: newer)
        #expect(CacheLayerTests.eventually { cache.stats.dirtyBytes == 0 }, "written again")
        #expect(CacheLayerTests.contents(memory, c) == latest)
        #expect(slow.putsFinished == 2)
        #expect(try CacheLayerTests.read(cache, c, at: 0, count: Self.cs) == latest)
    }

    /// A flush that finds its chunk's write-back in flight waits for it, then writes what changed since.
    @Test func aFlushWaitsForTheWriteBackInFlightAndWritesTheRewrite() throws {
        let (memory, slow, cache, first) = try Self.oneDirtyChunkBehindAShutGate(dirtyAge: .seconds(3600))
        defer { cache.stop() }
        let c = Self.chunk(0)
        let early = Background { () throws(StoreError) in try cache.flush(chunks: [c]) }
        #expect(CacheLayerTests.eventually { slow.putsInFlight == 1 }, "the first flush's put is in flight")
        let newer = pattern(100, seed: 4)
        try CacheLayerTests.write(cache, c, at: 9000, newer)
        let late = Background { () throws(StoreError) in try cache.flush(chunks: [c]) }
        usleep(100_000)
        #expect(!early.finished && !late.finished, "both wait for the put in flight")
        #expect(slow.putsInFlight == 1, "the second write-back waits for the first")
        slow.gateShut = false
        #expect(CacheLayerTests.eventually { early.finished && late.finished })
        #expect(early.result.value.map { (try? $0.get()) != nil } == true)
        #expect(late.result.value.map { (try? $0.get()) != nil } == true)
        var latest = first
        latest.replaceSubrange(9000..<9100, with: newer)
        #expect(cache.stats.dirtyBytes == 0)
        memory.crash()
        #expect(CacheLayerTests.contents(memory, c) == latest, "the late flush made the rewrite durable")
    }

    /// One put of many fails: the flush reports it, the other chunks land, the failed chunk stays dirty
    /// and readable, and the next flush writes it.
    @Test func aFailedWriteBackAmongManyFailsTheFlush() throws {
        let memory = MemoryStore(chunkSize: Self.cs, wholeChunks: true)
        let slow = SlowStore(wrapping: memory, putDelay: .milliseconds(20))
        let faulty = FaultyStore(wrapping: slow, rules: [.init([.replace], .nthCall(3), .io)])
        let cache = CacheLayer(
            over: faulty,
            .init(capacity: 32 * Self.cs, dirtyLimit: 32 * Self.cs, dirtyAge: .seconds(3600), readAhead: 0))
        defer { cache.stop() }
        let chunks = (0..<8).map(Self.chunk)
        for (n, c) in chunks.enumerated() {
            try CacheLayerTests.write(cache, c, at: 0, pattern(Self.cs, seed: UInt64(n)))
        }
        var failed: ChunkID?
        do throws(StoreError) {
            try cache.flush()
            Issue.record("the flush succeeded")
        } catch {
            if case .io(5, let chunk) = error { failed = chunk } else { Issue.record("\(error)") }
        }
        let bad = try #require(failed)
        #expect(chunks.contains(bad))
        #expect(slow.maxPutsInFlight > 1)
        #expect(cache.stats.writeBackErrors == 1)
        #expect(cache.stats.dirtyBytes == Self.cs, "only the failed chunk is still dirty")
        for (n, c) in chunks.enumerated() {
            #expect(try CacheLayerTests.read(cache, c, at: 0, count: Self.cs) == pattern(Self.cs, seed: UInt64(n)))
            #expect((memory.contents(of: c) != nil) == (c != bad))
        }
        try cache.flush()
        memory.crash()
        for (n, c) in chunks.enumerated() {
            #expect(CacheLayerTests.contents(memory, c) == pattern(Self.cs, seed: UInt64(n)), "\(c) durable")
        }
    }
}
