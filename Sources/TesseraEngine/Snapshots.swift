// Snapshots, consistency groups, clones, revert and schedules — the control-plane side of the
// birth-epoch design in Volume.swift.
//
// A (group) snapshot stops I/O on each member volume (all stripes, in volume-id order), flushes them,
// records every member's current epoch in one catalog transaction and moves each to the next epoch.
// Every write acknowledged before that instant is in; none issued after it is. Cost: a flush of what
// is dirty plus one small transaction, whatever the volume sizes.
import Foundation
import TesseraCatalog
import TesseraCore

/// One image inside a snapshot directory.
public struct SnapshotImage: Sendable {
    public let snapshotID: Int64
    public let volume: Volume
    public let epoch: UInt64
    public let size: UInt64
}

extension Engine {
    // MARK: Lookup

    func snapshotNames(of v: Volume) -> [Int64] {
        state.withLock { s in s.members.filter { $0.value.contains { $0.volumeId == v.id.rawValue } }.map(\.key) }
    }

    func clones(of v: Volume) -> [Volume] { allVolumes().filter { $0.parent === v } }

    func refuseIfReferenced(_ v: Volume, allowSnapshots: Bool) throws(TesseraError) {
        if cdp.journal(for: v.id).isActive {
            throw TesseraError(
                .busy, "volume '\(v.name)' is protected by CDP; run 'tessera cdp disable \(v.name)' first")
        }
        let kids = clones(of: v)
        if !kids.isEmpty {
            throw TesseraError(
                .busy, "volume '\(v.name)' has clones (\(kids.map(\.name).joined(separator: ", "))); delete them first")
        }
        let snaps = snapshotNames(of: v)
        if !snaps.isEmpty && !allowSnapshots {
            let names = state.withLock { s in snaps.compactMap { s.snapshots[$0]?.name } }
            throw TesseraError(
                .busy,
                "volume '\(v.name)' has snapshots (\(names.sorted().joined(separator: ", "))); "
                    + "delete them, or pass --with-snapshots")
        }
    }

    /// Snapshot `name` of domain `domainID` and its members.
    func snapshot(named name: String, domainID: Int64) -> (SnapshotRecord, [SnapshotMemberRecord])? {
        state.withLock { s in
            s.snapshots.values.first { $0.domainId == domainID && $0.name == name }
                .map { ($0, s.members[$0.id!] ?? []) }
        }
    }

    /// A snapshot a user may name: the hidden bases of CDP (".cdp.…") are not among them.
    private func requireSnapshot(_ name: String, domainID: Int64) throws(TesseraError) -> (
        SnapshotRecord, [SnapshotMemberRecord]
    ) {
        guard !Self.isHidden(name), let found = snapshot(named: name, domainID: domainID) else {
            throw TesseraError(.notFound, "no snapshot named '\(name)'\(inDomain(domainID))")
        }
        return found
    }

    /// The images of snapshot `name` of domain `domainID` (for the mount's .snapshots directories; never
    /// a hidden CDP base).
    public func snapshotImages(_ name: String, domainID: Int64 = DomainRecord.defaultID) -> [SnapshotImage]? {
        guard !Self.isHidden(name) else { return nil }
        return snapshot(named: name, domainID: domainID).flatMap { snapshotImages(id: $0.0.id!) }
    }

    /// The images of snapshot `id`, by volume name.
    public func snapshotImages(id: Int64) -> [SnapshotImage]? {
        guard let members = state.withLock({ s in s.snapshots[id].map { _ in s.members[id] ?? [] } }) else {
            return nil
        }
        return members.compactMap { m in
            volume(id: VolumeID(m.volumeId)).map {
                SnapshotImage(snapshotID: id, volume: $0, epoch: UInt64(m.epoch), size: UInt64(m.size))
            }
        }.sorted { $0.volume.name < $1.volume.name }
    }

    public func snapshotName(id: Int64) -> String? { state.withLock { $0.snapshots[id]?.name } }

    public func snapshotImage(snapshot id: Int64, volume: VolumeID) -> SnapshotImage? {
        snapshotImages(id: id)?.first { $0.volume.id == volume }
    }

