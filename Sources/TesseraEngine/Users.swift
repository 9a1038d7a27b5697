// Users of the HTTP API — a name, a role, the domain a domain-admin or operator acts in, and the SHA-256
// of a bearer token (catalog table `user`, migration v11-users). The token is made here from 32 random
// bytes and returned once; only its hash is stored, so a lost token is replaced (`rotateToken`), never
// shown again. Root on the control socket needs no user: it stays the super-user.
import Crypto
import Foundation
import TesseraCatalog
import TesseraCore

/// What `user list` prints (never the token or its hash).
public struct UserInfo: Codable, Sendable, Equatable {
    public var name: String
    public var role: UserRecord.Role
    /// The domain a domain-admin or operator acts in (nil for admin and auditor).
    public var domain: String?
    public var createdAt: Double
    public init(name: String, role: UserRecord.Role, domain: String?, createdAt: Double) {
        self.name = name
        self.role = role
        self.domain = domain
        self.createdAt = createdAt
    }
}

/// Bearer tokens: "tsr_" and 43 base64url characters (32 random bytes); stored as the SHA-256 of the
/// whole string in lower-case hex.
public enum APIToken {
    public static let prefix = "tsr_"

    /// A new token from the system's cryptographically secure generator (getrandom on Linux).
    public static func make() -> String {
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &rng) }
        let b64 = Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
        return prefix + b64
    }

    public static func hash(_ token: String) -> String {
        SHA256.hash(data: Data(token.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// Whether `token` has the shape `make` gives (a cheap refusal before any catalog lookup).
    public static func isWellFormed(_ token: String) -> Bool {
        guard token.hasPrefix(prefix), token.utf8.count == prefix.utf8.count + 43 else { return false }
        return token.utf8.dropFirst(prefix.utf8.count).allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c == 0x2d || c == 0x5f
        }
    }
}

extension Engine {
    /// Parses a role as the CLI and API spell it.
    public static func role(_ text: String) throws(TesseraError) -> UserRecord.Role {
        guard let role = UserRecord.Role(rawValue: text) else {
            let known = UserRecord.Role.allCases.map(\.rawValue).joined(separator: ", ")
            throw TesseraError(.invalid, "unknown role '\(text)' (one of \(known))")
        }
        return role
    }

    /// Checks that a role names a domain exactly when it acts inside one.
    public static func checkRoleDomain(_ role: UserRecord.Role, _ domain: String?) throws(TesseraError) {
        if role.isDomainScoped && domain == nil {
            throw TesseraError(.invalid, "role \(role.rawValue) acts inside one domain: name it (--domain)")
        }
        if !role.isDomainScoped, domain != nil {
            throw TesseraError(.invalid, "role \(role.rawValue) covers every domain: name none (no --domain)")
        }
    }

    /// `user add`: the new user and its token (shown once).
    public func addUser(_ name: String, role: UserRecord.Role, domain: String?) throws(TesseraError)
        -> (user: UserInfo, token: String)
    {
        try Self.checkName(name, "user")
        try Self.checkRoleDomain(role, domain)
        let domainId = try domain.map { d throws(TesseraError) in try domainID(d) }
        if try catalog.users().contains(where: { $0.name == name }) {
            throw TesseraError(.exists, "a user named '\(name)' already exists")
        }
        let token = APIToken.make()
        let u = try catalog.insertUser(
            UserRecord(
                name: name, role: role, domainId: domainId, tokenHash: APIToken.hash(token),
                createdAt: Date().timeIntervalSince1970))
        return (info(u), token)
    }

    public func userInfos() throws(TesseraError) -> [UserInfo] { try catalog.users().map(info) }

    /// `user remove`: its token stops working at once.
    public func removeUser(_ name: String) throws(TesseraError) {
        if try !catalog.deleteUser(name: name) { throw TesseraError(.notFound, "no user named '\(name)'") }
    }

    /// `user token NAME --rotate`: a new token; the old one stops working at once.
    public func rotateToken(_ name: String) throws(TesseraError) -> (user: UserInfo, token: String) {
        let token = APIToken.make()
        guard try catalog.updateUserToken(name: name, tokenHash: APIToken.hash(token)),
            let u = try catalog.users().first(where: { $0.name == name })
        else { throw TesseraError(.notFound, "no user named '\(name)'") }
        return (info(u), token)
    }

    /// The user a bearer token belongs to, or nil for a malformed, unknown or revoked token.
    public func authenticate(token: String) -> UserInfo? {
        guard APIToken.isWellFormed(token), let u = try? catalog.user(tokenHash: APIToken.hash(token)) else {
            return nil
        }
        return info(u)
    }

    /// The users acting in domain `id` (a domain is not deleted while it has any).
    func users(inDomain id: Int64) throws(TesseraError) -> [String] {
        try catalog.users().filter { $0.domainId == id }.map(\.name)
    }

    private func info(_ u: UserRecord) -> UserInfo {
        UserInfo(
            name: u.name, role: u.role, domain: u.domainId.map { domainName(id: $0) ?? "#\($0)" },
            createdAt: u.createdAt)
    }
}
