// FuseOperations — the FUSE adapter's request handlers: inode numbers ↔ nodes (Nodes.swift), names ↔
// volumes, data ops → the open image's volume stack, namespace ops → the engine, errors → errno. Each C
// entry point is a one-line trampoline into a Swift handler that always ends in exactly one reply.
// Handlers run on libfuse's worker threads, synchronously: no Task, no await.
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
        ops.lookup = { req, parent, name in
            FuseOperations.handle(req) { try $0.lookup(req, parent, String(cString: name!)) }
        }
        ops.forget = { req, _, _ in fuse_reply_none(req) }
        ops.getattr = { req, ino, fi in FuseOperations.handle(req) { try $0.getattr(req, ino, fi) } }
        ops.setattr = { req, ino, attr, toSet, fi in
            FuseOperations.handle(req) { try $0.setattr(req, ino, attr!.pointee, toSet, fi) }
        }
        ops.readdir = { req, ino, size, off, _ in FuseOperations.handle(req) { try $0.readdir(req, ino, size, off) } }
        ops.open = { req, ino, fi in FuseOperations.handle(req) { try $0.open(req, ino, fi!) } }
        ops.read = { req, _, size, off, fi in FuseOperations.handle(req) { try $0.read(req, size, off, fi!) } }
        ops.write = { req, _, buf, size, off, fi in
            FuseOperations.handle(req) { try $0.write(req, buf!, size, off, fi!) }
        }
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
        ops.unlink = { req, parent, name in
            FuseOperations.handle(req) { try $0.unlink(req, parent, String(cString: name!)) }
        }
        ops.rename = { req, parent, name, newParent, newName, flags in
            FuseOperations.handle(req) {
                try $0.rename(req, parent, String(cString: name!), newParent, String(cString: newName!), flags)
            }
        }
        ops.mkdir = { req, parent, name, _ in
            FuseOperations.handle(req) { try $0.mkdir(req, parent, String(cString: name!)) }
        }
        ops.rmdir = { req, parent, name in
            FuseOperations.handle(req) { try $0.rmdir(req, parent, String(cString: name!)) }
        }
        ops.mknod = { req, _, _, _, _ in fuse_reply_err(req, EPERM) }
        ops.symlink = { req, _, _, _ in fuse_reply_err(req, EPERM) }
        ops.link = { req, _, _, _ in fuse_reply_err(req, EPERM) }
        ops.setxattr = { req, ino, name, value, size, flags in
            FuseOperations.handle(req) { try $0.setxattr(req, ino, String(cString: name!), value, size, flags) }
        }
        ops.getxattr = { req, ino, name, size in
            FuseOperations.handle(req) { try $0.getxattr(req, ino, String(cString: name!), size) }
        }
        ops.listxattr = { req, ino, size in FuseOperations.handle(req) { try $0.listxattr(req, ino, size) } }
        ops.removexattr = { req, ino, name in
            FuseOperations.handle(req) { try $0.removexattr(req, ino, String(cString: name!)) }
        }
        ops.fallocate = { req, _, mode, off, len, fi in
            FuseOperations.handle(req) { try $0.fallocate(req, mode, off, len, fi!) }
        }
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

/// A request answered later, from another thread (DeferredRequests). `@unchecked Sendable`: libfuse lets
/// any thread reply to a request, exactly once; the handler that deferred it never touches it again.
struct PendingRequest: @unchecked Sendable {
    let req: fuse_req_t?
    init(_ req: fuse_req_t?) { self.req = req }
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

    /// A handle open for writing; snapshot images are read-only (EROFS).
    private static func writable(_ fi: UnsafeMutablePointer<fuse_file_info>) throws(FuseFailure) -> OpenImage {
        let image = image(fi)
        if image.readOnly { throw FuseFailure(EROFS) }
        return image
    }

    private func fail(_ v: Volume, _ what: String, _ offset: off_t, _ error: StoreError) -> FuseFailure {
        FuseFailure(error.errno, "\(v.name).img: \(what) at offset \(offset) failed: \(error)")
    }

    private func volume(_ id: VolumeID) throws(FuseFailure) -> Volume {
        guard let v = engine.volume(id: id) else { throw FuseFailure(ENOENT) }
        return v
    }

