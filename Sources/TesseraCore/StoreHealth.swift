// StoreHealth — whether a store answers, since when, and the last error it gave; and what a store offers
// the health checker (a cheap probe, reopening after an outage, its filesystem, a quota).
//
// States: ok ⇄ unreachable. A store becomes unreachable at once when one of its requests fails the way
// a dead medium fails (EIO, EROFS, a timeout, a refused connection: `.io` or `.readOnly`), or when its
// probe fails; only a successful probe returns it to service (the engine's health checker, about every
// 10 s), after the store has dropped what the outage may have left dead (open descriptors).
// Invariants: the data path reads the state with one atomic load (no lock); the details (since, last
// error) sit behind their own Mutex, taken only on a transition or when the control plane asks.
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

public final class StoreHealth: Sendable {
    /// One answer for `store show`, `pool show` and `status`.
    public struct Snapshot: Sendable, Equatable, Codable {
        public var reachable: Bool
        /// Seconds since 1970 of the last transition (or of the store's joining).
        public var since: Double
        /// The last failure seen (kept after recovery, for the record).
        public var lastError: String?
        public var state: String { reachable ? "ok" : "unreachable" }
    }

    private let unreachable = Atomic<Bool>(false)
    private let details: Mutex<Snapshot>

    public init() {
        details = Mutex(Snapshot(reachable: true, since: Self.wallClock(), lastError: nil))
    }

    /// True while the store answers (one atomic load: fine on the data path).
    public var isReachable: Bool { !unreachable.load(ordering: .relaxed) }

    public var snapshot: Snapshot { details.withLock { $0 } }

    /// Records a failure; returns true when this made the store unreachable (it was ok before).
    @discardableResult
    public func markUnreachable(_ why: String) -> Bool {
        details.withLock { d in
            d.lastError = why
            guard !unreachable.exchange(true, ordering: .acquiringAndReleasing) else { return false }
            d.reachable = false
            d.since = Self.wallClock()
            return true
        }
    }

    /// Returns the store to service; returns true when it was unreachable.
    @discardableResult
    public func markReachable() -> Bool {
        details.withLock { d in
            guard unreachable.exchange(false, ordering: .acquiringAndReleasing) else { return false }
            d.reachable = true
            d.since = Self.wallClock()
            return true
        }
    }

    /// True for the failures that say the medium is gone (as opposed to a missing or corrupt chunk, or
    /// no room, which say nothing about whether the store answers).
    public static func isOutage(_ error: StoreError) -> Bool {
        switch error {
        case .io, .readOnly: return true
        case .noSpace, .missing, .corrupt: return false
        }
    }

    /// True when the store did not answer at all (a timeout, a refused or broken connection): asking it
    /// again at once would only wait as long again.
    public static func isUnanswered(_ error: StoreError) -> Bool {
        guard case .io(let code, _) = error else { return false }
        return [ETIMEDOUT, ECONNREFUSED, ECONNRESET, EHOSTUNREACH, ENETUNREACH].contains(code)
    }

    public static func describe(_ error: StoreError) -> String {
        switch error {
        case .io(let code, _): return String(cString: strerror(code)) + " (errno \(code))"
        case .readOnly: return "read-only filesystem"
        case .noSpace: return "no space"
        case .missing(let c): return "missing \(c)"
        case .corrupt(let c, let o): return "corrupt \(c) at \(o)"
        }
    }

    static func wallClock() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}

/// The filesystem a store lives on, for stores that share one (`statfs`): they share its room.
public struct FilesystemUsage: Sendable, Equatable, Codable {
    /// st_dev of the store's directory: equal for two stores on one filesystem.
    public var id: UInt64
    public var totalBytes: UInt64
    public var freeBytes: UInt64
    public init(id: UInt64, totalBytes: UInt64, freeBytes: UInt64) {
        self.id = id
        self.totalBytes = totalBytes
        self.freeBytes = freeBytes
    }
}

/// What a bottom store offers the engine's health checker and `store set --size`, beyond ChunkStore.
/// Not on the data path.
public protocol StoreMaintenance: AnyObject, Sendable {
    /// One cheap round trip that touches the medium (a small file written, synced and removed; a HEAD
    /// of the bucket). Throws when the store does not answer properly; bounded in time like any request.
    func probe() throws(StoreError)
    /// Drops what an outage may have left dead (open descriptors), after a probe succeeded again.
    func reopen()
    /// Sets the capacity quota in bytes (nil: none, where the kind allows). Returns false when this kind
    /// cannot change its size.
    func setQuota(_ bytes: UInt64?) -> Bool
}