    /// The names of domain `domainID`'s snapshots a user sees, oldest first.
    public func snapshotNames(domainID: Int64 = DomainRecord.defaultID) -> [String] {
        state.withLock { s in
            s.snapshots.values.filter { $0.domainId == domainID && !Self.isHidden($0.name) }
                .sorted { ($0.createdAt, $0.id!) < ($1.createdAt, $1.id!) }.map(\.name)
        }
    }

    /// The snapshots of `domain`, oldest first.
    public func snapshotInfos(domain: String) throws(TesseraError) -> [SnapshotInfo] {
        snapshotInfos(domainID: try domainID(domain))
    }

    /// The default domain's snapshots, oldest first.
    public func snapshotInfos() -> [SnapshotInfo] { snapshotInfos(domainID: DomainRecord.defaultID) }

    /// Domain `domainID`'s snapshots, oldest first (`hidden`: the bases of CDP too).
    func snapshotInfos(domainID: Int64, hidden: Bool = false) -> [SnapshotInfo] {
        let domain = domainName(id: domainID)
        let snaps = state.withLock { s in
            s.snapshots.values.filter { $0.domainId == domainID && (hidden || !Self.isHidden($0.name)) }
                .sorted { ($0.createdAt, $0.id!) < ($1.createdAt, $1.id!) }.map { ($0, s.members[$0.id!] ?? []) }
        }
        return snaps.map { snap, members in
            var names: [String] = []
            var sizes: [UInt64] = []
            var freeable: UInt64 = 0
            for m in members.sorted(by: { $0.volumeId < $1.volumeId }) {
                guard let v = volume(id: VolumeID(m.volumeId)) else { continue }
                names.append(v.name)
                sizes.append(UInt64(m.size))
                freeable += v.exclusiveBytes(ofHold: UInt64(m.epoch))
            }
            return SnapshotInfo(
                id: snap.id!, name: snap.name, createdAt: snap.createdAt, volumes: names, sizes: sizes,
                freeable: freeable, scheduled: snap.scheduleId != nil, domain: domain)
        }
    }

    // MARK: Create and delete

    /// Snapshots `volumes` of `domain` (or every volume of it with `all`) at one instant, as `name`.
    /// Refused (`.quota`) past the domain's snapshot quota.
    @discardableResult
    public func createSnapshot(
        name: String, volumes names: [String], all: Bool = false, domain: String = DomainRecord.defaultName,
        scheduleID: Int64? = nil
    ) throws(TesseraError) -> SnapshotInfo {
        try Self.checkName(name, "snapshot")
        if !all && names.isEmpty { throw TesseraError(.invalid, "name at least one volume, or --all") }
        let domainID = try domainID(domain)
        var chosen: [Volume] = all ? allVolumes().filter { $0.record.domainId == domainID && !$0.isUnlinked } : []
        for n in names where !all {
            let v = try requireVolume(n, domainID: domainID)
            if !chosen.contains(where: { $0 === v }) { chosen.append(v) }
        }
        if chosen.isEmpty { throw TesseraError(.invalid, "there is no volume to snapshot") }
        return try snapshot(chosen, as: name, domainID: domainID, scheduleID: scheduleID)
    }

