// Engine — owns the catalog and wires pools, stores and volumes together; the control plane's entry
// point and the data path's source of Volume objects.
//
// State: pools (record + storage stack), stores (record + opened store, and the placement unit each
// serves), domains, volumes by id and by (domain, name) (Domains.swift), and the top of each volume's
// stack (every stack is built in
// Stacks.swift).
// Invariants:
// - Exactly one Engine per data directory at a time (DirectoryLock).
// - On open, chunks on a store that no committed map references and that this catalog can prove it
//   made garbage (a crash between a data write and its map commit, or between a commit and a delete)
//   are removed before any I/O, within a safety limit (Ownership.swift); each unit's serial counter
//   is raised past every chunk seen, so IDs are never reused.
// - Every directory store names this catalog (store.json); a store of another catalog is refused.
// - Every catalog change made here commits before the call returns.
// Lock order: state (short; never across I/O or SQL, except where noted).
import Foundation
import Synchronization
import TesseraCatalog
import TesseraCore
import TesseraStores

public final class Engine: Sendable {
    public let data: DataDirectory
    public let catalog: Catalog
    /// The catalog's identity, recorded in each of its stores.
    public let catalogID: String
    private let lock: DirectoryLock

    /// Largest virtual size accepted (1 PiB); the issue asks for at least 64 TiB.
    public static let maxVolumeSize: UInt64 = 1 << 50
    /// Default chunk size of new pools (see README: chosen by Scripts/bench).
    public static let defaultChunkSize: UInt64 = 1 << 20

    /// A pool's storage stack (built in Stacks.swift).
    struct Pool {
        var record: PoolRecord
        let layer: PoolLayer
        /// The RAM cache over `layer` (none when mounted without --cache-size, or in-process).
        let cache: CacheLayer?
        /// What volumes do I/O through: the cache, or the pool layer itself.
        var io: any ChunkStore { cache ?? layer }
    }
    struct State {
        var pools: [Int64: Pool] = [:]
        var stores: [Int64: StoreRecord] = [:]
        var opened: [Int64: OpenedStore] = [:]
        /// The placement unit each store serves, and as what.
        var unitOf: [Int64: UnitID] = [:]
        var roles: [Int64: UnitMemberRecord.Role] = [:]
        /// The units a replace job is moving to another store (Jobs.swift).
        var replacing: [UnitID: ReplaceLayer] = [:]
        var volumes: [VolumeID: Volume] = [:]
        /// Every domain by id (the default one included).
        var domains: [Int64: DomainRecord] = [:]
        /// Volumes by domain and name (an unlinked volume, still open, is no longer here).
        var byName: [VolumeKey: VolumeID] = [:]
        /// The top of each volume's stack (kept for an unlinked volume until its last close).
        var stacks: [VolumeID: any VolumeStore] = [:]
        var snapshots: [Int64: SnapshotRecord] = [:]
        var members: [Int64: [SnapshotMemberRecord]] = [:]
    }
    let state = Mutex(State())
    /// Extra references to chunks shared between maps (copy_file_range, revert).
    let shares = ShareTable()
    /// The per-volume layers stacked over every volume's thin map, first lowest (Stacks.swift).
    let volumeLayers: [VolumeLayerFactory]
    /// QoS settings in force and each live volume's QoS layer (QoS.swift).
    let qos = QoSRegistry()
    /// The CDP journal of every volume (inactive unless protected; CDP.swift).
    public let cdp: CDPRegistry
    /// Serialises snapshot, clone, revert and schedule work (control plane only).
    let snapshotLock = Mutex(())
    /// Called after a volume's name, size or attributes change outside the FUSE request that caused
    /// it (CLI over the control socket), so the mount can invalidate cached attributes.
    public let observers = Mutex<[@Sendable (VolumeID) -> Void]>([])
    private let flusherStop = Mutex(false)
    /// The last figures read from each store (Health.swift).
    let figureCache = FigureCache()
    /// The store health checker's threads (Health.swift).
    let checker = HealthChecker()
    /// The job runner's flags (Jobs.swift).
    let jobRunner = JobRunner()

    // MARK: Life cycle

