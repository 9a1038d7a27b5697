// TokenBucket — one rate limit with a burst allowance, qemu's throttle semantics (a leaky bucket).
//
// The bucket's level is work admitted ahead of the sustained rate; it drains at `rate` units per second.
// A request may start at once while the level is at most `capacity` (the burst allowance); otherwise it
// waits until the level has drained back to `capacity`. Either way it is accounted when it asks
// (a reservation), so concurrent requests queue behind each other in the order they asked and the
// admitted work over any interval T is at most capacity + rate × T plus one request.
// Capacity: `rate × burst` seconds when a burst is given (an idle volume may then run that much work
// as fast as it can, then settles at the rate); otherwise a tenth of a second's worth (qemu's default),
// which smooths the rate without letting a volume run ahead.
// Not thread-safe: ThrottleGroup holds its buckets under its lock. Time is seconds on any monotonic
// clock, given by the caller (tests inject one).
public struct TokenBucket: Sendable, Equatable {
    /// Units per second (operations, or bytes).
    public let rate: Double
    /// Units that may run ahead of the rate.
    public let capacity: Double
    private(set) var level: Double = 0
    private var last: Double

    public init(rate: Double, burst: Double?, now: Double) {
        precondition(rate > 0, "a bucket needs a positive rate")
        self.rate = rate
        self.capacity = burst.map { rate * $0 } ?? rate / 10
        self.last = now
    }

    /// Accounts `units` asked for at `now`; returns the seconds the request must wait before it starts.
    public mutating func reserve(_ units: Double, now: Double) -> Double {
        drain(now)
        let wait = level > capacity ? (level - capacity) / rate : 0
        level += units
        return wait
    }

    /// The seconds a request asking now would wait (accounts nothing).
    public mutating func pending(now: Double) -> Double {
        drain(now)
        return level > capacity ? (level - capacity) / rate : 0
    }

    private mutating func drain(_ now: Double) {
        // Callers on several threads may read the clock in one order and take the lock in another.
        guard now > last else { return }
        level = max(0, level - rate * (now - last))
        last = now
    }
}