    /// Snapshots `chosen` at one instant as `name` (also a hidden CDP base: no name check here).
    /// Hidden bases count against no quota.
    func snapshot(_ volumes: [Volume], as name: String, domainID: Int64, scheduleID: Int64? = nil)
        throws(TesseraError) -> SnapshotInfo
    {
        let chosen = volumes.sorted { $0.id.rawValue < $1.id.rawValue }
        return try snapshotLock.withLock { _ throws(TesseraError) in
            if snapshot(named: name, domainID: domainID) != nil {
                throw TesseraError(.exists, "a snapshot named '\(name)' already exists\(inDomain(domainID))")
            }
            if !Self.isHidden(name) {
                try state.withLock { s throws(TesseraError) in try Self.checkQuota(domainID, in: s, snapshots: 1) }
            }
            // Flush once while the guest still writes: it copies in the partial chunks of small writes and
            // makes data durable, so the flush under the quiesce below (guest I/O waits) has only what came
            // in since.
            for v in chosen {
                do { try v.flush() } catch {
                    throw TesseraError(.io, "cannot flush '\(v.name)' for the snapshot: \(error)")
                }
            }
            // A protected volume's snapshot can bound a CDP diff: every write stamped before `from` has
            // gone down the stack (the gate drained) before the capture, and every write the capture holds
            // was stamped before `to`.
            var cdpFrom: [VolumeID: Int64] = [:]
            for v in chosen where !Self.isHidden(name) {
                let journal = cdp.journal(for: v.id)
                guard journal.isActive else { continue }
                cdpFrom[v.id] = CDPJournal.now()
                journal.gate.drain()
            }
            for v in chosen { v.quiesce() }
            defer { for v in chosen { v.resume() } }
            for v in chosen {
                do { try v.flush(quiesced: true) } catch {
                    throw TesseraError(.io, "cannot flush '\(v.name)' for the snapshot: \(error)")
                }
            }
            var members: [VolumeID: (epoch: UInt64, size: UInt64)] = [:]
            for v in chosen { members[v.id] = v.captureInstant() }
            let cdpTo = CDPJournal.now()
            let bounds = cdpFrom.mapValues { (from: $0, to: cdpTo) }
            let record = try catalog.insertSnapshot(
                SnapshotRecord(
                    name: name, domainId: domainID, createdAt: Date().timeIntervalSince1970, scheduleId: scheduleID),
                members: members, cdp: bounds)
            for v in chosen { v.holdAndAdvance(members[v.id]!.epoch) }
            state.withLock { s in
                s.snapshots[record.id!] = record
                s.members[record.id!] = members.map { id, m in
                    SnapshotMemberRecord(
                        snapshotId: record.id!, volumeId: id.rawValue, epoch: Int64(m.epoch), size: Int64(m.size),
                        cdpFrom: bounds[id]?.from, cdpTo: bounds[id]?.to)
                }
            }
            recordSnapshotManifest(record.id!)  // (volume manifests keep their epoch: a rebuild derives it)
            return snapshotInfos(domainID: domainID, hidden: true).first { $0.id == record.id! }!
        }
    }

    /// Deletes snapshot `name` of `domain`; the space only it held is freed.
    public func deleteSnapshot(_ name: String, domain: String = DomainRecord.defaultName) throws(TesseraError) {
        let domainID = try domainID(domain)
        _ = try requireSnapshot(name, domainID: domainID)
        try dropSnapshot(name, domainID: domainID)
    }

    /// Deletes snapshot `name` of domain `domainID`, hidden or not.
    func dropSnapshot(_ name: String, domainID: Int64 = DomainRecord.defaultID) throws(TesseraError) {
        try snapshotLock.withLock { _ throws(TesseraError) in
            guard let (snap, members) = snapshot(named: name, domainID: domainID) else {
                throw TesseraError(.notFound, "no snapshot named '\(name)'\(inDomain(domainID))")
            }
            try catalog.deleteSnapshot(snap.id!)  // the catalog first: a crash now only leaks (pruned at open)
            state.withLock { s in
                s.snapshots[snap.id!] = nil
                s.members[snap.id!] = nil
            }
            Manifests.removeSnapshot(snap.id!, roots: allManifestRoots())
            try release(members)
        }
    }

    /// Removes one volume from a snapshot (volume delete --with-snapshots).
    func dropMember(snapshot id: Int64, volume v: Volume) throws(TesseraError) {
        try snapshotLock.withLock { _ throws(TesseraError) in
            let members = state.withLock { s in (s.members[id] ?? []).filter { $0.volumeId == v.id.rawValue } }
            try catalog.deleteSnapshotMember(snapshot: id, volume: v.id)
            state.withLock { s in
                s.members[id]?.removeAll { $0.volumeId == v.id.rawValue }
                if s.members[id]?.isEmpty ?? true {
                    s.members[id] = nil
                    s.snapshots[id] = nil
                }
            }
            Manifests.removeSnapshot(id, roots: allManifestRoots())
            recordSnapshotManifest(id)
            try release(members)
        }
    }

