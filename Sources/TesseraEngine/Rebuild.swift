// Rebuild — `tessera fsck --rebuild-catalog`: a new catalog from the stores' self-description
// (Manifests.swift) and the label on every chunk (volume, index, birth epoch).
//
// What comes back: pools and stores with their settings and placement units (store.json), volumes with owner, size, epoch
// and clone parent (volumes/*.json; a volume with chunks but no manifest comes back as recovered-ID),
// each slot's versions from the labels — the newest birth is live, the older ones are retained and
// live until the next one's birth (that is how copy-on-write made them) — snapshots with their member
// epochs (snapshots/*.json), schedules (schedules.json) and domains (domains.json; a volume, snapshot
// or schedule names its domain, none meaning the default one). Stores written by a release that kept no
// snapshot manifests still hold the old versions: each becomes a snapshot recovered-VOLUME-eEPOCH
// that shows it, so nothing is dropped, but the names and exact instants are reported lost.
// What cannot come back, and is said so: discards of data a snapshot still held (the live volume
// shows the snapshot's data there again), a clone's discarded ranges (they show the parent's data),
// sharing made by copy_file_range (the sharing volume reads zeros there), and anything on stores that
// are not directories (no manifests).
//
// The new catalog has a new identity, stamped into every store it was rebuilt from. Each unit's
// gcFloor is past every chunk seen, so the next mount removes only what the rebuild itself found to be
// garbage (recorded as freed): a superseded version of one epoch, or a chunk without a label.
import Foundation
import TesseraCatalog
import TesseraCore
import TesseraStores

/// What `fsck --rebuild-catalog` did.
public struct RebuildReport: Codable, Sendable {
    public var stores: [String] = []
    public var pools = 0
    public var volumes = 0
    public var recoveredWithoutManifest = 0
    public var clones = 0
    public var mapEntries = 0
    public var retainedVersions = 0
    /// Names of the snapshots rebuilt (recovered-… for versions no manifest named).
    public var snapshots: [String] = []
    public var schedules = 0
    /// Domains other than the default one.
    public var domains = 0
    public var storeSettings = 0
    public var unlabeledChunks = 0
    /// Chunks found to be garbage (removed at the next mount, within the garbage-collection limit).
    public var garbageChunks = 0
    /// What could not be recovered, one line each.
    public var lost: [String] = []
    public var movedAside: String?
}

public enum CatalogRebuild {
    struct Version {
        var chunk: ChunkID
        var birth: UInt64
    }

