// Stores — store options and kinds, and how stores join a pool (their stacks are built in Stacks.swift).
//
// Kinds that live outside TesseraStores (s3, whose HTTP stack is heavy) are registered by the
// executable through StoreKinds, so the engine and its tests do not link them.
// Invariants: a store is in the catalog only if its stack opened (and, for a new file store, was
// formatted); the options column never holds a secret (credentials stay in a root-only file).
import Foundation
import Synchronization
import TesseraCatalog
import TesseraCore
import TesseraStores

/// How a store is opened beyond its kind and location (catalog column `store.options`, JSON).
public struct StoreOptions: Codable, Sendable, Equatable {
    /// A file store's size at creation; an object store's capacity quota. Bytes.
    public var size: UInt64?
    /// "none" or "zstd:LEVEL"; nil means the kind's default (zstd:3 for s3, none otherwise).
    public var compression: String?
    /// S3: the root-only file holding the access key and secret.
    public var credentialsFile: String?
    /// S3: "path" (default) or "virtual" (bucket in the host name).
    public var addressing: String?
    /// S3: the signing region (default us-east-1).
    public var region: String?
    public init(
        size: UInt64? = nil, compression: String? = nil, credentialsFile: String? = nil,
        addressing: String? = nil, region: String? = nil
    ) {
        self.size = size
        self.compression = compression
        self.credentialsFile = credentialsFile
        self.addressing = addressing
        self.region = region
    }
}

/// A store to add: `tessera store add NAME --pool POOL (--dir | --file | --s3) …`.
public struct StoreSpec: Codable, Sendable, Equatable {
    public enum Kind: String, Codable, Sendable, CaseIterable { case dir, file, s3 }
    public var name: String
    public var pool: String
    public var kind: Kind
    /// Directory, file or device path, or the s3 URL.
    public var location: String
    public var options: StoreOptions
    public init(name: String, pool: String, kind: Kind, location: String, options: StoreOptions = StoreOptions()) {
        self.name = name
        self.pool = pool
        self.kind = kind
        self.location = location
        self.options = options
    }
}

/// A compression setting: `none` or `zstd[:LEVEL]` (levels 1…19).
public enum CompressionSetting: Equatable, Sendable {
    case none
    case zstd(level: Int32)

    public static func parse(_ text: String) throws(TesseraError) -> CompressionSetting {
        if text == "none" { return .none }
        if text == "zstd" { return .zstd(level: 3) }
        if text.hasPrefix("zstd:"), let level = Int32(text.dropFirst(5)), (1...19).contains(level) {
            return .zstd(level: level)
        }
        throw TesseraError(
            .invalid, "compression must be 'none', 'zstd' or 'zstd:LEVEL' with LEVEL 1…19, not '\(text)'")
    }

    public var description: String {
        switch self {
        case .none: return "none"
        case .zstd(let level): return "zstd:\(level)"
        }
    }

    static func effective(_ options: StoreOptions, kind: String) throws(TesseraError) -> CompressionSetting {
        if let text = options.compression { return try parse(text) }
        return kind == StoreSpec.Kind.s3.rawValue ? .zstd(level: 3) : .none
    }
}

/// Openers for store kinds registered from outside the engine.
public enum StoreKinds {
    /// Opens (with `create`: first use, may check more) the bottom store of kind at `location`.
    public typealias Opener =
        @Sendable (_ location: String, _ options: StoreOptions, _ chunkSize: Int, _ create: Bool)
        throws -> any ChunkStore
    private static let openers = Mutex<[String: Opener]>([:])

    public static func register(_ kind: StoreSpec.Kind, _ opener: @escaping Opener) {
        openers.withLock { $0[kind.rawValue] = opener }
    }

    static func opener(_ kind: String) -> Opener? { openers.withLock { $0[kind] } }
}

extension Engine {
    static func decodeOptions(_ record: StoreRecord) throws(TesseraError) -> StoreOptions {
        do { return try JSONDecoder().decode(StoreOptions.self, from: Data(record.options.utf8)) } catch {
            throw TesseraError(.catalog, "store \(record.name) has unreadable options: \(error)")
        }
    }

    /// `tessera store add`: opens (formats) the store, records it, and adds it to its pool, also on a
    /// running mount, where it takes new chunks from the next allocation on.
    public func addStore(_ spec: StoreSpec) throws(TesseraError) {
        let pool = try pool(named: spec.pool)
        let (new, opened) = try openNewStore(spec, pool: pool.record)
        var record = new
        let unit: UnitID
        (record, unit) = try catalog.insertStore(record)
        try writeNewStoreManifests(record, pool: pool.record, unit: unit)
        pool.layer.add(unit, store: opened.top, nextSerial: 1, health: opened.health)
        state.withLock { s in
            s.stores[record.id!] = record
            s.opened[record.id!] = opened
            s.unitOf[record.id!] = unit
            s.roles[record.id!] = .primary
        }
        startHealthCheck(record.id!)
    }