    private func release(_ members: [SnapshotMemberRecord]) throws(TesseraError) {
        for m in members {
            guard let v = volume(id: VolumeID(m.volumeId)) else { continue }
            v.removeHold(UInt64(m.epoch))
            do { try stack(of: v).flush(dataOnly: false) } catch {
                throw TesseraError(.io, "cannot free the space of '\(v.name)': \(error)")
            }
        }
    }

    // MARK: Revert and clone

    /// Brings `volumeName` back to snapshot `snapshotName`. Refused while the image is open: a guest
    /// must not see its disk change under it.
    public func revert(_ volumeName: String, to snapshotName: String, domain: String = DomainRecord.defaultName)
        throws(TesseraError)
    {
        let domainID = try domainID(domain)
        let v = try requireVolume(volumeName, domainID: domainID)
        let (_, members) = try requireSnapshot(snapshotName, domainID: domainID)
        guard let m = members.first(where: { $0.volumeId == v.id.rawValue }) else {
            throw TesseraError(.notFound, "snapshot '\(snapshotName)' does not hold volume '\(volumeName)'")
        }
        if v.isOpen { throw TesseraError(.busy, "volume '\(volumeName)' is open; close it before reverting") }
        if cdp.journal(for: v.id).isActive {  // a revert changes the map under the journal
            throw TesseraError(
                .busy, "volume '\(volumeName)' is protected by CDP; use 'tessera cdp restore' (or cdp disable first)")
        }
        try snapshotLock.withLock { _ throws(TesseraError) in
            v.quiesce()
            defer { v.resume() }
            do { try v.foldAll(quiesced: true) } catch {
                throw TesseraError(.io, "revert of '\(volumeName)' failed: \(error)")
            }
            v.revert(to: UInt64(m.epoch), size: UInt64(m.size))
            do { try v.flush(quiesced: true) } catch {
                throw TesseraError(.io, "revert of '\(volumeName)' failed: \(error)")
            }
        }
        recordManifest([v])
        notify(v.id)
    }

    /// Makes `newName` a writable clone of `source`: "SNAPSHOT/VOLUME" (as captured) or "VOLUME" (as it is
    /// now), all in `domain`. O(1): the clone shares every chunk until either side writes it. It counts
    /// against the domain's volume and size quotas.
    @discardableResult
    public func clone(_ source: String, as newName: String, domain: String = DomainRecord.defaultName)
        throws(TesseraError) -> Volume
    {
        if let snap = source.split(separator: "/").first, source.contains("/"), Self.isHidden(String(snap)) {
            throw TesseraError(.notFound, "no snapshot named '\(snap)'")
        }
        return try cloneVolume(source, as: newName, domain: domain)
    }

