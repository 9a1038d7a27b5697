// CDPJournal — the write journal of one protected volume: segment files in a directory of its own, the
// in-memory index over them, and the generations that tie records to bases.
//
// Address space: volume bytes (the journal sits above the thin map, in CDPLayer).
// States: inactive (the volume is not protected: nothing is journaled, no file exists) → active.
// Generations: each base (a hidden snapshot the engine takes) starts a generation; a record belongs to
// the generation that was current when it was stamped. The image at T is the newest base whose capture
// finished at or before T, plus every record of its generation and later ones with time ≤ T, applied in
// seq order (a record the base already holds is applied again harmlessly: a redo log).
// Invariants:
// - seq grows by one per record; time (wall clock, ns) never decreases with seq — both are taken under
//   `state`'s lock, the time clamped to one past the previous one if the clock steps back.
// - A record is appended (pwritev, outside the lock, at a place reserved under it) before the operation
//   goes down the stack, so every acknowledged change is in the journal; `sync` (the image's fsync)
//   makes the records durable before the volume's own flush runs.
// - Appends never go to a segment found at open (a torn tail may end it): a new part is begun, at the
//   first append (so opening the journal, as every CLI command without a mount does, writes nothing).
// Lock order: `state` only, held for a reservation and an index insert (segment creation, every
//   64 MiB, happens under it: rare). `gate` is lock-free.
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

public final class CDPJournal: Sendable {
    public let directory: String

    struct State {
        var active = false
        var generation: UInt64 = 0
        var segments: [UInt32: CDPSegment] = [:]
        /// The segment appends go to (nil until the first append of a part).
        var current: CDPSegment?
        var nextPart: UInt64 = 0
        var tail: UInt64 = 0
        var nextSegmentID: UInt32 = 1
        var nextSeq: UInt64 = 1
        var lastTime: Int64 = 0
        var index = CDPIndex()
        /// Generation → the first seq that belongs to it.
        var firstSeq: [UInt64: UInt64] = [:]
        /// Segments written since their last fsync.
        var unsynced: Set<UInt32> = []
        /// Bytes of each segment file (header and records).
        var sizes: [UInt32: UInt64] = [:]
        var bytes: UInt64 { sizes.values.reduce(0, +) }
    }
    let state = Lock(State())
    /// Writes between their stamp and the end of their trip down the stack (see `beginGeneration`).
    public let gate = CDPGate()

    public init(directory: String) { self.directory = directory }

    public var isActive: Bool { state.withLock { $0.active } }

    /// Bytes of segment files kept.
    public var retainedBytes: UInt64 { state.withLock { $0.bytes } }

    /// The time of the newest record (ns), or nil.
    public var lastTime: Int64? { state.withLock { $0.lastTime == 0 ? nil : $0.lastTime } }

    // MARK: Life cycle

    /// Opens the journal of a protected volume: scans every segment (dropping a torn tail), rebuilds the
    /// index and starts a new part of generation `generation` (at least the newest found) for appends.
    /// Returns the generation appends go to.
    @discardableResult
    public func open(generation: UInt64, volumeSize: UInt64) throws(StoreError) -> UInt64 {
        do {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw .io(errno: EIO, chunk: .none)
        }
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            .compactMap { n in CDPFormat.parseSegmentName(n).map { (n, $0.generation, $0.part) } }
            .sorted { ($0.1, $0.2) < ($1.1, $1.2) }
        return try state.withLock { s throws(StoreError) -> UInt64 in
            s = State()
            s.index.noteSize(seq: 0, time: 0, size: volumeSize)
            var lastPart: [UInt64: UInt64] = [:]
            for (name, gen, part) in names {
                let id = s.nextSegmentID
                guard let scanned = CDPSegment.scan(path: directory + "/" + name, id: id, afterSeq: s.nextSeq - 1)
                else { continue }
                let (seg, records) = scanned
                s.nextSegmentID += 1
                s.segments[id] = seg
                lastPart[gen] = part
                s.sizes[id] = records.last.map { $0.1 + UInt64($0.0.payload) } ?? UInt64(CDPFormat.segmentHeaderSize)
                for (h, dataAt) in records {
                    if s.firstSeq[gen] == nil { s.firstSeq[gen] = h.seq }
                    Self.index(h, segment: id, dataAt: dataAt, into: &s.index)
                    s.nextSeq = h.seq + 1
                    s.lastTime = max(s.lastTime, h.time)
                }
                if s.firstSeq[gen] == nil { s.firstSeq[gen] = s.nextSeq }
            }
            s.generation = max(generation, s.firstSeq.keys.max() ?? 0)
            s.nextPart = lastPart[s.generation].map { $0 + 1 } ?? 0
            if s.firstSeq[s.generation] == nil { s.firstSeq[s.generation] = s.nextSeq }
            s.active = true
            return s.generation
        }
    }

