// Ownership — the catalog and its stores know each other, and garbage collection only ever removes
// what it can prove is this catalog's own garbage.
//
// Identity: every catalog has a UUID (tessera_meta `catalog-id`); every directory store records it in
// its store.json. `init` refuses a data directory that already holds stores; opening refuses a store
// that names another catalog; a missing or damaged catalog points at `fsck --rebuild-catalog`.
//
// Garbage collection (the sweep at open, and `fsck --repair`) deletes an unreferenced chunk only with
// a proof that this catalog made it garbage:
//   - the catalog recorded it as freed (chunk_free: a committed change unmapped it, or its volume was
//     deleted), or
//   - its serial is at or above the store's gcFloor (set at every open, once every chunk was seen:
//     such a chunk was allocated by the run since, and no committed map references it) and its label,
//     if any, names a volume id this catalog has handed out.
// And it never deletes more than a small share of a store at once: a store whose proven orphans are
// more than `OrphanSweep.maxShare` of its chunks and more than `OrphanSweep.smallCount` chunks is
// left alone, with a log line saying why (an older catalog over newer stores, say one restored from
// a backup, looks exactly like that). `fsck --repair --force` lifts the limit and the proof.
import Foundation
import TesseraCatalog
import TesseraCore

/// The safety limit of one garbage-collection pass over one store.
public enum OrphanSweep {
    /// At most this share of a store's chunks …
    public static let maxShare = 0.10
    /// … unless it is this many chunks or fewer.
    public static let smallCount = 64

    public static func allowed(_ count: Int, of total: Int) -> Bool {
        count <= smallCount || Double(count) <= Double(total) * maxShare
    }

    static let rule = "at most 10% of a store's chunks, or \(smallCount) chunks, in one pass"
}

/// The unreferenced chunks of one placement unit, sorted by what garbage collection may do with them.
struct StoreOrphans {
    let unit: UnitID
    let name: String
    let total: Int
    var proven: [ChunkID] = []
    var unproven: [ChunkID] = []
    var allowed: Bool { OrphanSweep.allowed(proven.count, of: total) }
}

extension Engine {
    // MARK: Finding the catalog

    /// Opens the catalog of `data`; when it is missing or damaged, says what to do: `init` only for a
    /// data directory that holds no store, `fsck --rebuild-catalog` otherwise.
    static func openCatalog(_ data: DataDirectory) throws(TesseraError) -> Catalog {
        guard FileManager.default.fileExists(atPath: data.catalogPath) else {
            let used = data.usedStoreDirectories()
            if used.isEmpty {
                throw TesseraError(
                    .catalog, "no catalog at \(data.catalogPath) (run 'tessera init' first, or give --data)")
            }
            throw TesseraError(
                .catalog,
                "no catalog at \(data.catalogPath), but \(data.storesPath) holds \(used.count) store(s) "
                    + "with data: run 'tessera fsck --rebuild-catalog' to rebuild the catalog from them (not 'tessera init')"
            )
        }
        do {
            return try Catalog.open(at: data.catalogPath)
        } catch {
            throw TesseraError(
                .catalog,
                "\(error.message): run 'tessera fsck --rebuild-catalog' to rebuild it from the stores "
                    + "(the damaged file is kept beside it)")
        }
    }

    /// `init` on a directory that already holds a catalog or stores would orphan their data: refuse.
    static func refuseUsedDataDirectory(_ data: DataDirectory) throws(TesseraError) {
        if FileManager.default.fileExists(atPath: data.catalogPath) {
            throw TesseraError(.exists, "a catalog already exists at \(data.catalogPath); nothing changed")
        }
        if let used = data.usedStoreDirectories().first {
            let chunks = DataDirectory.chunkFileCount(used)
            throw TesseraError(
                .exists,
                "\(used) already holds a store (\(chunks) chunk(s)) whose catalog is missing: "
                    + "run 'tessera fsck --rebuild-catalog' to rebuild the catalog from it; 'init' changed nothing")
        }
    }

    /// A store location that holds another catalog's store.json is refused (`store add`).
    func refuseForeignStore(at root: String) throws(TesseraError) {
        guard let m = Manifests.readStore(root: root) else { return }
        if m.catalogID != catalogID {
            throw TesseraError(
                .exists,
                "\(root) is store '\(m.storeName)' of another catalog (\(m.catalogID ?? "older release")); "
                    + "use an empty directory, or rebuild that catalog with 'tessera fsck --rebuild-catalog --store \(root)'"
            )
        }
    }

    // MARK: Stamping stores

