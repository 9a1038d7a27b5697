import TesseraCore
import TesseraEngine

/// One request from the CLI. Sent as one line of JSON over the control socket, or handled in-process
/// when no mount is running. A request that names volumes, snapshots or schedules acts in the default
/// domain unless wrapped in `.inDomain`.
public indirect enum ControlRequest: Codable, Sendable {
    case status
    case poolCreate(name: String, chunkSize: UInt64)
    case poolList
    case storeAdd(StoreSpec)
    case storeList
    case storeShow(name: String)
    /// A store's capacity quota (`store set NAME --size SIZE`).
    case storeSet(name: String, size: UInt64)
    /// Removes a store that holds no chunk (`store remove NAME`).
    case storeRemove(name: String)
    /// Puts a new store (`spec`, its pool ignored) in store `name`'s place: a job copies every chunk
    /// (`store replace NAME …`). Without a mount, the CLI process does the whole copy before replying.
    case storeReplace(name: String, spec: StoreSpec, rate: UInt64?)
    /// Jobs (`job list|show|cancel`).
    case jobList
    case jobShow(id: Int64)
    case jobCancel(id: Int64)
    /// Verifies every chunk (of one store); the mount streams progress lines before the reply.
    case scrub(store: String?)
    /// Without a pool, the domain's policy places the volume (pool "default" when it has none).
    case volumeCreate(name: String, size: UInt64, pool: String?, count: Int?)
    case volumeList
    /// The volumes of every domain, by domain and name.
    case volumeListAllDomains
    case volumeShow(name: String)
    /// Shrinking needs `shrink`; an open image is shrunk only with `force`.
    case volumeResize(name: String, size: UInt64, shrink: Bool, force: Bool)
    case volumeDelete(name: String, withSnapshots: Bool)
    case snapshotCreate(name: String, volumes: [String], all: Bool)
    case snapshotList
    case snapshotDelete(name: String)
    case snapshotRevert(volume: String, snapshot: String)
    case scheduleSet(target: String, every: Int64, keep: Int64)
    case scheduleRemove(target: String)
    case scheduleList
    case clone(source: String, name: String)
    case unmount(force: Bool)
    /// QoS (`qos set|show|clear`): applies at once to a running mount.
    case qosSet(target: QoSTarget, limits: QoSLimits)
    case qosClear(target: QoSTarget)
    case qosShow(volume: String?)
    case domainCreate(name: String, settings: DomainSettings)
    case domainList
    case domainShow(name: String)
    case domainSet(name: String, settings: DomainSettings)
    case domainDelete(name: String)
    /// `request` acting in domain `domain` (`--domain D`).
    case inDomain(domain: String, request: ControlRequest)
    /// Continuous data protection (CDP.swift): `window` in seconds, `maxSize` in bytes.
    case cdpEnable(volume: String, window: Int64, maxSize: UInt64?)
    case cdpDisable(volume: String)
    case cdpStatus(volume: String?)
    case cdpMark(volume: String, name: String)
    /// `at`: an RFC 3339 time or a mark name; `as`: a new volume (nil: in place).
    case cdpRestore(volume: String, at: String, as: String?)
    /// API users (Users.swift): `role` as typed (admin, domain-admin, operator, auditor); the reply of
    /// `userAdd` and `userRotateToken` carries the token, the only time it is shown.
    case userAdd(name: String, role: String, domain: String?)
    case userList
    case userRemove(name: String)
    case userRotateToken(name: String)
}

/// The answer: `error` set on failure, otherwise the fields the request asks for.
public struct ControlReply: Codable, Sendable {
    public var error: TesseraError?
    public var volumes: [VolumeInfo]?
    public var pools: [PoolInfo]?
    public var stores: [StoreInfo]?
    public var status: StatusInfo?
    public var snapshots: [SnapshotInfo]?
    public var schedules: [ScheduleInfo]?
    public var scrub: ScrubReport?
    public var qos: QoSReport?
    public var domains: [DomainInfo]?
    /// Set on the intermediate lines of a long request: (done, total). The final reply has none.
    public var progress: [Int]?
    public var cdp: [CDPInfo]?
    public var jobs: [JobInfo]?
    public var users: [UserInfo]?
    /// A new API token (`user add`, `user token --rotate`).
    public var token: String?
    public init(
        error: TesseraError? = nil, volumes: [VolumeInfo]? = nil, pools: [PoolInfo]? = nil,
        stores: [StoreInfo]? = nil, status: StatusInfo? = nil, snapshots: [SnapshotInfo]? = nil,
        schedules: [ScheduleInfo]? = nil, scrub: ScrubReport? = nil, progress: [Int]? = nil, qos: QoSReport? = nil,
        domains: [DomainInfo]? = nil, cdp: [CDPInfo]? = nil, jobs: [JobInfo]? = nil, users: [UserInfo]? = nil,
        token: String? = nil
    ) {
        self.jobs = jobs
        self.users = users
        self.token = token
        self.qos = qos
        self.cdp = cdp
        self.error = error
        self.domains = domains
        self.scrub = scrub
        self.progress = progress
        self.snapshots = snapshots
        self.schedules = schedules
        self.volumes = volumes
        self.pools = pools
        self.stores = stores
        self.status = status
    }
}

