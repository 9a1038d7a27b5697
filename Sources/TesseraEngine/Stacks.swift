// Stacks — the one place every stack is built, storage side and volume side.
//
// Storage side (physical chunks), per store bottom up: the store itself (directory of chunk files,
// preallocated file or block device, S3-compatible bucket) → compression (when configured; on by default
// for s3) → checksums (always: every chunk on every store is verified on every read). Per pool: the pool
// layer routes each placement unit's chunks to the unit's store (its one primary store's stack, or a
// ReplaceLayer over two stores' stacks while a replace job runs), and the RAM cache (when the mount has
// one) sits over it.
// Volume side (volume bytes), per volume bottom up: the thin map (`Volume`, over its pool's stack) → the
// CDP journal (CDPLayer, on every volume: it passes through until the volume is protected) → the volume
// layers the engine was given, in order → QoS, always on top (QoS.swift: it costs one atomic load per
// request while no cap applies, and a cap set later applies at once). A clone is made here like any
// other volume, so its stack has the same shape.
// The engine keeps typed handles on the layers it reports or drives (the cache, the checksum and
// compression layers' figures), never a downcast. Map-level operations (snapshot, revert, clone) work on
// the map itself, under its quiesce; everything else goes through the top of the volume's stack.
import TesseraCatalog
import TesseraCore
import TesseraStores

/// An opened store's stack, with handles on the layers that keep figures.
struct OpenedStore {
    let top: ChecksumLayer
    let compression: CompressionLayer?
    let bottom: any ChunkStore
    /// Whether the store answers; shared with its pool's placement.
    let health = StoreHealth()
    /// Damaged data seen since open: block checksum mismatches, and compressed objects that failed
    /// their own check below the checksum layer.
    var mismatches: Int { top.mismatches + (compression?.mismatches ?? 0) }
}

extension Engine {
    /// Makes one per-volume layer over `below` (the stack built so far, the thin map at its bottom) for
    /// `volume`. Called with the engine's state locked: it must not call back into the engine.
    public typealias VolumeLayerFactory = @Sendable (_ volume: Volume, _ below: any VolumeStore) -> any VolumeStore

    // MARK: Storage side

    /// Builds the stack of `record`. `create`: the store is being added (a file store is formatted).
    static func openStore(_ record: StoreRecord, chunkSize: Int, create: Bool = false) throws(TesseraError)
        -> OpenedStore
    {
        let options = try decodeOptions(record)
        let compression = try CompressionSetting.effective(options, kind: record.kind)
        let checksummed = ChecksumLayer.innerChunkSize(for: chunkSize)
        let bottomChunk: Int
        switch compression {
        case .none: bottomChunk = checksummed
        case .zstd: bottomChunk = CompressionLayer.innerChunkSize(for: checksummed)
        }
        let bottom: any ChunkStore
        do {
            switch record.kind {
            case StoreSpec.Kind.dir.rawValue:
                bottom = try DirectoryStore(root: record.path, chunkSize: bottomChunk)
            case StoreSpec.Kind.file.rawValue:
                bottom =
                    create
                    ? try FileStore.create(path: record.path, size: options.size, chunkSize: bottomChunk)
                    : try FileStore.open(path: record.path, chunkSize: bottomChunk)
            default:
                guard let opener = StoreKinds.opener(record.kind) else {
                    throw TesseraError(
                        .catalog, "store \(record.name) has kind '\(record.kind)', which this build cannot open")
                }
                bottom = try opener(record.path, options, bottomChunk, create)
            }
        } catch let error as TesseraError {
            throw error
        } catch {
            throw TesseraError(.io, "store \(record.name): \(error)")
        }
        // A quota recorded for a kind that applies it itself at open (s3) is set again harmlessly.
        if let size = options.size, record.kind == StoreSpec.Kind.dir.rawValue {
            _ = (bottom as? StoreMaintenance)?.setQuota(size)
        }
        var middle: any ChunkStore = bottom
        var compressor: CompressionLayer?
        if case .zstd(let level) = compression {
            let c = CompressionLayer(over: bottom, level: Int(level), place: "store \(record.name)")
            compressor = c
            middle = c
        }
        return OpenedStore(
            top: ChecksumLayer(over: middle, place: "store \(record.name)"), compression: compressor, bottom: bottom)
    }