    /// Stops journaling (cdp disable) and deletes every segment.
    public func close(deleteFiles: Bool) {
        state.withLock { s in
            if deleteFiles { for seg in s.segments.values { unlink(seg.path) } }
            s = State()
        }
        gate.drain()
        if deleteFiles { try? FileManager.default.removeItem(atPath: directory) }
    }

    private static func startSegment(_ s: inout State, directory: String) throws(StoreError) {
        let seg = try CDPSegment.create(
            id: s.nextSegmentID, generation: s.generation, part: s.nextPart, directory: directory)
        s.nextSegmentID += 1
        s.nextPart += 1
        s.segments[seg.id] = seg
        s.current = seg
        s.tail = UInt64(CDPFormat.segmentHeaderSize)
        s.sizes[seg.id] = s.tail
        if s.firstSeq[s.generation] == nil { s.firstSeq[s.generation] = s.nextSeq }
    }

    private static func index(_ h: CDPRecordHeader, segment: UInt32, dataAt: UInt64, into index: inout CDPIndex) {
        switch h.kind {
        case .write:
            index.addWrite(
                CDPEntry(
                    seq: h.seq, time: h.time, offset: h.offset, length: UInt32(h.length), segment: segment,
                    dataAt: dataAt))
        case .discard, .resize:
            index.addRange(CDPRange(seq: h.seq, time: h.time, offset: h.offset, length: h.length))
        }
        index.noteSize(seq: h.seq, time: h.time, size: h.volumeSize)
    }

    // MARK: Data path

    public static func now() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    /// Appends one record (a no-op while inactive). `payload`: a write's bytes (length = its count).
    public func append(
        _ kind: CDPKind, offset: UInt64, length: UInt64, volumeSize: UInt64, payload: UnsafeRawBufferPointer? = nil
    ) throws(StoreError) {
        let size = UInt64(CDPFormat.headerSize) + UInt64(payload?.count ?? 0)
        let reserved = try state.withLock { s throws(StoreError) -> (CDPSegment, UInt64, CDPRecordHeader)? in
            guard s.active else { return nil }
            if s.current == nil
                || (s.tail + size > CDPFormat.segmentLimit && s.tail > UInt64(CDPFormat.segmentHeaderSize))
            {
                try Self.startSegment(&s, directory: directory)
            }
            let seg = s.current!
            let h = CDPRecordHeader(
                kind: kind, seq: s.nextSeq, time: max(Self.now(), s.lastTime + 1), offset: offset, length: length,
                volumeSize: volumeSize, payload: UInt32(payload?.count ?? 0))
            s.nextSeq += 1
            s.lastTime = h.time
            let at = s.tail
            s.tail += size
            s.sizes[seg.id] = s.tail
            s.unsynced.insert(seg.id)
            Self.index(h, segment: seg.id, dataAt: at + UInt64(CDPFormat.headerSize), into: &s.index)
            return (seg, at, h)
        }
        guard let (seg, at, h) = reserved else { return }
        try seg.append(header: CDPFormat.encode(h, payload: payload), payload: payload, at: at)
    }

