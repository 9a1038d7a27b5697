// QoS caps: the token bucket's rate and burst (qemu's semantics) on an injected clock, a throttle group's
// buckets (large requests count by size, reads and writes apart), the layer (unlimited costs nothing and
// waits never; caps apply and lift at once; the meter), and the settings' validation table.
import Synchronization
import TesseraCore
import TesseraTestSupport
import Testing

/// Admits requests back to back as a client with unbounded queue depth would, each starting when the
/// bucket allows: returns how many started within `seconds`.
private func startedWithin(_ seconds: Double, bucket: inout TokenBucket, units: Double = 1) -> Int {
    var started = 0
    var now = 0.0
    while true {
        let wait = bucket.reserve(units, now: now)
        if now + wait > seconds { return started }
        now += wait
        started += 1
    }
}

/// A volume in memory: the bottom of a stack for layer tests.
final class ByteVolume: VolumeStore {
    private let bytes: Mutex<[UInt8]>
    init(size: Int) throws { bytes = Mutex([UInt8](repeating: 0, count: size)) }
    var size: UInt64 { bytes.withLock { UInt64($0.count) } }
    var isReadOnly: Bool { false }
    var bottom: any VolumeStore { self }
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) -> Int {
        bytes.withLock { b in
            let n = max(0, min(buffer.count, b.count - Int(offset)))
            b.withUnsafeBytes {
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[Int(offset)..<Int(offset) + n]))
            }
            return n
        }
    }
    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(StoreError) {
        bytes.withLock { b in
            if b.count < Int(offset) + buffer.count {
                b += [UInt8](repeating: 0, count: Int(offset) + buffer.count - b.count)
            }
            b.withUnsafeMutableBytes {
                UnsafeMutableRawBufferPointer(rebasing: $0[Int(offset)...]).copyMemory(from: buffer)
            }
        }
    }
    func discard(at offset: UInt64, length: UInt64) throws(StoreError) {}
    func extend(to end: UInt64) throws(StoreError) {}
    func resize(to size: UInt64) throws(StoreError) {}
    func flush(dataOnly: Bool) throws(StoreError) {}
    func seek(from offset: UInt64, data: Bool) -> UInt64? { nil }
    func copy(from source: any VolumeStore, at sourceOffset: UInt64, to offset: UInt64, length: UInt64)
        throws(StoreError) -> UInt64
    { 0 }
    func view(at epoch: UInt64, size: UInt64) -> any VolumeStore { self }
}

/// A clock the test moves by hand.
final class ManualClock: Sendable {
    private let time = Mutex(100.0)
    var now: Double { time.withLock { $0 } }
    func advance(_ s: Double) { time.withLock { $0 += s } }
}

@Suite("QoS")
struct QoSTests {
    @Test(arguments: [10.0, 500, 20_000])
    func aBucketHoldsItsRate(rate: Double) {
        var b = TokenBucket(rate: rate, burst: nil, now: 0)
        let n = Double(startedWithin(10, bucket: &b))
        // rate × 10 s, plus the tenth of a second it may run ahead, plus one request.
        #expect(n >= rate * 10 && n <= rate * 10.1 + 2, "\(n) started at \(rate)/s")
    }

