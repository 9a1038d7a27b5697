import TesseraCore
import TesseraEngine

/// One request from the CLI. Sent as one line of JSON over the control socket, or handled in-process
/// when no mount is running.
public enum ControlRequest: Codable, Sendable {
    case status
    case poolCreate(name: String, chunkSize: UInt64)
    case poolList
    case storeAdd(name: String, pool: String, dir: String)
    case storeList
    case volumeCreate(name: String, size: UInt64, pool: String, count: Int?)
    case volumeList
    case volumeShow(name: String)
    case volumeResize(name: String, size: UInt64)
    case volumeDelete(name: String)
    case unmount(force: Bool)
}

/// The answer: `error` set on failure, otherwise the fields the request asks for.
public struct ControlReply: Codable, Sendable {
    public var error: TesseraError?
    public var volumes: [VolumeInfo]?
    public var pools: [PoolInfo]?
    public var stores: [StoreInfo]?
    public var status: StatusInfo?
    public init(error: TesseraError? = nil, volumes: [VolumeInfo]? = nil, pools: [PoolInfo]? = nil,
                stores: [StoreInfo]? = nil, status: StatusInfo? = nil) {
        self.error = error
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

    public init(engine: Engine, mountpoint: String? = nil,
                unmount: (@Sendable (Bool) throws(TesseraError) -> Void)? = nil) {
        self.engine = engine
        self.mountpoint = mountpoint
        self.unmount = unmount
    }

    public func handle(_ request: ControlRequest) -> ControlReply {
        do {
            return try perform(request)
        } catch {
            return ControlReply(error: error)
        }
    }

    private func perform(_ request: ControlRequest) throws(TesseraError) -> ControlReply {
        switch request {
        case .status:
            return ControlReply(status: engine.status(mountpoint: mountpoint))
        case .poolCreate(let name, let chunkSize):
            try engine.createPool(name: name, chunkSize: chunkSize)
            return ControlReply(pools: try engine.poolInfos().filter { $0.name == name })
        case .poolList:
            return ControlReply(pools: try engine.poolInfos())
        case .storeAdd(let name, let pool, let dir):
            try engine.addDirectoryStore(name: name, pool: pool, path: dir)
            return ControlReply(stores: try engine.storeInfos().filter { $0.name == name })
        case .storeList:
            return ControlReply(stores: try engine.storeInfos())
        case .volumeCreate(let name, let size, let pool, let count):
            let created = try engine.createVolumes(name: name, count: count, size: size, pool: pool)
            return ControlReply(volumes: created.map(engine.info))
        case .volumeList:
            return ControlReply(volumes: engine.volumeInfos())
        case .volumeShow(let name):
            return ControlReply(volumes: [try engine.volumeInfo(name)])
        case .volumeResize(let name, let size):
            try engine.resizeVolume(name, to: size)
            return ControlReply(volumes: [try engine.volumeInfo(name)])
        case .volumeDelete(let name):
            try engine.deleteVolume(name)
            return ControlReply()
        case .unmount(let force):
            guard let unmount else { throw TesseraError(.notFound, "no mount is running for \(engine.data.path)") }
            try unmount(force)
            return ControlReply()
        }
    }
}
