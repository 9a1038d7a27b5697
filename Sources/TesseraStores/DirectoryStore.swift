import CLinux
// DirectoryStore — the embedded default store: one sparse file per chunk under a directory.
//
// Address space: physical chunks (ChunkID). Layout: ROOT/chunks/XX/ID, XX = low byte of the ID in hex,
// so no directory grows past a few thousand entries per million chunks.
//
// State: an fd cache (ChunkID → open file), the set of chunks written since the last flush, and the
// set of subdirectories whose entries changed (file created or removed) since the last flush.
//
// Invariants:
// - A chunk file exists iff the chunk exists; bytes beyond the file's end read as zeros (files are
//   sparse and grow by pwrite only).
// - flush() = fdatasync every chunk written since the previous flush, then fsync every directory whose
//   entries changed; only then does it return. Flushes are serialised (flushLock) so that a flush never
//   returns while an earlier one that holds some of its chunks is still syncing.
// - O_DIRECT is never used on chunk files: FUSE hands us unaligned buffers and the page cache is fine.
// Lock order: flushLock → state. No lock is held across a read or write syscall; the cached file
// object is retained while in use, so eviction never closes an fd under a reader.
import Synchronization
import SystemPackage
import TesseraCore

#if canImport(Glibc)
    import Glibc
#endif

/// One open chunk file. The fd closes when the last user lets go; that is what makes eviction safe.
final class ChunkFile: Sendable {
    let fd: FileDescriptor
    init(_ fd: FileDescriptor) { self.fd = fd }
    deinit { try? fd.close() }
}

public final class DirectoryStore: ChunkStore, StoreMaintenance {
    public let chunkSize: Int
    public let root: String
    private let chunksDir: String
    private let maxOpenFiles: Int
    /// Capacity quota in bytes (0: none, the filesystem's room). A placement limit: usage() reports at
    /// most this much, so the pool stops choosing the store when its chunks fill it.
    private let quota = Atomic<UInt64>(0)

    private struct State {
        var files: [ChunkID: ChunkFile] = [:]
        var dirtyChunks: Set<ChunkID> = []
        var dirtyDirs: Set<UInt8> = []
        var labeled: Set<ChunkID> = []
    }
    private let state = Lock(State())
    private let flushLock = Lock(())

    /// Opens (creating the layout if needed) a directory store at `root`. Throws a readable message
    /// when the directory is missing or unusable.
    /// `maxOpenFiles` bounds the fd cache; by default a quarter of the process's open-file limit,
    /// at most 4096.
    public init(root: String, chunkSize: Int, maxOpenFiles: Int? = nil) throws(StoreSetupError) {
        precondition(chunkSize > 0 && chunkSize % 4096 == 0, "chunk size must be a positive multiple of 4 KiB")
        self.root = root
        self.chunkSize = chunkSize
        self.chunksDir = root + "/chunks"
        var limit = rlimit()
        let soft = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 ? Int(min(limit.rlim_cur, 1 << 20)) : 1024
        self.maxOpenFiles = maxOpenFiles ?? max(64, min(4096, soft / 4))
        var st = stat()
        guard stat(root, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
            throw StoreSetupError("store directory \(root) does not exist or is not a directory")
        }
        if mkdir(chunksDir, 0o700) != 0 && errno != EEXIST {
            throw StoreSetupError("cannot create \(chunksDir): \(String(cString: strerror(errno)))")
        }
        for b in 0...255 {
            let d = chunksDir + "/" + Self.hex2(UInt8(b))
            if mkdir(d, 0o700) != 0 && errno != EEXIST {
                throw StoreSetupError("cannot create \(d): \(String(cString: strerror(errno)))")
            }
        }
        fsyncPath(chunksDir)
        fsyncPath(root)
    }

