// FuseOperations — the FUSE adapter's request handlers: paths ↔ volumes, FUSE ops → engine calls,
// errors → errno. Each C entry point is a one-line trampoline into a Swift handler that always ends
// in exactly one reply. Handlers run on libfuse's worker threads, synchronously: no Task, no await.
//
// Timeouts: names are never cached by the kernel (entry timeout 0), so volumes created, renamed or
// deleted by the CLI appear at once; attributes are cached for 1 s and invalidated explicitly when
// the CLI changes a volume. O_DIRECT opens get FOPEN_DIRECT_IO (no page cache, no GETATTR storms).
import CFuse3
import CLinux
import Foundation
import TesseraCore
import TesseraEngine

#if canImport(Glibc)
    import Glibc
#endif

enum FuseOperations {
    static func table() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { _, conn in tessera_conn_setup(conn, 1 << 20) }
        ops.lookup = { req, parent, name in FuseOperations.handle(req) { try $0.lookup(req, parent, String(cString: name!)) } }
        ops.forget = { req, _, _ in fuse_reply_none(req) }
        ops.getattr = { req, ino, fi in FuseOperations.handle(req) { try $0.getattr(req, ino, fi) } }
        ops.setattr = { req, ino, attr, toSet, fi in FuseOperations.handle(req) { try $0.setattr(req, ino, attr!.pointee, toSet, fi) } }
        ops.readdir = { req, ino, size, off, _ in FuseOperations.handle(req) { try $0.readdir(req, ino, size, off) } }
        ops.open = { req, ino, fi in FuseOperations.handle(req) { try $0.open(req, ino, fi!) } }
        ops.read = { req, _, size, off, fi in FuseOperations.handle(req) { try $0.read(req, size, off, fi!) } }
        ops.write = { req, _, buf, size, off, fi in FuseOperations.handle(req) { try $0.write(req, buf!, size, off, fi!) } }
        ops.flush = { req, _, _ in fuse_reply_err(req, 0) }  // close(2) is not a durability barrier
        ops.release = { req, _, fi in FuseOperations.handle(req) { try $0.release(req, fi!) } }
        ops.fsync = { req, _, datasync, fi in FuseOperations.handle(req) { try $0.fsync(req, datasync != 0, fi!) } }
        // Names live in the catalog, which commits every create, rename and unlink durably before
        // replying: a directory fsync has nothing left to do (and must not answer ENOSYS).
        ops.fsyncdir = { req, _, _, _ in fuse_reply_err(req, 0) }
        ops.statfs = { req, _ in FuseOperations.handle(req) { try $0.statfs(req) } }
        ops.create = { req, parent, name, mode, fi in
            FuseOperations.handle(req) { try $0.create(req, parent, String(cString: name!), mode, fi!) }
        }
        ops.unlink = { req, parent, name in FuseOperations.handle(req) { try $0.unlink(req, parent, String(cString: name!)) } }
        ops.rename = { req, parent, name, newParent, newName, flags in
            FuseOperations.handle(req) { try $0.rename(req, parent, String(cString: name!), newParent, String(cString: newName!), flags) }
        }
        ops.mkdir = { req, parent, name, _ in
            FuseOperations.handle(req) { try $0.mkdir(req, parent, String(cString: name!)) }
        }
        ops.rmdir = { req, parent, name in FuseOperations.handle(req) { try $0.rmdir(req, parent, String(cString: name!)) } }
        ops.mknod = { req, _, _, _, _ in fuse_reply_err(req, EPERM) }
        ops.symlink = { req, _, _, _ in fuse_reply_err(req, EPERM) }
        ops.link = { req, _, _, _ in fuse_reply_err(req, EPERM) }
        ops.setxattr = { req, ino, name, value, size, flags in
            FuseOperations.handle(req) { try $0.setxattr(req, ino, String(cString: name!), value, size, flags) }
        }
        ops.getxattr = { req, ino, name, size in FuseOperations.handle(req) { try $0.getxattr(req, ino, String(cString: name!), size) } }
        ops.listxattr = { req, ino, size in FuseOperations.handle(req) { try $0.listxattr(req, ino, size) } }
        ops.removexattr = { req, ino, name in FuseOperations.handle(req) { try $0.removexattr(req, ino, String(cString: name!)) } }
        ops.fallocate = { req, _, mode, off, len, fi in FuseOperations.handle(req) { try $0.fallocate(req, mode, off, len, fi!) } }
        ops.lseek = { req, _, off, whence, fi in FuseOperations.handle(req) { try $0.lseek(req, off, whence, fi!) } }
        ops.copy_file_range = { req, _, offIn, fiIn, _, offOut, fiOut, len, _ in
            FuseOperations.handle(req) { try $0.copyRange(req, offIn, fiIn!, offOut, fiOut!, len) }
        }
        return ops
    }

    /// Runs a handler; a thrown error becomes the request's one reply.
    @inline(__always)
    static func handle(_ req: fuse_req_t?, _ body: (FuseMount) throws -> Void) {
        let mount = Unmanaged<FuseMount>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
        do {
            try body(mount)
        } catch {
            // Every handler throws FuseFailure only; the closure type is untyped because Swift cannot
            // infer typed throws through these trampolines. Nothing is thrown on the success path.
            let failure = error as? FuseFailure ?? FuseFailure(EIO, "unexpected error: \(error)")
            if let message = failure.message { Log.error(message) }
            fuse_reply_err(req, failure.errno)
        }
    }
}

