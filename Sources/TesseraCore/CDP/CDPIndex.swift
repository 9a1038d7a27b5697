// CDPIndex — the in-memory index of a CDP journal: which records touched each 4 KiB block of the volume,
// in the order they were appended. Rebuilt from the segments at open; kept by CDPJournal under its lock.
//
// Writes are indexed per block (a write appears in the list of every block it touches); discards and
// shrinks, which may cover terabytes, are kept in one list of ranges; size changes in a list of sizes.
// Invariants: every list is in increasing `seq`, and `time` never decreases with `seq` (CDPJournal stamps
// under its lock and never lets the clock run backwards), so "records of seq ≥ S and time ≤ T" is a
// contiguous slice of each list.

/// Where a write's bytes are: `length` bytes at `dataAt` in segment `segment`, for volume bytes `offset…`.
public struct CDPEntry: Equatable, Sendable {
    public var seq: UInt64
    public var time: Int64
    public var offset: UInt64
    public var length: UInt32
    public var segment: UInt32
    public var dataAt: UInt64
}

/// A discard (or the part a shrink cut off): `offset ..< offset + length` reads as zeros after it.
public struct CDPRange: Equatable, Sendable {
    public var seq: UInt64
    public var time: Int64
    public var offset: UInt64
    public var length: UInt64
}

public struct CDPIndex: Sendable {
    public static let blockSize: UInt64 = 4096

    public private(set) var blocks: [UInt64: [CDPEntry]] = [:]
    public private(set) var ranges: [CDPRange] = []
    /// (seq, time, size) at each change of the volume's size.
    public private(set) var sizes: [(seq: UInt64, time: Int64, size: UInt64)] = []
    /// Records indexed (writes count once).
    public private(set) var count = 0

    public init() {}

    public mutating func addWrite(_ e: CDPEntry) {
        guard e.length > 0 else { return }
        let first = e.offset / Self.blockSize
        let last = (e.offset + UInt64(e.length) - 1) / Self.blockSize
        for b in first...last { blocks[b, default: []].append(e) }
        count += 1
    }

    public mutating func addRange(_ r: CDPRange) {
        if r.length > 0 { ranges.append(r) }
        count += 1
    }

    public mutating func noteSize(seq: UInt64, time: Int64, size: UInt64) {
        if sizes.last?.size != size { sizes.append((seq, time, size)) }
    }

    /// Forgets every record before `seq` (retention dropped their segments).
    public mutating func drop(before seq: UInt64) {
        for (b, list) in blocks {
            let kept = list.filter { $0.seq >= seq }
            blocks[b] = kept.isEmpty ? nil : kept
        }
        ranges.removeAll { $0.seq < seq }
        // Keep the last size before `seq`: it is the size the records after it start from.
        if let i = sizes.lastIndex(where: { $0.seq < seq }) { sizes.removeFirst(i) }
        count = blocks.values.reduce(0) { $0 + $1.count } + ranges.count
    }

    /// The writes to block `b` with seq ≥ `from` and time ≤ `until`, oldest first.
    public func writes(block b: UInt64, from: UInt64, until: Int64) -> ArraySlice<CDPEntry> {
        guard let list = blocks[b] else { return [] }
        let lo = Self.firstIndex(list, from: from)
        var hi = lo
        while hi < list.count && list[hi].time <= until { hi += 1 }
        return list[lo..<hi]
    }

    /// The ranges overlapping `offset ..< end` with seq ≥ `from` and time ≤ `until`, oldest first.
    public func ranges(overlapping offset: UInt64, _ end: UInt64, from: UInt64, until: Int64) -> [CDPRange] {
        ranges.filter { $0.seq >= from && $0.time <= until && $0.offset < end && $0.offset + $0.length > offset }
    }

    /// The size after the last size change with seq ≥ `from` and time ≤ `until`; nil when there is none.
    public func size(from: UInt64, until: Int64) -> UInt64? {
        sizes.last { $0.seq >= from && $0.time <= until }?.size
    }

    /// Blocks written by a record with seq ≥ `from` and time ≤ `until` (sorted).
    public func writtenBlocks(from: UInt64, until: Int64) -> [UInt64] {
        blocks.compactMap { b, list in
            let i = Self.firstIndex(list, from: from)
            return i < list.count && list[i].time <= until ? b : nil
        }.sorted()
    }

    /// Blocks written by a record with seq ≥ `from` and time > `after` (sorted): what changed since.
    public func blocksChanged(from: UInt64, after: Int64) -> [UInt64] {
        blocks.compactMap { b, list in list.last.map { $0.seq >= from && $0.time > after ? b : nil } ?? nil }.sorted()
    }

    /// Blocks written by a record stamped in `after <.. until` (sorted): what a diff shows changed.
    public func blocksWritten(after: Int64, until: Int64) -> [UInt64] {
        blocks.compactMap { b, list in list.contains { $0.time > after && $0.time <= until } ? b : nil }.sorted()
    }

    private static func firstIndex(_ list: [CDPEntry], from: UInt64) -> Int {
        var lo = 0
        var hi = list.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if list[mid].seq < from { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }
}
