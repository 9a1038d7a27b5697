// CDPImage — a protected volume as it was at an instant: read-only, built from a base (the read-only view
// of the hidden snapshot that starts a generation) and the journal records of that generation and later
// ones up to the instant, applied in seq order.
//
// Address space: volume bytes, 0 ..< the size the volume had at the instant.
// Invariants: fixed at creation (the instant is in the past, so no later record is ever stamped at or
//   before it). It asks the journal's index under its lock per read (no copy of the index, which would
//   make the next append copy it all); a segment that retention dropped since reads as EIO (the instant
//   left the window), and one being read stays open until the read ends.
//   SEEK_HOLE only reports ranges that are holes in the base and untouched by any write applied: the
//   image may call data what reads as zeros (a discard), never the reverse.
public final class CDPImage: VolumeStore {
    public let base: any VolumeStore
    public let time: Int64
    public let fromSeq: UInt64
    public let size: UInt64
    private let journal: CDPJournal
    /// Blocks some applied write touched, sorted (for seek and restore), found at first use.
    private let found = Lock<[UInt64]?>(nil)

    /// The image at `time` over `base` (its generation's records begin at `fromSeq`).
    public init(base: any VolumeStore, journal: CDPJournal, fromSeq: UInt64, time: Int64) {
        self.base = base
        self.time = time
        self.fromSeq = fromSeq
        self.journal = journal
        size = journal.withIndex { $0.size(from: fromSeq, until: time) } ?? base.size
    }

    private var written: [UInt64] {
        found.withLock { w in
            if let w { return w }
            let list = journal.withIndex { $0.writtenBlocks(from: fromSeq, until: time) }
            w = list
            return list
        }
    }

    public var isReadOnly: Bool { true }
    public var bottom: any VolumeStore { self }

    /// Blocks written between this image's base and the instant (what differs from the base, at most).
    public var writtenBlocks: [UInt64] { written }

    /// The ranges discarded between the base and the instant.
    public var discardedRanges: [CDPRange] {
        journal.withIndex { $0.ranges(overlapping: 0, UInt64.max, from: fromSeq, until: time) }
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) -> Int {
        guard offset < size, buffer.count > 0 else { return 0 }
        let n = Int(min(UInt64(buffer.count), size - offset))
        let end = offset + UInt64(n)
        let out = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
        var got = 0
        if offset < base.size {
            got = try base.read(at: offset, into: out)
        }
        if got < n { out.baseAddress!.advanced(by: got).initializeMemory(as: UInt8.self, repeating: 0, count: n - got) }
        // Every record that touches the range, in seq order.
        let bs = CDPIndex.blockSize
        var (writes, ranges) = journal.withIndex { index in
            var seen = Set<UInt64>()
            var writes: [CDPEntry] = []
            for b in (offset / bs)...((end - 1) / bs) {
                for e in index.writes(block: b, from: fromSeq, until: time) where seen.insert(e.seq).inserted {
                    writes.append(e)
                }
            }
            return (writes, index.ranges(overlapping: offset, end, from: fromSeq, until: time))
        }
        writes.sort { $0.seq < $1.seq }
        var w = 0
        var r = 0
        while w < writes.count || r < ranges.count {
            if r < ranges.count && (w == writes.count || ranges[r].seq < writes[w].seq) {
                let z = ranges[r]
                let from = max(z.offset, offset)
                let to = min(z.offset + z.length, end)
                if to > from {
                    out.baseAddress!.advanced(by: Int(from - offset)).initializeMemory(
                        as: UInt8.self, repeating: 0, count: Int(to - from))
                }
                r += 1
            } else {
                let e = writes[w]
                let from = max(e.offset, offset)
                let to = min(e.offset + UInt64(e.length), end)
                if to > from {
                    guard let seg = journal.segment(e.segment) else { throw .io(errno: 5, chunk: .none) }
                    try seg.read(
                        at: e.dataAt + (from - e.offset),
                        into: UnsafeMutableRawBufferPointer(rebasing: out[Int(from - offset)..<Int(to - offset)]))
                }
                w += 1
            }
        }
        return n
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(StoreError) { throw .readOnly }
    public func discard(at offset: UInt64, length: UInt64) throws(StoreError) { throw .readOnly }
    public func extend(to end: UInt64) throws(StoreError) { throw .readOnly }
    public func resize(to size: UInt64) throws(StoreError) { throw .readOnly }
    public func flush(dataOnly: Bool) throws(StoreError) {}

    public func seek(from offset: UInt64, data: Bool) -> UInt64? {
        guard offset < size else { return nil }
        let bs = CDPIndex.blockSize
        if data {
            var best: UInt64?
            if offset < base.size, let d = base.seek(from: offset, data: true), d < size { best = d }
            if let b = firstWritten(atOrAfter: offset / bs) { best = min(best ?? .max, max(b * bs, offset)) }
            return best.map { min($0, size) }
        }
        var pos = offset
        while pos < size {
            let hole = pos < base.size ? (base.seek(from: pos, data: false) ?? base.size) : pos
            if hole >= size { return size }
            let b = hole / bs
            guard let i = writtenIndex(of: b) else { return hole }
            var j = i
            while j + 1 < written.count && written[j + 1] == written[j] + 1 { j += 1 }
            pos = (written[j] + 1) * bs
        }
        return size
    }

    private func firstWritten(atOrAfter b: UInt64) -> UInt64? {
        let i = lowerBound(b)
        return i < written.count ? written[i] : nil
    }

    private func writtenIndex(of b: UInt64) -> Int? {
        let i = lowerBound(b)
        return i < written.count && written[i] == b ? i : nil
    }

    private func lowerBound(_ b: UInt64) -> Int {
        var lo = 0
        var hi = written.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if written[mid] < b { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    public func copy(from source: any VolumeStore, at sourceOffset: UInt64, to offset: UInt64, length: UInt64)
        throws(StoreError) -> UInt64
    {
        throw .readOnly
    }

    public func view(at epoch: UInt64, size: UInt64) -> any VolumeStore { base.view(at: epoch, size: size) }
}