    static func hex2(_ b: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(b >> 4)], digits[Int(b & 15)]])
    }

    private func path(_ chunk: ChunkID) -> String {
        chunksDir + "/" + Self.hex2(UInt8(truncatingIfNeeded: chunk.rawValue)) + "/" + String(chunk.rawValue, radix: 16)
    }

    /// Returns an open file for `chunk`, opening (and with `create`, creating) it when not cached.
    /// Returns nil when the chunk does not exist and `create` is false.
    private func file(_ chunk: ChunkID, create: Bool) throws(StoreError) -> ChunkFile? {
        if let f = state.withLock({ $0.files[chunk] }) { return f }
        let p = path(chunk)
        var fd = Glibc.open(p, O_RDWR | O_CLOEXEC)
        var created = false
        if fd < 0 && errno == ENOENT {
            guard create else { return nil }
            fd = Glibc.open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            created = true
        }
        if fd < 0 { throw StoreError.from(errno: errno, chunk: chunk) }
        let f = ChunkFile(FileDescriptor(rawValue: fd))
        return state.withLock { s in
            if created { s.dirtyDirs.insert(UInt8(truncatingIfNeeded: chunk.rawValue)) }
            if let existing = s.files[chunk] { return existing }  // another thread won the race
            if s.files.count >= maxOpenFiles, let victim = s.files.keys.first(where: { !s.dirtyChunks.contains($0) }) {
                s.files[victim] = nil
            }
            s.files[chunk] = f
            return f
        }
    }

    public func read(_ chunk: ChunkID, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) {
        guard let f = try file(chunk, create: false) else { throw .missing(chunk: chunk) }
        var done = 0
        while done < buffer.count {
            let n: Int
            do {
                n = try f.fd.read(
                    fromAbsoluteOffset: Int64(offset + done),
                    into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
            } catch {
                throw StoreError.from(errno: (error as? Errno)?.rawValue ?? EIO, chunk: chunk)
            }
            if n == 0 {
                // Past the end of a sparse chunk file: never written, reads as zeros.
                UnsafeMutableRawBufferPointer(rebasing: buffer[done...]).initializeMemory(as: UInt8.self, repeating: 0)
                return
            }
            done += n
        }
    }

    public func write(_ chunk: ChunkID, offset: Int, from buffer: UnsafeRawBufferPointer) throws(StoreError) {
        guard let f = try file(chunk, create: true) else { throw .missing(chunk: chunk) }
        var done = 0
        while done < buffer.count {
            do {
                done += try f.fd.write(
                    toAbsoluteOffset: Int64(offset + done), UnsafeRawBufferPointer(rebasing: buffer[done...]))
            } catch {
                throw StoreError.from(errno: (error as? Errno)?.rawValue ?? EIO, chunk: chunk)
            }
        }
        state.withLock { _ = $0.dirtyChunks.insert(chunk) }
    }

    /// Writes the new content to `ID.new` beside the chunk, copies the label, then renames it over the
    /// chunk: a crash leaves one whole version. The next flush syncs the new file and its directory.
    public func replace(_ chunk: ChunkID, with buffer: UnsafeRawBufferPointer) throws(StoreError) {
        let p = path(chunk)
        let tmp = p + ".new"
        let fd = Glibc.open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        if fd < 0 { throw StoreError.from(errno: errno, chunk: chunk) }
        let f = ChunkFile(FileDescriptor(rawValue: fd))
        var done = 0
        while done < buffer.count {
            do {
                done += try f.fd.write(toAbsoluteOffset: Int64(done), UnsafeRawBufferPointer(rebasing: buffer[done...]))
            } catch {
                unlink(tmp)
                throw StoreError.from(errno: (error as? Errno)?.rawValue ?? EIO, chunk: chunk)
            }
        }
        var labeled = false
        if let old = try file(chunk, create: false) {
            var raw = [UInt8](repeating: 0, count: 64)
            let n = fgetxattr(old.fd.rawValue, Self.labelXattr, &raw, raw.count)
            if n > 0 {
                if fsetxattr(fd, Self.labelXattr, raw, n, 0) != 0 {
                    let e = errno
                    unlink(tmp)
                    throw StoreError.from(errno: e, chunk: chunk)
                }
                labeled = true
            }
        }
        if rename(tmp, p) != 0 {
            let e = errno
            unlink(tmp)
            throw StoreError.from(errno: e, chunk: chunk)
        }
        state.withLock { s in
            s.files[chunk] = f
            s.dirtyChunks.insert(chunk)
            if labeled { s.labeled.insert(chunk) }
            s.dirtyDirs.insert(UInt8(truncatingIfNeeded: chunk.rawValue))
        }
    }

    public func readAll(_ chunk: ChunkID) throws(StoreError) -> [UInt8] {
        guard let f = try file(chunk, create: false) else { throw .missing(chunk: chunk) }
        var st = stat()
        if fstat(f.fd.rawValue, &st) != 0 { throw StoreError.from(errno: errno, chunk: chunk) }
        let count = min(Int(st.st_size), chunkSize)
        var out = [UInt8](repeating: 0, count: count)
        try out.withMutableStoreBytes { (buffer) throws(StoreError) in try read(chunk, offset: 0, into: buffer) }
        return out
    }

    /// Chunk files take pieces: a 4 KiB write is one pwrite.
    public func prefersWholeChunks(_ chunk: ChunkID) -> Bool { false }

    public func zero(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        guard length > 0 else { return }
        guard let f = try file(chunk, create: false) else { return }
        var st = stat()
        if fstat(f.fd.rawValue, &st) != 0 { throw StoreError.from(errno: errno, chunk: chunk) }
        if Int(st.st_size) <= offset { return }  // already beyond the end: reads as zeros
        if tessera_punch_hole(f.fd.rawValue, off_t(offset), off_t(length)) != 0 {
            throw StoreError.from(errno: errno, chunk: chunk)
        }
        state.withLock { _ = $0.dirtyChunks.insert(chunk) }
    }

    /// No checksums here: a block cannot be marked unreadable (only the checksum layer above can).
    public func markUnreadable(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        throw .io(errno: EOPNOTSUPP, chunk: chunk)
    }

    public func delete(_ chunk: ChunkID) throws(StoreError) {
        state.withLock { s in
            s.files[chunk] = nil
            s.dirtyChunks.remove(chunk)
            s.labeled.remove(chunk)
        }
        if unlink(path(chunk)) != 0 && errno != ENOENT { throw StoreError.from(errno: errno, chunk: chunk) }
        state.withLock { _ = $0.dirtyDirs.insert(UInt8(truncatingIfNeeded: chunk.rawValue)) }
    }

    public func flush() throws(StoreError) {
        // Held across I/O on purpose: flush is the durability barrier, and serialising it is what
        // makes "returned" mean "everything before me is durable" (see the header).
        try flushLock.withLock { _ throws(StoreError) in try flushLocked(only: nil) }
    }

    public func flush(chunks: Set<ChunkID>) throws(StoreError) {
        try flushLock.withLock { _ throws(StoreError) in try flushLocked(only: chunks) }
    }

    /// Syncs the dirty chunks (all, or those in `only`) and the directories their entries live in.
    /// A chunk whose label changed gets fsync (the xattr is inode metadata), the others fdatasync.
    private func flushLocked(only: Set<ChunkID>?) throws(StoreError) {
        let (chunks, dirs) = state.withLock { s in
            let picked = only.map { s.dirtyChunks.intersection($0) } ?? s.dirtyChunks
            let c = picked.map { ($0, s.files[$0], s.labeled.contains($0)) }
            let d =
                only.map { Set($0.map { UInt8(truncatingIfNeeded: $0.rawValue) }).intersection(s.dirtyDirs) }
                ?? s.dirtyDirs
            s.dirtyChunks.subtract(picked)
            s.labeled.subtract(picked)
            s.dirtyDirs.subtract(d)
            return (c, d)
        }
        var failure: StoreError?
        for (chunk, cached, labeled) in chunks {
            var f = cached
            if f == nil {
                do { f = try file(chunk, create: false) } catch { failure = error; continue }
            }
            guard let f else { continue }  // deleted since: nothing to sync
            if (labeled ? fsync(f.fd.rawValue) : fdatasync(f.fd.rawValue)) != 0 {
                failure = StoreError.from(errno: errno, chunk: chunk)
                state.withLock { s in
                    s.dirtyChunks.insert(chunk)
                    if labeled { s.labeled.insert(chunk) }
                }
            }
        }
        for d in dirs where !fsyncPath(chunksDir + "/" + Self.hex2(d)) {
            failure = StoreError.from(errno: errno, chunk: .none)
            state.withLock { _ = $0.dirtyDirs.insert(d) }
        }
        if let failure { throw failure }
    }

    /// Labels live in an xattr of the chunk file: 24 bytes, volume · index · epoch, little-endian.
    static let labelXattr = "user.tessera.label"

    public func setLabel(_ chunk: ChunkID, _ label: ChunkLabel) throws(StoreError) {
        guard let f = try file(chunk, create: false) else { throw .missing(chunk: chunk) }
        var raw = (label.volume.rawValue.littleEndian, label.index.littleEndian, label.epoch.littleEndian)
        let rc = withUnsafeBytes(of: &raw) { fsetxattr(f.fd.rawValue, Self.labelXattr, $0.baseAddress, $0.count, 0) }
        if rc != 0 { throw StoreError.from(errno: errno, chunk: chunk) }
        state.withLock { s in
            s.dirtyChunks.insert(chunk)
            s.labeled.insert(chunk)
        }
    }

    public func label(of chunk: ChunkID) throws(StoreError) -> ChunkLabel? {
        guard let f = try file(chunk, create: false) else { throw .missing(chunk: chunk) }
        var raw: (Int64, UInt64, UInt64) = (0, 0, 0)
        let n = withUnsafeMutableBytes(of: &raw) { fgetxattr(f.fd.rawValue, Self.labelXattr, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == ENODATA { return nil }
            throw StoreError.from(errno: errno, chunk: chunk)
        }
        guard n == MemoryLayout.size(ofValue: raw) else { return nil }
        return ChunkLabel(
            volume: VolumeID(Int64(littleEndian: raw.0)), index: UInt64(littleEndian: raw.1),
            epoch: UInt64(littleEndian: raw.2))
    }

    /// A directory store keeps no checksums of its own (the ChecksumLayer above it does).
    public func check(_ chunk: ChunkID) throws(StoreError) -> ChunkCheck {
        guard try file(chunk, create: false) != nil else { throw .missing(chunk: chunk) }
        return .unchecked
    }

    /// The filesystem's figures (shared with whatever else lives there, other stores included), capped
    /// by the quota when one is set; `filesystem` names it so that the pool counts it once.
    public func usage() throws(StoreError) -> StoreUsage {
        var vfs = statvfs()
        if statvfs(root, &vfs) != 0 { throw StoreError.from(errno: errno, chunk: .none) }
        var st = stat()
        if stat(root, &st) != 0 { throw StoreError.from(errno: errno, chunk: .none) }
        var used: UInt64 = 0
        for chunk in try allChunks() {
            var cst = stat()
            if stat(path(chunk), &cst) == 0 { used += UInt64(cst.st_blocks) * 512 }
        }
        let fs = FilesystemUsage(
            id: UInt64(st.st_dev), totalBytes: UInt64(vfs.f_blocks) * UInt64(vfs.f_frsize),
            freeBytes: UInt64(vfs.f_bavail) * UInt64(vfs.f_frsize))
        var total = fs.totalBytes
        var free = fs.freeBytes
        let q = quota.load(ordering: .relaxed)
        if q > 0 {
            total = min(total, q)
            free = min(free, q > used ? q - used : 0)
        }
        return StoreUsage(totalBytes: total, freeBytes: free, usedBytes: used, filesystem: fs)
    }

    // MARK: Maintenance

    /// Creates, writes, syncs and removes a small file in the root, after checking that the store's
    /// layout is there (a filesystem unmounted under it leaves an empty directory that would take the
    /// write).
    public func probe() throws(StoreError) {
        var st = stat()
        if stat(chunksDir, &st) != 0 { throw StoreError.from(errno: errno, chunk: .none) }
        if (st.st_mode & S_IFMT) != S_IFDIR { throw StoreError.from(errno: ENOTDIR, chunk: .none) }
        let p = root + "/.probe"
        let fd = Glibc.open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        if fd < 0 { throw StoreError.from(errno: errno, chunk: .none) }
        defer {
            close(fd)
            unlink(p)
        }
        var byte: UInt8 = 0x54
        if pwrite(fd, &byte, 1, 0) != 1 || fdatasync(fd) != 0 { throw StoreError.from(errno: errno, chunk: .none) }
    }

    /// Forgets every open chunk file: descriptors opened before an outage (a filesystem shut down,
    /// unmounted and mounted again) stay dead, so the next access opens the file anew.
    public func reopen() {
        state.withLock { $0.files = [:] }
    }

    public func setQuota(_ bytes: UInt64?) -> Bool {
        quota.store(bytes ?? 0, ordering: .relaxed)
        return true
    }

    public func allChunks() throws(StoreError) -> [ChunkID] {
        var out: [ChunkID] = []
        for b in 0...255 {
            guard let dir = opendir(chunksDir + "/" + Self.hex2(UInt8(b))) else {
                throw StoreError.from(errno: errno, chunk: .none)
            }
            defer { closedir(dir) }
            while let ent = readdir(dir) {
                let name = withUnsafeBytes(of: ent.pointee.d_name) { raw in
                    String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
                }
                if let id = UInt64(name, radix: 16), id != 0 { out.append(ChunkID(id)) }
            }
        }
        return out
    }
}

/// A store that cannot be opened: the message says why, for the CLI to print.
public struct StoreSetupError: Error, CustomStringConvertible {
    public let description: String
    public init(_ message: String) { description = message }
}

/// fsync on a path (a directory, to make entry changes durable). Returns false and leaves errno on failure.
@discardableResult
func fsyncPath(_ path: String) -> Bool {
    let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if fd < 0 { return false }
    defer { close(fd) }
    return fsync(fd) == 0
}