    /// What serves a placement unit's chunks in its pool layer.
    struct UnitServing {
        let store: any ChunkStore
        /// The health the pool layer marks on outage errors (the primary's; the source's while replacing).
        let health: StoreHealth
        /// Set while a replace job moves the unit to another store.
        let replace: ReplaceLayer?
    }

    /// What a placement unit's chunks are routed to: its one primary store's stack; or, while a replace
    /// job runs (`job`, members with roles source and target), a ReplaceLayer over the two stores' stacks
    /// that copies below their checksum layers (ReplaceLayer.swift). Any other shape is refused.
    static func unitStore(
        _ unit: UnitRecord, members: [(UnitMemberRecord, OpenedStore)], job: JobRecord?
    ) throws(TesseraError) -> UnitServing {
        if members.count == 1, let (member, opened) = members.first, member.role == .primary {
            return UnitServing(store: opened.top, health: opened.health, replace: nil)
        }
        if members.count == 2, let job, let source = members.first(where: { $0.0.role == .source })?.1,
            let target = members.first(where: { $0.0.role == .target })?.1
        {
            let layer = replaceLayer(source: source, target: target)
            layer.begin(end: UInt64(job.endSerial), cursor: UInt64(job.cursor))
            return UnitServing(store: layer, health: source.health, replace: layer)
        }
        throw TesseraError(
            .catalog,
            "placement unit #\(unit.id!) has \(members.count) usable member store(s) "
                + "(\(members.map(\.0.role.rawValue).joined(separator: ", "))); this release serves a unit from one primary "
                + "store, or from a source and a target store while a replace job runs")
    }

    /// The layer that serves a unit from `source` while a replace job copies it to `target`.
    static func replaceLayer(source: OpenedStore, target: OpenedStore) -> ReplaceLayer {
        ReplaceLayer(source: source.top, sourceRaw: source.top.inner, target: target.top, targetRaw: target.top.inner)
    }

    /// A pool's stack: the pool layer over its units, under a RAM cache of `cacheShare` bytes when that
    /// holds at least one chunk.
    static func poolStack(_ record: PoolRecord, cacheShare: Int) -> Pool {
        let layer = PoolLayer(chunkSize: Int(record.chunkSize))
        let cache =
            cacheShare >= Int(record.chunkSize)
            ? CacheLayer(over: layer, CacheLayer.Configuration(capacity: cacheShare)) : nil
        return Pool(record: record, layer: layer, cache: cache)
    }

    // MARK: Volume side

    /// The CDP journal layer of a volume, over its thin map (the lowest volume layer: what it records is
    /// what reached the map, after any throttling above it).
    static func cdpLayer(_ registry: CDPRegistry) -> VolumeLayerFactory {
        { volume, below in CDPLayer(over: below, journal: registry.journal(for: volume.id)) }
    }

    /// Makes a volume (its thin map over `pool`'s stack, then the volume layers over the map) and
    /// registers both in `s`. The one place a Volume is constructed: loaded, created or cloned.
    @discardableResult
    func addVolume(
        _ record: VolumeRecord, map: ChunkMap = ChunkMap(), retained: [RetainedRecord] = [],
        xattrs: [String: [UInt8]] = [:], pool: Pool, parent: Volume? = nil, to s: inout State
    ) -> Volume {
        let v = Volume(
            record: record, map: map, retained: retained, xattrs: xattrs, poolName: pool.record.name,
            pool: pool.layer, io: pool.io, catalog: catalog, shares: shares, parent: parent)
        s.volumes[v.id] = v
        s.byName[VolumeKey(record.domainId, record.name)] = v.id
        let below = volumeLayers.reduce(v as any VolumeStore) { below, layer in layer(v, below) }
        s.stacks[v.id] = qos.layer(for: v.id, pool: record.poolId, over: below)
        return v
    }

    /// The top of `v`'s volume stack: what the FUSE adapter and the control plane do I/O through.
    /// An unlinked volume's stack goes at its last close; what is left of it then is its map.
    public func stack(of v: Volume) -> any VolumeStore { state.withLock { $0.stacks[v.id] } ?? v }

    /// A snapshot's image of a volume: the view its stack gives at the snapshot's epoch (read-only).
    public func view(of image: SnapshotImage) -> any VolumeStore {
        stack(of: image.volume).view(at: image.epoch, size: image.size)
    }
}
