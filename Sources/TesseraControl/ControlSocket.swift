// The control socket: a Unix stream socket in the data directory (mode 0600 in a 0700 directory, so
// only root reaches it). One connection carries one request line and one reply line, both JSON.
import Foundation
import Synchronization
import TesseraCore

#if canImport(Glibc)
    import Glibc
#endif

private func makeAddress(_ path: String) -> sockaddr_un? {
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return nil }
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    return addr
}

private func readLine(_ fd: Int32, limit: Int = 16 << 20) -> Data? {
    var data = Data()
    var buf = [UInt8](repeating: 0, count: 65536)
    while data.count < limit {
        let n = read(fd, &buf, buf.count)
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return data.isEmpty ? nil : data }
        data.append(contentsOf: buf[0..<n])
        if buf[n - 1] == UInt8(ascii: "\n") { return data }
    }
    return nil
}

/// Reads newline-terminated lines from a socket, keeping what arrived past the current line.
private struct LineReader {
    let fd: Int32
    var pending = Data()
    init(_ fd: Int32) { self.fd = fd }

    mutating func next(limit: Int = 16 << 20) -> Data? {
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            if let nl = pending.firstIndex(of: UInt8(ascii: "\n")) {
                let line = pending[pending.startIndex...nl]
                pending = Data(pending[(nl + 1)...])
                return Data(line)
            }
            if pending.count >= limit { return nil }
            let n = read(fd, &buf, buf.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return nil }
            pending.append(contentsOf: buf[0..<n])
        }
    }
}

private func writeAll(_ fd: Int32, _ data: Data) -> Bool {
    data.withUnsafeBytes { raw in
        var done = 0
        while done < raw.count {
            let n = write(fd, raw.baseAddress! + done, raw.count - done)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            done += n
        }
        return true
    }
}

/// Serves a ControlService on the socket from a thread of its own. `@unchecked Sendable`: the listening
/// fd is set once in init and closed once in stop().
public final class ControlServer: @unchecked Sendable {
    private let path: String
    private let listenFD: Int32
    private let service: ControlService
    private let stopped = Mutex(false)

    public init(path: String, service: ControlService) throws(TesseraError) {
        self.path = path
        self.service = service
        unlink(path)
        guard var addr = makeAddress(path) else { throw TesseraError(.invalid, "socket path too long: \(path)") }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw TesseraError(.io, "socket: \(String(cString: strerror(errno)))") }
        let old = umask(0o177)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        umask(old)
        if rc != 0 || listen(fd, 64) != 0 {
            let e = String(cString: strerror(errno))
            close(fd)
            throw TesseraError(.io, "cannot listen on \(path): \(e)")
        }
        chmod(path, 0o600)
        listenFD = fd
    }

    public func start() {
        let t = Thread { [self] in
            while !stopped.withLock({ $0 }) {
                let c = accept(listenFD, nil, nil)
                if c < 0 {
                    if errno == EINTR || errno == ECONNABORTED { continue }
                    return
                }
                // Each connection on its own thread: a slow request (flush) never blocks `status`.
                let conn = c
                Thread.detachNewThread { [self] in
                    defer { close(conn) }
                    guard let line = readLine(conn) else { return }
                    let reply: ControlReply
                    do {
                        let request = try JSONDecoder().decode(ControlRequest.self, from: line)
                        var lastSent = ContinuousClock.now
                        reply = service.handle(request) { done, total in
                            // A progress line at most every 200 ms (and the last one).
                            guard done == total || ContinuousClock.now - lastSent > .milliseconds(200) else { return }
                            lastSent = .now
                            var out = (try? JSONEncoder().encode(ControlReply(progress: [done, total]))) ?? Data()
                            out.append(UInt8(ascii: "\n"))
                            _ = writeAll(conn, out)
                        }
                    } catch {
                        reply = ControlReply(error: TesseraError(.invalid, "malformed control request: \(error)"))
                    }
                    var out = (try? JSONEncoder().encode(reply)) ?? Data()
                    out.append(UInt8(ascii: "\n"))
                    _ = writeAll(conn, out)
                }
            }
        }
        t.name = "tessera-control"
        t.start()
    }

    public func stop() {
        stopped.withLock { $0 = true }
        shutdown(listenFD, Int32(SHUT_RDWR))
        close(listenFD)
        unlink(path)
    }
}

/// The CLI's side of the socket.
public enum ControlClient {
    /// Sends `request` to the mount serving `socketPath`. Returns nil when no mount answers there
    /// (no socket, or a stale one), so the caller can work on the catalog itself.
    public static func send(
        _ request: ControlRequest, socketPath: String,
        progress: (Int, Int) -> Void = { _, _ in }
    ) throws(TesseraError) -> ControlReply? {
        guard var addr = makeAddress(socketPath) else { return nil }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw TesseraError(.io, "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if rc != 0 { return nil }
        var data: Data
        do { data = try JSONEncoder().encode(request) } catch { throw TesseraError(.invalid, "\(error)") }
        data.append(UInt8(ascii: "\n"))
        guard writeAll(fd, data) else { throw TesseraError(.io, "the mount stopped answering on \(socketPath)") }
        var lines = LineReader(fd)
        while true {
            guard let line = lines.next() else {
                throw TesseraError(.io, "the mount stopped answering on \(socketPath)")
            }
            let reply: ControlReply
            do { reply = try JSONDecoder().decode(ControlReply.self, from: line) } catch {
                throw TesseraError(.io, "unreadable reply from the mount: \(error)")
            }
            guard let p = reply.progress, p.count == 2 else { return reply }
            progress(p[0], p[1])
        }
    }
}
