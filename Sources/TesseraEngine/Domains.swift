// Domains — namespaces of volumes, snapshots and schedules (names are unique per domain; see the
// catalog's `domain` table), each with optional quotas and a placement policy (DomainPolicy.swift).
//
// State: the engine's `domains` (every row, the default one included) and `byName`, keyed by
// (domain, name). The default domain (id 1) can be neither created nor deleted; its volumes are the
// mount's top level, another domain's are under MOUNT/<domain>/.
import Foundation
import TesseraCatalog
import TesseraCore

/// A volume's name in its domain: the key of the engine's name index.
struct VolumeKey: Hashable {
    var domain: Int64
    var name: String
    init(_ domain: Int64, _ name: String) {
        self.domain = domain
        self.name = name
    }
}

/// What `domain list/show` prints.
public struct DomainInfo: Codable, Sendable, Equatable {
    public var id: Int64
    public var name: String
    public var createdAt: Double
    public var quotaVolumes: Int64?
    public var quotaSize: UInt64?
    public var quotaSnapshots: Int64?
    /// The pools its volumes may use (nil: any).
    public var pools: [String]?
    public var volumes: Int
    /// The sum of its volumes' virtual sizes (what `quotaSize` limits).
    public var provisioned: UInt64
    public var allocated: UInt64
    public var snapshots: Int
    public var schedules: Int
}

/// Settings for `domain create` and `domain set`: what is given is set, what is in `clear` removed, the
/// rest left as it is (none for a new domain).
public struct DomainSettings: Codable, Sendable, Equatable {
    public enum Field: String, Codable, Sendable { case quotaVolumes, quotaSize, quotaSnapshots, pools }
    public var quotaVolumes: Int64?
    public var quotaSize: UInt64?
    public var quotaSnapshots: Int64?
    public var pools: [String]?
    public var clear: Set<Field>
    public init(
        quotaVolumes: Int64? = nil, quotaSize: UInt64? = nil, quotaSnapshots: Int64? = nil, pools: [String]? = nil,
        clear: Set<Field> = []
    ) {
        self.quotaVolumes = quotaVolumes
        self.quotaSize = quotaSize
        self.quotaSnapshots = quotaSnapshots
        self.pools = pools
        self.clear = clear
    }
}

extension Engine {
    /// The name of the domain that holds everything made without naming one.
    public static let defaultDomain = DomainRecord.defaultName
    public static let defaultDomainID = DomainRecord.defaultID

    // MARK: Lookup

    /// The id of domain `name`.
    public func domainID(_ name: String) throws(TesseraError) -> Int64 {
        guard let id = state.withLock({ s in s.domains.values.first { $0.name == name }?.id }) else {
            throw TesseraError(.notFound, "no domain named '\(name)'")
        }
        return id
    }

    /// Every domain's id and name, by id (the mount lists the ones besides the default as directories).
    public func domainNames() -> [(id: Int64, name: String)] {
        state.withLock { s in s.domains.values.map { ($0.id!, $0.name) }.sorted { $0.id < $1.id } }
    }

    public func domainName(id: Int64) -> String? { state.withLock { $0.domains[id]?.name } }

    /// " in domain 'D'" for messages about a domain other than the default one.
    func inDomain(_ id: Int64) -> String {
        id == DomainRecord.defaultID ? "" : " in domain '\(domainName(id: id) ?? "#\(id)")'"
    }

    public func domainInfos() throws(TesseraError) -> [DomainInfo] {
        let schedules = try catalog.schedules()
        let (domains, volumes, snapshots) = state.withLock { s in
            (s.domains.values.sorted { $0.id! < $1.id! }, Array(s.volumes.values), Array(s.snapshots.values))
        }
        return domains.map { d in
            let mine = volumes.filter { $0.record.domainId == d.id! && !$0.isUnlinked }
            return DomainInfo(
                id: d.id!, name: d.name, createdAt: d.createdAt, quotaVolumes: d.quotaVolumes,
                quotaSize: d.quotaSize.map { UInt64($0) }, quotaSnapshots: d.quotaSnapshots, pools: d.pools,
                volumes: mine.count, provisioned: mine.reduce(0) { $0 + $1.size },
                allocated: mine.reduce(0) { $0 + $1.allocatedBytes },
                snapshots: snapshots.filter { $0.domainId == d.id! }.count,
                schedules: schedules.filter { $0.domainId == d.id! }.count)
        }
    }

    public func domainInfo(_ name: String) throws(TesseraError) -> DomainInfo {
        let id = try domainID(name)
        return try domainInfos().first { $0.id == id }!
    }

    // MARK: Create, change, delete

