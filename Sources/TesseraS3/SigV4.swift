// SigV4 — AWS Signature Version 4 for S3 requests: canonical request, string to sign, HMAC-SHA256 key
// derivation (swift-crypto), and the headers a signed request carries.
//
// State: the credentials and region; a cache of the day's signing key (derived once per UTC day).
// Invariants:
// - Every header the signer is given is signed (names lower-cased, values trimmed, sorted); `host`,
//   `x-amz-date`, `x-amz-content-sha256` and, with a session token, `x-amz-security-token` always are.
// - The payload hash is the hex SHA-256 of the exact body sent (S3 checks it: 400 XAmzContentSHA256Mismatch).
// - Path segments are URI-encoded once (S3 does not double-encode); query names and values are encoded
//   with the RFC 3986 unreserved set kept, and sorted by name, then value.
// - No secret leaves this file except inside the HMAC: the Authorization header holds the access key ID,
//   the scope and the signature only.
// Lock order: cachedKey is a leaf lock, never held across I/O.
import Crypto
import Foundation
import Synchronization

public final class SigV4: Sendable {
    public let credentials: S3Credentials
    public let region: String
    public let service: String
    private let cachedKey = Mutex<CachedKey?>(nil)

    private struct CachedKey: Sendable {
        var day: String
        var key: [UInt8]
    }

    public init(credentials: S3Credentials, region: String, service: String = "s3") {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// The hex SHA-256 of an empty payload.
    public static let emptyPayloadHash = hex(SHA256.hash(data: [UInt8]()))

    /// The hex SHA-256 of `payload`, for `x-amz-content-sha256`.
    public static func payloadHash(_ payload: UnsafeRawBufferPointer) -> String { hex(SHA256.hash(data: payload)) }

    /// The base64 MD5 of `payload`, for `Content-MD5` (S3 answers 400 BadDigest on a mismatch).
    public static func contentMD5(_ payload: UnsafeRawBufferPointer) -> String {
        Data(Insecure.MD5.hash(data: payload)).base64EncodedString()
    }

    /// The headers to add to a request: x-amz-date, x-amz-content-sha256, x-amz-security-token (with a
    /// session token) and Authorization. `headers` must already hold `host` and every other header that
    /// is to be sent and signed.
    public func sign(
        method: String, canonicalPath: String, query: [(String, String)], headers: [(String, String)],
        payloadHash: String, date: Date = Date()
    ) -> [(String, String)] {
        let (amzDate, day) = Self.timestamps(date)
        var all = headers
        all.append(("x-amz-date", amzDate))
        all.append(("x-amz-content-sha256", payloadHash))
        if let token = credentials.sessionToken { all.append(("x-amz-security-token", token)) }
        let canonical = canonicalRequest(
            method: method, canonicalPath: canonicalPath, query: query, headers: all, payloadHash: payloadHash)
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let toSign = stringToSign(amzDate: amzDate, scope: scope, canonicalRequest: canonical.request)
        let signature = Self.hex(HMAC<SHA256>.authenticationCode(for: Array(toSign.utf8), using: signingKey(day: day)))
        var added = Array(all[headers.count...])
        added.append(
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope),"
                    + "SignedHeaders=\(canonical.signedHeaders),Signature=\(signature)"
            ))
        return added
    }

    /// The canonical request and its signed-header list (exposed for tests against AWS's examples).
    func canonicalRequest(
        method: String, canonicalPath: String, query: [(String, String)], headers: [(String, String)],
        payloadHash: String
    ) -> (request: String, signedHeaders: String) {
        let normalized = headers.map { (name, value) in
            (name.lowercased(), value.trimmingCharacters(in: .whitespaces).split(separator: " ").joined(separator: " "))
        }
        .sorted { $0.0 < $1.0 }
        let canonicalHeaders = normalized.map { "\($0.0):\($0.1)\n" }.joined()
        let signedHeaders = normalized.map(\.0).joined(separator: ";")
        let request = [
            method, canonicalPath, Self.canonicalQuery(query), canonicalHeaders, signedHeaders, payloadHash,
        ].joined(separator: "\n")
        return (request, signedHeaders)
    }

    func stringToSign(amzDate: String, scope: String, canonicalRequest: String) -> String {
        "AWS4-HMAC-SHA256\n\(amzDate)\n\(scope)\n" + Self.hex(SHA256.hash(data: Array(canonicalRequest.utf8)))
    }

    /// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, day), region), service), "aws4_request").
    func signingKey(day: String) -> SymmetricKey {
        if let cached = cachedKey.withLock({ $0 }), cached.day == day { return SymmetricKey(data: cached.key) }
        func hmac(_ key: SymmetricKey, _ text: String) -> SymmetricKey {
            SymmetricKey(data: Data(HMAC<SHA256>.authenticationCode(for: Array(text.utf8), using: key)))
        }
        let kDate = hmac(SymmetricKey(data: Array(("AWS4" + credentials.secretAccessKey).utf8)), day)
        let key = hmac(hmac(hmac(kDate, region), service), "aws4_request")
        let bytes = key.withUnsafeBytes { Array($0) }
        cachedKey.withLock { $0 = CachedKey(day: day, key: bytes) }
        return key
    }

    /// The encoded, sorted query string (also what goes on the URL).
    static func canonicalQuery(_ query: [(String, String)]) -> String {
        let encoded: [(name: String, value: String)] = query.map { pair in
            (uriEncode(pair.0, keepSlash: false), uriEncode(pair.1, keepSlash: false))
        }
        let sorted = encoded.sorted { a, b in a.name == b.name ? a.value < b.value : a.name < b.name }
        return sorted.map { pair in pair.name + "=" + pair.value }.joined(separator: "&")
    }

    /// RFC 3986 percent-encoding keeping A-Z a-z 0-9 - . _ ~ (and `/` when `keepSlash`), as SigV4 wants.
    static func uriEncode(_ s: String, keepSlash: Bool) -> String {
        var out = ""
        out.reserveCapacity(s.utf8.count)
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(b))
            case UInt8(ascii: "/") where keepSlash:
                out.append("/")
            default:
                out += "%" + String(b >> 4, radix: 16).uppercased() + String(b & 15, radix: 16).uppercased()
            }
        }
        return out
    }

    /// (yyyyMMdd'T'HHmmss'Z', yyyyMMdd) in UTC.
    static func timestamps(_ date: Date) -> (String, String) {
        var t = time_t(date.timeIntervalSince1970.rounded(.down))
        var tm = tm()
        gmtime_r(&t, &tm)
        let day = String(format: "%04d%02d%02d", Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1, Int(tm.tm_mday))
        return (day + String(format: "T%02d%02d%02dZ", Int(tm.tm_hour), Int(tm.tm_min), Int(tm.tm_sec)), day)
    }

    static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        for b in digest {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
