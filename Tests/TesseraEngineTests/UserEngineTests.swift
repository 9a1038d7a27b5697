// API users at the engine: tokens are random, shown once and kept only as their SHA-256; a token
// authenticates until it is rotated or its user removed; bad input changes nothing; an engine opens a
// catalog of the release before users and starts with none.

import Foundation
import TesseraCore
import Testing

@testable import TesseraCatalog
@testable import TesseraEngine

@Suite struct UserEngineTests {
    @Test func tokensHashWithSHA256AndHaveOneShape() {
        #expect(APIToken.hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let tokens = (0..<200).map { _ in APIToken.make() }
        #expect(Set(tokens).count == tokens.count)
        for t in tokens {
            #expect(APIToken.isWellFormed(t), "\(t)")
            #expect(t.utf8.count == 47)
        }
        for bad in [
            "", "tsr_", "Bearer x", String(tokens[0].dropLast()), tokens[0] + "A", "xyz_" + tokens[0].dropFirst(4),
        ] {
            #expect(!APIToken.isWellFormed(bad), "\(bad)")
        }
        #expect(!APIToken.isWellFormed(String(tokens[0].dropLast()) + "="))
    }

    @Test func aTokenAuthenticatesItsUserUntilRotatedOrRemoved() throws {
        let t = try TestData()
        try t.withEngine { e in
            try e.createDomain("red")
            let (admin, rootToken) = try e.addUser("root", role: .admin, domain: nil)
            #expect(admin == UserInfo(name: "root", role: .admin, domain: nil, createdAt: admin.createdAt))
            let (op, opToken) = try e.addUser("ops", role: .operator, domain: "red")
            #expect(op.domain == "red")
            #expect(e.authenticate(token: rootToken)?.name == "root")
            #expect(e.authenticate(token: opToken) == op)
            // Only the hash is stored.
            let stored = try e.catalog.users().map(\.tokenHash)
            #expect(Set(stored) == [APIToken.hash(rootToken), APIToken.hash(opToken)])
            #expect(!stored.contains(rootToken) && !stored.contains(opToken))

            let (_, newToken) = try e.rotateToken("ops")
            #expect(newToken != opToken)
            #expect(e.authenticate(token: opToken) == nil)
            #expect(e.authenticate(token: newToken)?.name == "ops")
            try e.removeUser("ops")
            #expect(e.authenticate(token: newToken) == nil)
            #expect(e.authenticate(token: APIToken.make()) == nil)
            #expect(e.authenticate(token: "") == nil)
            #expect(e.authenticate(token: APIToken.hash(rootToken)) == nil, "the stored hash is no token")
            #expect(try e.userInfos().map(\.name) == ["root"])
        }
    }

    @Test func badInputIsRefusedAndChangesNothing() throws {
        let t = try TestData()
        try t.withEngine { e in
            try e.createDomain("red")
            _ = try e.addUser("ops", role: .domainAdmin, domain: "red")
            let before = try e.catalog.users()
            expectCode(.invalid) { _ = try Engine.role("wizard") }
            #expect(try Engine.role("domain-admin") == .domainAdmin)
            expectCode(.invalid, "a domain-admin without a domain") {
                _ = try e.addUser("x", role: .domainAdmin, domain: nil)
            }
            expectCode(.invalid, "an operator without a domain") {
                _ = try e.addUser("x", role: .operator, domain: nil)
            }
            expectCode(.invalid, "an auditor with a domain") { _ = try e.addUser("x", role: .auditor, domain: "red") }
            expectCode(.notFound, "an unknown domain") { _ = try e.addUser("x", role: .operator, domain: "blue") }
            expectCode(.exists, "a duplicate") { _ = try e.addUser("ops", role: .admin, domain: nil) }
            expectCode(.invalid, "a bad name") { _ = try e.addUser("a/b", role: .admin, domain: nil) }
            expectCode(.notFound) { try e.removeUser("nobody") }
            expectCode(.notFound) { _ = try e.rotateToken("nobody") }
            expectCode(.busy, "a domain with users") { try e.deleteDomain("red") }
            #expect(try e.catalog.users() == before)
            try e.removeUser("ops")
            try e.deleteDomain("red")
        }
    }

    @Test func aCatalogOfThePreviousReleaseGainsUsers() throws {
        let t = try TestData()
        try t.withEngine { e in
            try e.createDomain("red")
            _ = try e.createVolumes(name: "v", size: t.chunkSize, domain: "red")
        }
        try t.rewriteCatalog(asOf: "v9-cdp")
        try t.withEngine { e in
            #expect(try e.volumeInfos(domain: "red").map(\.name) == ["v"])
            #expect(try e.userInfos().isEmpty)
            let (u, token) = try e.addUser("ops", role: .operator, domain: "red")
            #expect(e.authenticate(token: token) == u)
        }
        let names = try t.withEngine { e in try e.userInfos().map(\.name) }
        #expect(names == ["ops"])
    }
}
