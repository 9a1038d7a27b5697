// S3Endpoint — where a store's objects live: scheme, host, port, bucket, key prefix, addressing style
// and region, parsed from one URL `http[s]://HOST[:PORT]/BUCKET[/PREFIX]`.
//
// State: immutable after parsing.
// Invariants:
// - `bucket` follows the S3 bucket-name rules (3–63 of a-z 0-9 . -, starting and ending with a letter or
//   digit); `prefix` has no leading or trailing slash and no empty, "." or ".." segment (may be empty).
// - No credentials ever live in the URL: `user:pass@` is refused, so a URL can be logged as it is.
// - Path style: the request goes to HOST[:PORT]/BUCKET/KEY. Virtual-host style: to BUCKET.HOST[:PORT]/KEY.
import Foundation
import TesseraStores

public struct S3Endpoint: Sendable, Equatable, CustomStringConvertible {
    /// Where the bucket name goes in a request.
    public enum AddressingStyle: String, Sendable, Equatable {
        /// `http://host/bucket/key` — what Ceph RGW, MinIO and moto accept without DNS set-up.
        case path
        /// `http://bucket.host/key` — what AWS prefers.
        case virtualHost = "virtual-host"
    }

    public let scheme: String
    public let host: String
    public let port: Int
    public let bucket: String
    /// Key prefix without leading or trailing slash; empty for the bucket's root.
    public let prefix: String
    public let style: AddressingStyle
    public let region: String

    public static let defaultRegion = "us-east-1"

    /// Parses `http[s]://HOST[:PORT]/BUCKET[/PREFIX]`. The region is `region`, else `AWS_REGION` from
    /// `environment`, else us-east-1. Throws a one-line message naming what is wrong.
    public init(
        url: String, style: AddressingStyle = .path, region: String? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(StoreSetupError) {
        func bad(_ why: String) -> StoreSetupError {
            StoreSetupError("bad S3 URL \"\(url)\": \(why) (expected http[s]://HOST[:PORT]/BUCKET[/PREFIX])")
        }
        let rest: Substring
        if url.hasPrefix("http://") {
            scheme = "http"
            rest = url.dropFirst(7)
        } else if url.hasPrefix("https://") {
            scheme = "https"
            rest = url.dropFirst(8)
        } else {
            throw bad("the scheme must be http or https")
        }
        if rest.contains("?") || rest.contains("#") { throw bad("no query or fragment allowed") }
        guard let slash = rest.firstIndex(of: "/") else { throw bad("no bucket") }
        let authority = rest[..<slash]
        if authority.contains("@") { throw bad("credentials do not belong in the URL") }
        var hostPart = authority
        var portPart: Substring?
        if authority.hasPrefix("[") {  // [IPv6]:port
            guard let close = authority.firstIndex(of: "]") else { throw bad("unclosed [ in the host") }
            hostPart = authority[...close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw bad("junk after the IPv6 address") }
                portPart = after.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            hostPart = authority[..<colon]
            portPart = authority[authority.index(after: colon)...]
        }
        if hostPart.isEmpty { throw bad("no host") }
        let hostAllowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: ".-_[]:"))
        if hostPart.unicodeScalars.contains(where: { !hostAllowed.contains($0) || !$0.isASCII }) {
            throw bad("the host has characters a host name cannot have")
        }
        host = String(hostPart).lowercased()
        if let portPart {
            guard let p = Int(portPart), (1...65535).contains(p), portPart.allSatisfy(\.isASCII) else {
                throw bad("the port must be a number from 1 to 65535")
            }
            port = p
        } else {
            port = scheme == "https" ? 443 : 80
        }
        let path = rest[rest.index(after: slash)...]
        let trimmed = path.hasSuffix("/") ? path.dropLast() : path
        var segments = trimmed.split(separator: "/", omittingEmptySubsequences: false)
        guard let first = segments.first, !first.isEmpty else { throw bad("no bucket") }
        let bucketName = String(first)
        if let why = Self.bucketNameProblem(bucketName) { throw bad("bucket \"\(bucketName)\" \(why)") }
        bucket = bucketName
        segments.removeFirst()
        let keyAllowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._~"))
        for s in segments {
            if s.isEmpty || s == "." || s == ".." { throw bad("the prefix has an empty, \".\" or \"..\" segment") }
            if s.unicodeScalars.contains(where: { !$0.isASCII || !keyAllowed.contains($0) }) {
                throw bad("the prefix may use only letters, digits and - . _ ~")
            }
        }
        prefix = segments.joined(separator: "/")
        self.style = style
        let r = region ?? environment["AWS_REGION"].flatMap { $0.isEmpty ? nil : $0 } ?? Self.defaultRegion
        if r.isEmpty || r.contains(where: { !($0.isLetter || $0.isNumber || $0 == "-") }) {
            throw StoreSetupError("bad S3 region \"\(r)\"")
        }
        self.region = r
    }

    /// Nil when `name` is a valid S3 bucket name, else what is wrong with it.
    static func bucketNameProblem(_ name: String) -> String? {
        guard (3...63).contains(name.count) else { return "must be 3 to 63 characters long" }
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789.-")
        guard name.allSatisfy(allowed.contains) else { return "may use only a-z, 0-9, '.' and '-'" }
        guard let f = name.first, let l = name.last, f.isLetter || f.isNumber, l.isLetter || l.isNumber else {
            return "must start and end with a letter or a digit"
        }
        return nil
    }

    /// `host[:port]` as it goes in the Host header (the port only when not the scheme's default).
    var authority: String {
        let h = style == .virtualHost ? "\(bucket).\(host)" : host
        let defaultPort = scheme == "https" ? 443 : 80
        return port == defaultPort ? h : "\(h):\(port)"
    }

    /// The key an object named `name` has under this endpoint's prefix.
    public func key(_ name: String) -> String { prefix.isEmpty ? name : prefix + "/" + name }

    /// The canonical (URI-encoded) path of the object `key`, or of the bucket itself when `key` is nil.
    func canonicalPath(key: String?) -> String {
        let encodedKey = key.map { SigV4.uriEncode($0, keepSlash: true) }
        switch style {
        case .path: return "/" + bucket + (encodedKey.map { "/" + $0 } ?? "")
        case .virtualHost: return "/" + (encodedKey ?? "")
        }
    }

    /// The URL a request for `key` (nil: the bucket) with an already encoded query goes to.
    func url(key: String?, encodedQuery: String) -> String {
        "\(scheme)://\(authority)\(canonicalPath(key: key))" + (encodedQuery.isEmpty ? "" : "?" + encodedQuery)
    }

    /// The URL without credentials (there never are any): safe for logs.
    public var description: String {
        let defaultPort = scheme == "https" ? 443 : 80
        let hp = port == defaultPort ? host : "\(host):\(port)"
        return "\(scheme)://\(hp)/\(bucket)" + (prefix.isEmpty ? "" : "/" + prefix)
    }
}
