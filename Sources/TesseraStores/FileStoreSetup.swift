// FileStore setup: formatting a file or block device as a file store, opening one, and the checks on the
// medium both make (what is there, its type, its lock).
import CLinux
import SystemPackage
import TesseraCore

#if canImport(Glibc)
    import Glibc
#endif

extension FileStore {
    /// Formats `path` as a new file store and opens it.
    ///
    /// - A path that does not exist becomes a regular file of `size` bytes, preallocated.
    /// - An empty regular file is grown to `size` and preallocated.
    /// - A block device is used whole, or its first `size` bytes (`size` must not exceed the device).
    /// Refuses a directory, a non-empty file that is not a file store, a path too small for the header
    /// and one chunk, and a file store or device that already holds one unless `force` is set.
    public static func create(path: String, size: UInt64?, chunkSize: Int, force: Bool = false)
        throws(StoreSetupError) -> FileStore
    {
        precondition(chunkSize > 0 && chunkSize % 4096 == 0, "chunk size must be a positive multiple of 4 KiB")
        var st = stat()
        var created = false
        let raw: Int32
        if stat(path, &st) != 0 {
            guard errno == ENOENT else { throw StoreSetupError("cannot use \(path): \(lastError())") }
            guard size != nil else { throw StoreSetupError("\(path) does not exist: a size is needed to create it") }
            raw = Glibc.open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if raw < 0 { throw StoreSetupError("cannot create \(path): \(lastError())") }
            created = true
            st.st_mode = S_IFREG
        } else {
            raw = try openExisting(path, st)
        }
        let fd = FileDescriptor(rawValue: raw)
        let isDevice = (st.st_mode & S_IFMT) == S_IFBLK
        do throws(StoreSetupError) {
            try lock(fd, path)
            // Size of what we format, and what is already there.
            var target: UInt64
            if isDevice {
                var bytes: UInt64 = 0
                if tessera_block_device_size(raw, &bytes) != 0 {
                    throw StoreSetupError("cannot read the size of \(path): \(lastError())")
                }
                if let size, size > bytes {
                    throw StoreSetupError("\(path) holds \(bytes) bytes, less than the \(size) asked for")
                }
                target = size ?? bytes
                if case .ours(let id) = sniff(fd), !force {
                    throw StoreSetupError(
                        "\(path) already holds a Tessera file store (\(id)); use force to format it again")
                }
            } else {
                let current = UInt64(st.st_size)
                if current > 0 {
                    switch sniff(fd) {
                    case .ours(let id):
                        guard force else {
                            throw StoreSetupError(
                                "\(path) already holds a Tessera file store (\(id)); use force to format it again")
                        }
                    case .foreign:
                        throw StoreSetupError(
                            "\(path) is not empty and is not a Tessera file store; refusing to overwrite it")
                    }
                    if ftruncate(raw, 0) != 0 { throw StoreSetupError("cannot truncate \(path): \(lastError())") }
                }
                guard let t = size ?? (current > 0 ? current : nil) else {
                    throw StoreSetupError("\(path) is empty: a size is needed to format it")
                }
                target = t
            }
            guard let layout = Layout(size: target, chunkSize: chunkSize) else {
                throw StoreSetupError(
                    "\(target) bytes at \(path) is too small for the header and one chunk of \(chunkSize) bytes "
                        + "(at least \(Layout.minimumSize(chunkSize: chunkSize)) bytes)")
            }
            target = UInt64(layout.end)
            var flags: UInt32 = 0
            if isDevice {
                // Wipe the old header first: a format interrupted halfway leaves no store, not a wrong one.
                try writeZeros(fd, at: 0, count: headerBytes, path)
                try syncSetup(fd, path)
                try writeZeros(fd, at: headerBytes, count: layout.dataOffset - headerBytes, path)
                let dataBytes = off_t(layout.slots) * off_t(chunkSize)
                if tessera_punch_hole(raw, off_t(layout.dataOffset), dataBytes) != 0 { flags |= flagNotZeroed }
            } else if tessera_allocate(raw, 0, off_t(target)) != 0 {
                let e = errno
                _ = ftruncate(raw, 0)
                if e == ENOSPC || e == EDQUOT {
                    throw StoreSetupError(
                        "not enough space on the filesystem holding \(path) for \(target) bytes (ENOSPC)")
                }
                throw StoreSetupError("cannot preallocate \(target) bytes for \(path): \(String(cString: strerror(e)))")
            }
            try syncSetup(fd, path)
            let header = Header(
                chunkSize: UInt64(chunkSize), slots: UInt64(layout.slots),
                dataOffset: UInt64(layout.dataOffset), flags: flags, uuid: randomUUID())
            do {
                _ = try fd.writeAll(toAbsoluteOffset: 0, header.encoded())
            } catch {
                throw StoreSetupError("cannot write the header of \(path): \(error)")
            }
            try syncSetup(fd, path)
            if created, !fsyncParent(of: path) {
                throw StoreSetupError("cannot sync the directory of \(path): \(lastError())")
            }
            return try FileStore(fd: fd, path: path, header: header, isBlockDevice: isDevice)
        } catch {
            try? fd.close()
            if created { unlink(path) }
            throw error
        }
    }