    @Test func aBurstRunsAheadThenSettles() {
        var b = TokenBucket(rate: 100, burst: 5, now: 0)
        // Idle until now: 500 requests go at once (no wait), the next waits.
        for i in 0...500 { #expect(b.reserve(1, now: 0) == 0, "request \(i)") }
        #expect(b.reserve(1, now: 0) > 0)
        // From then on, the rate.
        var settled = TokenBucket(rate: 100, burst: 5, now: 0)
        let total = startedWithin(20, bucket: &settled)
        #expect(total >= 2500 && total <= 2502, "\(total)")
    }

    @Test func anIdleBucketRefillsOnlyToItsCapacity() {
        var b = TokenBucket(rate: 100, burst: 1, now: 0)
        for _ in 0..<300 { _ = b.reserve(1, now: 0) }
        #expect(b.pending(now: 0) > 1.9)  // 299 ahead, 100 allowed: about 2 s
        #expect(b.pending(now: 10) == 0)  // drained, and a long idle time stores no more than the burst
        for i in 0..<101 { #expect(b.reserve(1, now: 10) == 0, "request \(i)") }
        #expect(b.reserve(1, now: 10) > 0)
    }

    @Test func aClockReadOutOfOrderNeverAddsCredit() {
        var b = TokenBucket(rate: 10, burst: nil, now: 5)
        _ = b.reserve(1, now: 5)
        _ = b.reserve(1, now: 5)
        let wait = b.reserve(1, now: 4)  // an earlier reading, taken before the lock by another thread
        #expect(wait > 0)
    }

    @Test func largeRequestsCountBySize() {
        let g = ThrottleGroup(QoSLimits(iops: 100), now: 0)
        // 1 MiB = 16 operations of 64K: after 100 units of room (plus the 10 of capacity) requests wait.
        var waits: [Double] = []
        for _ in 0..<8 { waits.append(g.reserve(write: false, bytes: 1 << 20, now: 0)) }
        #expect(waits.prefix(1) == [0])
        #expect(waits.last! >= 0.9, "\(waits)")
        // 4K requests count as one each.
        let small = ThrottleGroup(QoSLimits(iops: 100), now: 0)
        for _ in 0..<11 { #expect(small.reserve(write: false, bytes: 4096, now: 0) == 0) }
        #expect(small.reserve(write: false, bytes: 4096, now: 0) > 0)
    }

    @Test func readAndWriteCapsApplyToTheirOwnRequests() {
        let g = ThrottleGroup(QoSLimits(writeIops: 10, readBps: 1 << 20), now: 0)
        // 1M/s may run a tenth of a second (102.4K) ahead: 26 reads of 4K go at once, the 27th waits.
        for _ in 0..<26 { #expect(g.reserve(write: false, bytes: 4096, now: 0) == 0) }
        #expect(g.reserve(write: false, bytes: 4096, now: 0) > 0)
        // Writes are held by their own cap only; a 1M write counts as 16 operations.
        #expect(g.reserve(write: true, bytes: 1 << 20, now: 0) == 0)
        #expect(abs(g.reserve(write: true, bytes: 4096, now: 0) - 1.5) < 1e-9)
    }

    @Test func theLayerWaitsOnlyUnderACapAndAppliesChangesAtOnce() throws {
        let clock = ManualClock()
        let store = try ByteVolume(size: 1 << 20)
        let layer = QoSLayer(over: store, clock: { clock.now })
        for _ in 0..<10_000 { #expect(layer.admit(write: true, bytes: 4096) == 0) }
        #expect(layer.stats == QoSStats())  // unlimited volumes are not metered
        layer.apply([ThrottleGroup(QoSLimits(iops: 50), now: clock.now)])
        var waited = 0
        for _ in 0..<20 where layer.admit(write: true, bytes: 4096) > 0 { waited += 1 }
        #expect(waited == 14)  // 5 + 1 at once, then each waits
        layer.apply([])
        #expect(layer.admit(write: true, bytes: 4096) == 0)
        // The meter: the last whole second's rate, and throttled wall time.
        clock.advance(1)
        let s = layer.stats
        #expect(s.opsPerSecond == 20)
        #expect(s.bytesPerSecond == 20 * 4096)
        #expect(s.throttledRequests == 14)
        #expect(s.throttledSeconds > 0.2 && s.throttledSeconds <= 0.3, "\(s.throttledSeconds)")
    }

    @Test func theLayerPassesDataThrough() throws {
        let store = try ByteVolume(size: 1 << 20)
        let layer = QoSLayer(over: store)
        layer.apply([ThrottleGroup(QoSLimits(iops: 1_000_000))])
        let data = [UInt8](repeating: 7, count: 5000)
        try data.withUnsafeBytes { try layer.write(at: 100, from: $0) }
        var back = [UInt8](repeating: 0, count: 5000)
        let n = try back.withUnsafeMutableBytes { try layer.read(at: 100, into: $0) }
        #expect(n == 5000 && back == data)
        #expect(layer.bottom === store)
    }

    @Test(arguments: [
        (QoSLimits(iops: 0), false, "--iops must be greater than 0"),
        (QoSLimits(bps: 0), false, "--bps must be greater than 0"),
        (QoSLimits(burst: 2), false, "--burst needs a cap"),
        (QoSLimits(iops: 5, burst: 0), false, "--burst must be more than 0"),
        (QoSLimits(iops: 5, burst: 4000), false, "--burst must be more than 0"),
        (QoSLimits(weight: 0), false, "--weight must be between 1 and 1000"),
        (QoSLimits(weight: 1001), false, "--weight must be between 1 and 1000"),
        (QoSLimits(iops: 100, minIops: 101), false, "--min-iops 101 is above"),
        (QoSLimits(readIops: 10, writeIops: 10, minIops: 21), false, "--min-iops 21 is above"),
        (QoSLimits(bps: 1000, minBps: 1001), false, "--min-bps 1001 is above"),
        (QoSLimits(iops: 5, minIops: 1), true, "--min-iops, --min-bps and --weight are set per volume"),
    ])
    func badSettingsAreRefused(limits: QoSLimits, group: Bool, message: String) {
        let problem = limits.problem(group: group)
        #expect(problem?.hasPrefix(message) == true, "\(problem ?? "accepted")")
    }

    @Test func goodSettingsAreAcceptedAndUpdatesKeepWhatTheyDoNotName() {
        let first = QoSLimits(iops: 500, burst: 5, minIops: 100, weight: 10)
        #expect(first.problem(group: false) == nil)
        #expect(QoSLimits(bps: 1 << 20, burst: 0.5).problem(group: true) == nil)
        let next = first.updated(with: QoSLimits(bps: 1 << 20, weight: 20))
        #expect(next == QoSLimits(iops: 500, bps: 1 << 20, burst: 5, minIops: 100, weight: 20))
    }
}
