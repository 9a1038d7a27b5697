// FaultyStore — wraps any ChunkStore and makes it fail on purpose: seeded fault injection and delays,
// with counters, so tests can check that every injected failure reaches the caller.
//
// Address space: whatever the inner store speaks (physical chunks); IDs pass through unchanged.
//
// State: the rules (which operations fail, when, with which error), an optional delay, a SplitMix64
// seeded at init, and per-operation counters of calls and injected faults.
//
// Invariants:
// - A call is counted, then the rules are evaluated in order under the lock; the first rule that fires
//   decides the fault. Probability rules draw from the seeded generator once per call they cover, so
//   a single-threaded sequence of calls fails at the same places for the same seed.
// - An injected fault is thrown BEFORE the inner store is called: a failed call changes nothing below.
// - With no rules and no delay the store is a transparent pass-through; every data-path method is
//   written out (no default pass-through), as every layer does.
// - `faults` counts exactly the errors this store invented; errors of the inner store are not counted.
// Lock order: one Mutex, never held across the delay or the inner call.

import Synchronization
import TesseraCore

#if canImport(Glibc)
    import Glibc
#endif

public final class FaultyStore: ChunkStore {
    public enum Operation: String, CaseIterable, Hashable, Sendable {
        case read, write, replace, readAll, zero, markUnreadable, delete, flush, usage, allChunks, setLabel, label,
            check
    }

    /// The error an injected fault throws.
    public enum Fault: Sendable, Equatable {
        /// `StoreError.io(errno: EIO, chunk:)` naming the chunk of the call (`.none` for flush and friends).
        case io
        /// `StoreError.noSpace`.
        case noSpace
        /// `StoreError.readOnly`.
        case readOnly
        /// `StoreError.corrupt(chunk:offset: 0)`, as a checksum layer reports bad bytes.
        case corrupt

        func error(_ chunk: ChunkID) -> StoreError {
            switch self {
            case .io: return .io(errno: 5, chunk: chunk)
            case .noSpace: return .noSpace
            case .readOnly: return .readOnly
            case .corrupt: return .corrupt(chunk: chunk, offset: 0)
            }
        }
    }

    /// When a rule fires, counted per operation (`nthCall(3)` on `[.write]` fails the third write).
    public enum Trigger: Sendable, Equatable {
        /// Each covered call fails with this probability.
        case probability(Double)
        /// Only the Nth call (1-based) of each covered operation fails.
        case nthCall(Int)
        /// The Nth call of each covered operation and every one after it fail.
        case fromCall(Int)
        /// Every covered call fails.
        case always
    }

    public struct Rule: Sendable, Equatable {
        public var operations: Set<Operation>
        public var trigger: Trigger
        public var fault: Fault
        public init(_ operations: Set<Operation>, _ trigger: Trigger, _ fault: Fault = .io) {
            self.operations = operations
            self.trigger = trigger
            self.fault = fault
        }
    }

    public struct Counters: Sendable, Equatable {
        public var calls: [Operation: Int] = [:]
        public var faults: [Operation: Int] = [:]
        public var totalCalls: Int { calls.values.reduce(0, +) }
        public var totalFaults: Int { faults.values.reduce(0, +) }
    }

    public let inner: any ChunkStore
    public var chunkSize: Int { inner.chunkSize }

    private struct State {
        var rules: [Rule]
        var delay: Duration?
        var rng: SplitMix64
        var counters = Counters()
    }
    private let state: Mutex<State>

    /// - Parameters:
    ///   - seed: seeds the generator behind `.probability` rules.
    ///   - delay: slept before every call (outside the lock), to widen race windows or mimic a slow medium.
    public init(wrapping inner: any ChunkStore, seed: UInt64 = 0, rules: [Rule] = [], delay: Duration? = nil) {
        self.inner = inner
        state = Mutex(State(rules: rules, delay: delay, rng: SplitMix64(seed: seed)))
    }

