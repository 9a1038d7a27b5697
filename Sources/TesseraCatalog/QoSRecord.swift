import GRDB
import TesseraCore

/// One row of `qos_setting`: the QoS settings of a volume, of a pool's volumes as one group, or of
/// every volume as one group.
public struct QoSRecord: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "qos_setting"

    /// What a setting applies to.
    public enum Scope: Sendable, Equatable, Hashable {
        case volume(VolumeID)
        case pool(Int64)
        case all
    }

    public var id: Int64?
    public var scope: String
    public var volumeId: Int64?
    public var poolId: Int64?
    public var iops, readIops, writeIops, bps, readBps, writeBps, minIops, minBps: Int64?
    public var burst: Double?
    public var weight: Int64?

    public init(_ target: Scope, _ limits: QoSLimits) {
        switch target {
        case .volume(let v):
            scope = "volume"
            volumeId = v.rawValue
        case .pool(let p):
            scope = "pool"
            poolId = p
        case .all: scope = "all"
        }
        func stored(_ v: UInt64?) -> Int64? { v.map { Int64(clamping: $0) } }
        iops = stored(limits.iops)
        readIops = stored(limits.readIops)
        writeIops = stored(limits.writeIops)
        bps = stored(limits.bps)
        readBps = stored(limits.readBps)
        writeBps = stored(limits.writeBps)
        minIops = stored(limits.minIops)
        minBps = stored(limits.minBps)
        burst = limits.burst
        weight = limits.weight.map(Int64.init)
    }

    /// What it applies to (nil for a row this release cannot read).
    public var target: Scope? {
        switch scope {
        case "volume": volumeId.map { .volume(VolumeID($0)) }
        case "pool": poolId.map { .pool($0) }
        case "all": .all
        default: nil
        }
    }

    public var limits: QoSLimits {
        func rate(_ v: Int64?) -> UInt64? { v.map { UInt64(max(1, $0)) } }
        return QoSLimits(
            iops: rate(iops), readIops: rate(readIops), writeIops: rate(writeIops), bps: rate(bps),
            readBps: rate(readBps), writeBps: rate(writeBps), burst: burst, minIops: rate(minIops),
            minBps: rate(minBps), weight: weight.map { Int($0) })
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

extension Catalog {
    public func qosSettings() throws(TesseraError) -> [QoSRecord] {
        try read { try QoSRecord.order(Column("id")).fetchAll($0) }
    }

    /// Replaces the settings of each target in one transaction (all or none); empty limits remove
    /// them.
    public func setQoS(_ settings: [(QoSRecord.Scope, QoSLimits)]) throws(TesseraError) {
        try write("set QoS") { db in
            for (target, limits) in settings {
                let row = QoSRecord(target, limits)
                let existing =
                    switch target {
                    case .volume: QoSRecord.filter(Column("volumeId") == row.volumeId)
                    case .pool: QoSRecord.filter(Column("poolId") == row.poolId)
                    case .all: QoSRecord.filter(Column("scope") == "all")
                    }
                try existing.deleteAll(db)
                if !limits.isEmpty {
                    var inserted = row
                    try inserted.insert(db)
                }
            }
        }
    }
}
