// CDP — continuous data protection, the engine side: which volumes are protected (catalog rows), their
// bases (hidden snapshots ".cdp.VOLUME-ID.GENERATION", taken at enable, at each mount and by retention),
// their journals (CDPJournal, one per volume, in DATA/cdp/VOLUME-ID/), enable / disable / mark / status,
// and the image of a volume at an instant or a mark.
//
// The image at T: the newest base whose capture finished at or before T, plus the journal's records of
// its generation and later ones stamped at or before T (CDPImage). A base is captured after its
// generation began and every write stamped before that went down (CDPJournal.beginGeneration), so it
// holds all of them; a record of its own generation it already holds is applied again harmlessly.
// Every mount takes a new base first: writes that reached the volume after the last fsync may have lost
// their journal records in a crash, and must not be missing from the instants after the mount.
import Foundation
import Synchronization
import TesseraCatalog
import TesseraCore

/// The journal of every volume, and the inode numbers of the `.cdp` images the mount has named.
public final class CDPRegistry: Sendable {
    let root: String
    private let journals = Mutex<[VolumeID: CDPJournal]>([:])
    private let names = Mutex<(ids: [String: UInt64], keys: [UInt64: CDPImageKey])>(([:], [:]))
    private let diffs = Mutex<(ids: [String: UInt64], names: [String])>(([:], []))

    init(root: String) { self.root = root }

    /// The journal of volume `id` (inactive until the volume is protected).
    public func journal(for id: VolumeID) -> CDPJournal {
        journals.withLock { j in
            if let found = j[id] { return found }
            let made = CDPJournal(directory: root + "/\(id.rawValue)")
            j[id] = made
            return made
        }
    }

    /// A stable number (from 0) for the image of `key.volume` at `key.time`, for the life of the process.
    public func handle(_ key: CDPImageKey) -> UInt64 {
        names.withLock { n in
            let k = "\(key.volume.rawValue)@\(key.time)"
            if let id = n.ids[k] { return id }
            let id = UInt64(n.keys.count)
            n.ids[k] = id
            n.keys[id] = key
            return id
        }
    }

    public func key(_ handle: UInt64) -> CDPImageKey? { names.withLock { $0.keys[handle] } }

    /// A stable number for a name of the mount's `.diff` tree (a "FROM..TO" directory, or "VOL@FROM..TO").
    public func diffHandle(_ name: String) -> UInt64 {
        diffs.withLock { d in
            if let id = d.ids[name] { return id }
            let id = UInt64(d.names.count)
            d.ids[name] = id
            d.names.append(name)
            return id
        }
    }

    public func diffName(_ handle: UInt64) -> String? {
        diffs.withLock { d in handle < d.names.count ? d.names[Int(handle)] : nil }
    }
}

/// A volume at an instant (ns since 1970).
public struct CDPImageKey: Sendable, Equatable {
    public var volume: VolumeID
    public var time: Int64
    public init(volume: VolumeID, time: Int64) {
        self.volume = volume
        self.time = time
    }
}

/// A base: the hidden snapshot that starts generation `generation` of a protected volume.
struct CDPBase {
    var name: String
    var generation: UInt64
    var epoch: UInt64
    var size: UInt64
    /// When its capture had finished (ns): it serves instants from here on.
    var captured: Int64
}

extension Engine {
    static let hiddenPrefix = ".cdp."

    /// CDP's bases are snapshots no user names, lists or sees in the mount.
    static func isHidden(_ name: String) -> Bool { name.hasPrefix(hiddenPrefix) }

    static func baseName(_ v: VolumeID, _ generation: UInt64) -> String {
        hiddenPrefix + "\(v.rawValue).\(generation)"
    }