    /// `domain create`. The name follows the rules of volume names, so that as a directory of the mount
    /// it never collides with an image (those end in .img) or `.snapshots` (names never start with '.').
    @discardableResult
    public func createDomain(_ name: String, _ settings: DomainSettings = DomainSettings()) throws(TesseraError)
        -> DomainInfo
    {
        try Self.checkName(name, "domain")
        var d = DomainRecord(name: name, createdAt: Date().timeIntervalSince1970)
        try apply(settings, to: &d)
        try state.withLock { s throws(TesseraError) in
            if s.domains.values.contains(where: { $0.name == name }) {
                throw TesseraError(.exists, "a domain named '\(name)' already exists")
            }
            d = try catalog.saveDomain(d)
            s.domains[d.id!] = d
        }
        recordDomainsManifest()
        return try domainInfo(name)
    }

    /// `domain set`: changes quotas and the pools policy. A quota below what the domain holds now is
    /// accepted (it refuses only what would add more), as for a filesystem quota.
    @discardableResult
    public func setDomain(_ name: String, _ settings: DomainSettings) throws(TesseraError) -> DomainInfo {
        let id = try domainID(name)
        // snapshotLock keeps two changes of one domain from losing one; state is not held across `apply`,
        // which looks pools up.
        try snapshotLock.withLock { _ throws(TesseraError) in
            guard var d = state.withLock({ $0.domains[id] }) else {
                throw TesseraError(.notFound, "no domain named '\(name)'")
            }
            try apply(settings, to: &d)
            let saved = try catalog.saveDomain(d)
            state.withLock { $0.domains[id] = saved }
        }
        recordDomainsManifest()
        return try domainInfo(name)
    }

    /// `domain delete`: refused for the default domain and while the domain holds volumes, snapshots or
    /// schedules.
    public func deleteDomain(_ name: String) throws(TesseraError) {
        let id = try domainID(name)
        if id == DomainRecord.defaultID { throw TesseraError(.invalid, "the default domain cannot be deleted") }
        let info = try domainInfo(name)
        let users = try users(inDomain: id).count
        let held = [
            (info.volumes, "volumes"), (info.snapshots, "snapshots"), (info.schedules, "schedules"), (users, "users"),
        ]
        .filter { $0.0 > 0 }.map { "\($0.0) \($0.1)" }
        if !held.isEmpty {
            throw TesseraError(
                .busy, "domain '\(name)' still holds \(held.joined(separator: ", ")); delete them first")
        }
        try state.withLock { s throws(TesseraError) in
            try catalog.deleteDomain(id)
            s.domains[id] = nil
        }
        recordDomainsManifest()
    }

    private func apply(_ settings: DomainSettings, to d: inout DomainRecord) throws(TesseraError) {
        if let q = settings.quotaVolumes {
            if q < 0 { throw TesseraError(.invalid, "--quota-volumes must be 0 or more") }
            d.quotaVolumes = q
        }
        if let q = settings.quotaSize {
            if q > Self.maxVolumeSize * 1024 {
                throw TesseraError(
                    .invalid, "--quota-size is larger than \(ByteSize.format(Self.maxVolumeSize * 1024))")
            }
            d.quotaSize = Int64(q)
        }
        if let q = settings.quotaSnapshots {
            if q < 0 { throw TesseraError(.invalid, "--quota-snapshots must be 0 or more") }
            d.quotaSnapshots = q
        }
        if let pools = settings.pools {
            if pools.isEmpty { throw TesseraError(.invalid, "--pools names no pool") }
            for p in pools { _ = try pool(named: p) }
            if Set(pools).count != pools.count { throw TesseraError(.invalid, "--pools names a pool twice") }
            d.pools = pools
        }
        for field in settings.clear {
            switch field {
            case .quotaVolumes: d.quotaVolumes = nil
            case .quotaSize: d.quotaSize = nil
            case .quotaSnapshots: d.quotaSnapshots = nil
            case .pools: d.pools = nil
            }
        }
    }

    /// Writes the domains' manifest on every directory store (best effort, like the other manifests).
    func recordDomainsManifest() {
        do { try recordDomains(roots: allManifestRoots()) } catch {
            Log.error("domain manifest not written (fsck --rebuild-catalog may miss domains): \(error)")
        }
    }

    /// Writes the domains' manifest on the stores at `roots`, for a rebuild to find them.
    func recordDomains(roots: [String]) throws(TesseraError) {
        let m = DomainsManifest(writtenAt: Date().timeIntervalSince1970, domains: try catalog.domains())
        try Manifests.writeShared(m, file: Manifests.domainsFile, roots: roots)
    }
}
