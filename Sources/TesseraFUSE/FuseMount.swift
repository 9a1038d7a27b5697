// FuseMount — the session: mounts, runs libfuse's multi-threaded loop, handles SIGTERM/SIGINT and
// `tessera unmount`, and flushes everything before the process exits.
//
// Shutdown: the loop ends when the filesystem is unmounted from outside (umount2 here, fusermount3 or
// umount elsewhere), as libfuse documents; we never call fuse_session_unmount from another thread.
// The kernel sends every write to the daemon before write(2) returns (no writeback cache), so when the
// loop has ended, a final flush of every volume makes everything durable.
//
// Unmount is honest: while any image is open — from any mount namespace, since every open reaches this
// daemon — it is refused (naming the images and their processes) before anything is detached. Once
// detached here, a copy of the mount left in another namespace (libvirt gives each qemu its own) would
// keep the session alive with nothing open; the connection is then aborted so the daemon really exits.
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
    /// libfuse worker threads: enough for a queue depth of 16 from one client plus a few control
    /// requests (libfuse's default is 10); all kept when idle, so a burst never waits for a thread.
    static let maxThreads: UInt32 = 16
    /// Throttled reads and writes wait here instead of on a worker thread (QoS).
    let deferred = DeferredRequests()
    /// Every open file handle (registered in `attach`, removed in `release`), to name what keeps the
    /// mount busy. Touched on open and close only, never per I/O.
    let openHandles = Mutex<[ObjectIdentifier: OpenImage]>([:])
    /// The FUSE connection's number under /sys/fs/fuse/connections (the mount's device minor).
    private var connection: String?
    /// Set once the request loop has returned (read by the unmount watcher on another thread).
    private let loopEnded = Atomic<Bool>(false)

    public init(engine: Engine, mountpoint: String, allowOther: Bool) {
        self.engine = engine
        self.mountpoint = mountpoint
        self.allowOther = allowOther
    }

    /// Mounts; returns once the kernel knows the mount (requests queue until `serve()`).
    public func mount() throws(TesseraError) {
        try checkMountpoint()
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
        connection = MountPoint.connection(at: mountpoint)
        engine.observers.withLock { $0.append { [weak self] id in self?.invalidate(id) } }
    }

    /// Runs the request loop until the filesystem is unmounted, then flushes every volume.
    /// SIGTERM and SIGINT unmount (see `requestUnmount`).
    public func serve() throws(TesseraError) {
        guard let se = session else { return }
        startSignalThread()
        let rc = tessera_session_loop_mt(se, Self.maxThreads, Self.maxThreads, 1)
        deferred.drain()  // every throttled request still gets its one reply while the session exists
        fuse_session_unmount(se)
        fuse_session_destroy(se)
        session = nil
        loopEnded.store(true, ordering: .releasing)
        engine.stopPeriodicFlush()
        engine.stopHealthChecks()
        engine.stopJobs()  // after the chunk in flight, with its progress recorded
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
        var open = openImageList()
        // close(2) returns before the kernel's RELEASE reaches us: give just-closed images a moment.
        for _ in 0..<20 where !open.isEmpty && !force {
            usleep(100_000)
            open = openImageList()
        }
        if !open.isEmpty && !force {
            throw TesseraError(
                .busy,
                "\(mountpoint) is in use, nothing was unmounted: open \(open.joined(separator: ", ")); "
                    + "close them (shut the VMs down) or use --force")
        }
        do {
            try engine.flushAll()
        } catch {
            // A store that cannot take writes any more must not pin the mount forever: --force (and
            // SIGTERM) unmount anyway, and the daemon exits with the error.
            guard force else {
                throw TesseraError(
                    .io,
                    "flush before unmount failed: \(error); writes not yet fsynced may be lost "
                        + "(tessera unmount --force unmounts anyway)")
            }
            Log.error("flush before unmount failed: \(error); unmounting anyway (--force)")
        }
        if umount2(mountpoint, 0) == 0 { return endWhenUnused() }
        let e = errno
        if e == EBUSY && force {
            if umount2(mountpoint, Int32(MNT_DETACH)) == 0 {
                if open.isEmpty {
                    endWhenUnused()
                } else {
                    Log.info("detached \(mountpoint) with \(open.joined(separator: ", ")) still open")
                }
                return
            }
        }
        if e == EBUSY {
            throw TesseraError(
                .busy, "\(mountpoint) is busy (a process has a file or directory open in it); close it or use --force")
        }
        throw TesseraError(.io, "cannot unmount \(mountpoint): \(String(cString: strerror(e)))")
    }

    /// The open images, each with the processes that opened it: "vm1.img (qemu-system-x86 pid 4242)".
    public func openImageList() -> [String] {
        var byImage: [String: [String]] = [:]
        for image in openHandles.withLock({ Array($0.values) }) {
            let name = "\(image.volume.name).img" + (image.readOnly ? " (a snapshot of it)" : "")
            byImage[name, default: []].append(Self.describeProcess(image.pid))
        }
        return byImage.keys.sorted().map { name in
            let who = Set(byImage[name]!).sorted().filter { !$0.isEmpty }
            return who.isEmpty ? name : "\(name) (\(who.joined(separator: ", ")))"
        }
    }

    /// "comm pid N", or "" when the opener is not visible from this pid namespace.
    static func describeProcess(_ pid: pid_t) -> String {
        guard pid > 0 else { return "" }
        let comm = (try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        return comm.map { "\($0) pid \(pid)" } ?? "pid \(pid)"
    }

    /// After the mount left this namespace with nothing open: if the session has not ended in a few
    /// seconds, a copy of the mount lives on in another namespace; abort the connection so the loop ends.
    private func endWhenUnused() {
        guard let connection else { return }
        let t = Thread { [self] in
            for _ in 0..<30 {
                usleep(100_000)
                if loopEnded.load(ordering: .acquiring) { return }
            }
            guard openHandles.withLock({ $0.isEmpty }) else { return }
            Log.info("the mount lives on in another mount namespace with nothing open; ending the FUSE connection")
            MountPoint.abortConnection(connection)
        }
        t.name = "tessera-unmount"
        t.start()
    }

    /// Refuses a mount point that is missing, already mounted or holds files; clears a dead Tessera mount.
    private func checkMountpoint() throws(TesseraError) {
        var state = MountPoint.inspect(mountpoint)
        if state == .deadTessera {
            try MountPoint.clearDead(mountpoint)
            Log.info("cleared a dead Tessera mount at \(mountpoint) (its daemon was gone)")
            state = MountPoint.inspect(mountpoint)
        }
        switch state {
        case .ready: return
        case .missing, .notDirectory:
            throw TesseraError(
                .notFound, "mount point \(mountpoint) does not exist or is not a directory (mkdir -p \(mountpoint))")
        case .notEmpty:
            throw TesseraError(
                .invalid,
                "mount point \(mountpoint) is not empty; its files would be hidden under the mount "
                    + "(move them away first)")
        case .deadTessera, .mounted:
            throw TesseraError(
                .busy,
                "\(mountpoint) is already a mount point (\(MountPoint.mountType(at: mountpoint) ?? "?")); "
                    + "unmount it first")
        }
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
        _ = fuse_lowlevel_notify_inval_inode(se, Node.volume(id).ino, 0, 0)
    }
}