    /// The bases of `v`, oldest first.
    func cdpBases(_ v: Volume) -> [CDPBase] {
        let prefix = Self.hiddenPrefix + "\(v.id.rawValue)."
        return state.withLock { s in
            s.snapshots.values.compactMap { snap -> CDPBase? in
                guard snap.name.hasPrefix(prefix), let g = UInt64(snap.name.dropFirst(prefix.count)),
                    let m = s.members[snap.id!]?.first(where: { $0.volumeId == v.id.rawValue })
                else { return nil }
                // createdAt is read after the capture; a microsecond covers the double's rounding.
                let captured = Int64((snap.createdAt * 1e9).rounded(.up)) + 1000
                return CDPBase(
                    name: snap.name, generation: g, epoch: UInt64(m.epoch), size: UInt64(m.size), captured: captured)
            }.sorted { $0.generation < $1.generation }
        }
    }

    func cdpRecord(_ v: Volume) throws(TesseraError) -> CDPRecord? {
        try catalog.cdpRecords().first { $0.volumeId == v.id.rawValue }
    }

    func requireProtected(_ name: String, domain: String = DomainRecord.defaultName) throws(TesseraError) -> (
        Volume, CDPRecord
    ) {
        let v = try requireVolume(name, domainID: try domainID(domain))
        guard let r = try cdpRecord(v) else {
            let flag = domain == DomainRecord.defaultName ? "" : " --domain \(domain)"
            throw TesseraError(
                .notFound, "volume '\(name)' is not protected by CDP (run 'tessera cdp enable \(name)\(flag)')")
        }
        return (v, r)
    }

    // MARK: Life cycle

    /// At open: opens the journal of every protected volume (a torn tail is dropped) and, with `prune`
    /// (not for fsck, which only reports), deletes what a crash left half done (bases of unprotected
    /// volumes, segments older than the oldest base).
    func loadCDP(prune: Bool) throws(TesseraError) {
        let records = try catalog.cdpRecords()
        let protected = Set(records.map(\.volumeId))
        let orphans = state.withLock { s in
            s.snapshots.values.filter { snap in
                Self.isHidden(snap.name) && !(s.members[snap.id!] ?? []).contains { protected.contains($0.volumeId) }
            }.map { ($0.name, $0.domainId) }
        }
        if prune { for (name, domain) in orphans { try? dropSnapshot(name, domainID: domain) } }
        for r in records {
            guard let v = volume(id: VolumeID(r.volumeId)) else { continue }
            let j = cdp.journal(for: v.id)
            let bases = cdpBases(v)
            do { try j.open(generation: bases.last?.generation ?? 0, volumeSize: v.size) } catch {
                throw TesseraError(.io, "cannot open the CDP journal of '\(v.name)': \(error)")
            }
            guard prune else { continue }
            if let oldest = bases.first {
                j.drop(before: oldest.generation)
            } else {
                try takeBase(v, first: true)
            }
        }
    }

    /// The mount daemon: a new base for every protected volume (see the file comment), then retention
    /// every `interval` seconds on a thread of its own.
    public func startCDP(every interval: Double = 5) {
        for r in (try? catalog.cdpRecords()) ?? [] {
            guard let v = volume(id: VolumeID(r.volumeId)) else { continue }
            do { try takeBase(v) } catch { Log.error("cdp: no new base for '\(v.name)' at mount: \(error)") }
        }
        let t = Thread { [weak self] in
            while true {
                Thread.sleep(forTimeInterval: interval)
                guard let self else { return }
                self.runCDPRetention()
            }
        }
        t.name = "tessera-cdp"
        t.start()
    }

    /// Starts the next generation of `v`'s journal and captures its base.
    func takeBase(_ v: Volume, first: Bool = false) throws(TesseraError) {
        let j = cdp.journal(for: v.id)
        let generation = first ? j.generation : j.generation + 1
        if first { j.gate.drain() } else { j.beginGeneration(generation) }
        _ = try snapshot([v], as: Self.baseName(v.id, generation), domainID: v.record.domainId)
    }

    // MARK: Commands

    public static let maxWindow: Int64 = 3650 * 86400
    public static let minWindow: Int64 = 10
    public static let minCDPSize: UInt64 = 1 << 20