/// A handler's failure: the errno for the kernel and, for real failures (not ENOENT on lookup), the
/// line to log once.
struct FuseFailure: Error {
    var errno: Int32
    var message: String?
    init(_ errno: Int32, _ message: String? = nil) {
        self.errno = errno
        self.message = message
    }
    init(_ error: TesseraError) { self.init(error.errno, error.code == .notFound ? nil : error.message) }
}

extension FuseMount {
    private static func image(_ fi: UnsafeMutablePointer<fuse_file_info>) -> OpenImage {
        Unmanaged<OpenImage>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fi.pointee.fh))!).takeUnretainedValue()
    }

    /// The live volume behind a handle open for writing; snapshot images are read-only (EROFS).
    private static func writable(_ fi: UnsafeMutablePointer<fuse_file_info>) throws(FuseFailure) -> Volume {
        let image = image(fi)
        if image.readOnly { throw FuseFailure(EROFS) }
        return image.volume
    }

    private func fail(_ v: Volume, _ what: String, _ offset: off_t, _ error: StoreError) -> FuseFailure {
        FuseFailure(error.errno, "\(v.name).img: \(what) at offset \(offset) failed: \(error)")
    }

    private func volume(_ ino: fuse_ino_t) throws(FuseFailure) -> Volume {
        guard let id = Inode.volumeID(ino), let v = engine.volume(id: id) else { throw FuseFailure(ENOENT) }
        return v
    }

    private func volume(named file: String, in parent: fuse_ino_t) throws(FuseFailure) -> Volume {
        if parent == Inode.snapshots || Inode.snapshotDirID(parent) != nil { throw FuseFailure(EROFS) }
        guard parent == Inode.root else { throw FuseFailure(ENOTDIR) }
        guard let name = Inode.volumeName(fromFile: file), let v = engine.volume(named: name) else {
            throw FuseFailure(ENOENT)
        }
        return v
    }

    // MARK: Attributes

    private func directoryAttr(_ ino: fuse_ino_t) -> stat {
        var st = stat()
        st.st_ino = UInt(ino)
        st.st_mode = S_IFDIR | 0o755
        st.st_nlink = 2
        st.st_blksize = 4096
        return st
    }

    private func attr(_ v: Volume) -> stat {
        let r = v.record
        var st = stat()
        st.st_ino = UInt(Inode.volume(v.id))
        st.st_mode = S_IFREG | mode_t(r.mode & 0o7777)
        st.st_nlink = v.isUnlinked ? 0 : 1
        st.st_uid = uid_t(r.uid)
        st.st_gid = gid_t(r.gid)
        st.st_size = off_t(r.size)
        st.st_blocks = blkcnt_t(v.referencedBytes / 512)
        st.st_blksize = blksize_t(min(v.chunkSize, 1 << 20))
        let sec = r.mtime.rounded(.down)
        let ts = timespec(tv_sec: Int(sec), tv_nsec: Int((r.mtime - sec) * 1e9))
        st.st_mtim = ts
        st.st_ctim = ts
        st.st_atim = ts
        return st
    }

    /// A volume as snapshot `image` captured it: read-only, its size then, its blocks then.
    private func attr(_ image: SnapshotImage) -> stat {
        var st = attr(image.volume)
        st.st_ino = UInt(Inode.snapshotImage(image.snapshotID, image.volume.id))
        st.st_mode = S_IFREG | (st.st_mode & 0o7777 & ~0o222)
        st.st_nlink = 1
        st.st_size = off_t(image.size)
        st.st_blocks = blkcnt_t(image.volume.allocatedBytes(at: image.epoch, viewSize: image.size) / 512)
        return st
    }

    private func snapshotImage(_ ino: fuse_ino_t) throws(FuseFailure) -> SnapshotImage {
        guard let (snap, vol) = Inode.snapshotImageIDs(ino), let image = engine.snapshotImage(snapshot: snap, volume: vol) else {
            throw FuseFailure(ENOENT)
        }
        return image
    }

    private func entry(_ st: stat) -> fuse_entry_param {
        var e = fuse_entry_param()
        e.ino = fuse_ino_t(st.st_ino)
        e.generation = 1
        e.attr = st
        e.attr_timeout = attrTimeout
        e.entry_timeout = 0
        return e
    }

    func lookup(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: String) throws(FuseFailure) {
        if name.utf8.count > 255 { throw FuseFailure(ENAMETOOLONG) }
        var e: fuse_entry_param
        if parent == Inode.root && name == Inode.snapshotsName {
            e = entry(directoryAttr(Inode.snapshots))
        } else if parent == Inode.snapshots {
            guard let id = engine.snapshotImages(name)?.first?.snapshotID else { throw FuseFailure(ENOENT) }
            e = entry(directoryAttr(Inode.snapshotDir(id)))
        } else if let snap = Inode.snapshotDirID(parent) {
            guard let snapName = engine.snapshotName(id: snap), let vol = Inode.volumeName(fromFile: name),
                  let image = engine.snapshotImages(snapName)?.first(where: { $0.volume.name == vol })
            else { throw FuseFailure(ENOENT) }
            e = entry(attr(image))
        } else {
            e = entry(attr(try volume(named: name, in: parent)))
        }
        fuse_reply_entry(req, &e)
    }

    func getattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) throws(FuseFailure) {
        var st: stat
        if ino == Inode.root || ino == Inode.snapshots {
            st = directoryAttr(ino)
        } else if let snap = Inode.snapshotDirID(ino) {
            guard engine.snapshotName(id: snap) != nil else { throw FuseFailure(ENOENT) }
            st = directoryAttr(ino)
        } else if Inode.snapshotImageIDs(ino) != nil {
            st = attr(try snapshotImage(ino))
        } else if let fi, fi.pointee.fh != 0 {
            st = attr(Self.image(fi).volume)  // also answers fstat on an unlinked, still-open image
        } else {
            st = attr(try volume(ino))
        }
        fuse_reply_attr(req, &st, attrTimeout)
    }

    func setattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ new: stat, _ toSet: Int32,
                 _ fi: UnsafeMutablePointer<fuse_file_info>?) throws(FuseFailure) {
        let v: Volume
        if Inode.snapshotImageIDs(ino) != nil || Inode.snapshotDirID(ino) != nil || ino == Inode.snapshots {
            throw FuseFailure(EROFS)
        }
        if let fi, fi.pointee.fh != 0 { v = try Self.writable(fi) } else if Inode.isVolume(ino) {
            v = try volume(ino)
        } else {
            throw FuseFailure(EPERM)
        }
        // Any byte size (a file may end anywhere); past the limit it is EFBIG, as for a write.
        let size = UInt64(max(0, new.st_size))
        if toSet & FUSE_SET_ATTR_SIZE != 0 && size > Engine.maxVolumeSize { throw FuseFailure(EFBIG) }
        do throws(TesseraError) {
            if toSet & FUSE_SET_ATTR_SIZE != 0 { try engine.resize(v, to: size) }
            var mtime: Double?
            if toSet & FUSE_SET_ATTR_MTIME_NOW != 0 {
                mtime = Date().timeIntervalSince1970
            } else if toSet & FUSE_SET_ATTR_MTIME != 0 {
                mtime = Double(new.st_mtim.tv_sec) + Double(new.st_mtim.tv_nsec) / 1e9
            }
            let ownerOrMode = toSet & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID) != 0
            if ownerOrMode || mtime != nil {
                try engine.setAttributes(
                    v, uid: toSet & FUSE_SET_ATTR_UID != 0 ? Int64(new.st_uid) : nil,
                    gid: toSet & FUSE_SET_ATTR_GID != 0 ? Int64(new.st_gid) : nil,
                    mode: toSet & FUSE_SET_ATTR_MODE != 0 ? Int64(new.st_mode) : nil, mtime: mtime)
            }
        } catch {
            throw FuseFailure(error)
        }
        var st = attr(v)
        fuse_reply_attr(req, &st, attrTimeout)
    }

    func readdir(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int, _ off: off_t) throws(FuseFailure) {
        var names: [(String, stat)] = [(".", directoryAttr(ino)), ("..", directoryAttr(Inode.root))]
        if ino == Inode.root {
            names.append((Inode.snapshotsName, directoryAttr(Inode.snapshots)))
            for v in engine.allVolumes() { names.append((v.name + Inode.imageSuffix, attr(v))) }
        } else if ino == Inode.snapshots {
            for name in engine.snapshotNames() {
                if let id = engine.snapshotImages(name)?.first?.snapshotID { names.append((name, directoryAttr(Inode.snapshotDir(id)))) }
            }
        } else if let snap = Inode.snapshotDirID(ino) {
            guard let snapName = engine.snapshotName(id: snap) else { throw FuseFailure(ENOENT) }
            for image in engine.snapshotImages(snapName) ?? [] {
                var st = stat()
                st.st_ino = UInt(Inode.snapshotImage(image.snapshotID, image.volume.id))
                st.st_mode = S_IFREG
                names.append((image.volume.name + Inode.imageSuffix, st))
            }
        } else {
            throw FuseFailure(ENOTDIR)
        }
        let buf = UnsafeMutablePointer<CChar>.allocate(capacity: size)
        defer { buf.deallocate() }
        var used = 0
        var index = Int(off)
        while index < names.count {
            var st = names[index].1
            let need = fuse_add_direntry(req, buf + used, size - used, names[index].0, &st, off_t(index + 1))
            if need > size - used { break }
            used += need
            index += 1
        }
        fuse_reply_buf(req, buf, used)
    }

    // MARK: Files

    func open(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>) throws(FuseFailure) {
        if Inode.snapshotImageIDs(ino) != nil {
            if fi.pointee.flags & O_ACCMODE != O_RDONLY || fi.pointee.flags & O_TRUNC != 0 { throw FuseFailure(EROFS) }
            let image = try snapshotImage(ino)
            attach(OpenImage(image.volume, epoch: image.epoch, size: image.size, pid: Self.caller(req)), fi)
        } else {
            guard Inode.isVolume(ino) else { throw FuseFailure(EISDIR) }
            let v = try volume(ino)
            // libfuse asks for atomic O_TRUNC: the kernel passes the flag here instead of a SETATTR.
            if fi.pointee.flags & O_TRUNC != 0 && fi.pointee.flags & O_ACCMODE != O_RDONLY {
                do { try engine.resize(v, to: 0) } catch { throw FuseFailure(error) }
            }
            attach(OpenImage(v, pid: Self.caller(req)), fi)
        }
        fuse_reply_open(req, fi)
    }

    private static func caller(_ req: fuse_req_t?) -> pid_t { fuse_req_ctx(req)?.pointee.pid ?? 0 }

    /// Gives the open file a retained reference to its volume (released in `release`).
    private func attach(_ image: OpenImage, _ fi: UnsafeMutablePointer<fuse_file_info>) {
        image.volume.opened()
        openHandles.withLock { $0[ObjectIdentifier(image)] = image }
        fi.pointee.fh = UInt64(UInt(bitPattern: Unmanaged.passRetained(image).toOpaque()))
        // O_DIRECT (qemu cache=none): bypass the page cache; Tessera never forwards O_DIRECT to stores.
        tessera_fi_set_direct_io(fi, fi.pointee.flags & O_DIRECT_ != 0 ? 1 : 0)
        tessera_fi_set_keep_cache(fi, 0)
    }

    func release(_ req: fuse_req_t?, _ fi: UnsafeMutablePointer<fuse_file_info>) throws(FuseFailure) {
        let image = Unmanaged<OpenImage>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fi.pointee.fh))!).takeRetainedValue()
        fi.pointee.fh = 0
        openHandles.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(image)) }
        engine.closed(image.volume)
        fuse_reply_err(req, 0)
    }

    func read(_ req: fuse_req_t?, _ size: Int, _ off: off_t, _ fi: UnsafeMutablePointer<fuse_file_info>) throws(FuseFailure) {
        let image = Self.image(fi)
        let v = image.volume
        do {
            try ReadBuffer.with(size) { buffer throws(StoreError) in
                let n = try v.read(at: UInt64(off), into: buffer, epoch: image.epoch, viewSize: image.size)
                fuse_reply_buf(req, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), n)
            }
        } catch {
            throw fail(v, "read of \(size) bytes", off, error)
        }
    }

    func write(_ req: fuse_req_t?, _ buf: UnsafePointer<CChar>, _ size: Int, _ off: off_t,
               _ fi: UnsafeMutablePointer<fuse_file_info>) throws(FuseFailure) {
        let v = try Self.writable(fi)
        guard off >= 0, UInt64(off) + UInt64(size) <= Engine.maxVolumeSize else { throw FuseFailure(EFBIG) }
        do {
            try v.write(at: UInt64(off), from: UnsafeRawBufferPointer(start: buf, count: size))
        } catch {
            throw fail(v, "write of \(size) bytes", off, error)
        }
        fuse_reply_write(req, size)
    }

    func fsync(_ req: fuse_req_t?, _ dataOnly: Bool, _ fi: UnsafeMutablePointer<fuse_file_info>) throws(FuseFailure) {
        let v = Self.image(fi).volume
        do { try v.flush(dataOnly: dataOnly) } catch { throw fail(v, "fsync", 0, error) }
        fuse_reply_err(req, 0)
    }

    func statfs(_ req: fuse_req_t?) throws(FuseFailure) {
        let cap = engine.capacity()
        var s = statvfs()
        s.f_bsize = 4096
        s.f_frsize = 4096
        s.f_blocks = fsblkcnt_t(cap.totalBytes / 4096)
        s.f_bfree = fsblkcnt_t(cap.freeBytes / 4096)
        s.f_bavail = fsblkcnt_t(cap.freeBytes / 4096)
        let files = UInt(engine.allVolumes().count)
        s.f_files = fsfilcnt_t(files + 1_000_000)
        s.f_ffree = 1_000_000
        s.f_favail = 1_000_000
        s.f_namemax = 255
        fuse_reply_statfs(req, &s)
    }

    func create(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ file: String, _ mode: mode_t,
                _ fi: UnsafeMutablePointer<fuse_file_info>) throws(FuseFailure) {
        if parent == Inode.snapshots || Inode.snapshotDirID(parent) != nil { throw FuseFailure(EROFS) }
        guard parent == Inode.root else { throw FuseFailure(EPERM) }
        if file.utf8.count > 255 { throw FuseFailure(ENAMETOOLONG) }
        guard let name = Inode.volumeName(fromFile: file) else {
            throw FuseFailure(EINVAL, "create \(file): images must be named NAME.img")
        }
        let ctx = fuse_req_ctx(req)!.pointee
        let v: Volume
        do {
            v = try engine.createVolumes(
                name: name, size: 0, uid: Int64(ctx.uid), gid: Int64(ctx.gid),
                mode: Int64(mode & ~ctx.umask & 0o7777), allowZeroSize: true)[0]
        } catch {
            throw FuseFailure(error)
        }
        var e = entry(attr(v))
        attach(OpenImage(v, pid: Self.caller(req)), fi)
        fuse_reply_create(req, &e, fi)
    }

    func unlink(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ file: String) throws(FuseFailure) {
        let v = try volume(named: file, in: parent)
        do { try engine.unlink(v) } catch { throw FuseFailure(error) }
        fuse_reply_err(req, 0)
    }

    func rename(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ file: String, _ newParent: fuse_ino_t,
                _ newFile: String, _ flags: UInt32) throws(FuseFailure) {
        let v = try volume(named: file, in: parent)
        guard newParent == Inode.root else { throw FuseFailure(newParent == Inode.snapshots || Inode.snapshotDirID(newParent) != nil ? EROFS : EXDEV) }
        guard let newName = Inode.volumeName(fromFile: newFile) else { throw FuseFailure(EINVAL) }
        if flags & RENAME_EXCHANGE_ != 0 { throw FuseFailure(EINVAL) }
        do throws(TesseraError) {
            try engine.renameVolume(v.name, to: newName, noReplace: flags & RENAME_NOREPLACE_ != 0)
        } catch {
            throw FuseFailure(error)
        }
        fuse_reply_err(req, 0)
    }

    // MARK: Snapshot directories

    /// `mkdir MOUNT/.snapshots/NAME` snapshots every volume at one instant.
    func mkdir(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: String) throws(FuseFailure) {
        guard parent == Inode.snapshots else { throw FuseFailure(Inode.snapshotDirID(parent) != nil ? EROFS : EPERM) }
        do { try engine.createSnapshot(name: name, volumes: [], all: true) } catch { throw FuseFailure(error) }
        guard let id = engine.snapshotImages(name)?.first?.snapshotID else { throw FuseFailure(EIO) }
        var e = entry(directoryAttr(Inode.snapshotDir(id)))
        fuse_reply_entry(req, &e)
    }

    /// `rmdir MOUNT/.snapshots/NAME` deletes the snapshot.
    func rmdir(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: String) throws(FuseFailure) {
        guard parent == Inode.snapshots else { throw FuseFailure(parent == Inode.root ? ENOTDIR : EROFS) }
        do { try engine.deleteSnapshot(name) } catch { throw FuseFailure(error) }
        fuse_reply_err(req, 0)
    }

    // MARK: Extended attributes (libvirt's trusted.libvirt.security.* among them)

    func setxattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ name: String, _ value: UnsafePointer<CChar>?, _ size: Int,
                  _ flags: Int32) throws(FuseFailure) {
        if Inode.snapshotImageIDs(ino) != nil { throw FuseFailure(EROFS) }
        guard Inode.isVolume(ino) else { throw FuseFailure(ENOTSUP) }
        // As ext4: only the known namespaces, each with a name after its prefix.
        guard let prefix = ["user.", "trusted.", "security."].first(where: name.hasPrefix) else { throw FuseFailure(EOPNOTSUPP) }
        if name.utf8.count == prefix.utf8.count || name.utf8.count > 255 { throw FuseFailure(EINVAL) }
        let v = try volume(ino)
        let exists = v.xattrs[name] != nil
        if flags & Int32(XATTR_CREATE) != 0 && exists { throw FuseFailure(EEXIST) }
        if flags & Int32(XATTR_REPLACE) != 0 && !exists { throw FuseFailure(ENODATA) }
        let bytes = size == 0 ? [] : [UInt8](UnsafeRawBufferPointer(start: value, count: size))
        do { try engine.setXattr(v, name: name, value: bytes) } catch { throw FuseFailure(error) }
        fuse_reply_err(req, 0)
    }

    func getxattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ name: String, _ size: Int) throws(FuseFailure) {
        guard Inode.isVolume(ino) else { throw FuseFailure(ENODATA) }
        guard let value = try volume(ino).xattrs[name] else { throw FuseFailure(ENODATA) }
        try replyBytes(req, value, size)
    }

    func listxattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int) throws(FuseFailure) {
        let names = Inode.isVolume(ino) ? try volume(ino).xattrs.keys.sorted() : []
        try replyBytes(req, names.flatMap { Array($0.utf8) + [0] }, size)
    }

    private func replyBytes(_ req: fuse_req_t?, _ bytes: [UInt8], _ size: Int) throws(FuseFailure) {
        if size == 0 {
            fuse_reply_xattr(req, bytes.count)
        } else if size < bytes.count {
            throw FuseFailure(ERANGE)
        } else {
            _ = bytes.withUnsafeBytes { fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count) }
        }
    }

    func removexattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ name: String) throws(FuseFailure) {
        guard Inode.isVolume(ino) else { throw FuseFailure(ENODATA) }
        let v = try volume(ino)
        guard v.xattrs[name] != nil else { throw FuseFailure(ENODATA) }
        do { try engine.setXattr(v, name: name, value: nil) } catch { throw FuseFailure(error) }
        fuse_reply_err(req, 0)
    }

    // MARK: Space

    func fallocate(_ req: fuse_req_t?, _ mode: Int32, _ off: off_t, _ len: off_t,
                   _ fi: UnsafeMutablePointer<fuse_file_info>) throws(FuseFailure) {
        let v = try Self.writable(fi)
        guard off >= 0, len > 0 else { throw FuseFailure(EINVAL) }
        let end = UInt64(off) + UInt64(len)
        guard end <= Engine.maxVolumeSize else { throw FuseFailure(EFBIG) }
        let keepSize = mode & FALLOC_FL_KEEP_SIZE_ != 0
        do {
            switch mode & ~FALLOC_FL_KEEP_SIZE_ {
            case 0:  // preallocate: thin volumes allocate on write; only the size may change
                if !keepSize { v.extend(to: end) }
            case FALLOC_FL_PUNCH_HOLE_:
                guard keepSize else { throw FuseFailure(EOPNOTSUPP) }
                try v.discard(at: UInt64(off), length: UInt64(len))
            case FALLOC_FL_ZERO_RANGE_:
                try v.discard(at: UInt64(off), length: UInt64(len))
                if !keepSize { v.extend(to: end) }
            default:
                throw FuseFailure(EOPNOTSUPP)
            }
        } catch let e as FuseFailure {
            throw e
        } catch let e as StoreError {
            throw fail(v, "fallocate mode \(mode)", off, e)
        } catch {
            throw FuseFailure(EIO, "\(error)")
        }
        fuse_reply_err(req, 0)
    }

    func lseek(_ req: fuse_req_t?, _ off: off_t, _ whence: Int32, _ fi: UnsafeMutablePointer<fuse_file_info>) throws(FuseFailure) {
        let image = Self.image(fi)
        guard whence == SEEK_DATA_ || whence == SEEK_HOLE_, off >= 0 else { throw FuseFailure(EINVAL) }
        guard let found = image.volume.seek(from: UInt64(off), data: whence == SEEK_DATA_, epoch: image.epoch,
                                            viewSize: image.size) else { throw FuseFailure(ENXIO) }
        fuse_reply_lseek(req, off_t(found))
    }

    func copyRange(_ req: fuse_req_t?, _ offIn: off_t, _ fiIn: UnsafeMutablePointer<fuse_file_info>, _ offOut: off_t,
                   _ fiOut: UnsafeMutablePointer<fuse_file_info>, _ len: Int) throws(FuseFailure) {
        let src = Self.image(fiIn)
        let dst = try Self.writable(fiOut)
        guard offIn >= 0, offOut >= 0, UInt64(offOut) + UInt64(len) <= Engine.maxVolumeSize else {
            throw FuseFailure(EINVAL)
        }
        do {
            let n = try dst.copy(from: src.volume, at: UInt64(offIn), to: UInt64(offOut), length: UInt64(len),
                                 sourceEpoch: src.epoch, sourceSize: src.size)
            fuse_reply_write(req, Int(n))
        } catch {
            throw fail(dst, "copy_file_range of \(len) bytes", offOut, error)
        }
    }
}

// Linux constants that Glibc's module does not export, from the system headers (CLinux).
private let O_DIRECT_ = tessera_O_DIRECT
private let RENAME_NOREPLACE_ = tessera_RENAME_NOREPLACE
private let RENAME_EXCHANGE_ = tessera_RENAME_EXCHANGE
private let SEEK_DATA_ = tessera_SEEK_DATA
private let SEEK_HOLE_ = tessera_SEEK_HOLE
private let FALLOC_FL_KEEP_SIZE_ = tessera_FALLOC_FL_KEEP_SIZE
private let FALLOC_FL_PUNCH_HOLE_ = tessera_FALLOC_FL_PUNCH_HOLE
private let FALLOC_FL_ZERO_RANGE_ = tessera_FALLOC_FL_ZERO_RANGE
