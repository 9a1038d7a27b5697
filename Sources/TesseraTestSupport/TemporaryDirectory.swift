// TemporaryDirectory — a fresh, private directory for one test, removed with everything in it when the
// object goes away. Keep the object alive for as long as the test uses the path.
//
// Address space: the local filesystem ($TMPDIR, else /tmp). Invariants: each instance has its own
// directory (mkdtemp), mode 0700; nothing outside it is touched.

import Foundation

#if canImport(Glibc)
    import Glibc
#endif

public final class TemporaryDirectory: Sendable {
    public let path: String

    public init(prefix: String = "tessera-test") throws {
        let base = ProcessInfo.processInfo.environment["TMPDIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array("\(base)/\(prefix).XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw TemporaryDirectoryError(message: "mkdtemp in \(base): \(String(cString: strerror(errno)))")
        }
        path = String(cString: made)
    }

    /// `path/name`, created as a directory when `create` is true.
    public func subdirectory(_ name: String, create: Bool = true) throws -> String {
        let p = path + "/" + name
        if create { try FileManager.default.createDirectory(atPath: p, withIntermediateDirectories: true) }
        return p
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

public struct TemporaryDirectoryError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}
