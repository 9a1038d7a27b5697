// S3Client — synchronous S3 requests (GET, PUT, HEAD, DELETE, self-copy, ListObjectsV2, HEAD/PUT bucket)
// for plain threads: FUSE workers call it and block until the answer.
//
// How: one AsyncHTTPClient per client on NIO's shared event loops; each request is an EventLoopFuture
// that the calling thread `.wait()`s for. Never call this from an event loop (NIO traps that) or from
// an async context that must not block.
// State: the HTTP client (open until `shutdown()` or deinit), the signer, the options.
// Invariants:
// - Every request is bounded: connect timeout, and a deadline for the whole request (`requestTimeout`).
//   Connection establishment is not retried inside AsyncHTTPClient (that would wait out the whole
//   connect timeout on a refused port); this file's own retry loop does it, with a bounded count.
// - Every request this client makes is idempotent (GET, HEAD, ListObjects; PUT of a whole object;
//   DELETE; a self-copy that sets metadata), so it is retried — at most `maxAttempts` times in all, with
//   exponential backoff and jitter — on connection errors, timeouts, 500/502/503/504, 429 and SlowDown.
//   No other 4xx is retried, nor TLS failures (a bad certificate does not heal).
// - Redirects are not followed and bodies are not decompressed: what was signed is what is sent.
// - Failures carry status, S3 error code and message, or a transport summary — never a secret.
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

/// Timeouts and retry policy of an S3Client.
/// The defaults bound what a client waits for a store that stopped answering: at most
/// maxAttempts × requestTimeout plus the backoffs (2 × 10 s + ≤ 1 s), so a read of an unreachable S3
/// store fails within about 21 s (README promises at most 30 s).
public struct S3ClientOptions: Sendable {
    public var connectTimeout: TimeAmount = .seconds(3)
    /// Deadline for one attempt of one request, from send to the last byte of the answer.
    public var requestTimeout: TimeAmount = .seconds(10)
    /// Attempts in all (first try included) for a request that fails in a retryable way.
    public var maxAttempts = 2
    /// The backoff before retry n (1-based) is min(backoffMax, backoffBase · 2^(n-1)), times a random
    /// factor in [0.5, 1] (jitter, so that many threads do not retry in lockstep).
    public var backoffBase: TimeAmount = .milliseconds(50)
    public var backoffMax: TimeAmount = .seconds(1)
    /// Connections kept per host (FUSE issues up to this many requests at once without queueing).
    public var maxConnections = 16
    public init() {}
}

/// Why a request failed, after retries.
public enum S3Failure: Error, Sendable, Equatable, CustomStringConvertible {
    /// The server answered with an error status; `code` and `message` come from its <Error> body.
    case status(Int, code: String?, message: String?)
    /// No connection: refused, unreachable, name not resolved, closed early.
    case connect(String)
    /// Connect timeout or request deadline exceeded.
    case timeout(String)
    /// TLS handshake or certificate failure.
    case tls(String)
    /// An answer that makes no sense (unparseable listing, wrong range).
    case protocolError(String)

    public var description: String {
        switch self {
        case .status(let s, let code, let message):
            return "HTTP \(s)" + (code.map { " \($0)" } ?? "") + (message.map { ": \($0)" } ?? "")
        case .connect(let why): return "cannot connect: \(why)"
        case .timeout(let why): return "timed out: \(why)"
        case .tls(let why): return "TLS failure: \(why)"
        case .protocolError(let why): return "bad answer: \(why)"
        }
    }

    /// The status code, when the server answered.
    public var status: Int? {
        if case .status(let s, _, _) = self { return s }
        return nil
    }
    public var code: String? {
        if case .status(_, let c, _) = self { return c }
        return nil
    }
}

/// One answer: status, headers and the body (nil when empty).
public struct S3Response: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: ByteBuffer?
    public var bodyBytes: [UInt8] { body.map { Array($0.readableBytesView) } ?? [] }
}

public final class S3Client: Sendable {
    public let endpoint: S3Endpoint
    public let options: S3ClientOptions
    private let signer: SigV4
    private let http: HTTPClient
    private let isShutDown = Atomic<Bool>(false)

    public init(endpoint: S3Endpoint, credentials: S3Credentials, options: S3ClientOptions = S3ClientOptions()) {
        self.endpoint = endpoint
        self.options = options
        self.signer = SigV4(credentials: credentials, region: endpoint.region)
        var config = HTTPClient.Configuration()
        config.redirectConfiguration = .disallow
        config.timeout = .init(connect: options.connectTimeout, read: options.requestTimeout)
        config.decompression = .disabled
        config.httpVersion = .http1Only
        config.connectionPool = .init(
            idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: options.maxConnections)
        config.connectionPool.retryConnectionEstablishment = false
        http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
    }