    /// Every directory store must name this catalog in its store.json. One that names none (written
    /// before identities existed) is stamped now; one that names another catalog is refused. Returns
    /// true when a store was stamped now (the engine then writes every other manifest too).
    static func checkOwnership(
        _ stores: [StoreRecord], units: [Int64: UnitID], pools: [Int64: PoolRecord], catalogID: String
    ) throws(TesseraError) -> Bool {
        var stamped = false
        for st in stores where st.kind == StoreSpec.Kind.dir.rawValue {
            guard let pool = pools[st.poolId], let unit = units[st.id!] else { continue }
            let found = Manifests.readStore(root: st.path)
            if let owner = found?.catalogID, owner != catalogID {
                throw TesseraError(
                    .catalog,
                    "store '\(st.name)' (\(st.path)) belongs to another catalog (\(owner); this one is "
                        + "\(catalogID)): this catalog.db is not the one its stores were written with. Move catalog.db aside "
                        + "and run 'tessera fsck --rebuild-catalog'")
            }
            let wanted = StoreManifest(st, pool, unit: unit, catalogID: catalogID)
            if found != wanted {
                do {
                    try Manifests.writeStore(wanted, root: st.path)
                    if found?.catalogID == nil {
                        stamped = true
                        Log.info("store \(st.name): recorded the identity of its catalog (\(catalogID))")
                    }
                } catch {
                    Log.error("store \(st.name): cannot record its catalog's identity: \(error)")
                }
            }
        }
        return stamped
    }

    // MARK: Garbage collection

    /// The unreferenced chunks of every store, each proven or not (see the header). Also raises each
    /// store's serial counter past every chunk seen.
    func findOrphans() throws(TesseraError) -> [StoreOrphans] {
        let referenced = try catalog.referencedChunks()
        let freed = try catalog.freedChunks()
        let floors = try catalog.gcFloors()
        let maxVolume = try catalog.maxVolumeIDEver()
        var out: [StoreOrphans] = []
        for layer in poolLayers() {
            for (id, store) in layer.members.sorted(by: { $0.0.rawValue < $1.0.rawValue }) {
                let chunks: [ChunkID]
                do { chunks = try store.allChunks() } catch {
                    throw TesseraError(.io, "cannot list chunks of \(describe(id)): \(error)")
                }
                var o = StoreOrphans(unit: id, name: describe(id, bare: true), total: chunks.count)
                let floor = floors[id] ?? UInt64.max
                for c in chunks {
                    if c.unit == id { layer.raiseSerial(id, to: c.serial + 1) }
                    guard !referenced.contains(c.rawValue) else { continue }
                    var proven = freed.contains(c.rawValue)
                    if !proven && c.unit == id && c.serial >= floor {
                        // No label: written, then a crash before its label (labels follow the data).
                        do { proven = try store.label(of: c).map { $0.volume.rawValue <= maxVolume } ?? true } catch {
                            proven = false
                        }
                    }
                    if proven { o.proven.append(c) } else { o.unproven.append(c) }
                }
                out.append(o)
            }
        }
        return out
    }

    /// The sweep at open: removes proven orphans of stores within the limit, then sets every store's
    /// gcFloor past every chunk seen. A chunk that cannot be removed is logged and left for fsck:
    /// garbage never blocks a mount.
    func sweepOrphans() throws(TesseraError) {
        let found = try findOrphans()
        var removed = 0
        var kept: [ChunkID] = []
        for o in found {
            guard let store = poolLayers().lazy.compactMap({ $0.store(o.unit) }).first else { continue }
            if !o.proven.isEmpty && !o.allowed {
                Log.error(
                    "garbage collection refused on store \(o.name): \(o.proven.count) unreferenced chunk(s) are "
                        + "\(o.proven.count * 100 / max(o.total, 1))% of its \(o.total) chunks (the limit is \(OrphanSweep.rule)); "
                        + "left them all. If this catalog is older than its stores (restored from a backup?), move catalog.db aside "
                        + "and run 'tessera fsck --rebuild-catalog'; if they are garbage, 'tessera fsck --repair --force' removes them"
                )
                kept += o.proven
            } else {
                for c in o.proven {
                    do {
                        try store.delete(c)
                        removed += 1
                    } catch {
                        Log.error("cannot remove unreferenced \(c) from store \(o.name): \(error)")
                        kept.append(c)
                    }
                }
                do { try store.flush() } catch { throw TesseraError(.io, "cannot flush store \(o.name): \(error)") }
            }
            if !o.unproven.isEmpty {
                Log.info(
                    "store \(o.name): \(o.unproven.count) unreferenced chunk(s) without proof that this catalog freed them: "
                        + "kept ('tessera fsck' lists them)")
            }
        }
        var floors: [UnitID: UInt64] = [:]
        for layer in poolLayers() {
            let next = layer.nextSerials()
            try catalog.updateSerials(next)
            floors.merge(next) { a, _ in a }
        }
        try catalog.setGCFloors(floors)
        let freed = try catalog.freedChunks()
        let keep = Set(kept.map(\.rawValue))
        try catalog.forgetFreed(freed.subtracting(keep).map { ChunkID($0) })
        if removed > 0 { Log.info("removed \(removed) unreferenced chunk(s) left by an interrupted run") }
    }
}