    /// A new directory store's manifests: its own (naming `unit`) and its pool's volumes, snapshots and
    /// schedules, so that a rebuild finds them there too. Nothing for other kinds.
    func writeNewStoreManifests(_ record: StoreRecord, pool: PoolRecord, unit: UnitID) throws(TesseraError) {
        guard record.kind == StoreSpec.Kind.dir.rawValue else { return }
        try Manifests.writeStore(StoreManifest(record, pool, unit: unit, catalogID: catalogID), root: record.path)
        let poolVolumes = allVolumes().filter { $0.poolName == pool.name }.map(\.record)
        try Manifests.writeVolumes(poolVolumes, roots: [record.path])
        try recordSharedManifests(pool: pool.name, roots: [record.path])
    }

    /// Drops a store that left the catalog from the engine's state.
    static func forgetStore(_ id: Int64, _ s: inout State) {
        s.stores[id] = nil
        s.opened[id] = nil
        s.unitOf[id] = nil
        s.roles[id] = nil
    }

    /// Checks a store to add (name, location, options), opens (formats) it and checks that it is empty;
    /// records nothing. `store add` and `store replace` share it.
    func openNewStore(_ spec: StoreSpec, pool: PoolRecord) throws(TesseraError) -> (StoreRecord, OpenedStore) {
        try Self.checkName(spec.name, "store")
        if state.withLock({ s in s.stores.values.contains { $0.name == spec.name } }) {
            throw TesseraError(.exists, "a store named '\(spec.name)' already exists")
        }
        if let c = spec.options.compression { _ = try CompressionSetting.parse(c) }
        var location = spec.location
        switch spec.kind {
        case .dir:
            location = DataDirectory.absolute(location)
            try checkDirectoryLocation(location)
        case .file:
            location = DataDirectory.absolute(location)
            if let other = state.withLock({ s in s.stores.values.first { Self.isInside(location, $0.path) } }) {
                throw TesseraError(.exists, "\(location) lies in store '\(other.name)' (\(other.path))")
            }
        case .s3:
            if let other = state.withLock({ s in s.stores.values.first { $0.kind == "s3" && $0.path == location } }) {
                throw TesseraError(.exists, "\(location) is already store '\(other.name)'")
            }
        }
        let encoded: String
        do { encoded = String(decoding: try JSONEncoder().encode(spec.options), as: UTF8.self) } catch {
            throw TesseraError(.invalid, "cannot encode store options: \(error)")
        }
        let record = StoreRecord(
            poolId: pool.id!, name: spec.name, kind: spec.kind.rawValue, path: location,
            createdAt: Date().timeIntervalSince1970, options: encoded)
        if spec.kind == .dir { try refuseForeignStore(at: location) }
        let opened = try Self.openStore(record, chunkSize: Int(pool.chunkSize), create: true)
        // A store that is not empty may hold another installation's chunks: refuse to mix them.
        let existing: Int
        do { existing = try opened.top.allChunks().count } catch {
            throw TesseraError(.io, "store \(spec.name): cannot list its chunks: \(error)")
        }
        if existing > 0 {
            throw TesseraError(
                .exists,
                "\(location) already holds \(existing) chunk(s) (another installation's store?); use an empty one")
        }
        return (record, opened)
    }