    /// Makes every record appended before the call durable.
    public func sync() throws(StoreError) {
        let dirty = state.withLock { s in
            let d = s.unsynced.compactMap { s.segments[$0] }
            s.unsynced = []
            return d
        }
        for seg in dirty {
            do { try seg.sync() } catch {
                state.withLock { _ = $0.unsynced.insert(seg.id) }
                throw error
            }
        }
    }

    // MARK: Generations and retention

    /// Starts generation `generation` (a new segment) and waits until every write stamped in an older
    /// one has gone down the stack: a base captured after this returns holds all of them.
    public func beginGeneration(_ generation: UInt64) {
        state.withLock { s in
            guard s.active, generation > s.generation else { return }
            s.generation = generation
            s.current = nil
            s.nextPart = 0
            s.firstSeq[generation] = s.nextSeq
        }
        gate.drain()
    }

    public var generation: UInt64 { state.withLock { $0.generation } }

    /// The first seq of generation `generation` (records from it on apply over that generation's base);
    /// nil when no record of it survived (applying from an earlier one is correct too, only slower).
    public func firstSeq(of generation: UInt64) -> UInt64? { state.withLock { $0.firstSeq[generation] } }

    /// Deletes the segments of every generation before `generation` and forgets their records.
    public func drop(before generation: UInt64) {
        state.withLock { s in
            let seq = s.firstSeq[generation] ?? s.firstSeq.filter { $0.key > generation }.values.min() ?? s.nextSeq
            for (id, seg) in s.segments where seg.generation < generation {
                unlink(seg.path)
                s.segments[id] = nil
                s.sizes[id] = nil
                s.unsynced.remove(id)
            }
            s.firstSeq = s.firstSeq.filter { $0.key >= generation }
            s.index.drop(before: seq)
        }
        try? CDPSegment.syncDirectory(directory)
    }

    /// Bytes appended since generation `generation` began.
    public func bytes(since generation: UInt64) -> UInt64 {
        state.withLock { s in
            s.segments.values.filter { $0.generation >= generation }.reduce(0) { $0 + (s.sizes[$1.id] ?? 0) }
        }
    }

    // MARK: Reading

    /// Runs `body` with the index under the lock (short: no I/O in `body`).
    public func withIndex<R>(_ body: (CDPIndex) -> R) -> R { state.withLock { body($0.index) } }

    public func segment(_ id: UInt32) -> CDPSegment? { state.withLock { $0.segments[id] } }
}

/// Counts the writes in flight between their stamp and the end of their trip down the stack, by the
/// parity of a phase, so a generation switch can wait for exactly the writes that began before it.
public final class CDPGate: Sendable {
    private let phase = Atomic<Int>(0)
    private let even = Atomic<Int>(0)
    private let odd = Atomic<Int>(0)

    public init() {}

    private func add(_ p: Int, _ delta: Int) {
        if p & 1 == 0 {
            even.add(delta, ordering: .sequentiallyConsistent)
        } else {
            odd.add(delta, ordering: .sequentiallyConsistent)
        }
    }

    private func inFlight(_ p: Int) -> Int {
        p & 1 == 0 ? even.load(ordering: .sequentiallyConsistent) : odd.load(ordering: .sequentiallyConsistent)
    }

    public func enter() -> Int {
        while true {
            let p = phase.load(ordering: .sequentiallyConsistent)
            add(p, 1)
            if phase.load(ordering: .sequentiallyConsistent) == p { return p }
            add(p, -1)
        }
    }

    public func leave(_ p: Int) { add(p, -1) }

    /// Moves to the next phase and waits until every write that entered the previous one has left.
    public func drain() {
        let old = phase.add(1, ordering: .sequentiallyConsistent).oldValue
        while inFlight(old) > 0 { usleep(100) }
    }
}