    /// Opens the file store at `path`, checking its header: magic, format version, chunk size and that
    /// the file or device is as large as the slot count needs.
    public static func open(path: String, chunkSize: Int) throws(StoreSetupError) -> FileStore {
        var st = stat()
        if stat(path, &st) != 0 { throw StoreSetupError("cannot open file store \(path): \(lastError())") }
        let fd = FileDescriptor(rawValue: try openExisting(path, st))
        do throws(StoreSetupError) {
            try lock(fd, path)
            // Whatever a killed predecessor left in the page cache becomes durable before we act on it.
            try syncSetup(fd, path)
            var raw = [UInt8](repeating: 0, count: headerBytes)
            let n = (try? raw.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: 0, into: $0) }) ?? 0
            guard n == headerBytes, Array(raw[0..<8]) == magic else {
                throw StoreSetupError("\(path) is not a Tessera file store (no TESSERAF header)")
            }
            let header = try Header(decoding: raw, path: path)
            guard header.chunkSize == UInt64(chunkSize) else {
                throw StoreSetupError(
                    "\(path) holds chunks of \(header.chunkSize) bytes, not the \(chunkSize) expected")
            }
            let size: UInt64
            if (st.st_mode & S_IFMT) == S_IFBLK {
                var bytes: UInt64 = 0
                if tessera_block_device_size(fd.rawValue, &bytes) != 0 {
                    throw StoreSetupError("cannot read the size of \(path): \(lastError())")
                }
                size = bytes
            } else {
                size = UInt64(st.st_size)
            }
            guard header.slots >= 1, header.slots <= UInt64(UInt32.max),
                let layout = Layout(slots: Int(header.slots), chunkSize: chunkSize),
                UInt64(layout.dataOffset) == header.dataOffset
            else {
                throw StoreSetupError("the header of \(path) is inconsistent (slot count \(header.slots))")
            }
            guard UInt64(layout.end) <= size else {
                throw StoreSetupError(
                    "\(path) has \(size) bytes but its \(header.slots) slots need \(layout.end): truncated?")
            }
            return try FileStore(fd: fd, path: path, header: header, isBlockDevice: (st.st_mode & S_IFMT) == S_IFBLK)
        } catch {
            try? fd.close()
            throw error
        }
    }

    private enum Sniffed { case ours(String), foreign }

    /// Whether the first block holds a file store header (its UUID) or anything else.
    private static func sniff(_ fd: FileDescriptor) -> Sniffed {
        var raw = [UInt8](repeating: 0, count: headerBytes)
        let n = (try? raw.withUnsafeMutableBytes { try fd.read(fromAbsoluteOffset: 0, into: $0) }) ?? 0
        guard n >= 72, Array(raw[0..<8]) == magic else { return .foreign }
        return .ours("UUID " + raw[56..<72].map { hex2($0) }.joined())
    }

    /// Opens an existing path that must be a regular file or a block device; a block device is opened
    /// O_EXCL, which the kernel refuses while it is mounted or held by another program.
    private static func openExisting(_ path: String, _ st: stat) throws(StoreSetupError) -> Int32 {
        let type = st.st_mode & S_IFMT
        if type == S_IFDIR {
            throw StoreSetupError("\(path) is a directory; a file store needs a regular file or a block device")
        }
        guard type == S_IFREG || type == S_IFBLK else {
            throw StoreSetupError("\(path) is neither a regular file nor a block device")
        }
        let raw = Glibc.open(path, O_RDWR | O_CLOEXEC | (type == S_IFBLK ? O_EXCL : 0))
        if raw < 0 {
            if errno == EBUSY { throw StoreSetupError("\(path) is in use (mounted or held by another program)") }
            throw StoreSetupError("cannot open \(path): \(lastError())")
        }
        return raw
    }

    /// Takes the store's flock. Retries for a second before calling the store busy: a lock belongs to the
    /// open file description, which a child forked by another thread holds until its exec closes it, so
    /// a store just closed in this process can look locked for a moment.
    private static func lock(_ fd: FileDescriptor, _ path: String) throws(StoreSetupError) {
        for attempt in 0..<20 {
            if flock(fd.rawValue, LOCK_EX | LOCK_NB) == 0 { return }
            guard errno == EWOULDBLOCK else { throw StoreSetupError("cannot lock \(path): \(lastError())") }
            if attempt < 19 { usleep(50_000) }
        }
        throw StoreSetupError("\(path) is in use by another Tessera process")
    }

    private static func syncSetup(_ fd: FileDescriptor, _ path: String) throws(StoreSetupError) {
        if fdatasync(fd.rawValue) != 0 { throw StoreSetupError("cannot sync \(path): \(lastError())") }
    }

    private static func writeZeros(_ fd: FileDescriptor, at position: Int, count: Int, _ path: String)
        throws(StoreSetupError)
    {
        do throws(StoreError) {
            try writeZeros(fd, at: position, count: count)
        } catch {
            throw StoreSetupError("cannot write \(path): \(error)")
        }
    }

    /// Writes `count` zero bytes at `position`, 64 KiB at a time.
    static func writeZeros(_ fd: FileDescriptor, at position: Int, count: Int) throws(StoreError) {
        var done = 0
        while done < count {
            let n = min(count - done, zeros.count)
            do {
                let wrote = try zeros.withUnsafeBytes { z in
                    try fd.write(toAbsoluteOffset: Int64(position + done), UnsafeRawBufferPointer(rebasing: z[0..<n]))
                }
                done += wrote
            } catch {
                throw StoreError.from(errno: (error as? Errno)?.rawValue ?? EIO, chunk: .none)
            }
        }
    }

    private static let zeros = [UInt8](repeating: 0, count: 64 * 1024)

    private static func randomUUID() -> [UInt8] {
        var g = SystemRandomNumberGenerator()
        var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &g) }
        bytes[6] = bytes[6] & 0x0f | 0x40  // version 4
        bytes[8] = bytes[8] & 0x3f | 0x80  // RFC 4122 variant
        return bytes
    }

    static func hex2(_ b: UInt8) -> String { DirectoryStore.hex2(b) }
}

private func lastError() -> String { String(cString: strerror(errno)) }

/// fsync of the directory holding `path`, so a new file's entry is durable.
private func fsyncParent(of path: String) -> Bool {
    let parent = path.lastIndex(of: "/").map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
    return fsyncPath(parent)
}