    /// `tessera store remove NAME`: takes a store that holds no chunk out of its pool and the catalog,
    /// also on a running mount. The store first leaves placement; writes that picked it before wait
    /// out under their volumes' stripe locks and everything is flushed, so its listing is final when
    /// it is checked. A store with chunks stays (and goes back into placement): moving chunks off a
    /// store is not built yet. The last store of a pool that holds volumes stays too. Its files are
    /// left but for the manifests, so the directory no longer counts as a store.
    public func removeStore(_ name: String) throws(TesseraError) {
        guard
            let (record, opened, unit, pool) = state.withLock({ s in
                s.stores.values.first { $0.name == name }.flatMap { r in
                    s.opened[r.id!].flatMap { o in
                        s.unitOf[r.id!].flatMap { u in s.pools[r.poolId].map { (r, o, u, $0) } }
                    }
                }
            })
        else { throw TesseraError(.notFound, "no store named '\(name)'") }
        if state.withLock({ $0.replacing[unit] }) != nil {
            throw TesseraError(
                .busy, "store \(name) is part of a replace job ('tessera job list'); cancel it or let it finish first")
        }
        let volumes = allVolumes().filter { $0.record.poolId == record.poolId }
        let others = state.withLock { s in s.stores.values.filter { $0.poolId == record.poolId }.count - 1 }
        if others == 0 && !volumes.isEmpty {
            throw TesseraError(
                .busy,
                "store \(name) is the last store of pool \(pool.record.name), which holds \(volumes.count) volume(s): "
                    + "add another store to the pool first")
        }
        pool.layer.setRetired(unit, true)
        var removed = false
        defer { if !removed { pool.layer.setRetired(unit, false) } }
        snapshotLock.withLock { _ in
            for v in volumes {
                v.quiesce()
                v.resume()
            }
        }
        do { try flushAll() } catch {
            throw TesseraError(.io, "cannot flush the volumes before removing store \(name): \(error)")
        }
        let chunks: Int
        do { chunks = try opened.top.allChunks().count } catch {
            throw TesseraError(
                .io, "store \(name) does not answer (\(error)); it can be removed once it answers and holds no chunk")
        }
        if chunks > 0 {
            throw TesseraError(
                .busy,
                "store \(name) holds \(chunks) chunk(s); only a store without chunks can be removed "
                    + "(moving chunks off a store is not built yet)")
        }
        try catalog.removeStore(record.id!, unit: unit)
        removed = true
        pool.layer.remove(unit)
        state.withLock { Self.forgetStore(record.id!, &$0) }
        if record.kind == StoreSpec.Kind.dir.rawValue { Manifests.removeAll(root: record.path) }
        Log.info("store \(name) removed from pool \(pool.record.name)")
    }

    /// `tessera store set NAME --size SIZE`: a new capacity quota (dir: a placement limit on top of its
    /// filesystem's room; s3: its capacity). A file store's size is fixed at creation. Recorded in the
    /// catalog, applied at once on a running mount.
    public func setStoreSize(_ name: String, size: UInt64) throws(TesseraError) {
        guard
            let (record, opened) = state.withLock({ s in
                s.stores.values.first { $0.name == name }.flatMap { r in s.opened[r.id!].map { (r, $0) } }
            })
        else { throw TesseraError(.notFound, "no store named '\(name)'") }
        if size == 0 { throw TesseraError(.invalid, "size must be greater than 0") }
        let chunk = state.withLock { s in s.pools[record.poolId].map { UInt64($0.record.chunkSize) } } ?? 1
        if size < chunk {
            throw TesseraError(
                .invalid, "size \(ByteSize.format(size)) is smaller than one chunk (\(ByteSize.format(chunk)))")
        }
        guard record.kind != StoreSpec.Kind.file.rawValue, let maintenance = opened.bottom as? StoreMaintenance else {
            throw TesseraError(
                .invalid, "store \(name) is a \(record.kind) store, whose size is fixed when it is created")
        }
        var options = try Self.decodeOptions(record)
        options.size = size
        var updated = record
        do { updated.options = String(decoding: try JSONEncoder().encode(options), as: UTF8.self) } catch {
            throw TesseraError(.invalid, "cannot encode store options: \(error)")
        }
        try catalog.updateStore(updated)
        _ = maintenance.setQuota(size)
        state.withLock { $0.stores[record.id!] = updated }
        refreshFigures(record.id!)
    }

    /// The store(s) serving `unit`, for messages: "store NAME" ("unit #N" when none is known); `bare`:
    /// the names alone.
    func describe(_ unit: UnitID, bare: Bool = false) -> String {
        let names = state.withLock { s in
            s.unitOf.filter { $0.value == unit }.keys.sorted().compactMap { s.stores[$0]?.name }
        }
        if names.isEmpty { return bare ? "#\(unit.rawValue)" : "\(unit)" }
        return (bare ? "" : names.count == 1 ? "store " : "stores ") + names.joined(separator: ", ")
    }

    /// `path` is `dir` or lies below it.
    private static func isInside(_ path: String, _ dir: String) -> Bool { path == dir || path.hasPrefix(dir + "/") }

    private func checkDirectoryLocation(_ abs: String) throws(TesseraError) {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: abs, isDirectory: &isDir), isDir.boolValue else {
            throw TesseraError(.notFound, "store path \(abs) does not exist or is not a directory")
        }
        func overlap(_ a: String, _ b: String) -> Bool { Self.isInside(a, b) || Self.isInside(b, a) }
        if let other = state.withLock({ s in s.stores.values.first { $0.kind == "dir" && overlap($0.path, abs) } }) {
            throw TesseraError(.exists, "\(abs) overlaps store '\(other.name)' (\(other.path))")
        }
        if overlap(abs, data.path) && !abs.hasPrefix(data.path + "/stores/") {
            throw TesseraError(.invalid, "\(abs) overlaps the data directory \(data.path); use another directory")
        }
    }
}
