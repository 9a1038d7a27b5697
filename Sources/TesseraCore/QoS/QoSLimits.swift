// QoSLimits — the QoS settings of one volume or one group (a pool, or every volume): caps, the burst
// allowance, and the per-volume floors and weight. A nil field is not set.
import Foundation

public struct QoSLimits: Codable, Sendable, Equatable {
    /// Caps: operations per second (all, reads, writes) and bytes per second (all, reads, writes).
    public var iops: UInt64?
    public var readIops: UInt64?
    public var writeIops: UInt64?
    public var bps: UInt64?
    public var readBps: UInt64?
    public var writeBps: UInt64?
    /// Seconds of each cap an idle volume may run ahead of it (see TokenBucket).
    public var burst: Double?
    /// Floors (per volume): what the volume gets whenever it asks, as long as its pool can deliver it.
    public var minIops: UInt64?
    public var minBps: UInt64?
    /// Share under contention, 1…1000 (per volume).
    public var weight: Int?

    public init(
        iops: UInt64? = nil, readIops: UInt64? = nil, writeIops: UInt64? = nil, bps: UInt64? = nil,
        readBps: UInt64? = nil, writeBps: UInt64? = nil, burst: Double? = nil, minIops: UInt64? = nil,
        minBps: UInt64? = nil, weight: Int? = nil
    ) {
        self.iops = iops
        self.readIops = readIops
        self.writeIops = writeIops
        self.bps = bps
        self.readBps = readBps
        self.writeBps = writeBps
        self.burst = burst
        self.minIops = minIops
        self.minBps = minBps
        self.weight = weight
    }

    /// The request size that counts as one operation: a larger request counts as size / opSize
    /// operations (qemu's iops-size), so a cap on IOPS also holds back large requests.
    public static let opSize = 64 * 1024
    /// Longest burst accepted, in seconds.
    public static let maxBurst = 3600.0

    public var hasCaps: Bool { [iops, readIops, writeIops, bps, readBps, writeBps].contains { $0 != nil } }
    public var isEmpty: Bool { self == QoSLimits() }

    /// These settings with every field that `other` sets replaced by its value (`qos set` changes only
    /// what it names).
    public func updated(with other: QoSLimits) -> QoSLimits {
        QoSLimits(
            iops: other.iops ?? iops, readIops: other.readIops ?? readIops, writeIops: other.writeIops ?? writeIops,
            bps: other.bps ?? bps, readBps: other.readBps ?? readBps, writeBps: other.writeBps ?? writeBps,
            burst: other.burst ?? burst, minIops: other.minIops ?? minIops, minBps: other.minBps ?? minBps,
            weight: other.weight ?? weight)
    }

    /// Why these settings cannot be applied (nil when they can). `group`: settings of a pool or of every
    /// volume, which take caps only.
    public func problem(group: Bool) -> String? {
        let rates: [(String, UInt64?)] = [
            ("--iops", iops), ("--read-iops", readIops), ("--write-iops", writeIops), ("--bps", bps),
            ("--read-bps", readBps), ("--write-bps", writeBps), ("--min-iops", minIops), ("--min-bps", minBps),
        ]
        if let zero = rates.first(where: { $0.1 == 0 }) { return "\(zero.0) must be greater than 0" }
        if let burst, !(burst > 0 && burst <= Self.maxBurst) {
            return "--burst must be more than 0 and at most \(Int(Self.maxBurst)) seconds"
        }
        if burst != nil && !hasCaps { return "--burst needs a cap (--iops, --bps or one of their read/write forms)" }
        if let weight, !(1...1000).contains(weight) { return "--weight must be between 1 and 1000" }
        if group && (minIops != nil || minBps != nil || weight != nil) {
            return "--min-iops, --min-bps and --weight are set per volume, not for --pool or --all"
        }
        if let minIops, let cap = Self.cap(iops, readIops, writeIops), minIops > cap {
            return "--min-iops \(minIops) is above the volume's IOPS cap (\(cap))"
        }
        if let minBps, let cap = Self.cap(bps, readBps, writeBps), minBps > cap {
            return "--min-bps \(minBps) is above the volume's bandwidth cap (\(cap) bytes/s)"
        }
        return nil
    }

    /// The most a volume can do under these caps: the total cap, or reads' plus writes' when both are set.
    private static func cap(_ total: UInt64?, _ reads: UInt64?, _ writes: UInt64?) -> UInt64? {
        if let total { return total }
        if let reads, let writes { return reads + writes }
        return nil
    }
}
