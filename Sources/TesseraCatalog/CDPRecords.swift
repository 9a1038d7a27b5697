// CDPRecords — the catalog side of continuous data protection (migration "v9-cdp"): one `cdp` row per
// protected volume and one `cdp_mark` row per named instant. Deleting the row (cdp disable, or the
// volume's deletion) deletes its marks.
import Foundation
import GRDB
import TesseraCore

/// One row of `cdp`: a protected volume, with how long (`windowSeconds`) and how much (`maxSize` bytes of
/// journal, nil: no cap) it keeps, and the last retention message (`note`) that `cdp status` shows.
public struct CDPRecord: Codable, Sendable, Equatable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "cdp"
    public var volumeId: Int64
    public var windowSeconds: Int64
    public var maxSize: Int64?
    public var enabledAt: Double
    public var note: String?
    public init(volumeId: Int64, windowSeconds: Int64, maxSize: Int64?, enabledAt: Double) {
        self.volumeId = volumeId
        self.windowSeconds = windowSeconds
        self.maxSize = maxSize
        self.enabledAt = enabledAt
    }
}

/// One row of `cdp_mark`: a name for an instant of a protected volume (`time`: ns since the epoch, UTC).
public struct CDPMarkRecord: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "cdp_mark"
    public var id: Int64?
    public var volumeId: Int64
    public var name: String
    public var time: Int64
    public init(volumeId: Int64, name: String, time: Int64) {
        self.volumeId = volumeId
        self.name = name
        self.time = time
    }
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

extension Catalog {
    public func cdpRecords() throws(TesseraError) -> [CDPRecord] {
        try read { try CDPRecord.order(Column("volumeId")).fetchAll($0) }
    }

    public func cdpMarks() throws(TesseraError) -> [CDPMarkRecord] {
        try read { try CDPMarkRecord.order(Column("time"), Column("id")).fetchAll($0) }
    }

    public func insertCDP(_ record: CDPRecord) throws(TesseraError) {
        try write("cdp enable") { db in try record.insert(db) }
    }

    public func updateCDP(_ record: CDPRecord) throws(TesseraError) {
        try write("cdp update") { db in try record.update(db) }
    }

    /// Deletes the protection of `volume` and its marks.
    public func deleteCDP(_ volume: VolumeID) throws(TesseraError) {
        try write("cdp disable") { db in _ = try CDPRecord.deleteOne(db, key: volume.rawValue) }
    }

    public func insertMark(_ mark: CDPMarkRecord) throws(TesseraError) -> CDPMarkRecord {
        try write("cdp mark \(mark.name)") { db in
            var m = mark
            try m.insert(db)
            return m
        }
    }

    public func deleteMarks(volume: VolumeID, before time: Int64) throws(TesseraError) {
        try write("cdp marks") { db in
            _ = try CDPMarkRecord.filter(Column("volumeId") == volume.rawValue && Column("time") < time).deleteAll(db)
        }
    }
}