    /// `clone`, also from a hidden CDP base ("BASE/VOLUME").
    func cloneVolume(_ source: String, as newName: String, domain: String = DomainRecord.defaultName)
        throws(TesseraError) -> Volume
    {
        try Self.checkName(newName, "volume")
        let domainID = try domainID(domain)
        if volume(named: newName, domainID: domainID) != nil {
            throw TesseraError(.exists, "a volume named '\(newName)' already exists\(inDomain(domainID))")
        }
        let parts = source.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 1 || parts.count == 2 else {
            throw TesseraError(.invalid, "clone source must be VOLUME or SNAPSHOT/VOLUME, not '\(source)'")
        }
        let parent = try requireVolume(parts.last!, domainID: domainID)
        return try snapshotLock.withLock { _ throws(TesseraError) -> Volume in
            let epoch: UInt64
            let size: UInt64
            if parts.count == 2 {
                guard let (_, members) = snapshot(named: parts[0], domainID: domainID) else {
                    throw TesseraError(.notFound, "no snapshot named '\(parts[0])'\(inDomain(domainID))")
                }
                guard let m = members.first(where: { $0.volumeId == parent.id.rawValue }) else {
                    throw TesseraError(.notFound, "snapshot '\(parts[0])' does not hold volume '\(parent.name)'")
                }
                (epoch, size) = (UInt64(m.epoch), UInt64(m.size))
                try state.withLock { s throws(TesseraError) in
                    try Self.checkQuota(domainID, in: s, volumes: 1, size: size)
                }
            } else {
                try state.withLock { s throws(TesseraError) in
                    try Self.checkQuota(domainID, in: s, volumes: 1, size: parent.size)
                }
                parent.quiesce()
                defer { parent.resume() }
                do { try parent.flush(quiesced: true) } catch {
                    throw TesseraError(.io, "cannot flush '\(parent.name)': \(error)")
                }
                (epoch, size) = parent.captureInstant()
                try catalog.setEpoch(parent.id, epoch + 1)
                parent.holdAndAdvance(epoch)
                parent.removeHold(epoch)  // the clone's own hold is added below, as for a snapshot source
                recordManifest([parent])
            }
            let pool = try self.pool(named: parent.poolName)
            var r = VolumeRecord(
                name: newName, domainId: domainID, poolId: pool.record.id!, size: Int64(size),
                chunkSize: Int64(parent.chunkSize),
                uid: parent.record.uid, gid: parent.record.gid, mode: parent.record.mode,
                now: Date().timeIntervalSince1970)
            r.parentId = parent.id.rawValue
            r.parentEpoch = Int64(epoch)
            r = try catalog.insertVolumes([r])[0]
            parent.addHold(epoch)
            let v = state.withLock { s in addVolume(r, pool: pool, parent: parent, to: &s) }
            recordManifest([v])
            return v
        }
    }

    // MARK: Manifests

    /// Directories of every directory store (schedules and snapshots may concern any of them).
    func allManifestRoots() -> [String] {
        state.withLock { s in s.stores.values.filter { $0.kind == StoreSpec.Kind.dir.rawValue }.map(\.path) }
    }

    /// Writes snapshot `id`'s manifest on the stores of every pool it holds a volume of (best effort,
    /// like volume manifests: the catalog has committed already).
    func recordSnapshotManifest(_ id: Int64) {
        guard let (snap, members) = state.withLock({ s in s.snapshots[id].map { ($0, s.members[id] ?? []) } }) else {
            return
        }
        let pools = Set(members.compactMap { volume(id: VolumeID($0.volumeId))?.poolName })
        do {
            try Manifests.writeSnapshot(
                SnapshotManifest(snap, members), roots: pools.flatMap { manifestRoots(pool: $0) })
        } catch {
            Log.error("snapshot manifest of \(snap.name) not written (fsck --rebuild-catalog may miss it): \(error)")
        }
    }

    /// Writes the schedules' manifest on every directory store (best effort).
    func recordSchedules() {
        do {
            let m = SchedulesManifest(try catalog.schedules(), writtenAt: Date().timeIntervalSince1970)
            try Manifests.writeShared(m, file: Manifests.schedulesFile, roots: allManifestRoots())
        } catch {
            Log.error("schedule manifest not written (fsck --rebuild-catalog may miss schedules): \(error)")
        }
    }

    /// Writes every manifest on every directory store (the first open of stores an older release
    /// wrote: it recorded no snapshots, schedules or domains, and a later rebuild must find them).
    func recordAllManifests() {
        recordManifest(allVolumes())
        for id in state.withLock({ Array($0.snapshots.keys) }) { recordSnapshotManifest(id) }
        recordSchedules()
        recordDomainsManifest()
    }

    /// A new store of `pool` gets the manifests of the pool's snapshots, every schedule and every domain.
    func recordSharedManifests(pool: String, roots: [String]) throws(TesseraError) {
        let snaps = state.withLock { s in s.snapshots.values.map { ($0, s.members[$0.id!] ?? []) } }
        for (snap, members) in snaps
        where members.contains(where: { volume(id: VolumeID($0.volumeId))?.poolName == pool }) {
            try Manifests.writeSnapshot(SnapshotManifest(snap, members), roots: roots)
        }
        let schedules = SchedulesManifest(try catalog.schedules(), writtenAt: Date().timeIntervalSince1970)
        try Manifests.writeShared(schedules, file: Manifests.schedulesFile, roots: roots)
        try recordDomains(roots: roots)
    }

