import ArgumentParser
import CLinux
import Foundation
import TesseraAPI
import TesseraControl
import TesseraCore
import TesseraEngine
import TesseraFUSE

#if canImport(Glibc)
    import Glibc
#endif

struct MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount the volumes as MOUNTPOINT/<volume>.img (foreground until unmounted, SIGTERM or SIGINT).")

    @OptionGroup var data: DataOptions
    @Argument(help: "An existing empty directory (a dead Tessera mount left there by a killed daemon is cleared).")
    var mountpoint: String
    @Flag(help: "Return once the mount is ready; the daemon logs to DATA/tessera.log.") var background = false
    @Flag(help: "Let other users (e.g. libvirt-qemu) open images; permissions stay enforced.") var allowOther = false
    @Option(help: "RAM cache (read cache + write-back), e.g. 512M; shared by the pools; 0 = none.") var cacheSize:
        String = "0"
    @Option(
        help: ArgumentHelp(
            "Also serve the HTTP API (REST under /v1, bearer tokens from 'tessera user add') on HOST:PORT.",
            discussion: "Plain HTTP for now (no --tls-cert/--tls-key yet): bind it to 127.0.0.1 or a trusted network.",
            valueName: "HOST:PORT"))
    var api: String?
    @Flag(help: .hidden) var daemonChild = false

    func validate() throws {
        _ = try parseSize(cacheSize, option: "--cache-size")
        if let api {
            do { _ = try APIServer.parseAddress(api) } catch { throw failure(error) }
        }
    }

    /// Computed from the string alone: once mounted, touching the mountpoint from the daemon before
    /// its loop runs would deadlock.
    var absoluteMountpoint: String { absolutePath(mountpoint) }

    func run() throws {
        if background { return try spawnDaemon() }
        if daemonChild { _ = setsid() }
        FuseMount.blockTerminationSignals()
        FuseMount.raiseFileLimit()
        let dir = data.directory
        let mountpoint = absoluteMountpoint
        do {
            let engine = try Engine(dir, cacheSize: try parseSize(cacheSize, option: "--cache-size"))
            let fuse = FuseMount(engine: engine, mountpoint: mountpoint, allowOther: allowOther)
            // The API binds before the mount, so a port in use fails the mount rather than leaving it up
            // without its API; it never unmounts (no `unmount` closure).
            let apiServer = try api.map { address throws(TesseraError) in
                try APIServer.start(
                    address: address,
                    service: ControlService(
                        engine: engine, mountpoint: mountpoint, openImages: { fuse.openImageList() }, api: address))
            }
            defer { apiServer?.stop() }
            try fuse.mount()
            let service = ControlService(
                engine: engine, mountpoint: mountpoint,
                unmount: { force throws(TesseraError) in try fuse.requestUnmount(force: force) },
                openImages: { fuse.openImageList() }, api: apiServer?.address)
            let server = try ControlServer(path: dir.socketPath, service: service)
            engine.startPeriodicFlush()
            engine.startHealthChecks()
            engine.startScheduler()
            engine.startCDP()
            engine.startJobs()
            server.start()
            MountPoint.record(mountpoint, dir)
            Log.info("mounted \(dir.path) at \(mountpoint) (\(engine.allVolumes().count) volumes)")
            // Type=notify: systemd starts units ordered after this one (libvirtd) only now.
            if tessera_sd_notify("READY=1\nSTATUS=mounted at \(mountpoint)") < 0 {
                Log.error("cannot tell systemd the mount is ready: \(String(cString: strerror(errno)))")
            }
            defer { server.stop() }
            try fuse.serve()
            MountPoint.forget(dir)
            Log.info("unmounted \(mountpoint); everything flushed")
        } catch {
            throw failure(error)
        }
    }

    /// Starts this command again as a detached daemon and waits until its mount answers.
    private func spawnDaemon() throws {
        let dir = data.directory
        guard FileManager.default.fileExists(atPath: dir.path) else {
            throw failure(TesseraError(.catalog, "no Tessera data directory at \(dir.path) (run 'tessera init' first)"))
        }
        let process = Process()
        process.executableURL = URL(
            fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
                ?? CommandLine.arguments[0])
        process.arguments =
            ["mount", absoluteMountpoint, "--data", dir.path, "--daemon-child", "--cache-size", cacheSize]
            + (allowOther ? ["--allow-other"] : []) + (api.map { ["--api", $0] } ?? [])
        if !FileManager.default.fileExists(atPath: dir.logPath) {
            _ = FileManager.default.createFile(
                atPath: dir.logPath, contents: nil, attributes: [.posixPermissions: 0o600])
        }
        guard let log = FileHandle(forWritingAtPath: dir.logPath) else {
            throw failure(TesseraError(.io, "cannot write \(dir.logPath)"))
        }
        log.seekToEndOfFile()
        let start = log.offsetInFile
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch { throw failure(TesseraError(.io, "cannot start the daemon: \(error)")) }
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if !process.isRunning {
                let text = (try? String(contentsOfFile: dir.logPath, encoding: .utf8)) ?? ""
                let mine = String(text.utf8.dropFirst(Int(start))) ?? ""
                FileHandle.standardError.write(mine.data(using: .utf8)!)
                throw ExitCode(process.terminationStatus == 0 ? 1 : process.terminationStatus)
            }
            if let reply = try? ControlClient.send(.status, socketPath: dir.socketPath), let s = reply.status,
                s.mounted, s.pid == process.processIdentifier
            {
                print("mounted \(dir.path) at \(absoluteMountpoint) (pid \(s.pid), log \(dir.logPath))")
                return
            }
            usleep(50_000)
        }
        throw failure(TesseraError(.io, "the mount did not become ready in 60 s; see \(dir.logPath)"))
    }
}

