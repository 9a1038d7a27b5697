import Foundation
import GRDB
import TesseraCore

/// One row of `job`: a long operation kept in the catalog so that it survives a restart.
public struct JobRecord: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "job"
    public enum Kind: String, Codable, Sendable { case replace, migrate, drain }
    public enum State: String, Codable, Sendable {
        case running, paused, cancelled, done, failed
        /// Still to be worked on (by the mount's job runner).
        public var isActive: Bool { self == .running || self == .paused }
    }
    public var id: Int64?
    public var kind: Kind
    public var state: State
    public var subject: String
    public var unitId: Int64?
    public var sourceStoreId: Int64?
    public var targetStoreId: Int64?
    public var volumeId: Int64?
    public var poolId: Int64?
    /// replace: the name the target store takes when the job is done.
    public var rename: String?
    /// Serials up to this are copied and durable where they go.
    public var cursor: Int64 = 0
    /// The last serial handed out before the job started.
    public var endSerial: Int64 = 0
    public var doneChunks: Int64 = 0
    public var totalChunks: Int64 = 0
    public var doneBytes: Int64 = 0
    public var totalBytes: Int64 = 0
    /// Bytes per second at most (nil: no cap).
    public var rate: Int64?
    public var lastError: String?
    public var errorAt: Double?
    public var createdAt: Double
    public var updatedAt: Double

    public init(kind: Kind, subject: String, createdAt: Double) {
        self.kind = kind
        self.state = .running
        self.subject = subject
        self.createdAt = createdAt
        self.updatedAt = createdAt
    }
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

extension Catalog {
    /// Every job, oldest first.
    public func jobs() throws(TesseraError) -> [JobRecord] {
        try read { try JobRecord.order(Column("id")).fetchAll($0) }
    }

    public func job(_ id: Int64) throws(TesseraError) -> JobRecord? {
        try read { try JobRecord.fetchOne($0, key: id) }
    }

    /// Starts a replace, all or nothing: records `target` (a new store) as the `target` member of
    /// `unit`, its member `source` becomes `source`, and `job` is inserted.
    public func startReplace(_ job: JobRecord, target: StoreRecord, unit: UnitID, source: Int64) throws(TesseraError)
        -> (JobRecord, StoreRecord)
    {
        try write("start replacing store #\(source)") { db in
            var t = target
            try t.insert(db)
            try db.execute(
                sql: "UPDATE unit_member SET role = ? WHERE unitId = ? AND storeId = ? AND role = ?",
                arguments: [
                    UnitMemberRecord.Role.source.rawValue, unit.rawValue, source,
                    UnitMemberRecord.Role.primary.rawValue,
                ])
            guard db.changesCount == 1 else {
                throw TesseraError(.busy, "store #\(source) is not the primary of \(unit) any more")
            }
            try UnitMemberRecord(storeId: t.id!, unitId: unit.rawValue, role: .target).insert(db)
            var j = job
            j.targetStoreId = t.id
            try j.insert(db)
            return (j, t)
        }
    }

    /// Records a job's progress, state and error (every column but the subject and ids).
    public func updateJob(_ job: JobRecord) throws(TesseraError) {
        var j = job
        j.updatedAt = Date().timeIntervalSince1970
        try write("update job #\(job.id ?? 0)") { db in try j.update(db) }
    }

    /// Ends a replace, all or nothing. `done`: the target becomes the unit's primary and the source
    /// leaves the unit and the catalog. Otherwise (cancelled, failed) the reverse: the source is the
    /// primary again and the target leaves. `rename`: the kept store's new name (taken from the one
    /// dropped). `job` is saved with its final state.
    public func endReplace(_ job: JobRecord, unit: UnitID, keep: Int64, drop: Int64, rename: String?)
        throws(TesseraError)
    {
        var j = job
        j.updatedAt = Date().timeIntervalSince1970
        try write("end job #\(job.id ?? 0)") { db in
            try db.execute(
                sql: "DELETE FROM unit_member WHERE unitId = ? AND storeId = ?", arguments: [unit.rawValue, drop])
            try db.execute(
                sql: "UPDATE unit_member SET role = ? WHERE unitId = ? AND storeId = ?",
                arguments: [UnitMemberRecord.Role.primary.rawValue, unit.rawValue, keep])
            if try UnitMemberRecord.filter(Column("storeId") == drop).fetchCount(db) == 0 {
                _ = try StoreRecord.deleteOne(db, key: drop)
            }
            if let rename {
                try db.execute(sql: "UPDATE store SET name = ? WHERE id = ?", arguments: [rename, keep])
            }
            try j.update(db)
        }
    }
}