    /// `cdp enable`: starts journaling `name` and takes its first base.
    public func enableCDP(_ name: String, window: Int64, maxSize: UInt64?, domain: String = DomainRecord.defaultName)
        throws(TesseraError)
        -> CDPInfo
    {
        guard window >= Self.minWindow && window <= Self.maxWindow else {
            throw TesseraError(.invalid, "--window must be between 10s and 3650d")
        }
        if let maxSize, maxSize < Self.minCDPSize || maxSize > Self.maxVolumeSize {
            throw TesseraError(.invalid, "--max-size must be between 1M and 1P")
        }
        let v = try requireVolume(name, domainID: try domainID(domain))
        if try cdpRecord(v) != nil { throw TesseraError(.exists, "volume '\(name)' is already protected by CDP") }
        try catalog.insertCDP(
            CDPRecord(
                volumeId: v.id.rawValue, windowSeconds: window, maxSize: maxSize.map { Int64($0) },
                enabledAt: Date().timeIntervalSince1970))
        let j = cdp.journal(for: v.id)
        do {
            try? FileManager.default.removeItem(atPath: j.directory)  // leftovers of a crashed disable
            try j.open(generation: 0, volumeSize: v.size)
            try takeBase(v, first: true)
        } catch {
            j.close(deleteFiles: true)
            try? catalog.deleteCDP(v.id)
            throw error as? TesseraError ?? TesseraError(.io, "cdp enable of '\(name)' failed: \(error)")
        }
        Log.info("cdp: protecting '\(name)' (window \(window)s\(maxSize.map { ", max \(ByteSize.format($0))" } ?? ""))")
        return try cdpInfos(name, domain: domain).first!
    }

    /// `cdp disable`: stops journaling and frees the journal, its bases and its marks.
    public func disableCDP(_ name: String, domain: String = DomainRecord.defaultName) throws(TesseraError) {
        let (v, _) = try requireProtected(name, domain: domain)
        try catalog.deleteCDP(v.id)
        cdp.journal(for: v.id).close(deleteFiles: true)
        for base in cdpBases(v) { try dropSnapshot(base.name, domainID: v.record.domainId) }
        Log.info("cdp: '\(name)' no longer protected; journal and bases freed")
    }

    /// `cdp mark`: names the current instant (after making the journal durable up to it).
    public func markCDP(_ name: String, mark: String, domain: String = DomainRecord.defaultName) throws(TesseraError)
        -> CDPMarkInfo
    {
        try Self.checkName(mark, "mark")
        if mark.contains("@") || mark.contains("..") || CDPTime.parse(mark) != nil {
            throw TesseraError(.invalid, "a mark name may not contain '@' or '..', or be a time: '\(mark)'")
        }
        let (v, _) = try requireProtected(name, domain: domain)
        if try catalog.cdpMarks().contains(where: { $0.volumeId == v.id.rawValue && $0.name == mark }) {
            throw TesseraError(.exists, "volume '\(name)' already has a mark named '\(mark)'")
        }
        do { try stack(of: v).flush(dataOnly: true) } catch {
            throw TesseraError(.io, "cannot flush '\(name)' for the mark: \(error)")
        }
        let record = try catalog.insertMark(CDPMarkRecord(volumeId: v.id.rawValue, name: mark, time: CDPJournal.now()))
        return CDPMarkInfo(record, volume: name)
    }

    // MARK: Images

    /// The instant `spec` names for `v`: an RFC 3339 time or one of its marks.
    func instant(_ v: Volume, _ spec: String) throws(TesseraError) -> Int64 {
        if let t = CDPTime.parse(spec) { return t }
        if let m = try catalog.cdpMarks().first(where: { $0.volumeId == v.id.rawValue && $0.name == spec }) {
            return m.time
        }
        if spec.first?.isNumber == true {
            throw TesseraError(
                .invalid, "'\(spec)' is not an RFC 3339 time (such as 2026-12-02T11:20:05Z) nor a mark of '\(v.name)'")
        }
        throw TesseraError(.notFound, "volume '\(v.name)' has no mark named '\(spec)'")
    }

