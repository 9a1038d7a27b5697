// The domain policy (migration v8-domain-policy): a catalog of schema v5 keeps its domains, quotas
// and rows, and gains the pools a domain may use (none named: any pool).

import Foundation
import GRDB
import TesseraCore
import Testing

@testable import TesseraCatalog

@Suite("Domain policy")
struct DomainPolicyTests {
    @Test func aCatalogOfSchemaV5GainsThePoolsPolicy() throws {
        let dir = ScratchDirectory()
        let q = try DatabaseQueue(path: dir.catalogPath)
        try Schema.migrator.migrate(q, upTo: "v5-domains")
        try q.write { db in
            try db.execute(sql: "INSERT INTO pool(name, chunkSize, createdAt) VALUES ('default', 4096, 1)")
            try db.execute(sql: "INSERT INTO domain(id, name, createdAt, quotaVolumes) VALUES (2, 'team', 5, 10)")
            try db.execute(
                sql: "INSERT INTO volume(domainId, name, poolId, size, chunkSize, uid, gid, mode, mtime, createdAt) "
                    + "VALUES (2, 'a', 1, 4096, 4096, 0, 0, 384, 1, 1)")
        }
        try q.close()

        let c = try Catalog.open(at: dir.catalogPath)
        let domains = try c.domains()
        #expect(
            domains.map { "\($0.id!) \($0.name) \($0.quotaVolumes ?? 0) \($0.pools ?? [])" } == [
                "1 default 0 []", "2 team 10 []",
            ])
        #expect(domains.allSatisfy { $0.pools == nil }, "no policy after the upgrade: any pool")
        #expect(try c.volumes().map { "\($0.domainId) \($0.name)" } == ["2 a"])

        var team = domains[1]
        team.pools = ["fast", "slow"]
        _ = try c.saveDomain(team)
        #expect(try c.domains()[1].pools == ["fast", "slow"])
        team.pools = nil
        _ = try c.saveDomain(team)
        #expect(try c.domains()[1].pools == nil)

        // A domain that still holds a volume cannot go; an empty one can.
        #expect(throws: TesseraError.self) { try c.deleteDomain(2) }
        let empty = try c.saveDomain(DomainRecord(name: "empty", createdAt: 6))
        try c.deleteDomain(empty.id!)
        #expect(try c.domains().map(\.name) == ["default", "team"])
        _ = try Catalog.open(at: dir.catalogPath)  // no migration runs twice
    }
}
