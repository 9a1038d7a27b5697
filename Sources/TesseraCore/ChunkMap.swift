/// The thin map of one volume: logical chunk index → physical chunk, held in memory.
///
/// Compact and sparse: entries live in fixed pages of `pageSize` slots allocated only where something
/// is mapped, so a 64 TiB volume that holds 1 GiB costs a handful of pages. `ChunkID.none` in a slot
/// means "never written / discarded" (reads as zeros). Not thread-safe: the owner guards it.
public struct ChunkMap: Sendable {
    public static let pageShift = 10
    public static let pageSize = 1 << pageShift
    private var pages: [UInt64: [UInt64]] = [:]
    private var pageCounts: [UInt64: Int] = [:]
    /// Number of mapped chunks.
    public private(set) var count = 0

    public init() {}

    public subscript(index: UInt64) -> ChunkID {
        get {
            guard let page = pages[index >> UInt64(Self.pageShift)] else { return .none }
            return ChunkID(page[Int(index & UInt64(Self.pageSize - 1))])
        }
        set {
            let key = index >> UInt64(Self.pageShift)
            let slot = Int(index & UInt64(Self.pageSize - 1))
            let old = pages[key]?[slot] ?? 0
            if old == newValue.rawValue { return }
            if old == 0 {
                if pages[key] == nil { pages[key] = [UInt64](repeating: 0, count: Self.pageSize) }
                pageCounts[key, default: 0] += 1
                count += 1
            } else if newValue.isNone {
                count -= 1
                let left = pageCounts[key, default: 1] - 1
                if left == 0 {
                    pages[key] = nil
                    pageCounts[key] = nil
                    return
                }
                pageCounts[key] = left
            }
            pages[key]![slot] = newValue.rawValue
        }
    }

    /// The first mapped index ≥ `index` and < `limit`, or nil.
    public func nextMapped(from index: UInt64, below limit: UInt64) -> UInt64? {
        var i = index
        while i < limit {
            let key = i >> UInt64(Self.pageShift)
            if let page = pages[key] {
                let end = min(limit, (key + 1) << UInt64(Self.pageShift))
                while i < end {
                    if page[Int(i & UInt64(Self.pageSize - 1))] != 0 { return i }
                    i += 1
                }
            } else {
                // Jump to the next allocated page at or after this one.
                guard let nextKey = pages.keys.filter({ $0 > key }).min() else { return nil }
                i = nextKey << UInt64(Self.pageShift)
            }
        }
        return nil
    }

    /// The first unmapped index ≥ `index` (may equal `limit` when everything below is mapped).
    public func nextUnmapped(from index: UInt64, below limit: UInt64) -> UInt64 {
        var i = index
        while i < limit {
            let key = i >> UInt64(Self.pageShift)
            guard let page = pages[key] else { return i }
            let end = min(limit, (key + 1) << UInt64(Self.pageShift))
            while i < end {
                if page[Int(i & UInt64(Self.pageSize - 1))] == 0 { return i }
                i += 1
            }
        }
        return limit
    }

    /// Every (index, chunk) pair with index in `range`, in index order.
    public func entries(in range: Range<UInt64>) -> [(index: UInt64, chunk: ChunkID)] {
        var out: [(UInt64, ChunkID)] = []
        for key in pages.keys.sorted() {
            let base = key << UInt64(Self.pageShift)
            if base >= range.upperBound || base + UInt64(Self.pageSize) <= range.lowerBound { continue }
            let page = pages[key]!
            for slot in 0..<Self.pageSize where page[slot] != 0 {
                let idx = base + UInt64(slot)
                if range.contains(idx) { out.append((idx, ChunkID(page[slot]))) }
            }
        }
        return out
    }

    /// Every mapped entry, in index order.
    public var allEntries: [(index: UInt64, chunk: ChunkID)] { entries(in: 0..<UInt64.max) }
}