    private func volume(named file: String, in parent: Node) throws(FuseFailure) -> Volume {
        if parent.isSnapshotDirectory { throw FuseFailure(EROFS) }
        guard let domain = parent.volumesOf else { throw FuseFailure(ENOTDIR) }
        guard let name = Node.volumeName(fromFile: file), let v = engine.volume(named: name, domainID: domain) else {
            throw FuseFailure(ENOENT)
        }
        return v
    }

    /// The name of domain `id` (ENOENT once it is gone).
    private func domainName(_ id: Int64) throws(FuseFailure) -> String {
        guard let name = engine.domainName(id: id) else { throw FuseFailure(ENOENT) }
        return name
    }

    /// A domain's directory in the root: `name` names a domain other than the default one.
    private func domainDirectory(_ name: String) -> Node? {
        guard let id = try? engine.domainID(name), id != Engine.defaultDomainID else { return nil }
        return .domain(id)
    }

    // MARK: Attributes

    private func directoryAttr(_ node: Node) -> stat {
        var st = stat()
        st.st_ino = UInt(node.ino)
        st.st_mode = S_IFDIR | 0o755
        st.st_nlink = 2
        st.st_blksize = 4096
        return st
    }

    private func attr(_ v: Volume) -> stat {
        let r = v.record
        var st = stat()
        st.st_ino = UInt(Node.volume(v.id).ino)
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
        st.st_ino = UInt(Node.snapshotImage(snapshot: image.snapshotID, volume: image.volume.id).ino)
        st.st_mode = S_IFREG | (st.st_mode & 0o7777 & ~0o222)
        st.st_nlink = 1
        st.st_size = off_t(image.size)
        st.st_blocks = blkcnt_t(image.volume.allocatedBytes(at: image.epoch, viewSize: image.size) / 512)
        return st
    }

    /// A volume at an instant (MOUNT/.cdp/VOL@TIME.img): read-only, its size then; its blocks are those of
    /// the base it is read over.
    private func attr(_ image: CDPImage, _ v: Volume, handle: UInt64) -> stat {
        var st = attr(v)
        st.st_ino = UInt(Node.cdpImage(handle).ino)
        st.st_mode = S_IFREG | (st.st_mode & 0o7777 & ~0o222)
        st.st_nlink = 1
        st.st_size = off_t(image.size)
        let base = (image.base.bottom as? VolumeView).map { $0.volume.allocatedBytes(at: $0.epoch, viewSize: $0.size) }
        st.st_blocks = blkcnt_t(min(base ?? image.size, image.size) / 512)
        return st
    }

    /// The image `.cdp/VOL@SPEC.img` of `domain` names (SPEC: an RFC 3339 time or a mark); its number and
    /// volume.
    private func cdpImage(named file: String, domain: Int64) throws(FuseFailure) -> (CDPImage, Volume, UInt64) {
        guard let stem = Node.volumeName(fromFile: file), let at = stem.lastIndex(of: "@") else {
            throw FuseFailure(ENOENT)
        }
        guard let v = engine.volume(named: String(stem[..<at]), domainID: domain) else { throw FuseFailure(ENOENT) }
        do {
            let image = try engine.cdpImage(v, at: String(stem[stem.index(after: at)...]))
            return (image, v, engine.cdp.handle(CDPImageKey(volume: v.id, time: image.time)))
        } catch {
            throw FuseFailure(error)
        }
    }

    /// A diff image (MOUNT/.diff/FROM..TO/VOL.img): the image at TO, its blocks those of the changed ranges.
    private func attr(_ diff: CDPDiffImage, _ v: Volume, handle: UInt64) -> stat {
        var st = attr(diff.image, v, handle: 0)
        st.st_ino = UInt(Node.diffImage(handle).ino)
        st.st_blocks = blkcnt_t(diff.regions.reduce(0) { $0 + $1.end - $1.start } / 512)
        return st
    }

    /// The name a diff directory is numbered by: "D:FROM..TO" (D the domain's id; FROM..TO as looked up).
    private static func diffDirKey(_ domain: Int64, _ range: String) -> String { "\(domain):\(range)" }

