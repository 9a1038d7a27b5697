// S3TestServer — the S3 endpoint the tests talk to, and a per-test fixture with its own random prefix.
//
// Which server: TESSERA_TEST_S3_URL (with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) when set — Ceph RGW
// started by Scripts/test; otherwise a `moto_server` this process starts on a free loopback port and kills
// at exit. If neither works, every S3 test fails with the reason: never a silent skip.
// State: the server (started once per test process), its bucket (created if missing).
// Invariants: each fixture uses `t-<random>/` under the URL's prefix and deletes every object under it
// when it goes away, so tests never see each other's objects and leave the bucket as they found it.
import Foundation
import TesseraCore
import TesseraS3
import TesseraStores
import TesseraTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

struct S3TestServer: Sendable {
    /// `http://host:port/bucket[/prefix]` of the server under test.
    let url: String
    let credentials: S3Credentials
    /// moto accepts any credentials and checks no Content-MD5 or payload hash.
    let isMoto: Bool

    static let shared: Result<S3TestServer, TestSetupFailure> = {
        do { return .success(try start()) } catch let e as TestSetupFailure { return .failure(e) } catch {
            return .failure(TestSetupFailure(message: "\(error)"))
        }
    }()

    static var isMoto: Bool { (try? shared.get().isMoto) ?? false }

    static func get() throws -> S3TestServer { try shared.get() }

    private static func start() throws -> S3TestServer {
        let env = ProcessInfo.processInfo.environment
        let server: S3TestServer
        if let url = env["TESSERA_TEST_S3_URL"], !url.isEmpty {
            let creds: S3Credentials
            do { creds = try S3Credentials.fromEnvironment() } catch {
                throw TestSetupFailure(message: "TESSERA_TEST_S3_URL is set but: \(error)")
            }
            server = S3TestServer(url: url, credentials: creds, isMoto: false)
        } else {
            let port = try startMoto()
            server = S3TestServer(
                url: "http://127.0.0.1:\(port)/tessera-test",
                credentials: S3Credentials(accessKeyID: "testing", secretAccessKey: "testing"), isMoto: true)
        }
        let endpoint = try S3Endpoint(url: server.url)
        let client = S3Client(endpoint: endpoint, credentials: server.credentials)
        defer { client.shutdown() }
        do { try client.createBucket() } catch {
            throw TestSetupFailure(message: "cannot create bucket \(endpoint.bucket) on \(endpoint): \(error)")
        }
        return server
    }

    /// Starts `moto_server -H 127.0.0.1 -p PORT` and waits until it answers (20 s at most).
    private static func startMoto() throws -> Int {
        try startLocalServer(name: "moto_server") { "moto_server -H 127.0.0.1 -p \($0)" }
    }

    /// Runs the shell command `command(port)` on a free loopback port and waits until the port accepts
    /// connections (20 s at most). The server dies with this test process, however it ends: a shell holds
    /// it and kills it when its stdin (a pipe whose write end only this process holds) reaches EOF, which
    /// the kernel guarantees at exit. SIGKILL, because children inherit our threads' signal mask, in which
    /// SIGTERM (and SIGCHLD, so a shell's `wait` never returns) is blocked.
    static func startLocalServer(name: String, _ command: (Int) -> String) throws -> Int {
        let port = freePort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        // fd 3 keeps the pipe for the watcher (an asynchronous list's stdin is /dev/null); `exec` makes
        // the server this very process, so $$ names it and `isRunning` follows it.
        process.arguments = ["-c", "exec 3<&0; (read _ <&3; kill -9 $$) & exec \(command(port)) 3<&- </dev/null"]
        let lifeline = Pipe()
        lifelines.withLock { $0.append(lifeline) }
        process.standardInput = lifeline
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-\(name)-\(port).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        do { try process.run() } catch {
            throw TestSetupFailure(message: "cannot start \(name): \(error)")
        }
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if !process.isRunning {
                let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
                throw TestSetupFailure(
                    message: "\(name) exited at once (TESSERA_TEST_S3_URL is not set, so the S3 tests need it; "
                        + "Scripts/test starts Ceph RGW instead): \(text.suffix(400))")
            }
            if canConnect(port: port) { return port }
            usleep(100_000)
        }
        throw TestSetupFailure(message: "\(name) did not answer on 127.0.0.1:\(port) within 20 s (log: \(log.path))")
    }

    static func canConnect(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    /// A loopback port nothing listens on (bound and released at once).
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
        }
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}

/// Their write ends stay open for the life of the test process (see startLocalServer).
private let lifelines = Locked<[Pipe]>([])

struct TestSetupFailure: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

/// An S3Store under a fresh random prefix, removed with all its objects when the fixture goes away.
final class S3Fixture: @unchecked Sendable {
    let server: S3TestServer
    let endpoint: S3Endpoint
    /// A raw client on the same prefix, for looking at and tampering with objects directly.
    let client: S3Client
    let store: S3Store
    let chunkSize: Int

    init(chunkSize: Int = 64 * 1024, capacity: UInt64 = 1 << 40, pageSize: Int? = nil) throws {
        server = try S3TestServer.get()
        let base = try S3Endpoint(url: server.url)
        let prefix =
            (base.prefix.isEmpty ? "" : base.prefix + "/") + "t-" + String(UInt64.random(in: 1...UInt64.max), radix: 36)
        endpoint = try S3Endpoint(url: "http://\(base.host):\(base.port)/\(base.bucket)/\(prefix)")
        client = S3Client(endpoint: endpoint, credentials: server.credentials)
        self.chunkSize = chunkSize
        store = try S3Store(
            endpoint: endpoint, credentials: server.credentials, chunkSize: chunkSize, capacity: capacity)
    }

    /// Another store over the same prefix (a reopen).
    func reopen(capacity: UInt64 = 1 << 40) throws -> S3Store {
        try S3Store(endpoint: endpoint, credentials: server.credentials, chunkSize: chunkSize, capacity: capacity)
    }

    deinit {
        let keys = (try? client.listAll(prefix: endpoint.key(""))) ?? []
        let client = self.client
        let all = keys.map(\.key)
        Threads.run(4) { t in
            for (i, k) in all.enumerated() where i % 4 == t { try? client.delete(k) }
        }
        client.shutdown()
        store.close()
    }

    func chunk(_ n: Int) -> ChunkID { ChunkID(unit: UnitID(1), serial: UInt64(n) + 1) }
}