    /// Rebuilds the catalog of `data` from the stores in `data/stores/*` and `extraStores`. A damaged
    /// catalog is moved aside first; a healthy one is refused.
    public static func rebuild(_ data: DataDirectory, extraStores: [String]) throws(TesseraError) -> RebuildReport {
        let lock = try DirectoryLock(data)
        defer { _ = lock }
        var report = RebuildReport()
        report.movedAside = try moveAside(data)
        var manifests: [(String, StoreManifest)] = []
        for root in data.usedStoreDirectories() + extraStores.map(DataDirectory.absolute) {
            guard let m = Manifests.readStore(root: root) else { continue }
            if !manifests.contains(where: { $0.1.storeID == m.storeID }) { manifests.append((root, m)) }
        }
        guard !manifests.isEmpty else {
            throw TesseraError(
                .notFound, "no store with a store.json under \(data.storesPath) or in --store; nothing to rebuild from")
        }
        let catalog = try Catalog.create(at: data.catalogPath)
        let identity = try catalog.identity()
        let now = Date().timeIntervalSince1970
        var pools: [Int64: PoolRecord] = [:]
        for (_, m) in manifests where pools[m.poolID] == nil {
            var p = PoolRecord(name: m.poolName, chunkSize: m.chunkSize, createdAt: now)
            p.id = m.poolID
            pools[m.poolID] = try catalog.insertPool(p)
        }
        report.pools = pools.count

        // Stores, and what they say about volumes, snapshots and schedules.
        var volumeManifests: [Int64: VolumeManifest] = [:]
        var snapshotManifests: [Int64: SnapshotManifest] = [:]
        var schedules: SchedulesManifest?
        var domains: DomainsManifest?
        var versions: [Int64: [UInt64: [Version]]] = [:]
        var volumePool: [Int64: Int64] = [:]
        var nextSerial: [UnitID: UInt64] = [:]
        var unitOf: [Int64: UnitID] = [:]
        var garbage: [ChunkID] = []
        var storeRecords: [(String, StoreRecord)] = []
        for (root, m) in manifests {
            var s = StoreRecord(
                poolId: m.poolID, name: m.storeName, kind: m.kind, path: root, createdAt: now,
                options: m.options ?? "{}")
            s.id = m.storeID
            if m.options != nil {
                report.storeSettings += 1
            } else {
                report.lost.append("settings of store \(m.storeName) (its store.json predates them): defaults used")
            }
            let unit: UnitID
            (s, unit) = try catalog.insertStore(s, unit: UnitID(m.unitID ?? m.storeID))
            unitOf[m.storeID] = unit
            storeRecords.append((root, s))
            report.stores.append("\(m.storeName) (\(root))")
            for v in Manifests.readVolumes(root: root) {
                if let have = volumeManifests[v.id], (have.epoch ?? 0) >= (v.epoch ?? 0) { continue }
                volumeManifests[v.id] = v
            }
            for snap in Manifests.readSnapshots(root: root) { snapshotManifests[snap.id] = snap }
            let sch = Manifests.readShared(SchedulesManifest.self, file: Manifests.schedulesFile, root: root)
            if let sch, sch.writtenAt > (schedules?.writtenAt ?? -1) { schedules = sch }
            let dom = Manifests.readShared(DomainsManifest.self, file: Manifests.domainsFile, root: root)
            if let dom, dom.writtenAt > (domains?.writtenAt ?? -1) { domains = dom }
            let store = try Engine.openStore(s, chunkSize: Int(m.chunkSize)).top
            let chunks: [ChunkID]
            do { chunks = try store.allChunks() } catch { throw TesseraError(.io, "store \(m.storeName): \(error)") }
            for c in chunks {
                nextSerial[c.unit] = max(nextSerial[c.unit] ?? 1, c.serial + 1)
                guard let label = try? store.label(of: c) else {
                    report.unlabeledChunks += 1
                    garbage.append(c)
                    continue
                }
                versions[label.volume.rawValue, default: [:]][label.index, default: []].append(
                    Version(chunk: c, birth: label.epoch))
                volumePool[label.volume.rawValue] = volumePool[label.volume.rawValue] ?? m.poolID
            }
        }
        // Stores that named their catalog recorded every snapshot and schedule (stamping writes them).
        let modern = manifests.contains { $0.1.catalogID != nil }

        // Domains, before the rows that name them; a domain named but not recorded comes back renamed.
        for d in domains?.domains ?? [] { _ = try catalog.saveDomain(d) }
        var known = Set(try catalog.domains().map(\.id!))
        let named =
            volumeManifests.values.map(\.domainID) + snapshotManifests.values.map(\.domainID)
            + (schedules?.schedules.map(\.domainID) ?? [])
        for id in Set(named.compactMap { $0 }).subtracting(known).sorted() {
            var d = DomainRecord(name: "recovered-domain-\(id)", createdAt: now)
            d.id = id
            _ = try catalog.saveDomain(d)
            known.insert(id)
            report.lost.append(
                "domain #\(id): no manifest; its name and settings are lost (rebuilt as recovered-domain-\(id))")
        }
        report.domains = known.count - 1

        // Volumes: manifests first, then volumes known only from labels.
        var records: [Int64: VolumeRecord] = [:]
        for (id, v) in volumeManifests where pools[v.poolID] != nil { records[id] = v.record }
        for (id, pool) in volumePool where records[id] == nil {
            var r = VolumeRecord(name: "recovered-\(id)", poolId: pool, size: 0, chunkSize: 1, now: now)
            r.id = id
            records[id] = r
            report.recoveredWithoutManifest += 1
            report.lost.append(
                "volume #\(id): no manifest; its name, owner and size are lost (rebuilt as recovered-\(id))")
        }
        for id in records.keys {
            records[id]!.chunkSize = pools[records[id]!.poolId]!.chunkSize
            records[id]!.mtime = now
            if let p = records[id]!.parentId, records[p] == nil {
                report.lost.append(
                    "clone \(records[id]!.name): its parent volume #\(p) is gone; rebuilt as a standalone volume")
                records[id]!.parentId = nil
                records[id]!.parentEpoch = nil
                records[id]!.parentLimit = nil
            }
        }

        // Snapshot members, by volume: the epochs whose versions must be kept.
        var snapshotMembers: [(SnapshotManifest, [SnapshotManifest.Member])] = []
        for snap in snapshotManifests.values.sorted(by: { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }) {
            let kept = snap.members.filter { records[$0.volumeID] != nil }
            for m in snap.members where records[m.volumeID] == nil {
                report.lost.append("snapshot \(snap.name): its image of volume #\(m.volumeID) (that volume is gone)")
            }
            if kept.isEmpty {
                report.lost.append("snapshot \(snap.name): none of its volumes is left")
            } else {
                snapshotMembers.append((snap, kept))
            }
        }
        var holds: [Int64: Set<UInt64>] = [:]
        for (_, members) in snapshotMembers {
            for m in members { holds[m.volumeID, default: []].insert(UInt64(m.epoch)) }
        }
        for r in records.values {
            if let p = r.parentId, let e = r.parentEpoch { holds[p, default: []].insert(UInt64(e)) }
        }

        // Maps: per slot, versions by birth; the newest is live, each older one lives until the next.
        var recoveredSnapshots: [Int64: Set<UInt64>] = [:]
        var orphanVersions = 0
        for id in records.keys.sorted() {
            var r = records[id]!
            var commit = Catalog.VolumeCommit(size: 0, mtime: now)
            var maxBirth: UInt64 = 0
            for (index, found) in versions[id] ?? [:] {
                var byBirth: [UInt64: Version] = [:]
                for v in found {
                    if let other = byBirth[v.birth] {  // two of one epoch: the later write won, the other is garbage
                        let (keep, drop) = other.chunk.serial > v.chunk.serial ? (other, v) : (v, other)
                        byBirth[v.birth] = keep
                        garbage.append(drop.chunk)
                    } else {
                        byBirth[v.birth] = v
                    }
                }
                let chain = byBirth.values.sorted { $0.birth < $1.birth }
                maxBirth = max(maxBirth, chain.last!.birth)
                commit.changes[index] = MapEntry(chunk: chain.last!.chunk, birth: chain.last!.birth)
                for (old, next) in zip(chain, chain.dropFirst()) {
                    let seen = holds[id]?.contains { old.birth <= $0 && $0 < next.birth } ?? false
                    if !seen {
                        if modern {  // every snapshot had a manifest: nothing holds this version
                            garbage.append(old.chunk)
                            orphanVersions += 1
                            continue
                        }
                        recoveredSnapshots[id, default: []].insert(next.birth - 1)
                    }
                    commit.retainedAdds.append(
                        RetainedRecord(
                            volumeId: id, idx: Int64(index), birth: Int64(old.birth),
                            chunk: Int64(bitPattern: old.chunk.rawValue), death: Int64(next.birth)))
                }
            }
            // Writes past the end grow a volume without rewriting its manifest: trust the chunks too.
            if let top = commit.changes.keys.max() { r.size = max(r.size, Int64((top + 1) * UInt64(r.chunkSize))) }
            let held = holds[id]?.max().map { $0 + 1 } ?? 0
            let recovered = recoveredSnapshots[id]?.max().map { $0 + 1 } ?? 0
            r.epoch = max(r.epoch, Int64(max(maxBirth, held, recovered)), 1)
            commit.size = UInt64(r.size)
            commit.epoch = UInt64(r.epoch)
            commit.nextSerials = nextSerial
            records[id] = r
            _ = try catalog.insertVolumes([r])
            try catalog.commitVolume(VolumeID(id), commit)
            report.mapEntries += commit.changes.count
            report.retainedVersions += commit.retainedAdds.count
            if r.parentId != nil { report.clones += 1 }
        }
        report.volumes = records.count
        if orphanVersions > 0 {
            report.lost.append(
                "\(orphanVersions) older chunk version(s) that no recorded snapshot holds (garbage of a "
                    + "deleted snapshot, or of a snapshot whose manifest was never written): removed at the next mount")
        }

        // Schedules, then snapshots (a snapshot names the schedule that took it).
        if let schedules {
            for s in schedules.schedules {
                var r = ScheduleRecord(
                    target: s.target, domainId: s.domainID ?? DomainRecord.defaultID, every: s.every, keep: s.keep)
                r.id = s.id
                r.lastRun = s.lastRun
                _ = try catalog.saveSchedule(r)
            }
            report.schedules = schedules.schedules.count
        } else if !modern {
            report.lost.append(
                "schedules: the release that wrote these stores did not record them; set them again "
                    + "('tessera snapshot schedule')")
        }
        let scheduleIDs = Set(schedules?.schedules.map(\.id) ?? [])
        for (snap, members) in snapshotMembers {
            var r = SnapshotRecord(
                name: snap.name, domainId: snap.domainID ?? DomainRecord.defaultID, createdAt: snap.createdAt,
                scheduleId: snap.scheduleID.flatMap { scheduleIDs.contains($0) ? $0 : nil })
            r.id = snap.id
            var m: [VolumeID: (epoch: UInt64, size: UInt64)] = [:]
            for x in members { m[VolumeID(x.volumeID)] = (UInt64(x.epoch), UInt64(x.size)) }
            _ = try catalog.insertSnapshot(r, members: m)
            report.snapshots.append(snap.name)
        }
        for (id, epochs) in recoveredSnapshots.sorted(by: { $0.key < $1.key }) {
            let r = records[id]!
            for e in epochs.sorted() {
                let name = "recovered-\(r.name)-e\(e)"
                _ = try catalog.insertSnapshot(
                    SnapshotRecord(name: name, domainId: r.domainId, createdAt: now),
                    members: [VolumeID(id): (e, UInt64(r.size))])
                report.snapshots.append(name)
            }
        }
        if !recoveredSnapshots.isEmpty {
            report.lost.append(
                "snapshot names and sizes: the release that wrote these stores did not record them; every "
                    + "older version is kept in a snapshot recovered-VOLUME-eEPOCH instead")
        }
        for r in records.values { try catalog.setEpoch(VolumeID(r.id!), UInt64(r.epoch)) }  // snapshots set it too

        try catalog.updateSerials(nextSerial)
        try catalog.setGCFloors(nextSerial)
        try catalog.recordFreed(garbage)
        report.garbageChunks = garbage.count
        for (root, s) in storeRecords {
            guard var s0 = try catalog.stores().first(where: { $0.id == s.id }), let pool = pools[s.poolId],
                let unit = unitOf[s0.id!]
            else { continue }
            s0.path = root
            try Manifests.writeStore(StoreManifest(s0, pool, unit: unit, catalogID: identity), root: root)
        }
        return report
    }

    /// Moves a damaged catalog (or the leftovers of a deleted one: a -wal without its database must not
    /// be replayed into the new file) aside; refuses a healthy one.
    private static func moveAside(_ data: DataDirectory) throws(TesseraError) -> String? {
        let fm = FileManager.default
        let present = ["", "-wal", "-shm"].filter { fm.fileExists(atPath: data.catalogPath + $0) }
        guard !present.isEmpty else { return nil }
        if present.contains(""), (try? Catalog.open(at: data.catalogPath)) != nil {
            throw TesseraError(.exists, "the catalog at \(data.catalogPath) is healthy; nothing to rebuild")
        }
        let aside = data.catalogPath + ".damaged-\(Int(Date().timeIntervalSince1970))"
        for suffix in present {
            do { try fm.moveItem(atPath: data.catalogPath + suffix, toPath: aside + suffix) } catch {
                throw TesseraError(.io, "cannot move the damaged catalog aside: \(error.localizedDescription)")
            }
        }
        return aside
    }
}