    deinit { shutdown() }

    /// Closes the connections. Idempotent; later requests fail with `.connect`.
    public func shutdown() {
        guard !isShutDown.exchange(true, ordering: .acquiringAndReleasing) else { return }
        try? http.syncShutdown()
    }

    // MARK: Requests

    /// GET `key`, the whole object or the bytes in `range` (answer 206, or 416 past the end).
    public func get(_ key: String, range: Range<Int>? = nil) throws(S3Failure) -> S3Response {
        var headers: [(String, String)] = []
        if let range { headers.append(("range", "bytes=\(range.lowerBound)-\(range.upperBound - 1)")) }
        return try send(.GET, key: key, headers: headers, accept: [200, 206, 416])
    }

    /// PUT `body` as the whole object `key`, with these `x-amz-meta-` metadata (names without prefix).
    public func put(_ key: String, body: UnsafeRawBufferPointer, metadata: [String: String] = [:]) throws(S3Failure) {
        var headers: [(String, String)] = [
            ("content-type", "application/octet-stream"), ("content-md5", SigV4.contentMD5(body)),
        ]
        for (name, value) in metadata.sorted(by: { $0.key < $1.key }) { headers.append(("x-amz-meta-" + name, value)) }
        _ = try send(.PUT, key: key, headers: headers, body: body)
    }

    /// HEAD `key`: its size and metadata. 404 throws `.status(404, …)`.
    public func head(_ key: String) throws(S3Failure) -> S3Response {
        try send(.HEAD, key: key)
    }

    /// DELETE `key`; deleting an absent key succeeds (S3 answers 204; some servers 404 NoSuchKey). A
    /// missing bucket (404 NoSuchBucket) is a failure.
    public func delete(_ key: String) throws(S3Failure) {
        do {
            _ = try send(.DELETE, key: key)
        } catch {
            if error.status == 404 && (error.code == nil || error.code == "NoSuchKey") { return }
            throw error
        }
    }

    /// Replaces the metadata of `key` by a server-side copy onto itself (no data moves through us).
    public func replaceMetadata(_ key: String, metadata: [String: String]) throws(S3Failure) {
        var headers: [(String, String)] = [
            ("x-amz-copy-source", "/\(endpoint.bucket)/" + SigV4.uriEncode(key, keepSlash: true)),
            ("x-amz-metadata-directive", "REPLACE"),
            ("content-type", "application/octet-stream"),
        ]
        for (name, value) in metadata.sorted(by: { $0.key < $1.key }) { headers.append(("x-amz-meta-" + name, value)) }
        let response = try send(.PUT, key: key, headers: headers)
        // CopyObject may answer 200 and still fail: the <Error> is then in the body.
        let text = String(decoding: response.bodyBytes, as: UTF8.self)
        if let (code, message) = S3XML.error(text) { throw .status(500, code: code, message: message) }
    }

    /// One page of ListObjectsV2 under `prefix`.
    public func list(prefix: String, continuationToken: String? = nil, maxKeys: Int = 1000) throws(S3Failure)
        -> S3ListPage
    {
        var query = [("list-type", "2"), ("prefix", prefix), ("max-keys", String(maxKeys))]
        if let continuationToken { query.append(("continuation-token", continuationToken)) }
        let response = try send(.GET, key: nil, query: query)
        let text = String(decoding: response.bodyBytes, as: UTF8.self)
        guard let page = S3XML.listPage(text) else {
            throw .protocolError("ListObjectsV2 answer is not a listing (\(text.prefix(120)))")
        }
        return page
    }

    /// Every object under `prefix`, following continuation tokens.
    public func listAll(prefix: String, pageSize: Int = 1000) throws(S3Failure) -> [S3Object] {
        var out: [S3Object] = []
        var token: String?
        repeat {
            let page = try list(prefix: prefix, continuationToken: token, maxKeys: pageSize)
            out += page.objects
            token = page.continuationToken
        } while token != nil
        return out
    }

    /// HEAD the bucket: succeeds when it exists and the credentials may use it.
    public func headBucket() throws(S3Failure) {
        _ = try send(.HEAD, key: nil)
    }

    /// Creates the bucket (for tests and set-up); an existing bucket of ours is fine.
    public func createBucket() throws(S3Failure) {
        var body: [UInt8] = []
        if endpoint.region != S3Endpoint.defaultRegion {
            body = Array(
                ("<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>"
                    + endpoint.region + "</LocationConstraint></CreateBucketConfiguration>").utf8)
        }
        let result = body.withUnsafeBytes { raw in
            Result { () throws(S3Failure) in try send(.PUT, key: nil, body: raw) }
        }
        if case .failure(let failure) = result, failure.code != "BucketAlreadyOwnedByYou" { throw failure }
    }

