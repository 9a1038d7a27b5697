// The client's retry policy against a scripted HTTP server (Python's http.server, started by the test):
// transient failures (503 SlowDown, 500, 429) are retried with backoff until they pass or the attempts
// run out; a 400 or a 404 is not retried. The server counts the requests per path, so the tests see the
// exact number of attempts.

import Foundation
import TesseraCore
import Testing

@testable import TesseraS3

@Suite("S3Client retries")
struct S3RetryTests {
    /// Paths under /bkt/: `flaky-N…` fails N times with 503 SlowDown then answers 200 "hello";
    /// `fail-CODE…` always answers CODE; anything else 200. GET /bkt/__count/KEY gives KEY's request count.
    static let script = #"""
        import http.server, sys, collections, threading
        counts = collections.Counter()
        lock = threading.Lock()
        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def reply(self, code, body):
                self.send_response(code)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                if self.command != 'HEAD': self.wfile.write(body)
            def answer(self):
                path = self.path.split('?')[0]
                if path.startswith('/bkt/__count/'):
                    return self.reply(200, str(counts['/bkt/' + path[len('/bkt/__count/'):]]).encode())
                with lock:
                    counts[path] += 1
                    n = counts[path]
                name = path.split('/')[-1]
                if name.startswith('flaky-') and n <= int(name.split('-')[1]):
                    return self.reply(503, b'<Error><Code>SlowDown</Code><Message>slow down</Message></Error>')
                if name.startswith('fail-'):
                    code = int(name.split('-')[1])
                    return self.reply(code, b'<Error><Code>C%d</Code><Message>m</Message></Error>' % code)
                self.reply(200, b'hello')
            do_GET = do_HEAD = do_PUT = do_DELETE = answer
        http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
        """#

    static let port: Result<Int, TestSetupFailure> = {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-fake-s3-\(getpid()).py")
        do {
            try script.write(to: file, atomically: true, encoding: .utf8)
            return .success(try S3TestServer.startLocalServer(name: "fake-s3") { "python3 \(file.path) \($0)" })
        } catch let e as TestSetupFailure { return .failure(e) } catch {
            return .failure(TestSetupFailure(message: "\(error)"))
        }
    }()

    func client() throws -> S3Client {
        let port = try Self.port.get()
        var options = S3ClientOptions()
        options.backoffBase = .milliseconds(20)
        options.backoffMax = .milliseconds(200)
        options.maxAttempts = 4  // the policy under test; the default (2) bounds an outage's cost instead
        let endpoint = try S3Endpoint(url: "http://127.0.0.1:\(port)/bkt", environment: [:])
        return S3Client(
            endpoint: endpoint, credentials: S3Credentials(accessKeyID: "a", secretAccessKey: "s"), options: options)
    }

    func count(_ c: S3Client, _ key: String) throws -> Int {
        Int(String(decoding: try c.get("__count/" + key).bodyBytes, as: UTF8.self)) ?? -1
    }

    @Test func transientFailuresAreRetriedUntilTheyPass() throws {
        let c = try client()
        defer { c.shutdown() }
        let key = "flaky-2-\(UInt32.random(in: 0...UInt32.max))"
        #expect(try c.get(key).bodyBytes == Array("hello".utf8))
        #expect(try count(c, key) == 3, "two 503 SlowDown, then the answer")
    }

    @Test func attemptsAreBounded() throws {
        let c = try client()
        defer { c.shutdown() }
        for code in [500, 503, 429] {
            let key = "fail-\(code)-\(UInt32.random(in: 0...UInt32.max))"
            let start = Date()
            #expect(throws: S3Failure.status(code, code: "C\(code)", message: "m")) { _ = try c.get(key) }
            #expect(try count(c, key) == 4, "HTTP \(code): four attempts in all")
            #expect(Date().timeIntervalSince(start) < 2, "backoff stays bounded")
        }
    }

    @Test func clientErrorsAreNotRetried() throws {
        let c = try client()
        defer { c.shutdown() }
        for code in [400, 403, 404, 409] {
            let key = "fail-\(code)-\(UInt32.random(in: 0...UInt32.max))"
            #expect(throws: S3Failure.status(code, code: "C\(code)", message: "m")) { _ = try c.get(key) }
            #expect(try count(c, key) == 1, "HTTP \(code): one attempt")
        }
        // A PUT carries its body again on a retry (the ByteBuffer is kept, not consumed).
        let key = "flaky-1-\(UInt32.random(in: 0...UInt32.max))"
        try [1, 2, 3].withUnsafeBytes { try c.put(key, body: $0) }
        #expect(try count(c, key) == 2)
    }
}
