// S3Credentials — the access key pair (and optional session token) that signs requests, loaded from the
// environment or from a protected file, written back to such a file.
//
// State: immutable.
// Invariants:
// - The secret and the session token never appear in `description`, `debugDescription`, a log line or
//   an error message: only the access key ID (not a secret in AWS's model) is shown.
// - A credentials file is used only when it is a regular file (not a symlink) owned by root or by the
//   current uid, with no group or other permission bits; otherwise loading refuses and says which rule
//   failed.
// - `write(to:)` creates the file with mode 0600 under a temporary name, fsyncs it and renames it into
//   place, so a reader never sees a half-written or too-open file.
// File format: one `name = value` per line, names access_key_id, secret_access_key, session_token
// (optional); blank lines and lines starting with # are ignored.
import Foundation
import TesseraStores

#if canImport(Glibc)
    import Glibc
#endif

public struct S3Credentials: Sendable, Equatable, CustomStringConvertible, CustomDebugStringConvertible {
    public let accessKeyID: String
    let secretAccessKey: String
    let sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    public var description: String {
        "S3Credentials(accessKeyID: \(accessKeyID), secret: <redacted>"
            + (sessionToken == nil ? ")" : ", sessionToken: <redacted>)")
    }
    public var debugDescription: String { description }

    /// From AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and (optional) AWS_SESSION_TOKEN.
    public static func fromEnvironment(
        _ environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(StoreSetupError) -> S3Credentials {
        guard let id = environment["AWS_ACCESS_KEY_ID"], !id.isEmpty else {
            throw StoreSetupError("S3 credentials: AWS_ACCESS_KEY_ID is not set")
        }
        guard let secret = environment["AWS_SECRET_ACCESS_KEY"], !secret.isEmpty else {
            throw StoreSetupError("S3 credentials: AWS_SECRET_ACCESS_KEY is not set")
        }
        let token = environment["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        return S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: token)
    }

    /// Loads a credentials file (see the format above), refusing one that others could read or change.
    public static func load(from path: String) throws(StoreSetupError) -> S3Credentials {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        if fd < 0 {
            let why = errno == ELOOP ? "it is a symbolic link" : String(cString: strerror(errno))
            throw StoreSetupError("cannot open S3 credentials file \(path): \(why)")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw StoreSetupError("cannot stat S3 credentials file \(path): \(String(cString: strerror(errno)))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw StoreSetupError("S3 credentials file \(path) is not a regular file")
        }
        guard st.st_uid == 0 || st.st_uid == getuid() else {
            throw StoreSetupError("S3 credentials file \(path) is owned by uid \(st.st_uid), not by root or by us")
        }
        guard st.st_mode & 0o077 == 0 else {
            throw StoreSetupError(
                "S3 credentials file \(path) has mode \(String(st.st_mode & 0o777, radix: 8)): others may read it; "
                    + "chmod 600 it")
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw StoreSetupError("cannot read S3 credentials file \(path): \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            bytes += chunk[0..<n]
            if bytes.count > 64 * 1024 { throw StoreSetupError("S3 credentials file \(path) is too large") }
        }
        return try parse(String(decoding: bytes, as: UTF8.self), source: path)
    }

    /// Parses the file format; messages name the line and the field, never a value.
    static func parse(_ text: String, source: String) throws(StoreSetupError) -> S3Credentials {
        var fields: [String: String] = [:]
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let eq = line.firstIndex(of: "=") else {
                throw StoreSetupError("S3 credentials file \(source), line \(n + 1): expected name = value")
            }
            let name = line[..<eq].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            guard ["access_key_id", "secret_access_key", "session_token"].contains(name) else {
                throw StoreSetupError("S3 credentials file \(source), line \(n + 1): unknown name \"\(name)\"")
            }
            guard fields[name] == nil else {
                throw StoreSetupError("S3 credentials file \(source), line \(n + 1): \(name) given twice")
            }
            guard !value.isEmpty else {
                throw StoreSetupError("S3 credentials file \(source), line \(n + 1): \(name) is empty")
            }
            fields[name] = value
        }
        guard let id = fields["access_key_id"] else {
            throw StoreSetupError("S3 credentials file \(source) has no access_key_id")
        }
        guard let secret = fields["secret_access_key"] else {
            throw StoreSetupError("S3 credentials file \(source) has no secret_access_key")
        }
        return S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: fields["session_token"])
    }

    /// Writes these credentials to `path` (mode 0600, atomically replacing any old file).
    public func write(to path: String) throws(StoreSetupError) {
        var text = "access_key_id = \(accessKeyID)\nsecret_access_key = \(secretAccessKey)\n"
        if let sessionToken { text += "session_token = \(sessionToken)\n" }
        let temp = path + ".tmp-\(getpid())"
        unlink(temp)
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        if fd < 0 {
            throw StoreSetupError("cannot create S3 credentials file \(temp): \(String(cString: strerror(errno)))")
        }
        func fail(_ what: String) -> StoreSetupError {
            let message = "cannot \(what) S3 credentials file \(temp): \(String(cString: strerror(errno)))"
            close(fd)
            unlink(temp)
            return StoreSetupError(message)
        }
        // The umask can only remove bits from 0600, but say it: the file is 0600 whatever the umask.
        if fchmod(fd, 0o600) != 0 { throw fail("chmod") }
        let bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw fail("write")
            }
            done += n
        }
        if fsync(fd) != 0 { throw fail("fsync") }
        close(fd)
        if rename(temp, path) != 0 {
            let message = "cannot rename \(temp) to \(path): \(String(cString: strerror(errno)))"
            unlink(temp)
            throw StoreSetupError(message)
        }
    }
}