struct UnmountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unmount", abstract: "Flush everything, unmount, and wait for the daemon to exit.")

    @OptionGroup var data: DataOptions
    @Argument(help: "The mountpoint (optional; the data directory names the mount).") var mountpoint: String?
    @Flag(help: "Detach even if an image is open (the daemon exits at its last close).") var force = false

    func run() throws {
        let dir = data.directory
        let status: StatusInfo
        do {
            guard let reply = try ControlClient.send(.status, socketPath: dir.socketPath), let s = reply.status else {
                return try clearDeadMount(dir)
            }
            status = s
        } catch let code as ExitCode {
            throw code
        } catch {
            throw failure(error)
        }
        if let mountpoint {
            let p = absolutePath(mountpoint)
            if p != status.mountpoint {
                throw failure(
                    TesseraError(
                        .invalid, "\(p) is not the mount of \(dir.path) (that is \(status.mountpoint ?? "none"))"))
            }
        }
        do {
            // The daemon may exit before its reply is written; its disappearance is the answer then.
            if let reply = try? ControlClient.send(.unmount(force: force), socketPath: dir.socketPath),
                let e = reply.error
            {
                throw e
            }
        } catch {
            throw failure(error)
        }
        // The daemon has finished (final flush included) when it lets go of the data directory's lock;
        // its pid may linger as a zombie, so the lock is the signal.
        let deadline = Date().addingTimeInterval(force ? 5 : 300)
        let fd = open(dir.lockPath, O_RDONLY | O_CLOEXEC)
        defer { if fd >= 0 { close(fd) } }
        while fd >= 0 && flock(fd, LOCK_SH | LOCK_NB) != 0 {
            if Date() > deadline {
                if force {
                    let open =
                        status.openImageNames.isEmpty
                        ? "" : "; still open: \(status.openImageNames.joined(separator: ", "))"
                    print(
                        "detached \(status.mountpoint ?? "")\(open); the daemon keeps serving them and exits when the last one closes"
                    )
                    return
                }
                throw failure(TesseraError(.busy, "daemon \(status.pid) is still running; see \(dir.logPath)"))
            }
            usleep(20_000)
        }
        print("unmounted \(status.mountpoint ?? "")")
    }

    /// No daemon answers: clear the dead mount it left (recorded in DATA, or the MOUNTPOINT given).
    private func clearDeadMount(_ dir: DataDirectory) throws {
        let given = mountpoint.map(absolutePath)
        guard let path = given ?? MountPoint.recorded(dir), MountPoint.inspect(path) == .deadTessera else {
            throw failure(TesseraError(.notFound, "no mount is running for \(dir.path)"))
        }
        do { try MountPoint.clearDead(path) } catch { throw failure(error) }
        if given == nil || given == MountPoint.recorded(dir) { MountPoint.forget(dir) }
        print("cleared the dead mount at \(path) (its daemon had died); mount again with: tessera mount \(path)")
    }
}

/// An absolute, normalised path, from the string alone (no syscalls on the path itself).
func absolutePath(_ path: String) -> String {
    let full = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    var parts: [Substring] = []
    for part in full.split(separator: "/") {
        if part == "." || part.isEmpty { continue }
        if part == ".." { _ = parts.popLast() } else { parts.append(part) }
    }
    return "/" + parts.joined(separator: "/")
}