    /// The domain and "FROM..TO" a diff directory's name holds (nil for a name `diffDirKey` did not make).
    private static func parseDiffDirKey(_ key: String) -> (domain: Int64, range: Substring)? {
        guard let colon = key.firstIndex(of: ":"), let domain = Int64(key[..<colon]) else { return nil }
        return (domain, key[key.index(after: colon)...])
    }

    /// The diff image of volume file `file` in the diff directory named `dirKey` (see `diffDirKey`), and
    /// its number (named "VOL/D:FROM..TO").
    private func diffImage(_ file: String, in dirKey: String) throws(FuseFailure) -> (CDPDiffImage, Volume, UInt64) {
        guard let (domain, range) = Self.parseDiffDirKey(dirKey) else { throw FuseFailure(ENOENT) }
        guard let name = Node.volumeName(fromFile: file), let v = engine.volume(named: name, domainID: domain),
            let dots = range.range(of: "..")
        else { throw FuseFailure(ENOENT) }
        do {
            let diff = try engine.cdpDiff(
                v, from: String(range[..<dots.lowerBound]), to: String(range[dots.upperBound...]))
            return (diff, v, engine.cdp.diffHandle(v.name + "/" + dirKey))
        } catch {
            throw FuseFailure(error)
        }
    }

    /// The diff image numbered `handle` (named by an earlier lookup).
    private func diffImage(_ handle: UInt64) throws(FuseFailure) -> (CDPDiffImage, Volume) {
        guard let key = engine.cdp.diffName(handle), let slash = key.firstIndex(of: "/") else {
            throw FuseFailure(ENOENT)
        }
        let (diff, v, _) = try diffImage(
            String(key[..<slash]) + Node.imageSuffix, in: String(key[key.index(after: slash)...]))
        return (diff, v)
    }

    /// The image numbered `handle` (named by an earlier lookup).
    private func cdpImage(_ handle: UInt64) throws(FuseFailure) -> (CDPImage, Volume) {
        guard let key = engine.cdp.key(handle), let v = engine.volume(id: key.volume) else { throw FuseFailure(ENOENT) }
        do { return (try engine.cdpImage(v, at: key.time), v) } catch { throw FuseFailure(error) }
    }

    private func snapshotImage(_ snapshot: Int64, _ volume: VolumeID) throws(FuseFailure) -> SnapshotImage {
        guard let image = engine.snapshotImage(snapshot: snapshot, volume: volume) else { throw FuseFailure(ENOENT) }
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
        switch Node(parent) {
        case let node where node.volumesOf != nil && name == Node.snapshotsName:
            e = entry(directoryAttr(.snapshots(of: node.volumesOf!)))
        case let node where node.volumesOf != nil && name == Node.cdpName:
            e = entry(directoryAttr(.cdp(of: node.volumesOf!)))
        case let node where node.volumesOf != nil && name == Node.diffName:
            e = entry(directoryAttr(.diff(of: node.volumesOf!)))
        case .root where domainDirectory(name) != nil:
            e = entry(directoryAttr(domainDirectory(name)!))
        case let node where node.diffOf != nil:
            guard name.contains("..") else { throw FuseFailure(ENOENT) }
            e = entry(directoryAttr(.diffDir(engine.cdp.diffHandle(Self.diffDirKey(node.diffOf!, name)))))
        case .diffDir(let n):
            guard let key = engine.cdp.diffName(n) else { throw FuseFailure(ENOENT) }
            let (diff, v, handle) = try diffImage(name, in: key)
            e = entry(attr(diff, v, handle: handle))
        case let node where node.cdpOf != nil:
            let (image, v, handle) = try cdpImage(named: name, domain: node.cdpOf!)
            e = entry(attr(image, v, handle: handle))
        case let node where node.snapshotsOf != nil:
            guard let id = engine.snapshotImages(name, domainID: node.snapshotsOf!)?.first?.snapshotID else {
                throw FuseFailure(ENOENT)
            }
            e = entry(directoryAttr(.snapshotDir(id)))
        case .snapshotDir(let snap):
            guard let vol = Node.volumeName(fromFile: name),
                let image = engine.snapshotImages(id: snap)?.first(where: { $0.volume.name == vol })
            else { throw FuseFailure(ENOENT) }
            e = entry(attr(image))
        case let node:
            e = entry(attr(try volume(named: name, in: node)))
        }
        fuse_reply_entry(req, &e)
    }

