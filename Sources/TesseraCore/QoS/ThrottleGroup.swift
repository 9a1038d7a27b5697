// ThrottleGroup — the token buckets of one QoS setting, shared by every volume it applies to (one
// volume's own setting, a pool's, or the one for every volume), as qemu's throttle groups are.
//
// Address space: none (it counts operations and bytes of volume I/O; QoSLayer asks it).
// State: one bucket per cap that is set (IOPS all/read/write, bytes per second all/read/write), under
// one lock held for a few arithmetic operations, never across I/O.
// Invariants: a request is accounted in every bucket that applies to it, and waits for the slowest.
// An operation counts as max(1, bytes / QoSLimits.opSize) against the IOPS caps (large requests count
// by size as well as by count) and as its bytes against the bandwidth caps.
#if canImport(Glibc)
    import Glibc
#endif

public final class ThrottleGroup: Sendable {
    public let limits: QoSLimits
    private let buckets: Lock<Buckets>

    struct Buckets {
        var iops, readIops, writeIops, bps, readBps, writeBps: TokenBucket?
    }

    /// `limits` must set at least one cap.
    public init(_ limits: QoSLimits, now: Double = MonotonicClock.seconds()) {
        precondition(limits.hasCaps, "a throttle group needs a cap")
        self.limits = limits
        func bucket(_ rate: UInt64?) -> TokenBucket? {
            rate.map { TokenBucket(rate: Double($0), burst: limits.burst, now: now) }
        }
        buckets = Lock(
            Buckets(
                iops: bucket(limits.iops), readIops: bucket(limits.readIops), writeIops: bucket(limits.writeIops),
                bps: bucket(limits.bps), readBps: bucket(limits.readBps), writeBps: bucket(limits.writeBps)))
    }

    /// Accounts one request of `bytes` asked for at `now`; returns the seconds it must wait to start.
    public func reserve(write: Bool, bytes: Int, now: Double) -> Double {
        let ops = max(1, Double(bytes) / Double(QoSLimits.opSize))
        let size = Double(bytes)
        return buckets.withLock { b in
            var wait = 0.0
            func take(_ bucket: inout TokenBucket?, _ units: Double) {
                guard bucket != nil else { return }
                wait = max(wait, bucket!.reserve(units, now: now))
            }
            take(&b.iops, ops)
            take(&b.bps, size)
            if write {
                take(&b.writeIops, ops)
                take(&b.writeBps, size)
            } else {
                take(&b.readIops, ops)
                take(&b.readBps, size)
            }
            return wait
        }
    }
}

/// Seconds on the monotonic clock (CLOCK_MONOTONIC): cheap enough to read per throttled request.
public enum MonotonicClock {
    public static func seconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Sleeps the calling thread for `seconds` (restarting after signals).
    public static func sleep(_ seconds: Double) {
        guard seconds > 0 else { return }
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - Double(Int(seconds))) * 1e9))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }
}
