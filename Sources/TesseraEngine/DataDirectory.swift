import Foundation
import TesseraCore

#if canImport(Glibc)
    import Glibc
#endif

/// Where one Tessera installation lives: the catalog, the default store, the control socket and the
/// lock that makes exactly one process the catalog's owner.
public struct DataDirectory: Sendable {
    public let path: String
    public init(path: String) { self.path = path }

    /// `--data`, else `$TESSERA_DATA`, else /var/lib/tessera for root, else ~/.local/share/tessera.
    public static func resolve(_ explicit: String?) -> DataDirectory {
        if let explicit, !explicit.isEmpty { return DataDirectory(path: absolute(explicit)) }
        if let env = ProcessInfo.processInfo.environment["TESSERA_DATA"], !env.isEmpty {
            return DataDirectory(path: absolute(env))
        }
        if getuid() == 0 { return DataDirectory(path: "/var/lib/tessera") }
        return DataDirectory(path: NSHomeDirectory() + "/.local/share/tessera")
    }

    static func absolute(_ p: String) -> String {
        p.hasPrefix("/") ? p : FileManager.default.currentDirectoryPath + "/" + p
    }

    public var catalogPath: String { path + "/catalog.db" }
    public var socketPath: String { path + "/control.sock" }
    public var lockPath: String { path + "/lock" }
    public var logPath: String { path + "/tessera.log" }
    public var defaultStorePath: String { path + "/stores/default" }
    public var storesPath: String { path + "/stores" }
    /// CDP journals, one directory per protected volume (named by its id).
    public var cdpPath: String { path + "/cdp" }

    /// The directories under DATA/stores that were a store: they hold a store.json or chunk files.
    public func usedStoreDirectories() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: storesPath)) ?? []
        return names.sorted().map { storesPath + "/" + $0 }.filter { Self.looksLikeStore($0) }
    }

    /// `dir` holds a store.json or at least one chunk file (ROOT/chunks/XX/ID).
    public static func looksLikeStore(_ dir: String) -> Bool {
        if FileManager.default.fileExists(atPath: dir + "/store.json") { return true }
        return chunkFileCount(dir, stopAt: 1) > 0
    }

    /// Chunk files of a directory store at `dir` (counting stops at `stopAt`).
    public static func chunkFileCount(_ dir: String, stopAt: Int = Int.max) -> Int {
        let fm = FileManager.default
        var n = 0
        for sub in (try? fm.contentsOfDirectory(atPath: dir + "/chunks")) ?? [] {
            for name in (try? fm.contentsOfDirectory(atPath: dir + "/chunks/" + sub)) ?? []
            where UInt64(name, radix: 16) != nil {
                n += 1
                if n >= stopAt { return n }
            }
        }
        return n
    }
}

/// An exclusive flock on DATA/lock, held for the life of the process that owns the catalog.
/// `@unchecked Sendable`: the fd is written once in init and only closed in deinit.
public final class DirectoryLock: @unchecked Sendable {
    private let fd: Int32

    public init(_ data: DataDirectory) throws(TesseraError) {
        let fd = open(data.lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        if fd < 0 {
            throw TesseraError(.io, "cannot open \(data.lockPath): \(String(cString: strerror(errno)))")
        }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            var buf = [UInt8](repeating: 0, count: 32)
            let n = pread(fd, &buf, 31, 0)
            let pid =
                n > 0
                ? String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : "?"
            close(fd)
            throw TesseraError(.busy, "the catalog in \(data.path) is in use by process \(pid)")
        }
        let pid = "\(getpid())\n"
        _ = ftruncate(fd, 0)
        _ = pid.withCString { pwrite(fd, $0, strlen($0), 0) }
        self.fd = fd
    }

    deinit { close(fd) }
}