    func getattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) throws(FuseFailure)
    {
        var st: stat
        switch Node(ino) {
        case let node where node == .root || node == .snapshots || node == .cdp || node == .diff:
            st = directoryAttr(node)
        case let node where node.domainOf != nil:
            _ = try domainName(node.domainOf!)
            st = directoryAttr(node)
        case .diffDir(let n):
            guard engine.cdp.diffName(n) != nil else { throw FuseFailure(ENOENT) }
            st = directoryAttr(.diffDir(n))
        case .diffImage(let handle):
            let (diff, v) = try diffImage(handle)
            st = attr(diff, v, handle: handle)
        case .cdpImage(let handle):
            let (image, v) = try cdpImage(handle)
            st = attr(image, v, handle: handle)
        case .snapshotDir(let snap):
            guard engine.snapshotName(id: snap) != nil else { throw FuseFailure(ENOENT) }
            st = directoryAttr(.snapshotDir(snap))
        case .snapshotImage(let snap, let vol):
            st = attr(try snapshotImage(snap, vol))
        case .volume(let id):
            if let fi, fi.pointee.fh != 0 {
                st = attr(Self.image(fi).volume)  // also answers fstat on an unlinked, still-open image
            } else {
                st = attr(try volume(id))
            }
        default:
            throw FuseFailure(ENOENT)
        }
        fuse_reply_attr(req, &st, attrTimeout)
    }

    func setattr(
        _ req: fuse_req_t?, _ ino: fuse_ino_t, _ new: stat, _ toSet: Int32,
        _ fi: UnsafeMutablePointer<fuse_file_info>?
    ) throws(FuseFailure) {
        let node = Node(ino)
        switch node {
        case let node where node.isSnapshotDirectory:
            throw FuseFailure(EROFS)
        case .snapshotImage, .cdpImage, .diffImage:
            throw FuseFailure(EROFS)
        default: break
        }
        let v: Volume
        if let fi, fi.pointee.fh != 0 {
            v = try Self.writable(fi).volume
        } else if case .volume(let id) = node {
            v = try volume(id)
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
        let node = Node(ino)
        var names: [(String, stat)] = [(".", directoryAttr(node)), ("..", directoryAttr(.root))]
        switch node {
        case let node where node.volumesOf != nil:
            let domain = node.volumesOf!
            if domain != Engine.defaultDomainID { _ = try domainName(domain) }
            names.append((Node.snapshotsName, directoryAttr(.snapshots(of: domain))))
            if node == .root {
                for d in engine.domainNames() where d.id != Engine.defaultDomainID {
                    names.append((d.name, directoryAttr(.domain(d.id))))
                }
            }
            for v in engine.allVolumes() where v.record.domainId == domain && !v.isUnlinked {
                names.append((v.name + Node.imageSuffix, attr(v)))
            }
        case let node where node.snapshotsOf != nil:
            let domain = node.snapshotsOf!
            for name in engine.snapshotNames(domainID: domain) {
                if let id = engine.snapshotImages(name, domainID: domain)?.first?.snapshotID {
                    names.append((name, directoryAttr(.snapshotDir(id))))
                }
            }
        case let node where node.diffOf != nil:
            _ = try domainName(node.diffOf!)  // FROM..TO directories are found by name
        case .diffDir(let n):
            guard let key = engine.cdp.diffName(n), let domain = Self.parseDiffDirKey(key)?.domain else {
                throw FuseFailure(ENOENT)
            }
            for v in engine.allVolumes() where v.record.domainId == domain {
                guard let (_, _, handle) = try? diffImage(v.name + Node.imageSuffix, in: key) else { continue }
                var st = stat()
                st.st_ino = UInt(Node.diffImage(handle).ino)
                st.st_mode = S_IFREG
                names.append((v.name + Node.imageSuffix, st))
            }
        case let node where node.cdpOf != nil:
            _ = try domainName(node.cdpOf!)
            for (name, key) in engine.cdpListing(domainID: node.cdpOf!) {
                var st = stat()
                st.st_ino = UInt(Node.cdpImage(engine.cdp.handle(key)).ino)
                st.st_mode = S_IFREG
                names.append((name + Node.imageSuffix, st))
            }
        case .snapshotDir(let snap):
            guard let images = engine.snapshotImages(id: snap) else { throw FuseFailure(ENOENT) }
            for image in images {
                var st = stat()
                st.st_ino = UInt(Node.snapshotImage(snapshot: image.snapshotID, volume: image.volume.id).ino)
                st.st_mode = S_IFREG
                names.append((image.volume.name + Node.imageSuffix, st))
            }
        default:
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
        switch Node(ino) {
        case .snapshotImage(let snap, let vol):
            if fi.pointee.flags & O_ACCMODE != O_RDONLY || fi.pointee.flags & O_TRUNC != 0 { throw FuseFailure(EROFS) }
            let image = try snapshotImage(snap, vol)
            attach(OpenImage(image.volume, io: engine.view(of: image), pid: Self.caller(req)), fi)
        case .cdpImage(let handle):
            if fi.pointee.flags & O_ACCMODE != O_RDONLY || fi.pointee.flags & O_TRUNC != 0 { throw FuseFailure(EROFS) }
            let (image, v) = try cdpImage(handle)
            attach(OpenImage(v, io: image, pid: Self.caller(req)), fi)
        case .diffImage(let handle):
            if fi.pointee.flags & O_ACCMODE != O_RDONLY || fi.pointee.flags & O_TRUNC != 0 { throw FuseFailure(EROFS) }
            let (diff, v) = try diffImage(handle)
            attach(OpenImage(v, io: diff, pid: Self.caller(req)), fi)
        case .volume(let id):
            let v = try volume(id)
            // libfuse asks for atomic O_TRUNC: the kernel passes the flag here instead of a SETATTR.
            if fi.pointee.flags & O_TRUNC != 0 && fi.pointee.flags & O_ACCMODE != O_RDONLY {
                do { try engine.resize(v, to: 0) } catch { throw FuseFailure(error) }
            }
            attach(live(v, req), fi)
        default:
            throw FuseFailure(EISDIR)
        }
        fuse_reply_open(req, fi)
    }

    private static func caller(_ req: fuse_req_t?) -> pid_t { fuse_req_ctx(req)?.pointee.pid ?? 0 }

    /// A handle on the live image of `v`: the top of its volume stack.
    private func live(_ v: Volume, _ req: fuse_req_t?) -> OpenImage {
        OpenImage(v, io: engine.stack(of: v), throttle: engine.throttle(of: v), pid: Self.caller(req))
    }

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
        let image = Unmanaged<OpenImage>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(fi.pointee.fh))!)
            .takeRetainedValue()
        fi.pointee.fh = 0
        openHandles.withLock { _ = $0.removeValue(forKey: ObjectIdentifier(image)) }
        engine.closed(image.volume)
        fuse_reply_err(req, 0)
    }

    func read(_ req: fuse_req_t?, _ size: Int, _ off: off_t, _ fi: UnsafeMutablePointer<fuse_file_info>)
        throws(FuseFailure)
    {
        let image = Self.image(fi)
        // A throttled read waits in DeferredRequests, not on this worker thread.
        if let wait = image.throttle?.admit(write: false, bytes: size), wait > 0 {
            let pending = PendingRequest(req)
            deferred.after(wait) {
                FuseOperations.handle(pending.req) { try $0.readAdmitted(pending.req, size, off, image) }
            }
            return
        }
        try readAdmitted(req, size, off, image)
    }

    private func readAdmitted(_ req: fuse_req_t?, _ size: Int, _ off: off_t, _ image: OpenImage) throws(FuseFailure) {
        do {
            try ReadBuffer.with(size) { buffer throws(StoreError) in
                let n = try image.admitted.read(at: UInt64(off), into: buffer)
                fuse_reply_buf(req, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), n)
            }
        } catch {
            throw fail(image.volume, "read of \(size) bytes", off, error)
        }
    }

    func write(
        _ req: fuse_req_t?, _ buf: UnsafePointer<CChar>, _ size: Int, _ off: off_t,
        _ fi: UnsafeMutablePointer<fuse_file_info>
    ) throws(FuseFailure) {
        let image = try Self.writable(fi)
        guard off >= 0, UInt64(off) + UInt64(size) <= Engine.maxVolumeSize else { throw FuseFailure(EFBIG) }
        try checkGrowth(image.volume, to: UInt64(off) + UInt64(size))
        let data = UnsafeRawBufferPointer(start: buf, count: size)
        // A throttled write waits in DeferredRequests with a copy of its data (libfuse reuses `buf`).
        if let wait = image.throttle?.admit(write: true, bytes: size), wait > 0 {
            let pending = PendingRequest(req)
            let copy = [UInt8](data)
            deferred.after(wait) {
                FuseOperations.handle(pending.req) { mount in
                    try copy.withUnsafeBytes { try mount.writeAdmitted(pending.req, $0, off, image) }
                }
            }
            return
        }
        try writeAdmitted(req, data, off, image)
    }

    private func writeAdmitted(_ req: fuse_req_t?, _ data: UnsafeRawBufferPointer, _ off: off_t, _ image: OpenImage)
        throws(FuseFailure)
    {
        do {
            try image.admitted.write(at: UInt64(off), from: data)
        } catch {
            throw fail(image.volume, "write of \(data.count) bytes", off, error)
        }
        fuse_reply_write(req, data.count)
    }

    /// EDQUOT before a write, fallocate or copy that would grow `v` past its domain's size quota.
    @inline(__always)
    private func checkGrowth(_ v: Volume, to end: UInt64) throws(FuseFailure) {
        guard end > v.size else { return }
        do { try engine.checkGrowth(v, to: end) } catch { throw FuseFailure(error.errno) }
    }

    func fsync(_ req: fuse_req_t?, _ dataOnly: Bool, _ fi: UnsafeMutablePointer<fuse_file_info>) throws(FuseFailure) {
        let image = Self.image(fi)
        do { try image.io.flush(dataOnly: dataOnly) } catch { throw fail(image.volume, "fsync", 0, error) }
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

    func create(
        _ req: fuse_req_t?, _ parent: fuse_ino_t, _ file: String, _ mode: mode_t,
        _ fi: UnsafeMutablePointer<fuse_file_info>
    ) throws(FuseFailure) {
        let node = Node(parent)
        if node.isSnapshotDirectory { throw FuseFailure(EROFS) }
        guard let domainID = node.volumesOf else { throw FuseFailure(EPERM) }
        if file.utf8.count > 255 { throw FuseFailure(ENAMETOOLONG) }
        let domain = try domainName(domainID)
        guard let name = Node.volumeName(fromFile: file) else {
            throw FuseFailure(EINVAL, "create \(file): images must be named NAME.img")
        }
        let ctx = fuse_req_ctx(req)!.pointee
        let v: Volume
        do {
            v = try engine.createVolumes(
                name: name, size: 0, domain: domain, uid: Int64(ctx.uid), gid: Int64(ctx.gid),
                mode: Int64(mode & ~ctx.umask & 0o7777), allowZeroSize: true)[0]
        } catch {
            throw FuseFailure(error)
        }
        var e = entry(attr(v))
        attach(live(v, req), fi)
        fuse_reply_create(req, &e, fi)
    }

    func unlink(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ file: String) throws(FuseFailure) {
        let v = try volume(named: file, in: Node(parent))
        do { try engine.unlink(v) } catch { throw FuseFailure(error) }
        fuse_reply_err(req, 0)
    }

    func rename(
        _ req: fuse_req_t?, _ parent: fuse_ino_t, _ file: String, _ newParent: fuse_ino_t,
        _ newFile: String, _ flags: UInt32
    ) throws(FuseFailure) {
        let v = try volume(named: file, in: Node(parent))
        let target = Node(newParent)
        // A volume stays in its domain: a rename into another domain's directory is a cross-device one.
        guard target == Node(parent) else { throw FuseFailure(target.isSnapshotDirectory ? EROFS : EXDEV) }
        guard let newName = Node.volumeName(fromFile: newFile) else { throw FuseFailure(EINVAL) }
        if flags & RENAME_EXCHANGE_ != 0 { throw FuseFailure(EINVAL) }
        let domain = try domainName(target.volumesOf!)
        do throws(TesseraError) {
            try engine.renameVolume(
                v.name, to: newName, noReplace: flags & RENAME_NOREPLACE_ != 0, domain: domain)
        } catch {
            throw FuseFailure(error)
        }
        fuse_reply_err(req, 0)
    }

    // MARK: Snapshot directories

    /// `mkdir MOUNT/.snapshots/NAME` snapshots every volume at one instant (`MOUNT/D/.snapshots/NAME`:
    /// every volume of domain D).
    func mkdir(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: String) throws(FuseFailure) {
        let node = Node(parent)
        guard let domainID = node.snapshotsOf else { throw FuseFailure(node.isSnapshotDirectory ? EROFS : EPERM) }
        let domain = try domainName(domainID)
        do { try engine.createSnapshot(name: name, volumes: [], all: true, domain: domain) } catch {
            throw FuseFailure(error)
        }
        guard let id = engine.snapshotImages(name, domainID: domainID)?.first?.snapshotID else {
            throw FuseFailure(EIO)
        }
        var e = entry(directoryAttr(.snapshotDir(id)))
        fuse_reply_entry(req, &e)
    }

    /// `rmdir MOUNT/.snapshots/NAME` (or `MOUNT/D/.snapshots/NAME`) deletes the snapshot.
    func rmdir(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ name: String) throws(FuseFailure) {
        let node = Node(parent)
        guard let domainID = node.snapshotsOf else {
            if node == .root && domainDirectory(name) != nil { throw FuseFailure(EPERM) }  // `domain delete`
            throw FuseFailure(node.volumesOf != nil ? ENOTDIR : EROFS)
        }
        let domain = try domainName(domainID)
        do { try engine.deleteSnapshot(name, domain: domain) } catch { throw FuseFailure(error) }
        fuse_reply_err(req, 0)
    }

    // MARK: Extended attributes (libvirt's trusted.libvirt.security.* among them)

    func setxattr(
        _ req: fuse_req_t?, _ ino: fuse_ino_t, _ name: String, _ value: UnsafePointer<CChar>?, _ size: Int,
        _ flags: Int32
    ) throws(FuseFailure) {
        let id: VolumeID
        switch Node(ino) {
        case .snapshotImage, .cdpImage, .diffImage: throw FuseFailure(EROFS)
        case .volume(let volume): id = volume
        default: throw FuseFailure(ENOTSUP)
        }
        // As ext4: only the known namespaces, each with a name after its prefix.
        guard let prefix = ["user.", "trusted.", "security."].first(where: name.hasPrefix) else {
            throw FuseFailure(EOPNOTSUPP)
        }
        if name.utf8.count == prefix.utf8.count || name.utf8.count > 255 { throw FuseFailure(EINVAL) }
        let v = try volume(id)
        let exists = v.xattrs[name] != nil
        if flags & Int32(XATTR_CREATE) != 0 && exists { throw FuseFailure(EEXIST) }
        if flags & Int32(XATTR_REPLACE) != 0 && !exists { throw FuseFailure(ENODATA) }
        let bytes = size == 0 ? [] : [UInt8](UnsafeRawBufferPointer(start: value, count: size))
        do { try engine.setXattr(v, name: name, value: bytes) } catch { throw FuseFailure(error) }
        fuse_reply_err(req, 0)
    }

    func getxattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ name: String, _ size: Int) throws(FuseFailure) {
        guard case .volume(let id) = Node(ino), let value = try volume(id).xattrs[name] else {
            throw FuseFailure(ENODATA)
        }
        try replyBytes(req, value, size)
    }

    func listxattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ size: Int) throws(FuseFailure) {
        var names: [String] = []
        if case .volume(let id) = Node(ino) { names = try volume(id).xattrs.keys.sorted() }
        try replyBytes(req, names.flatMap { Array($0.utf8) + [0] }, size)
    }

    private func replyBytes(_ req: fuse_req_t?, _ bytes: [UInt8], _ size: Int) throws(FuseFailure) {
        if size == 0 {
            fuse_reply_xattr(req, bytes.count)
        } else if size < bytes.count {
            throw FuseFailure(ERANGE)
        } else {
            _ = bytes.withUnsafeBytes {
                fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
            }
        }
    }

    func removexattr(_ req: fuse_req_t?, _ ino: fuse_ino_t, _ name: String) throws(FuseFailure) {
        guard case .volume(let id) = Node(ino) else { throw FuseFailure(ENODATA) }
        let v = try volume(id)
        guard v.xattrs[name] != nil else { throw FuseFailure(ENODATA) }
        do { try engine.setXattr(v, name: name, value: nil) } catch { throw FuseFailure(error) }
        fuse_reply_err(req, 0)
    }

    // MARK: Space

    func fallocate(
        _ req: fuse_req_t?, _ mode: Int32, _ off: off_t, _ len: off_t,
        _ fi: UnsafeMutablePointer<fuse_file_info>
    ) throws(FuseFailure) {
        let image = try Self.writable(fi)
        guard off >= 0, len > 0 else { throw FuseFailure(EINVAL) }
        let end = UInt64(off) + UInt64(len)
        guard end <= Engine.maxVolumeSize else { throw FuseFailure(EFBIG) }
        let keepSize = mode & FALLOC_FL_KEEP_SIZE_ != 0
        do {
            switch mode & ~FALLOC_FL_KEEP_SIZE_ {
            case 0:  // preallocate: thin volumes allocate on write; only the size may change
                if !keepSize {
                    try checkGrowth(image.volume, to: end)
                    try image.io.extend(to: end)
                }
            case FALLOC_FL_PUNCH_HOLE_:
                guard keepSize else { throw FuseFailure(EOPNOTSUPP) }
                try image.io.discard(at: UInt64(off), length: UInt64(len))
            case FALLOC_FL_ZERO_RANGE_:
                if !keepSize { try checkGrowth(image.volume, to: end) }
                try image.io.discard(at: UInt64(off), length: UInt64(len))
                if !keepSize { try image.io.extend(to: end) }
            default:
                throw FuseFailure(EOPNOTSUPP)
            }
        } catch let e as FuseFailure {
            throw e
        } catch let e as StoreError {
            throw fail(image.volume, "fallocate mode \(mode)", off, e)
        } catch {
            throw FuseFailure(EIO, "\(error)")
        }
        fuse_reply_err(req, 0)
    }

    func lseek(_ req: fuse_req_t?, _ off: off_t, _ whence: Int32, _ fi: UnsafeMutablePointer<fuse_file_info>)
        throws(FuseFailure)
    {
        let image = Self.image(fi)
        guard whence == SEEK_DATA_ || whence == SEEK_HOLE_, off >= 0 else { throw FuseFailure(EINVAL) }
        guard let found = image.io.seek(from: UInt64(off), data: whence == SEEK_DATA_) else { throw FuseFailure(ENXIO) }
        fuse_reply_lseek(req, off_t(found))
    }

    func copyRange(
        _ req: fuse_req_t?, _ offIn: off_t, _ fiIn: UnsafeMutablePointer<fuse_file_info>, _ offOut: off_t,
        _ fiOut: UnsafeMutablePointer<fuse_file_info>, _ len: Int
    ) throws(FuseFailure) {
        let src = Self.image(fiIn)
        let dst = try Self.writable(fiOut)
        guard offIn >= 0, offOut >= 0, UInt64(offOut) + UInt64(len) <= Engine.maxVolumeSize else {
            throw FuseFailure(EINVAL)
        }
        try checkGrowth(dst.volume, to: UInt64(offOut) + UInt64(len))
        do {
            let n = try dst.io.copy(from: src.io, at: UInt64(offIn), to: UInt64(offOut), length: UInt64(len))
            fuse_reply_write(req, Int(n))
        } catch {
            throw fail(dst.volume, "copy_file_range of \(len) bytes", offOut, error)
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
