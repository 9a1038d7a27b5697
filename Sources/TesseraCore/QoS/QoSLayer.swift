// QoSLayer — caps a volume's I/O: the top of every live volume's stack (Stacks.swift).
//
// Address space: volume bytes (above the thin map and any other volume layer). Reads, writes and
// copies into the volume are throttled; discard, extend, resize, flush and seek pass straight through
// (they move no data), and snapshot views are not throttled (a backup reading a snapshot image is
// not the guest's I/O).
// State: the throttle groups that apply to the volume (its own setting, its pool's, the one for every
// volume; swapped whole by the control plane) and, for volumes with a cap, a meter of the current
// rate and of the time spent throttled.
// Invariants: with no group (no cap set) a request costs one relaxed atomic load: no lock, no clock,
// no allocation. A capped request is accounted in each group and waits for the slowest.
// Waiting: `read`/`write`/`copy` here sleep on the caller's thread (control plane, tests). The FUSE
// adapter instead calls `admit` and, when it must wait, answers the request later from a thread of
// its own and does the I/O through `below`, so a throttled request never holds a FUSE worker.
// Lock order: the layer's state (groups and meter), then each group's buckets; none across I/O. Two
// locks per capped request: the volume's own, and each group's.
import Synchronization

public final class QoSLayer: VolumeStore {
    public let below: any VolumeStore
    private let active = Atomic<Bool>(false)
    private let state = Lock(State())
    private let clock: @Sendable () -> Double

    public init(over below: any VolumeStore, clock: @escaping @Sendable () -> Double = MonotonicClock.seconds) {
        self.below = below
        self.clock = clock
    }

    /// Replaces the groups that apply (none: unlimited). Takes effect for the next request.
    public func apply(_ groups: [ThrottleGroup]) {
        state.withLock { $0.groups = groups }
        active.store(!groups.isEmpty, ordering: .releasing)
    }

    private struct State {
        var groups: [ThrottleGroup] = []
        var meter = Meter()
    }

    /// Accounts a request of `bytes` now; returns the seconds it must wait before it goes to `below`
    /// (0 at once). Unlimited volumes answer 0 without a lock.
    @inline(__always)
    public func admit(write: Bool, bytes: Int) -> Double {
        guard active.load(ordering: .relaxed) else { return 0 }
        return admitCapped(write: write, bytes: bytes)
    }

    private func admitCapped(write: Bool, bytes: Int) -> Double {
        let now = clock()
        return state.withLock { s in
            var wait = 0.0
            for g in s.groups { wait = max(wait, g.reserve(write: write, bytes: bytes, now: now)) }
            s.meter.record(bytes: bytes, wait: wait, now: now)
            return wait
        }
    }

    /// The current rate and the time spent throttled (zero while no cap applies).
    public var stats: QoSStats {
        let now = clock()
        return state.withLock { $0.meter.stats(now: now) }
    }

    // MARK: VolumeStore

    public var size: UInt64 { below.size }
    public var isReadOnly: Bool { below.isReadOnly }
    public var bottom: any VolumeStore { below.bottom }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) -> Int {
        MonotonicClock.sleep(admit(write: false, bytes: buffer.count))
        return try below.read(at: offset, into: buffer)
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(StoreError) {
        MonotonicClock.sleep(admit(write: true, bytes: buffer.count))
        try below.write(at: offset, from: buffer)
    }

    public func discard(at offset: UInt64, length: UInt64) throws(StoreError) {
        try below.discard(at: offset, length: length)
    }

    public func extend(to end: UInt64) throws(StoreError) { try below.extend(to: end) }

    public func resize(to size: UInt64) throws(StoreError) { try below.resize(to: size) }

    public func flush(dataOnly: Bool) throws(StoreError) { try below.flush(dataOnly: dataOnly) }

    public func seek(from offset: UInt64, data: Bool) -> UInt64? { below.seek(from: offset, data: data) }

    public func copy(from source: any VolumeStore, at sourceOffset: UInt64, to offset: UInt64, length: UInt64)
        throws(StoreError) -> UInt64
    {
        MonotonicClock.sleep(admit(write: true, bytes: Int(clamping: length)))
        return try below.copy(from: source, at: sourceOffset, to: offset, length: length)
    }

    public func view(at epoch: UInt64, size: UInt64) -> any VolumeStore { below.view(at: epoch, size: size) }
}

/// What `qos show` and `status` report of a volume's I/O under its caps.
public struct QoSStats: Codable, Sendable, Equatable {
    /// Operations and bytes per second over the last whole second.
    public var opsPerSecond: Double = 0
    public var bytesPerSecond: Double = 0
    /// Wall-clock seconds during which at least one request waited, since the mount started.
    public var throttledSeconds: Double = 0
    /// Requests that had to wait.
    public var throttledRequests: UInt64 = 0
    public init() {}
}

/// Counts of the current and the previous second, and the union of the intervals requests waited.
struct Meter {
    private var second: Int64 = 0
    private var ops: UInt64 = 0
    private var bytes: UInt64 = 0
    private var previousOps: UInt64 = 0
    private var previousBytes: UInt64 = 0
    private var throttledUntil = 0.0
    private var throttled = 0.0
    private var waits: UInt64 = 0

    mutating func record(bytes: Int, wait: Double, now: Double) {
        roll(now)
        ops += 1
        self.bytes += UInt64(bytes)
        guard wait > 0 else { return }
        waits += 1
        let end = now + wait
        if end > throttledUntil {
            throttled += end - max(now, throttledUntil)
            throttledUntil = end
        }
    }

    mutating func stats(now: Double) -> QoSStats {
        roll(now)
        var s = QoSStats()
        s.opsPerSecond = Double(previousOps)
        s.bytesPerSecond = Double(previousBytes)
        // Time promised to requests still waiting is not spent yet.
        s.throttledSeconds = throttled - max(0, throttledUntil - now)
        s.throttledRequests = waits
        return s
    }

    private mutating func roll(_ now: Double) {
        let current = Int64(now)
        guard current != second else { return }
        (previousOps, previousBytes) = current == second + 1 ? (ops, bytes) : (0, 0)
        (ops, bytes, second) = (0, 0, current)
    }
}