    public var rules: [Rule] {
        get { state.withLock { $0.rules } }
        set { state.withLock { $0.rules = newValue } }
    }
    public var delay: Duration? {
        get { state.withLock { $0.delay } }
        set { state.withLock { $0.delay = newValue } }
    }
    public var counters: Counters { state.withLock { $0.counters } }
    public func resetCounters() { state.withLock { $0.counters = Counters() } }

    /// Counts the call and returns the fault to inject, if any; sleeps the delay first.
    private func enter(_ op: Operation, _ chunk: ChunkID) -> StoreError? {
        let (fault, delay) = state.withLock { s -> (StoreError?, Duration?) in
            s.counters.calls[op, default: 0] += 1
            let n = s.counters.calls[op]!
            var fired: Fault?
            for rule in s.rules where rule.operations.contains(op) {
                let fires: Bool
                switch rule.trigger {
                case .probability(let p): fires = s.rng.chance(p)
                case .nthCall(let k): fires = n == k
                case .fromCall(let k): fires = n >= k
                case .always: fires = true
                }
                if fires && fired == nil { fired = rule.fault }
            }
            if fired != nil { s.counters.faults[op, default: 0] += 1 }
            return (fired?.error(chunk), s.delay)
        }
        if let delay { sleep(delay) }
        return fault
    }

    private func sleep(_ d: Duration) {
        let (sec, atto) = d.components
        var want = timespec(tv_sec: Int(sec), tv_nsec: Int(atto / 1_000_000_000))
        var left = timespec()
        while nanosleep(&want, &left) != 0 && errno == EINTR { want = left }
    }

    public func read(_ chunk: ChunkID, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) {
        if let e = enter(.read, chunk) { throw e }
        try inner.read(chunk, offset: offset, into: buffer)
    }

    public func write(_ chunk: ChunkID, offset: Int, from buffer: UnsafeRawBufferPointer) throws(StoreError) {
        if let e = enter(.write, chunk) { throw e }
        try inner.write(chunk, offset: offset, from: buffer)
    }

    public func replace(_ chunk: ChunkID, with buffer: UnsafeRawBufferPointer) throws(StoreError) {
        if let e = enter(.replace, chunk) { throw e }
        try inner.replace(chunk, with: buffer)
    }

    public func readAll(_ chunk: ChunkID) throws(StoreError) -> [UInt8] {
        if let e = enter(.readAll, chunk) { throw e }
        return try inner.readAll(chunk)
    }

    public func prefersWholeChunks(_ chunk: ChunkID) -> Bool { inner.prefersWholeChunks(chunk) }

    public func zero(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        if let e = enter(.zero, chunk) { throw e }
        try inner.zero(chunk, offset: offset, length: length)
    }

    public func markUnreadable(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        if let e = enter(.markUnreadable, chunk) { throw e }
        try inner.markUnreadable(chunk, offset: offset, length: length)
    }

    public func delete(_ chunk: ChunkID) throws(StoreError) {
        if let e = enter(.delete, chunk) { throw e }
        try inner.delete(chunk)
    }

    public func flush() throws(StoreError) {
        if let e = enter(.flush, .none) { throw e }
        try inner.flush()
    }

    public func flush(chunks: Set<ChunkID>) throws(StoreError) {
        if let e = enter(.flush, .none) { throw e }
        try inner.flush(chunks: chunks)
    }

    public func usage() throws(StoreError) -> StoreUsage {
        if let e = enter(.usage, .none) { throw e }
        return try inner.usage()
    }

    public func allChunks() throws(StoreError) -> [ChunkID] {
        if let e = enter(.allChunks, .none) { throw e }
        return try inner.allChunks()
    }

    public func setLabel(_ chunk: ChunkID, _ label: ChunkLabel) throws(StoreError) {
        if let e = enter(.setLabel, chunk) { throw e }
        try inner.setLabel(chunk, label)
    }

    public func label(of chunk: ChunkID) throws(StoreError) -> ChunkLabel? {
        if let e = enter(.label, chunk) { throw e }
        return try inner.label(of: chunk)
    }

    public func check(_ chunk: ChunkID) throws(StoreError) -> ChunkCheck {
        if let e = enter(.check, chunk) { throw e }
        return try inner.check(chunk)
    }
}