/// Carries out control requests against an engine. The same code serves the socket (mount running)
/// and the CLI's in-process path (no mount), so both behave alike.
public struct ControlService: Sendable {
    public let engine: Engine
    public let mountpoint: String?
    /// Called for `.unmount` (only a running mount sets it).
    public let unmount: (@Sendable (Bool) throws(TesseraError) -> Void)?
    /// The open images with their processes, for `status` (only a running mount sets it).
    public let openImages: (@Sendable () -> [String])?
    /// Where the mount serves the HTTP API, for `status` (only a running mount with --api sets it).
    public let api: String?

    public init(
        engine: Engine, mountpoint: String? = nil,
        unmount: (@Sendable (Bool) throws(TesseraError) -> Void)? = nil,
        openImages: (@Sendable () -> [String])? = nil, api: String? = nil
    ) {
        self.api = api
        self.engine = engine
        self.mountpoint = mountpoint
        self.unmount = unmount
        self.openImages = openImages
    }

    /// Carries out `request`; `progress(done, total)` hears from long ones (scrub).
    public func handle(_ request: ControlRequest, progress: (Int, Int) -> Void = { _, _ in }) -> ControlReply {
        do {
            return try perform(request, progress)
        } catch {
            return ControlReply(error: error)
        }
    }

    private func perform(
        _ request: ControlRequest, _ progress: (Int, Int) -> Void, domain: String = Engine.defaultDomain
    ) throws(TesseraError) -> ControlReply {
        switch request {
        case .inDomain(let d, let inner):
            if case .inDomain = inner { throw TesseraError(.invalid, "a request names its domain once") }
            return try perform(inner, progress, domain: d)
        case .domainCreate(let name, let settings):
            return ControlReply(domains: [try engine.createDomain(name, settings)])
        case .domainList:
            return ControlReply(domains: try engine.domainInfos())
        case .domainShow(let name):
            return ControlReply(domains: [try engine.domainInfo(name)])
        case .domainSet(let name, let settings):
            return ControlReply(domains: [try engine.setDomain(name, settings)])
        case .domainDelete(let name):
            try engine.deleteDomain(name)
            return ControlReply()
        case .scrub(let store):
            return ControlReply(scrub: try engine.scrub(store: store, progress: progress))
        case .status:
            var status = engine.status(mountpoint: mountpoint)
            status.openImageNames = openImages?() ?? []
            status.api = api
            status.qos = try engine.qosReport().volumes.filter { $0.settings != nil || !$0.groups.isEmpty }
            status.jobs = try engine.jobs().filter { !$0.isFinished }
            return ControlReply(status: status)
        case .poolCreate(let name, let chunkSize):
            try engine.createPool(name: name, chunkSize: chunkSize)
            return ControlReply(pools: try engine.poolInfos().filter { $0.name == name })
        case .poolList:
            return ControlReply(pools: try engine.poolInfos())
        case .storeAdd(let spec):
            try engine.addStore(spec)
            return ControlReply(stores: try engine.storeInfos().filter { $0.name == spec.name })
        case .storeList:
            return ControlReply(stores: try engine.storeInfos())
        case .storeSet(let name, let size):
            try engine.setStoreSize(name, size: size)
            return ControlReply(stores: try engine.storeInfos().filter { $0.name == name })
        case .storeRemove(let name):
            try engine.removeStore(name)
            return ControlReply()
        case .storeReplace(let name, let spec, let rate):
            let job = try engine.replaceStore(name, with: spec, rate: rate)
            if mountpoint == nil { try engine.runJobs() }
            return ControlReply(jobs: [try engine.job(job.id)])
        case .jobList:
            return ControlReply(jobs: try engine.jobs())
        case .jobShow(let id):
            return ControlReply(jobs: [try engine.job(id)])
        case .jobCancel(let id):
            return ControlReply(jobs: [try engine.cancelJob(id)])
        case .storeShow(let name):
            let found = try engine.storeInfos(sample: 256).filter { $0.name == name }
            if found.isEmpty { throw TesseraError(.notFound, "no store named '\(name)'") }
            return ControlReply(stores: found)
        case .volumeCreate(let name, let size, let pool, let count):
            let created = try engine.createVolumes(name: name, count: count, size: size, pool: pool, domain: domain)
            return ControlReply(volumes: created.map(engine.info))
        case .volumeList:
            return ControlReply(volumes: try engine.volumeInfos(domain: domain))
        case .volumeListAllDomains:
            return ControlReply(volumes: engine.volumeInfosOfAllDomains())
        case .volumeShow(let name):
            return ControlReply(volumes: [try engine.volumeInfo(name, domain: domain)])
        case .volumeResize(let name, let size, let shrink, let force):
            try engine.resizeVolume(name, to: size, shrink: shrink, force: force, domain: domain)
            return ControlReply(volumes: [try engine.volumeInfo(name, domain: domain)])
        case .volumeDelete(let name, let withSnapshots):
            try engine.deleteVolume(name, withSnapshots: withSnapshots, domain: domain)
            return ControlReply()
        case .snapshotCreate(let name, let volumes, let all):
            return ControlReply(snapshots: [
                try engine.createSnapshot(name: name, volumes: volumes, all: all, domain: domain)
            ])
        case .snapshotList:
            return ControlReply(snapshots: try engine.snapshotInfos(domain: domain))
        case .snapshotDelete(let name):
            try engine.deleteSnapshot(name, domain: domain)
            return ControlReply()
        case .snapshotRevert(let volume, let snapshot):
            try engine.revert(volume, to: snapshot, domain: domain)
            return ControlReply(volumes: [try engine.volumeInfo(volume, domain: domain)])
        case .scheduleSet(let target, let every, let keep):
            try engine.setSchedule(target: target, every: every, keep: keep, domain: domain)
            return ControlReply(schedules: try engine.scheduleInfos(domain: domain))
        case .scheduleRemove(let target):
            try engine.removeSchedule(target: target, domain: domain)
            return ControlReply(schedules: try engine.scheduleInfos(domain: domain))
        case .scheduleList:
            return ControlReply(schedules: try engine.scheduleInfos(domain: domain))
        case .clone(let source, let name):
            return ControlReply(volumes: [engine.info(try engine.clone(source, as: name, domain: domain))])
        case .cdpEnable(let volume, let window, let maxSize):
            return ControlReply(cdp: [try engine.enableCDP(volume, window: window, maxSize: maxSize, domain: domain)])
        case .cdpDisable(let volume):
            try engine.disableCDP(volume, domain: domain)
            return ControlReply()
        case .cdpStatus(let volume):
            return ControlReply(cdp: try engine.cdpInfos(volume, domain: domain))
        case .cdpMark(let volume, let name):
            let mark = try engine.markCDP(volume, mark: name, domain: domain)
            return ControlReply(
                cdp: try engine.cdpInfos(volume, domain: domain).map { info in
                    var i = info
                    i.marks = [mark]
                    return i
                })
        case .cdpRestore(let volume, let at, let name):
            return ControlReply(volumes: [try engine.restoreCDP(volume, at: at, as: name, domain: domain)])
        case .userAdd(let name, let role, let domain):
            let (user, token) = try engine.addUser(name, role: try Engine.role(role), domain: domain)
            return ControlReply(users: [user], token: token)
        case .userList:
            return ControlReply(users: try engine.userInfos())
        case .userRemove(let name):
            try engine.removeUser(name)
            return ControlReply()
        case .userRotateToken(let name):
            let (user, token) = try engine.rotateToken(name)
            return ControlReply(users: [user], token: token)
        case .unmount(let force):
            guard let unmount else { throw TesseraError(.notFound, "no mount is running for \(engine.data.path)") }
            try unmount(force)
            return ControlReply()
        case .qosSet(let target, let limits):
            try engine.setQoS(target, limits, domain: domain)
            return ControlReply(qos: try engine.qosReport(domain: domain))
        case .qosClear(let target):
            try engine.clearQoS(target, domain: domain)
            return ControlReply(qos: try engine.qosReport(domain: domain))
        case .qosShow(let volume):
            return ControlReply(qos: try engine.qosReport(volume: volume, domain: domain))
        }
    }
}
