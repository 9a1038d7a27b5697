// MountPoint — what is at a mount point before Tessera mounts there or after its daemon is gone.
//
// A daemon killed with SIGKILL leaves its FUSE mount behind: the kernel aborts the connection, every
// access to the path fails with ENOTCONN ("Transport endpoint is not connected"), and nothing can be
// mounted there until it is detached. `inspect` tells such a dead Tessera mount apart from a live one,
// a missing path and a directory that already holds files; `clearDead` detaches it.
//
// The data directory records where its daemon mounted (DATA/mountpoint, written once the mount is
// ready, removed at a clean exit), so `status` and `unmount` find a dead mount without being told.
import CFuse3
import Foundation
import TesseraCore
import TesseraEngine

#if canImport(Glibc)
    import Glibc
#endif

public enum MountPoint {
    public enum State: Equatable, Sendable {
        case missing
        case notDirectory
        /// An empty directory: ready to mount on.
        case ready
        /// A directory that holds files (they would be hidden under the mount).
        case notEmpty
        /// A Tessera FUSE mount whose daemon is gone (the connection is aborted).
        case deadTessera
        /// Some live mount (Tessera's or another filesystem's), with its type.
        case mounted(fstype: String)
    }

    /// Looks at `path` without hanging on a dead mount: the mount table is read first, and a path that
    /// is a FUSE mount is only stat'ed to see whether its connection is alive (a dead one fails at once).
    public static func inspect(_ path: String) -> State {
        if let fstype = mountType(at: path) {
            var st = stat()
            if stat(path, &st) != 0 && errno == ENOTCONN {
                return fstype == "fuse.tessera" ? .deadTessera : .mounted(fstype: fstype)
            }
            return .mounted(fstype: fstype)
        }
        var st = stat()
        if stat(path, &st) != 0 { return errno == ENOTCONN ? .deadTessera : .missing }
        if (st.st_mode & S_IFMT) != S_IFDIR { return .notDirectory }
        guard let dir = opendir(path) else { return .notDirectory }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { return .notEmpty }
        }
        return .ready
    }

    /// Detaches a dead mount (lazily: nothing can be flushed through an aborted connection anyway).
    public static func clearDead(_ path: String) throws(TesseraError) {
        if umount2(path, Int32(MNT_DETACH)) != 0 {
            throw TesseraError(.io, "cannot clear the dead mount at \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// The filesystem type mounted exactly at `path` (the last such mount), from /proc/self/mountinfo.
    public static func mountType(at path: String) -> String? { entry(at: path)?.fstype }

    /// The FUSE connection number of the mount at `path` (its device minor; major is 0 for FUSE).
    static func connection(at path: String) -> String? {
        guard let device = entry(at: path)?.device, let minor = device.split(separator: ":").last else { return nil }
        return String(minor)
    }

    /// Ends a FUSE connection from outside, as `echo 1 > /sys/fs/fuse/connections/N/abort` does.
    static func abortConnection(_ connection: String) {
        let dir = "/sys/fs/fuse/connections"
        if !FileManager.default.fileExists(atPath: dir + "/" + connection) {
            _ = Glibc.mount("fusectl", dir, "fusectl", 0, nil)
        }
        let fd = open(dir + "/" + connection + "/abort", O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else {
            return Log.error("cannot abort FUSE connection \(connection): \(String(cString: strerror(errno)))")
        }
        _ = write(fd, "1", 1)
        close(fd)
    }

    /// The last mount exactly at `path`: its device (MAJ:MIN) and type, from /proc/self/mountinfo.
    static func entry(at path: String) -> (device: String, fstype: String)? {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
        var found: (String, String)?
        for line in text.split(separator: "\n") {
            // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER-OPTIONS
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count > 4, unescape(fields[4]) == path,
                let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count
            else { continue }
            found = (String(fields[2]), String(fields[dash + 1]))
        }
        return found
    }

    /// Mount table fields escape space, tab, newline and backslash as \ooo.
    static func unescape(_ field: Substring) -> String {
        guard field.contains("\\") else { return String(field) }
        var bytes: [UInt8] = []
        var u = Array(field.utf8)[...]
        while let b = u.popFirst() {
            if b == UInt8(ascii: "\\"), u.count >= 3,
                let v = UInt8(String(decoding: u.prefix(3), as: UTF8.self), radix: 8)
            {
                bytes.append(v)
                u = u.dropFirst(3)
            } else {
                bytes.append(b)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: the data directory's record of its mount

    static func recordPath(_ data: DataDirectory) -> String { data.path + "/mountpoint" }

    /// Where this data directory's daemon last mounted, if it did not exit cleanly since.
    public static func recorded(_ data: DataDirectory) -> String? {
        guard let text = try? String(contentsOfFile: recordPath(data), encoding: .utf8) else { return nil }
        let path = text.trimmingCharacters(in: .newlines)
        return path.isEmpty ? nil : path
    }

    public static func record(_ path: String, _ data: DataDirectory) {
        let tmp = recordPath(data) + ".tmp"
        guard FileManager.default.createFile(atPath: tmp, contents: Data((path + "\n").utf8)),
            rename(tmp, recordPath(data)) == 0
        else { return Log.error("cannot record the mount point in \(recordPath(data))") }
    }

    public static func forget(_ data: DataDirectory) { unlink(recordPath(data)) }

    /// The recorded mount point when it is a dead Tessera mount.
    public static func deadMount(of data: DataDirectory) -> String? {
        guard let path = recorded(data) else { return nil }
        return inspect(path) == .deadTessera ? path : nil
    }
}
