// FuseMount — the session: mounts, runs libfuse's multi-threaded loop, handles SIGTERM/SIGINT and
// `tessera unmount`, and flushes everything before the process exits.
//
// Shutdown: the loop ends when the filesystem is unmounted from outside (umount2 here, fusermount3 or
// umount elsewhere), as libfuse documents; we never call fuse_session_unmount from another thread.
// The kernel sends every write to the daemon before write(2) returns (no writeback cache), so when the
// loop has ended, a final flush of every volume makes everything durable.
import CFuse3
import Foundation
import Synchronization
import TesseraCore
import TesseraEngine

#if canImport(Glibc)
    import Glibc
#endif

/// `@unchecked Sendable`: `session` is set once before the loop starts and read-only afterwards;
/// libfuse's session is made for use from its worker threads and for notifications from others.
public final class FuseMount: @unchecked Sendable {
    public let engine: Engine
    public let mountpoint: String
    let allowOther: Bool
    var session: OpaquePointer?
    let attrTimeout = 1.0

    public init(engine: Engine, mountpoint: String, allowOther: Bool) {
        self.engine = engine
        self.mountpoint = mountpoint
        self.allowOther = allowOther
    }

    /// Mounts; returns once the kernel knows the mount (requests queue until `serve()`).
    public func mount() throws(TesseraError) {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: mountpoint, isDirectory: &isDir), isDir.boolValue else {
            throw TesseraError(.notFound, "mountpoint \(mountpoint) does not exist or is not a directory")
        }
        var options = "default_permissions,fsname=tessera,subtype=tessera"
        if allowOther { options += ",allow_other" }
        let argv = ["tessera", "-o", options]
        var cArgs = argv.map { strdup($0) }
        let argc = Int32(cArgs.count)
        cArgs.append(nil)
        let se: OpaquePointer? = cArgs.withUnsafeMutableBufferPointer { buf in
            var args = tessera_args_init(argc, buf.baseAddress)
            var ops = FuseOperations.table()
            let me = Unmanaged.passUnretained(self).toOpaque()
            let s = tessera_session_new(&args, &ops, me)
            fuse_opt_free_args(&args)
            return s
        }
        for p in cArgs { free(p) }
        guard let se else { throw TesseraError(.io, "cannot create the FUSE session (is /dev/fuse there?)") }
        if fuse_session_mount(se, mountpoint) != 0 {
            fuse_session_destroy(se)
            throw TesseraError(.io, "cannot mount at \(mountpoint) (see the message above; already mounted?)")
        }
        session = se
        engine.observers.withLock { $0.append { [weak self] id in self?.invalidate(id) } }
    }

    /// Runs the request loop until the filesystem is unmounted, then flushes every volume.
    /// SIGTERM and SIGINT unmount (see `requestUnmount`).
    public func serve() throws(TesseraError) {
        guard let se = session else { return }
        startSignalThread()
        let rc = tessera_session_loop_mt(se, 16, 1)
        fuse_session_unmount(se)
        fuse_session_destroy(se)
        session = nil
        engine.stopPeriodicFlush()
        engine.stopHealthChecks()
        defer { engine.stopCaches() }
        do {
            try engine.flushAll()
        } catch {
            throw TesseraError(.io, "final flush failed: \(error); acknowledged-but-unsynced writes may be lost")
        }
        if rc != 0 && rc != -EINTR { Log.error("FUSE loop ended with \(rc)") }
    }

    /// Flushes everything, then unmounts from outside the loop. Without `force`, an open image refuses
    /// (EBUSY); with it, the mount is detached and ends at its last close.
    public func requestUnmount(force: Bool) throws(TesseraError) {
        do {
            try engine.flushAll()
        } catch {
            // A store that cannot take writes any more must not pin the mount forever: --force (and
            // SIGTERM) unmount anyway, and the daemon exits with the error.
            guard force else {
                throw TesseraError(.io, "flush before unmount failed: \(error); writes not yet fsynced may be lost "
                    + "(tessera unmount --force unmounts anyway)")
            }
            Log.error("flush before unmount failed: \(error); unmounting anyway (--force)")
        }
        if umount2(mountpoint, 0) == 0 { return }
        let e = errno
        if e == EBUSY && force {
            if umount2(mountpoint, Int32(MNT_DETACH)) == 0 { return }
        }
        if e == EBUSY { throw TesseraError(.busy, "\(mountpoint) is busy (an image is open); close it or use --force") }
        throw TesseraError(.io, "cannot unmount \(mountpoint): \(String(cString: strerror(e)))")
    }

    /// SIGTERM/SIGINT are blocked in every thread (see `blockTerminationSignals`) and taken here.
    private func startSignalThread() {
        let t = Thread { [self] in
            var set = sigset_t()
            sigemptyset(&set)
            sigaddset(&set, SIGTERM)
            sigaddset(&set, SIGINT)
            while true {
                var sig: Int32 = 0
                if sigwait(&set, &sig) != 0 { continue }
                Log.info("signal \(sig): flushing and unmounting \(mountpoint)")
                do {
                    try requestUnmount(force: true)
                    return
                } catch {
                    Log.error("\(error)")
                }
            }
        }
        t.name = "tessera-signals"
        t.start()
    }

    /// Raises the open-file limit to its hard maximum: the directory store caches one fd per chunk.
    public static func raiseFileLimit() {
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
    }

    /// Call first thing in the process, before any thread starts, so every thread inherits the mask.
    public static func blockTerminationSignals() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGINT)
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Drops the kernel's cached attributes of a volume changed outside a FUSE request.
    func invalidate(_ id: VolumeID) {
        guard let se = session else { return }
        _ = fuse_lowlevel_notify_inval_inode(se, Inode.volume(id), 0, 0)
    }
}