    /// The read-only image of volume `name` at `spec` (a time or a mark).
    public func cdpImage(_ name: String, at spec: String, domain: String = DomainRecord.defaultName)
        throws(TesseraError) -> CDPImage
    {
        let (v, _) = try requireProtected(name, domain: domain)
        return try cdpImage(v, at: spec)
    }

    /// The read-only image of `v` at `spec` (a time or a mark).
    public func cdpImage(_ v: Volume, at spec: String) throws(TesseraError) -> CDPImage {
        try cdpImage(v, at: try instant(v, spec))
    }

    public func cdpImage(_ v: Volume, at time: Int64) throws(TesseraError) -> CDPImage {
        let j = cdp.journal(for: v.id)
        guard j.isActive else { throw TesseraError(.notFound, "volume '\(v.name)' is not protected by CDP") }
        if time > CDPJournal.now() {
            throw TesseraError(.invalid, "\(CDPTime.format(time)) is in the future")
        }
        let bases = cdpBases(v)
        guard let base = bases.last(where: { $0.captured <= time }) else {
            let start = bases.first.map { CDPTime.format($0.captured) } ?? "none"
            throw TesseraError(
                .invalid, "\(CDPTime.format(time)) is before the CDP window of '\(v.name)' (it starts at \(start))")
        }
        let fromSeq = j.firstSeq(of: base.generation) ?? 0
        return CDPImage(
            base: stack(of: v).view(at: base.epoch, size: base.size), journal: j, fromSeq: fromSeq, time: time)
    }

    /// `MOUNT/.diff/FROM..TO/VOL.img`: volume `name` at `to` with every range unchanged since `from` a
    /// hole (FROM and TO: times or marks, both inside the window, FROM not after TO).
    public func cdpDiff(_ name: String, from: String, to: String, domain: String = DomainRecord.defaultName)
        throws(TesseraError)
        -> CDPDiffImage
    {
        let (v, _) = try requireProtected(name, domain: domain)
        return try cdpDiff(v, from: from, to: to)
    }

    /// The diff image of `v` from `from` to `to` (see above).
    public func cdpDiff(_ v: Volume, from: String, to: String) throws(TesseraError) -> CDPDiffImage {
        let (first, last) = (try diffEnd(v, from), try diffEnd(v, to))
        let (start, end) = (first.from, last.to)
        if start > end { throw TesseraError(.invalid, "\(from) is after \(to)") }
        _ = try cdpImage(v, at: start)  // inside the window
        let j = cdp.journal(for: v.id)
        // At a snapshot, the image is the snapshot itself (no record applied over it).
        let image: CDPImage
        if let snap = last.snapshot {
            image = CDPImage(base: snap, journal: j, fromSeq: .max, time: end)
        } else {
            image = try cdpImage(v, at: end)
        }
        let (blocks, ranges) = j.withIndex { index in
            (
                index.blocksWritten(after: start, until: end),
                index.ranges(overlapping: 0, .max, from: 0, until: end).filter { $0.time > start }
            )
        }
        let regions = Self.regions(blocks: blocks, ranges: ranges).map { (start: $0.0, end: $0.1) }
        return CDPDiffImage(image: image, regions: regions)
    }

    /// One end of a diff: a time or a mark (one instant), or a snapshot of `v`'s domain taken while `v` was
    /// protected — the instants that bound it (every write stamped up to `from` is in it, none stamped
    /// after `to`) and its read-only view. A mark wins over a snapshot of the same name.
    private func diffEnd(_ v: Volume, _ spec: String) throws(TesseraError)
        -> (from: Int64, to: Int64, snapshot: (any VolumeStore)?)
    {
        let isMark = try catalog.cdpMarks().contains { $0.volumeId == v.id.rawValue && $0.name == spec }
        if CDPTime.parse(spec) == nil && !isMark && !Self.isHidden(spec),
            let (_, members) = snapshot(named: spec, domainID: v.record.domainId)
        {
            guard let m = members.first(where: { $0.volumeId == v.id.rawValue }) else {
                throw TesseraError(.notFound, "snapshot '\(spec)' does not hold volume '\(v.name)'")
            }
            guard let from = m.cdpFrom, let to = m.cdpTo else {
                throw TesseraError(
                    .invalid,
                    "snapshot '\(spec)' was taken while '\(v.name)' was not protected by CDP: it cannot bound a diff")
            }
            return (from, to, stack(of: v).view(at: UInt64(m.epoch), size: UInt64(m.size)))
        }
        let t = try instant(v, spec)
        return (t, t, nil)
    }

