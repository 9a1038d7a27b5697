// Migration "v11-users" over a catalog of the release before it (schema up to v9-cdp): every row stays,
// the user table starts empty, and its constraints hold (a role names a domain exactly when it acts in
// one, names and token hashes are unique, a domain with users is not deleted).
import Foundation
import GRDB
import TesseraCore
import Testing

@testable import TesseraCatalog

@Suite("User catalog")
struct UserCatalogTests {
    @Test func migratesTheCatalogOfThePreviousRelease() throws {
        let dir = ScratchDirectory()
        let q = try DatabaseQueue(path: dir.catalogPath)
        try Schema.migrator.migrate(q, upTo: "v9-cdp")
        try q.write { db in
            try db.execute(sql: "INSERT INTO pool(name, chunkSize, createdAt) VALUES ('default', 4096, 1)")
            try db.execute(sql: "INSERT INTO domain(name, createdAt) VALUES ('red', 1)")
            try db.execute(
                sql: "INSERT INTO volume(name, domainId, poolId, size, chunkSize, uid, gid, mode, mtime, createdAt) "
                    + "VALUES ('a', 1, 1, 8192, 4096, 0, 0, 384, 5, 1), ('b', 2, 1, 4096, 4096, 0, 0, 384, 5, 1)")
        }
        try q.close()

        let c = try Catalog.open(at: dir.catalogPath)
        #expect(try c.volumes().map(\.name) == ["a", "b"])
        #expect(try c.domains().map(\.name) == ["default", "red"])
        #expect(try c.users().isEmpty)

        let red = try #require(try c.domains().first { $0.name == "red" }?.id)
        func user(_ name: String, _ role: UserRecord.Role, _ domain: Int64?, _ hash: String) -> UserRecord {
            UserRecord(name: name, role: role, domainId: domain, tokenHash: hash, createdAt: 2)
        }
        _ = try c.insertUser(user("root", .admin, nil, "h1"))
        _ = try c.insertUser(user("ops", .operator, red, "h2"))
        expectCode(.exists, "a name twice") { _ = try c.insertUser(user("ops", .auditor, nil, "h3")) }
        expectCode(.exists, "a token hash twice") { _ = try c.insertUser(user("x", .auditor, nil, "h1")) }
        expectCode(.exists, "an operator without a domain") { _ = try c.insertUser(user("y", .operator, nil, "h4")) }
        expectCode(.exists, "an admin with a domain") { _ = try c.insertUser(user("z", .admin, red, "h5")) }
        expectCode(.exists, "a domain that does not exist") { _ = try c.insertUser(user("w", .operator, 99, "h6")) }
        #expect(throws: TesseraError.self, "a role the schema does not know") {
            try c.write("bad role") { db in
                try db.execute(
                    sql: "INSERT INTO user(name, role, tokenHash, createdAt) VALUES ('q', 'wizard', 'h7', 1)")
            }
        }
        #expect(
            try c.users().map { "\($0.name) \($0.role.rawValue) \($0.domainId ?? 0)" } == [
                "ops operator \(red)", "root admin 0",
            ])
        #expect(try c.user(tokenHash: "h2")?.name == "ops")
        #expect(try c.user(tokenHash: "nope") == nil)

        expectCode(.exists, "a domain with a user") { try c.deleteDomain(red) }
        #expect(try c.updateUserToken(name: "ops", tokenHash: "h8"))
        #expect(try c.user(tokenHash: "h2") == nil)
        #expect(try !c.updateUserToken(name: "nobody", tokenHash: "h9"))
        #expect(try c.deleteUser(name: "ops"))
        #expect(try !c.deleteUser(name: "ops"))
        try c.deleteVolume(VolumeID(2))
        try c.deleteDomain(red)
        // Opening again runs no migration twice.
        _ = try Catalog.open(at: dir.catalogPath)
    }
}