    // MARK: Schedules

    /// Sets the schedule of `target` (a volume of `domain`, or "*" for all of them).
    public func setSchedule(target: String, every: Int64, keep: Int64, domain: String = DomainRecord.defaultName)
        throws(TesseraError)
    {
        let domainID = try domainID(domain)
        if target != "*" { _ = try requireVolume(target, domainID: domainID) }
        guard every >= 60 else { throw TesseraError(.invalid, "--every must be at least 1m") }
        guard keep >= 1 && keep <= 10_000 else { throw TesseraError(.invalid, "--keep must be between 1 and 10000") }
        var record =
            try catalog.schedule(target: target, in: domainID)
            ?? ScheduleRecord(target: target, domainId: domainID, every: every, keep: keep)
        record.every = every
        record.keep = keep
        _ = try catalog.saveSchedule(record)
        recordSchedules()
    }

    public func removeSchedule(target: String, domain: String = DomainRecord.defaultName) throws(TesseraError) {
        let domainID = try domainID(domain)
        guard let record = try catalog.schedule(target: target, in: domainID) else {
            throw TesseraError(.notFound, "no schedule for '\(target)'\(inDomain(domainID))")
        }
        try catalog.deleteSchedule(record.id!)
        recordSchedules()
    }

    /// The schedules of `domain`.
    public func scheduleInfos(domain: String = DomainRecord.defaultName) throws(TesseraError) -> [ScheduleInfo] {
        let domainID = try domainID(domain)
        return try catalog.schedules().filter { $0.domainId == domainID }.map {
            ScheduleInfo(id: $0.id!, target: $0.target, everySeconds: $0.every, keep: $0.keep, lastRun: $0.lastRun)
        }
    }

    /// Takes every snapshot that is due (a run missed while no mount ran is taken once), then deletes
    /// the oldest snapshots of each schedule beyond its `keep`.
    public func runDueSchedules(now: Date = Date()) {
        guard let schedules = try? catalog.schedules() else { return }
        let stamp = DateFormatter()
        stamp.dateFormat = "yyyyMMdd-HHmmss"
        stamp.timeZone = TimeZone(identifier: "UTC")
        for var sch in schedules {
            guard let domain = domainName(id: sch.domainId) else { continue }
            if let last = sch.lastRun, now.timeIntervalSince1970 - last < Double(sch.every) { continue }
            let all = sch.target == "*"
            if !all && volume(named: sch.target, domainID: sch.domainId) == nil { continue }
            let name = "\(all ? "all" : sch.target)-\(stamp.string(from: now))"
            do {
                try createSnapshot(
                    name: name, volumes: all ? [] : [sch.target], all: all, domain: domain, scheduleID: sch.id)
                Log.info("schedule: took snapshot \(name)")
            } catch {
                Log.error("schedule \(sch.target): \(error)")
            }
            sch.lastRun = now.timeIntervalSince1970
            _ = try? catalog.saveSchedule(sch)
            recordSchedules()
            let mine = state.withLock { s in
                s.snapshots.values.filter { $0.scheduleId == sch.id }.sorted { $0.createdAt < $1.createdAt }
            }
            for old in mine.dropLast(Int(sch.keep)) {
                do { try deleteSnapshot(old.name, domain: domain) } catch { Log.error("schedule retention: \(error)") }
            }
        }
    }

    /// Checks the schedules every `interval` seconds on a thread of its own (the mount daemon).
    public func startScheduler(every interval: Double = 20) {
        let t = Thread { [weak self] in
            self?.runDueSchedules()
            while true {
                Thread.sleep(forTimeInterval: interval)
                guard let self else { return }
                self.runDueSchedules()
            }
        }
        t.name = "tessera-scheduler"
        t.start()
    }
}
