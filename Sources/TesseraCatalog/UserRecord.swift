import Foundation
import GRDB
import TesseraCore

/// One row of `user`: someone who reaches the HTTP API with a bearer token. Only the token's SHA-256
/// is kept (`tokenHash`, lower-case hex); the token itself is shown once, when made. `domainId` is set
/// exactly for the roles that act inside one domain (domain-admin, operator).
public struct UserRecord: Codable, Sendable, Equatable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "user"
    public enum Role: String, Codable, Sendable, CaseIterable {
        /// Everything.
        case admin
        /// Everything inside its domain.
        case domainAdmin = "domain-admin"
        /// Volumes and snapshots inside its domain: creates and changes them, deletes nothing, no settings.
        case `operator`
        /// Reads everything, changes nothing.
        case auditor

        /// Whether the role acts inside one domain (and so must name it).
        public var isDomainScoped: Bool { self == .domainAdmin || self == .operator }
    }
    public var id: Int64?
    public var name: String
    public var role: Role
    public var domainId: Int64?
    public var tokenHash: String
    public var createdAt: Double
    public init(name: String, role: Role, domainId: Int64?, tokenHash: String, createdAt: Double) {
        self.name = name
        self.role = role
        self.domainId = domainId
        self.tokenHash = tokenHash
        self.createdAt = createdAt
    }
    public mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

extension Catalog {
    public func users() throws(TesseraError) -> [UserRecord] {
        try read { try UserRecord.order(Column("name")).fetchAll($0) }
    }

    /// The user whose token hashes to `tokenHash`, if any.
    public func user(tokenHash: String) throws(TesseraError) -> UserRecord? {
        try read { try UserRecord.filter(Column("tokenHash") == tokenHash).fetchOne($0) }
    }

    /// Inserts a new user (`exists` when the name is taken).
    public func insertUser(_ user: UserRecord) throws(TesseraError) -> UserRecord {
        try write("add user \(user.name)") { db in
            var u = user
            try u.insert(db)
            return u
        }
    }

    /// Replaces a user's token hash; false when no user has that name.
    public func updateUserToken(name: String, tokenHash: String) throws(TesseraError) -> Bool {
        try write("rotate the token of \(name)") { db in
            try UserRecord.filter(Column("name") == name).updateAll(db, Column("tokenHash").set(to: tokenHash)) > 0
        }
    }

    /// Deletes a user; false when no user has that name.
    public func deleteUser(name: String) throws(TesseraError) -> Bool {
        try write("remove user \(name)") { db in try UserRecord.filter(Column("name") == name).deleteAll(db) > 0 }
    }
}