    /// Deletes the (empty) bucket, for tests.
    public func deleteBucket() throws(S3Failure) {
        _ = try send(.DELETE, key: nil)
    }

    // MARK: Sending

    /// Signs and sends one request, retrying as the header says. Statuses in `accept` (and every 2xx)
    /// are answers; any other status is a failure.
    func send(
        _ method: HTTPMethod, key: String?, query: [(String, String)] = [], headers: [(String, String)] = [],
        body: UnsafeRawBufferPointer? = nil, accept: Set<Int> = []
    ) throws(S3Failure) -> S3Response {
        let payloadHash = body.map(SigV4.payloadHash) ?? SigV4.emptyPayloadHash
        let buffer = body.map { ByteBuffer(bytes: $0) }
        let path = endpoint.canonicalPath(key: key)
        let encodedQuery = SigV4.canonicalQuery(query)
        let url = endpoint.url(key: key, encodedQuery: encodedQuery)
        var attempt = 1
        while true {
            let result = attemptOnce(
                method, url: url, path: path, query: query, headers: headers, payloadHash: payloadHash, body: buffer,
                accept: accept)
            switch result {
            case .success(let response): return response
            case .failure(let failure):
                guard attempt < options.maxAttempts, Self.isRetryable(failure) else { throw failure }
                let cap = min(options.backoffMax.nanoseconds, options.backoffBase.nanoseconds << (attempt - 1))
                let sleep = Double(cap) * Double.random(in: 0.5...1.0)
                usleep(useconds_t(sleep / 1000))
                attempt += 1
            }
        }
    }

    private func attemptOnce(
        _ method: HTTPMethod, url: String, path: String, query: [(String, String)], headers: [(String, String)],
        payloadHash: String, body: ByteBuffer?, accept: Set<Int>
    ) -> Result<S3Response, S3Failure> {
        if isShutDown.load(ordering: .acquiring) { return .failure(.connect("the client is shut down")) }
        var toSign = headers
        toSign.append(("host", endpoint.authority))
        let added = signer.sign(
            method: method.rawValue, canonicalPath: path, query: query, headers: toSign, payloadHash: payloadHash)
        var h = HTTPHeaders()
        for (name, value) in toSign + added { h.add(name: name, value: value) }
        let response: HTTPClient.Response
        do {
            let request = try HTTPClient.Request(
                url: url, method: method, headers: h, body: body.map { .byteBuffer($0) })
            response = try http.execute(request: request, deadline: .now() + options.requestTimeout).wait()
        } catch {
            return .failure(classify(error))
        }
        let status = Int(response.status.code)
        let answer = S3Response(status: status, headers: response.headers, body: response.body)
        if (200..<300).contains(status) || accept.contains(status) { return .success(answer) }
        let text = String(decoding: answer.bodyBytes, as: UTF8.self)
        let parsed = S3XML.error(text)
        return .failure(.status(status, code: parsed?.code ?? nil, message: parsed?.message ?? nil))
    }

    static func isRetryable(_ failure: S3Failure) -> Bool {
        switch failure {
        case .status(let s, let code, _):
            return [500, 502, 503, 504, 429].contains(s) || code == "SlowDown" || code == "RequestTimeout"
        case .connect, .timeout: return true
        case .tls, .protocolError: return false
        }
    }

    /// Turns a transport error into a failure that names host:port, not the request's secrets.
    private func classify(_ error: any Error) -> S3Failure {
        let target = "\(endpoint.host):\(endpoint.port)"
        if let e = error as? HTTPClientError {
            switch e {
            case .connectTimeout, .tlsHandshakeTimeout, .getConnectionFromPoolTimeout:
                return .timeout("connecting to \(target)")
            case .readTimeout, .writeTimeout, .deadlineExceeded:
                return .timeout(
                    "request to \(target) took longer than \(options.requestTimeout.nanoseconds / 1_000_000) ms")
            case .invalidURL, .emptyHost:
                return .protocolError("bad request URL for \(target): \(e)")
            default:
                return .connect("\(target): \(e)")
            }
        }
        let text = String(describing: error)
        if text.contains("SSL") || text.contains("TLS") || text.contains("certificate") || text.contains("handshake") {
            return .tls("\(target): \(text)")
        }
        if let io = error as? IOError {
            return .connect("\(target): \(String(cString: strerror(io.errnoCode)))")
        }
        return .connect("\(target): \(text)")
    }
}
