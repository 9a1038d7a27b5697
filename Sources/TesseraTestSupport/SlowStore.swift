// SlowStore — wraps any ChunkStore and makes it slow where a test needs it:
// - puts (write, replace), as an object store's PUTs are: each waits `putDelay`, and waits while the gate
//   is shut, before reaching the inner store. It counts the puts in flight and the most that were ever in
//   flight at once, so a test can see whether a caller sends puts side by side, and how many;
// - reads (read, readAll) on demand: the next `stalledReads` reads hold their bytes for `readStall` after
//   reading them, as a slow medium returns data that may be stale by the time it arrives.
//
// Address space: whatever the inner store speaks; IDs pass through unchanged.
// State (one Mutex): the delay, the gate, puts in flight, their maximum, puts finished; reads to stall.
// Invariants: a put counts as in flight from its entry until the inner call returned (failed or not);
// every other method forwards at once. Every data-path method is written out (no default pass-through).
// Lock order: one Mutex, never held across a wait or the inner call.

import Foundation
import Synchronization
import TesseraCore

public final class SlowStore: ChunkStore {
    public let inner: any ChunkStore
    public var chunkSize: Int { inner.chunkSize }

    private struct State {
        var putDelay: Duration
        var gateShut = false
        var inFlight = 0
        var maxInFlight = 0
        var finished = 0
        var stalledReads = 0
        var readStall = Duration.zero
        var readStalled = false
    }
    private let state: Mutex<State>

    public init(wrapping inner: any ChunkStore, putDelay: Duration = .zero) {
        self.inner = inner
        state = Mutex(State(putDelay: putDelay))
    }

    /// Slept by every put before it reaches the inner store.
    public var putDelay: Duration {
        get { state.withLock { $0.putDelay } }
        set { state.withLock { $0.putDelay = newValue } }
    }
    /// While true, puts wait (in flight) before reaching the inner store.
    public var gateShut: Bool {
        get { state.withLock { $0.gateShut } }
        set { state.withLock { $0.gateShut = newValue } }
    }
    public var putsInFlight: Int { state.withLock { $0.inFlight } }
    /// The most puts that were in flight at once since start (or `resetMaximum`).
    public var maxPutsInFlight: Int { state.withLock { $0.maxInFlight } }
    /// Puts that returned since start.
    public var putsFinished: Int { state.withLock { $0.finished } }
    public func resetMaximum() { state.withLock { $0.maxInFlight = $0.inFlight } }

    /// Makes the next `count` reads hold their bytes for `duration` after reading them.
    public func stallReads(_ count: Int, for duration: Duration) {
        state.withLock { s in
            s.stalledReads = count
            s.readStall = duration
        }
    }
    /// True once a stalled read has its bytes and is holding them.
    public var readStalled: Bool { state.withLock { $0.readStalled } }

    private func afterRead() {
        let stall = state.withLock { s -> Duration in
            guard s.stalledReads > 0 else { return .zero }
            s.stalledReads -= 1
            s.readStalled = true
            return s.readStall
        }
        Self.sleep(stall)
    }

    private static func sleep(_ d: Duration) {
        let (seconds, attoseconds) = d.components
        if d > .zero { Thread.sleep(forTimeInterval: Double(seconds) + Double(attoseconds) * 1e-18) }
    }

    private func put(_ body: () throws(StoreError) -> Void) throws(StoreError) {
        let delay = state.withLock { s in
            s.inFlight += 1
            s.maxInFlight = max(s.maxInFlight, s.inFlight)
            return s.putDelay
        }
        defer {
            state.withLock { s in
                s.inFlight -= 1
                s.finished += 1
            }
        }
        Self.sleep(delay)
        while gateShut { usleep(1000) }
        try body()
    }

    public func write(_ chunk: ChunkID, offset: Int, from buffer: UnsafeRawBufferPointer) throws(StoreError) {
        try put { () throws(StoreError) in try inner.write(chunk, offset: offset, from: buffer) }
    }

    public func replace(_ chunk: ChunkID, with buffer: UnsafeRawBufferPointer) throws(StoreError) {
        try put { () throws(StoreError) in try inner.replace(chunk, with: buffer) }
    }

    public func read(_ chunk: ChunkID, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) {
        try inner.read(chunk, offset: offset, into: buffer)
        afterRead()
    }
    public func readAll(_ chunk: ChunkID) throws(StoreError) -> [UInt8] {
        let bytes = try inner.readAll(chunk)
        afterRead()
        return bytes
    }
    public func prefersWholeChunks(_ chunk: ChunkID) -> Bool { inner.prefersWholeChunks(chunk) }
    public func zero(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        try inner.zero(chunk, offset: offset, length: length)
    }
    public func markUnreadable(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        try inner.markUnreadable(chunk, offset: offset, length: length)
    }
    public func delete(_ chunk: ChunkID) throws(StoreError) { try inner.delete(chunk) }
    public func flush() throws(StoreError) { try inner.flush() }
    public func flush(chunks: Set<ChunkID>) throws(StoreError) { try inner.flush(chunks: chunks) }
    public func usage() throws(StoreError) -> StoreUsage { try inner.usage() }
    public func allChunks() throws(StoreError) -> [ChunkID] { try inner.allChunks() }
    public func setLabel(_ chunk: ChunkID, _ label: ChunkLabel) throws(StoreError) { try inner.setLabel(chunk, label) }
    public func label(of chunk: ChunkID) throws(StoreError) -> ChunkLabel? { try inner.label(of: chunk) }
    public func check(_ chunk: ChunkID) throws(StoreError) -> ChunkCheck { try inner.check(chunk) }
}