    /// `tessera init`: a new catalog, pool `default` and a directory store inside the data directory.
    /// Refuses a data directory that already holds a catalog or a store (see Ownership.swift).
    public static func initialize(_ data: DataDirectory, chunkSize: UInt64 = defaultChunkSize) throws(TesseraError) {
        try refuseUsedDataDirectory(data)
        do {
            try FileManager.default.createDirectory(
                atPath: data.defaultStorePath, withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700])
            try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: data.path)
        } catch {
            throw TesseraError(.io, "cannot create \(data.path): \(error.localizedDescription)")
        }
        let lock = try DirectoryLock(data)
        _ = lock
        try refuseUsedDataDirectory(data)  // again, now that no other process can be creating it
        let catalog = try Catalog.create(at: data.catalogPath)
        let now = Date().timeIntervalSince1970
        let pool = try catalog.insertPool(PoolRecord(name: "default", chunkSize: Int64(chunkSize), createdAt: now))
        let (store, unit) = try catalog.insertStore(
            StoreRecord(poolId: pool.id!, name: "default", kind: "dir", path: data.defaultStorePath, createdAt: now))
        try Manifests.writeStore(
            StoreManifest(store, pool, unit: unit, catalogID: try catalog.identity()), root: store.path)
    }

    /// Opens the installation: lock, catalog, stores, maps; then (unless `collectGarbage` is false, as
    /// for fsck, which reports them) removes chunks that no committed map references.
    /// `cacheSize`: bytes of RAM cache (read cache and write-back), shared evenly by the pools that
    /// exist at open; 0 for none (the CLI's in-process path, fsck).
    /// `volumeLayers`: the per-volume layers of every volume's stack, first lowest (none by default).
    public init(
        _ data: DataDirectory, collectGarbage: Bool = true, cacheSize: UInt64 = 0,
        volumeLayers: [VolumeLayerFactory] = []
    ) throws(TesseraError) {
        self.data = data
        let cdp = CDPRegistry(root: data.cdpPath)
        self.cdp = cdp
        self.volumeLayers = [Self.cdpLayer(cdp)] + volumeLayers
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: data.path, isDirectory: &isDir), isDir.boolValue else {
            throw TesseraError(.catalog, "no Tessera data directory at \(data.path) (run 'tessera init' first)")
        }
        lock = try DirectoryLock(data)
        catalog = try Self.openCatalog(data)
        catalogID = try catalog.identity()
        var s = State()
        for d in try catalog.domains() { s.domains[d.id!] = d }
        let pools = try catalog.pools()
        let stamped = try Self.checkOwnership(
            try catalog.stores(),
            units: try catalog.primaryUnits(),
            pools: Dictionary(uniqueKeysWithValues: pools.map { ($0.id!, $0) }), catalogID: catalogID)
        for p in pools {
            s.pools[p.id!] = Self.poolStack(p, cacheShare: pools.isEmpty ? 0 : Int(cacheSize / UInt64(pools.count)))
        }
        for st in try catalog.stores() {
            guard let pool = s.pools[st.poolId] else { continue }
            s.stores[st.id!] = st
            s.opened[st.id!] = try Self.openStore(st, chunkSize: Int(pool.record.chunkSize))
        }
        let members = Dictionary(grouping: try catalog.unitMembers(), by: \.unitId)
        let jobs = try catalog.jobs().filter { $0.state.isActive && $0.kind == .replace }
        for u in try catalog.units() {
            guard let pool = s.pools[u.poolId] else { continue }
            let served = (members[u.id!] ?? []).compactMap { m in s.opened[m.storeId].map { (m, $0) } }
            let unit = try Self.unitStore(u, members: served, job: jobs.first { $0.unitId == u.id! })
            pool.layer.add(UnitID(u.id!), store: unit.store, nextSerial: UInt64(u.nextSerial), health: unit.health)
            for (m, _) in served {
                s.unitOf[m.storeId] = UnitID(u.id!)
                s.roles[m.storeId] = m.role
            }
            if let r = unit.replace { s.replacing[UnitID(u.id!)] = r }
        }
        qos.load(try catalog.qosSettings())
        for v in try catalog.volumes() {  // ids grow, so a clone's parent is loaded before it
            guard let pool = s.pools[v.poolId] else {
                throw TesseraError(.catalog, "volume \(v.name) names pool #\(v.poolId), which is missing")
            }
            var map = ChunkMap()
            for e in try catalog.chunkMap(of: VolumeID(v.id!)) {
                map.set(UInt64(e.idx), MapEntry(chunk: ChunkID(UInt64(bitPattern: e.chunk)), birth: UInt64(e.birth)))
            }
            var xattrs: [String: [UInt8]] = [:]
            for x in try catalog.xattrs(of: VolumeID(v.id!)) { xattrs[x.name] = x.value }
            var parent: Volume?
            if let pid = v.parentId {
                guard let p = s.volumes[VolumeID(pid)] else {
                    throw TesseraError(.catalog, "clone \(v.name) names parent volume #\(pid), which is missing")
                }
                parent = p
                p.addHold(UInt64(v.parentEpoch ?? 0))
            }
            addVolume(
                v, map: map, retained: try catalog.retained(of: VolumeID(v.id!)), xattrs: xattrs, pool: pool,
                parent: parent, to: &s)
        }
        for snap in try catalog.snapshots() { s.snapshots[snap.id!] = snap }
        for m in try catalog.snapshotMembers() {
            s.members[m.snapshotId, default: []].append(m)
            s.volumes[VolumeID(m.volumeId)]?.addHold(UInt64(m.epoch))
        }
        // A crash between dropping a snapshot and the flush that frees its chunks leaves versions that
        // nothing holds any more: release them now (freed at the next flush).
        for v in s.volumes.values { v.removeHold(UInt64.max) }
        // Share counts follow from the committed maps (references − 1), so they are recomputed rather
        // than trusted: a crash between two volumes' commits can never leave them wrong.
        var refs: [ChunkID: Int] = [:]
        for v in s.volumes.values {
            for (_, c) in v.mapEntries + v.retainedEntries where c.isReal { refs[c, default: 0] += 1 }
        }
        let extra = refs.filter { $0.value > 1 }.mapValues { $0 - 1 }
        for (c, n) in extra { shares.add(c, n) }
        try catalog.replaceShares(extra)
        state.withLock { $0 = s }
        if stamped { recordAllManifests() }  // stores of an older release: record their snapshots and schedules
        if collectGarbage { try sweepOrphans() }
        try loadCDP(prune: collectGarbage)
    }

    /// Flushes every volume (and then what any cache still holds); the first failure is thrown after
    /// all were tried.
    public func flushAll() throws(StoreError) {
        var failure: StoreError?
        for v in allVolumes() {
            do { try stack(of: v).flush(dataOnly: false) } catch { failure = error }
        }
        for cache in caches() {
            do { try cache.flush() } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// The pools' RAM caches (none when mounted without --cache-size, or in-process).
    func caches() -> [CacheLayer] { state.withLock { s in s.pools.values.compactMap(\.cache) } }

    /// Stops the caches' background threads (after the final flushAll).
    public func stopCaches() { for c in caches() { c.stop() } }

    /// Cache figures per pool, for `status`.
    public func cacheInfos() -> [CacheInfo] {
        state.withLock { s in
            s.pools.values.sorted { $0.record.id! < $1.record.id! }.compactMap { p in
                p.cache.map { CacheInfo(pool: p.record.name, stats: $0.stats) }
            }
        }
    }

    /// Starts a thread that flushes dirty volumes every `interval` seconds (bounds what a crash can
    /// lose of writes nobody fsynced, and keeps the catalog's map current).
    public func startPeriodicFlush(every interval: Double = 5) {
        let t = Thread { [weak self] in
            var last = ContinuousClock.now
            while true {
                Thread.sleep(forTimeInterval: interval)
                guard let self, !self.flusherStop.withLock({ $0 }) else { return }
                // A volume whose partial chunks are all young waits (folding them now would copy what
                // a burst of small writes after a snapshot is about to overwrite).
                for v in self.allVolumes() where v.isDirty && !v.defersFolding {
                    do { try self.stack(of: v).flush(dataOnly: false) } catch {
                        Log.error("\(v.name): periodic flush failed: \(error)")
                    }
                }
                // Placement weights follow the stores' real free space (others share their media).
                if ContinuousClock.now - last > .seconds(30) {
                    last = .now
                    for layer in self.poolLayers() { layer.refreshCapacity() }
                }
            }
        }
        t.name = "tessera-flusher"
        t.start()
    }

    public func stopPeriodicFlush() { flusherStop.withLock { $0 = true } }

    func poolLayers() -> [PoolLayer] { state.withLock { $0.pools.values.map(\.layer) } }

    func notify(_ id: VolumeID) {
        for o in observers.withLock({ $0 }) { o(id) }
    }

    // MARK: Lookup

    public func allVolumes() -> [Volume] {
        state.withLock { s in s.volumes.values.sorted { $0.id.rawValue < $1.id.rawValue } }
    }

    /// Volume `name` of the domain with id `domainID` (the default domain unless told).
    public func volume(named name: String, domainID: Int64 = DomainRecord.defaultID) -> Volume? {
        state.withLock { s in s.byName[VolumeKey(domainID, name)].flatMap { s.volumes[$0] } }
    }

    public func volume(id: VolumeID) -> Volume? { state.withLock { $0.volumes[id] } }

    func requireVolume(_ name: String, domainID: Int64 = DomainRecord.defaultID) throws(TesseraError) -> Volume {
        guard let v = volume(named: name, domainID: domainID) else {
            throw TesseraError(.notFound, "no volume named '\(name)'\(inDomain(domainID))")
        }
        return v
    }

    func pool(named name: String) throws(TesseraError) -> Pool {
        guard let p = state.withLock({ s in s.pools.values.first { $0.record.name == name } }) else {
            throw TesseraError(.notFound, "no pool named '\(name)'")
        }
        return p
    }

    // MARK: Validation

    public static func checkName(_ name: String, _ what: String) throws(TesseraError) {
        if let problem = Names.problem(with: name, what: what) { throw TesseraError(.invalid, problem) }
    }

    /// The size rule of the data path (writes, truncate, ftruncate, O_TRUNC): any byte count up to
    /// `maxVolumeSize`. An image is a file, and a file may end anywhere.
    public static func checkSize(_ size: UInt64, allowZero: Bool = false) throws(TesseraError) {
        if size == 0 && !allowZero { throw TesseraError(.invalid, "size must be greater than 0") }
        if size > maxVolumeSize {
            throw TesseraError(
                .invalid, "size \(ByteSize.format(size)) is larger than the limit of \(ByteSize.format(maxVolumeSize))")
        }
    }

    /// The control plane's rule (`volume create`, `volume resize`): `checkSize`, and whole 512-byte
    /// sectors, since a size typed there is meant for a disk.
    public static func checkSectorSize(_ size: UInt64, allowZero: Bool = false) throws(TesseraError) {
        try checkSize(size, allowZero: allowZero)
        if size % 512 != 0 { throw TesseraError(.invalid, "size \(size) is not a multiple of 512 bytes") }
    }

    // MARK: Pools and stores

    public func createPool(name: String, chunkSize: UInt64) throws(TesseraError) {
        try Self.checkName(name, "pool")
        guard chunkSize >= 4096, chunkSize <= 64 << 20, chunkSize & (chunkSize - 1) == 0 else {
            throw TesseraError(.invalid, "chunk size must be a power of two from 4K to 64M")
        }
        if state.withLock({ s in s.pools.values.contains { $0.record.name == name } }) {
            throw TesseraError(.exists, "a pool named '\(name)' already exists")
        }
        let p = try catalog.insertPool(
            PoolRecord(name: name, chunkSize: Int64(chunkSize), createdAt: Date().timeIntervalSince1970))
        state.withLock { $0.pools[p.id!] = Self.poolStack(p, cacheShare: 0) }
    }

    /// Directories of the stores of `poolName` (where its volume manifests live).
    func manifestRoots(pool poolName: String) -> [String] {
        state.withLock { s in
            let ids = Set(s.pools.values.filter { $0.record.name == poolName }.compactMap(\.record.id))
            return s.stores.values.filter { ids.contains($0.poolId) && $0.kind == "dir" }.map(\.path)
        }
    }

    /// Rewrites the manifest of `v` on its pool's stores (after create, rename, resize, chown).
    /// Best effort: the catalog has committed the change already, so a store that cannot take the
    /// manifest (full, read-only) is logged, not reported as a failure of what did happen.
    func recordManifest(_ volumes: [Volume]) {
        for pool in Set(volumes.map(\.poolName)) {
            do {
                try Manifests.writeVolumes(
                    volumes.filter { $0.poolName == pool }.map(\.record), roots: manifestRoots(pool: pool))
            } catch {
                Log.error(
                    "volume manifest not updated (fsck --rebuild-catalog may show stale names or sizes): \(error)")
            }
        }
    }

    /// Pools with their stores' figures. Answers at once for stores that do not (see storeInfos).
    public func poolInfos() throws(TesseraError) -> [PoolInfo] {
        let (pools, volumes) = state.withLock { s in
            (s.pools.values.sorted { $0.record.id! < $1.record.id! }, s.volumes.values)
        }
        let (stores, usages) = storeFigures()
        return pools.map { p in
            let mine = stores.indices.filter { stores[$0].pool == p.record.name }
            let vols = volumes.filter { $0.poolName == p.record.name }
            let combined = StoreUsage.combined(mine.compactMap { usages[$0] })
            let filesystems = StoreUsage.filesystems(mine.compactMap { usages[$0] })
            return PoolInfo(
                id: p.record.id!, name: p.record.name, chunkSize: UInt64(p.record.chunkSize),
                stores: mine.map { stores[$0] },
                volumes: vols.count, capacity: combined.totalBytes, free: combined.freeBytes, used: combined.usedBytes,
                provisioned: vols.reduce(0) { $0 + $1.size }, allocated: vols.reduce(0) { $0 + $1.allocatedBytes },
                filesystemSize: filesystems.isEmpty ? nil : filesystems.reduce(0) { $0 + $1.totalBytes },
                filesystemUsed: filesystems.isEmpty
                    ? nil : filesystems.reduce(0) { $0 + ($1.totalBytes - min($1.freeBytes, $1.totalBytes)) })
        }
    }

    /// Every store's figures. `sample` > 0 also reads that many chunks' headers per compressed store
    /// for the achieved compression ratio (`store show`).
    /// Never waits on a dead store: an unreachable store shows its last figures (see Health.swift), and a
    /// store that stops answering mid-request costs at most `figuresWait`.
    public func storeInfos(sample: Int = 0) throws(TesseraError) -> [StoreInfo] {
        storeFigures(sample: sample).infos
    }

    private func storeFigures(sample: Int = 0) -> (infos: [StoreInfo], usages: [StoreUsage?]) {
        let (stores, pools, opened, unitOf) = state.withLock { s in
            (s.stores.values.sorted { $0.id! < $1.id! }, s.pools, s.opened, s.unitOf)
        }
        var infos: [StoreInfo] = []
        var usages: [StoreUsage?] = []
        var shares: [Int64: [UnitID: Double]] = [:]
        for st in stores {
            guard let pool = pools[st.poolId], let layers = opened[st.id!] else { continue }
            let f = figures(st.id!, health: layers.health, sample: sample)
            let options = try? Self.decodeOptions(st)
            var info = StoreInfo(
                id: st.id!, name: st.name, pool: pool.record.name, kind: st.kind, path: st.path,
                capacity: f?.usage.totalBytes ?? 0, free: f?.usage.freeBytes ?? 0,
                used: f?.usage.usedBytes ?? 0, chunks: f?.chunks ?? 0)
            info.sampledLogical = f?.sampledLogical
            info.sampledStored = f?.sampledStored
            info.compression =
                options.flatMap { try? CompressionSetting.effective($0, kind: st.kind).description } ?? "?"
            info.checksumErrors = layers.mismatches
            let unit = unitOf[st.id!]
            info.unit = unit?.rawValue
            info.freeChunks = unit.flatMap { pool.layer.placementWeights()[$0] }
            if shares[st.poolId] == nil { shares[st.poolId] = pool.layer.placementShares() }
            info.placementShare = unit.flatMap { shares[st.poolId]?[$0] } ?? 0
            info.quota = st.kind == StoreSpec.Kind.file.rawValue ? nil : options?.size
            info.filesystemID = f?.usage.filesystem?.id
            info.filesystemSize = f?.usage.filesystem?.totalBytes
            info.filesystemFree = f?.usage.filesystem?.freeBytes
            let h = layers.health.snapshot
            info.health = h.state
            info.healthSince = h.since
            info.lastError = h.lastError
            info.figuresAt = f?.at
            infos.append(info)
            usages.append(f?.usage)
        }
        return (infos, usages)
    }

    /// Capacity and free space of every store, a filesystem shared by several stores counted once (the
    /// mount's statfs). Never waits on a dead store (see storeInfos).
    public func capacity() -> StoreUsage {
        StoreUsage.combined(storeFigures().usages.compactMap { $0 })
    }

    // MARK: Volumes

    public func info(_ v: Volume) -> VolumeInfo {
        let r = v.record
        let snaps = state.withLock { s in s.members.values.joined().filter { $0.volumeId == r.id! }.count }
        return VolumeInfo(
            id: r.id!, name: r.name, pool: v.poolName, size: UInt64(r.size), allocated: v.allocatedBytes,
            chunkSize: UInt64(v.chunkSize), uid: r.uid, gid: r.gid,
            mode: "0" + String(r.mode & 0o7777, radix: 8), open: v.isOpen,
            referenced: v.referencedBytes, exclusive: v.exclusiveBytes, heldBySnapshots: v.retainedBytes,
            snapshots: snaps, parent: v.parent?.name, unfolded: v.unfoldedBytes,
            domain: state.withLock { $0.domains[r.domainId]?.name })
    }

    /// The volumes of `domain`.
    public func volumeInfos(domain: String) throws(TesseraError) -> [VolumeInfo] {
        let id = try domainID(domain)
        return allVolumes().filter { $0.record.domainId == id && !$0.isUnlinked }.map(info)
    }

    /// Every domain's volumes, by domain and name.
    public func volumeInfosOfAllDomains() -> [VolumeInfo] {
        let order = Dictionary(uniqueKeysWithValues: domainNames().map { ($0.name, $0.id) })
        return allVolumes().filter { !$0.isUnlinked }.map(info).sorted {
            (order[$0.domain ?? ""] ?? 0, $0.name) < (order[$1.domain ?? ""] ?? 0, $1.name)
        }
    }

    /// The default domain's volumes.
    public func volumeInfos() -> [VolumeInfo] {
        allVolumes().filter { $0.record.domainId == DomainRecord.defaultID && !$0.isUnlinked }.map(info)
    }

    public func volumeInfo(_ name: String, domain: String = DomainRecord.defaultName) throws(TesseraError)
        -> VolumeInfo
    {
        info(try requireVolume(name, domainID: try domainID(domain)))
    }

    /// Creates `name` (or, with `count`, name-1 … name-N) in `domain`, in one transaction: all or none.
    /// Without a pool, the domain's policy places it (Domains.swift; pool "default" when it has none).
    /// Refused (code `.quota`) past the domain's volume or size quota.
    @discardableResult
    public func createVolumes(
        name: String, count: Int? = nil, size: UInt64, pool poolName: String? = nil,
        domain: String = DomainRecord.defaultName,
        uid: Int64 = 0, gid: Int64 = 0, mode: Int64 = 0o600, allowZeroSize: Bool = false
    ) throws(TesseraError) -> [Volume] {
        try Self.checkName(name, "volume")
        try Self.checkSectorSize(size, allowZero: allowZeroSize)
        if let count, count < 1 || count > 10_000 {
            throw TesseraError(.invalid, "--count must be between 1 and 10000")
        }
        let names = count.map { n in (1...n).map { "\(name)-\($0)" } } ?? [name]
        for n in names { try Self.checkName(n, "volume") }
        let domainID = try domainID(domain)
        let pool = try placementPool(poolName, domainID: domainID)
        if pool.layer.unitIDs.isEmpty { throw TesseraError(.invalid, "pool '\(pool.record.name)' has no store") }
        let now = Date().timeIntervalSince1970
        let inThatDomain = inDomain(domainID)
        // Holding state across the insert keeps two creators of one name from racing; the insert is a
        // short local transaction.
        let created = try state.withLock { s throws(TesseraError) in
            if let taken = names.first(where: { s.byName[VolumeKey(domainID, $0)] != nil }) {
                throw TesseraError(.exists, "a volume named '\(taken)' already exists\(inThatDomain)")
            }
            try Self.checkQuota(domainID, in: s, volumes: names.count, size: size * UInt64(names.count))
            let records = try catalog.insertVolumes(
                names.map {
                    VolumeRecord(
                        name: $0, domainId: domainID, poolId: pool.record.id!, size: Int64(size),
                        chunkSize: pool.record.chunkSize,
                        uid: uid, gid: gid, mode: mode, now: now)
                })
            return records.map { r in addVolume(r, pool: pool, to: &s) }
        }
        recordManifest(created)
        return created
    }

    /// `volume delete`: refuses an open image, and a volume with snapshots unless `withSnapshots`
    /// (they go with it) or with clones (delete those first). `unlink` (FUSE) uses `unlink(_:)`.
    public func deleteVolume(_ name: String, withSnapshots: Bool = false, domain: String = DomainRecord.defaultName)
        throws(TesseraError)
    {
        let v = try requireVolume(name, domainID: try domainID(domain))
        if v.isOpen { throw TesseraError(.busy, "volume '\(name)' is open; close it first") }
        try refuseIfReferenced(v, allowSnapshots: withSnapshots)
        if withSnapshots {
            for snap in snapshotNames(of: v) { try dropMember(snapshot: snap, volume: v) }
        }
        try unlink(v)
    }

    /// Removes the volume from the namespace and the catalog at once; its chunks are freed now, or at
    /// its last close when it is still open (POSIX unlink semantics).
    public func unlink(_ v: Volume) throws(TesseraError) {
        try refuseIfReferenced(v, allowSnapshots: false)
        try catalog.deleteVolume(v.id)
        Manifests.removeVolume(v.id, roots: manifestRoots(pool: v.poolName))
        v.markUnlinked()
        let key = VolumeKey(v.record.domainId, v.name)
        state.withLock { s in
            s.byName[key] = nil
            s.volumes[v.id] = nil
        }
        if !v.isOpen { releaseUnlinked(v) }
        if let parent = v.parent {
            parent.removeHold(v.parentEpoch)
            try? stack(of: parent).flush(dataOnly: false)
        }
        notify(v.id)
    }

    /// Call at the last close of a volume; frees an unlinked volume's chunks.
    public func closed(_ v: Volume) {
        if v.closed() { releaseUnlinked(v) }
    }

    /// Frees an unlinked volume's chunks and drops its stack.
    private func releaseUnlinked(_ v: Volume) {
        recordReleased(v.releaseAllChunks())
        state.withLock { _ = $0.stacks.removeValue(forKey: v.id) }
        qos.forget(v.id)
    }

    private func recordReleased(_ deltas: [ChunkID: Int]) {
        guard !deltas.isEmpty else { return }
        do { try catalog.applyShareDeltas(deltas) } catch {
            Log.error("share counts not recorded (recomputed at next open): \(error)")
        }
    }

    /// Renames within `domain`; an existing target is replaced (rename(2) semantics) unless `noReplace`.
    public func renameVolume(
        _ from: String, to: String, noReplace: Bool = false, domain: String = DomainRecord.defaultName
    ) throws(TesseraError) {
        try Self.checkName(to, "volume")
        let domainID = try domainID(domain)
        let v = try requireVolume(from, domainID: domainID)
        if from == to { return }
        if let target = volume(named: to, domainID: domainID) {
            if noReplace { throw TesseraError(.exists, "a volume named '\(to)' already exists") }
            try unlink(target)
        }
        let old = v.record
        var r = v.update { $0.name = to }
        do {
            try catalog.updateVolume(r)
        } catch {
            r = v.update { $0.name = old.name }
            throw error
        }
        state.withLock { s in
            s.byName[VolumeKey(domainID, from)] = nil
            s.byName[VolumeKey(domainID, to)] = v.id
        }
        recordManifest([v])
        notify(v.id)
    }

    /// `volume resize`: shrinking drops every byte past the new end, so it must be asked for (`shrink`,
    /// as qemu-img and virsh do) and is refused while the image is open (as `volume delete` and
    /// `snapshot revert` are) unless `force`. Growing needs neither. Refusals change nothing.
    public func resizeVolume(
        _ name: String, to size: UInt64, shrink: Bool = false, force: Bool = false,
        domain: String = DomainRecord.defaultName
    ) throws(TesseraError) {
        try Self.checkSectorSize(size)
        let v = try requireVolume(name, domainID: try domainID(domain))
        let old = v.size
        if size < old {
            guard shrink else {
                throw TesseraError(
                    .invalid,
                    "\(ByteSize.format(size)) is smaller than volume '\(name)' (\(ByteSize.format(old))): "
                        + "shrinking drops everything past the new end; pass --shrink to do it")
            }
            if v.isOpen && !force {
                throw TesseraError(.busy, "volume '\(name)' is open; close it before shrinking it (or pass --force)")
            }
        }
        try resize(v, to: size)
        notify(v.id)
    }

    /// Resize used by both the CLI and FUSE setattr (any byte size: `checkSize`); durable when it returns.
    /// Growing past the domain's size quota is refused (`.quota`) and changes nothing.
    public func resize(_ v: Volume, to size: UInt64) throws(TesseraError) {
        try Self.checkSize(size, allowZero: true)
        try checkGrowth(v, to: size)
        let top = stack(of: v)
        do {
            // Shrinking drops data: first prove the stores take a flush, so a failing store refuses the
            // resize before anything changes instead of half-applying it.
            if size < top.size { try top.flush(dataOnly: false) }
            try top.resize(to: size)
            try top.flush(dataOnly: false)
        } catch {
            throw TesseraError(.io, "resize of '\(v.name)' failed: \(error)")
        }
        recordManifest([v])
    }

    /// Owner and mode (chown/chmod through FUSE); durable when it returns.
    public func setAttributes(
        _ v: Volume, uid: Int64? = nil, gid: Int64? = nil, mode: Int64? = nil,
        mtime: Double? = nil
    ) throws(TesseraError) {
        let r = v.update { r in
            if let uid { r.uid = uid }
            if let gid { r.gid = gid }
            if let mode { r.mode = mode & 0o7777 }
            if let mtime { r.mtime = mtime }
        }
        try catalog.updateVolume(r)
        if uid != nil || gid != nil || mode != nil { recordManifest([v]) }
    }

    public func setXattr(_ v: Volume, name: String, value: [UInt8]?) throws(TesseraError) {
        try catalog.setXattr(v.id, name: name, value: value)
        v.setXattrInMemory(name, value)
    }

    public func status(mountpoint: String?) -> StatusInfo {
        let vols = allVolumes()
        let (pools, stores) = state.withLock { ($0.pools.count, $0.stores.count) }
        return StatusInfo(
            dataDirectory: data.path, mounted: mountpoint != nil, mountpoint: mountpoint, pid: getpid(),
            pools: pools, stores: stores, volumes: vols.count, provisioned: vols.reduce(0) { $0 + $1.size },
            allocated: vols.reduce(0) { $0 + $1.allocatedBytes }, openImages: vols.filter(\.isOpen).count,
            caches: cacheInfos(), checksumErrors: state.withLock { $0.opened.values.reduce(0) { $0 + $1.mismatches } },
            storeHealth: storeHealth())
    }

    /// Every store's health (no I/O).
    public func storeHealth() -> [StoreHealthInfo] {
        state.withLock { s in
            s.stores.values.sorted { $0.id! < $1.id! }.compactMap { st in
                guard let o = s.opened[st.id!] else { return nil }
                let h = o.health.snapshot
                return StoreHealthInfo(
                    name: st.name, pool: s.pools[st.poolId]?.record.name ?? "?", health: h.state,
                    since: h.since, lastError: h.lastError)
            }
        }
    }
}