    /// What `ls MOUNT/.cdp` (or `MOUNT/D/.cdp`) shows: each protected volume of the domain at its window
    /// start, and every mark.
    public func cdpListing(domainID: Int64 = DomainRecord.defaultID) -> [(name: String, key: CDPImageKey)] {
        var out: [(String, CDPImageKey)] = []
        let marks = (try? catalog.cdpMarks()) ?? []
        for r in (try? catalog.cdpRecords()) ?? [] {
            guard let v = volume(id: VolumeID(r.volumeId)), v.record.domainId == domainID,
                let start = cdpBases(v).first?.captured
            else { continue }
            out.append(("\(v.name)@\(CDPTime.format(start))", CDPImageKey(volume: v.id, time: start)))
            for m in marks where m.volumeId == r.volumeId {
                out.append(("\(v.name)@\(m.name)", CDPImageKey(volume: v.id, time: m.time)))
            }
        }
        return out
    }

    // MARK: Status

    /// `cdp status`: the protected volumes of `domain` (or only `name`).
    public func cdpInfos(_ name: String? = nil, domain: String = DomainRecord.defaultName) throws(TesseraError)
        -> [CDPInfo]
    {
        var records = try catalog.cdpRecords()
        if let name {
            let (v, _) = try requireProtected(name, domain: domain)
            records = records.filter { $0.volumeId == v.id.rawValue }
        } else {
            let id = try domainID(domain)
            records = records.filter { volume(id: VolumeID($0.volumeId))?.record.domainId == id }
        }
        let marks = try catalog.cdpMarks()
        let now = CDPJournal.now()
        return records.compactMap { r -> CDPInfo? in
            guard let v = volume(id: VolumeID(r.volumeId)) else { return nil }
            let j = cdp.journal(for: v.id)
            let bases = cdpBases(v)
            let start = bases.first?.captured ?? now
            let retained = j.retainedBytes
            let hours = max(Double(now - start) / 3.6e12, 1.0 / 60)
            var warnings: [String] = []
            if let note = r.note { warnings.append(note) }
            if let cap = r.maxSize, retained > UInt64(cap) {
                warnings.append(
                    "journal (\(ByteSize.format(retained))) is over --max-size \(ByteSize.format(UInt64(cap)))")
            }
            if !j.isActive { warnings.append("journal not open") }
            return CDPInfo(
                volume: v.name, windowSeconds: r.windowSeconds, maxSize: r.maxSize.map { UInt64($0) },
                windowStart: CDPTime.format(start), windowEnd: CDPTime.format(now), retainedBytes: retained,
                bytesPerHour: UInt64(Double(retained) / hours), bases: bases.count,
                marks: marks.filter { $0.volumeId == r.volumeId }.map { CDPMarkInfo($0, volume: v.name) },
                warnings: warnings)
        }
    }
}

/// What `cdp status` prints for one volume.
public struct CDPInfo: Codable, Sendable, Equatable {
    public var volume: String
    public var windowSeconds: Int64
    public var maxSize: UInt64?
    /// The oldest instant that can be restored, and now (RFC 3339, UTC).
    public var windowStart: String
    public var windowEnd: String
    /// Bytes of journal kept (the bases' own chunks are counted by `volume show` as held by snapshots).
    public var retainedBytes: UInt64
    public var bytesPerHour: UInt64
    public var bases: Int
    public var marks: [CDPMarkInfo]
    public var warnings: [String]
}

public struct CDPMarkInfo: Codable, Sendable, Equatable {
    public var volume: String
    public var name: String
    public var time: String

    init(_ r: CDPMarkRecord, volume: String) {
        self.volume = volume
        name = r.name
        time = CDPTime.format(r.time)
    }
}
