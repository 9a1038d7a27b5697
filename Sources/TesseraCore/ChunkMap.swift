/// One slot of a thin map: the chunk and the volume epoch it was born in (birth-epoch snapshots).
public struct MapEntry: Equatable, Sendable {
    public var chunk: ChunkID
    public var birth: UInt64
    public init(chunk: ChunkID, birth: UInt64) {
        self.chunk = chunk
        self.birth = birth
    }
}

/// The thin map of one volume: logical chunk index → (physical chunk, birth epoch), held in memory.
///
/// Compact and sparse: entries live in fixed pages of `pageSize` slots allocated only where something
/// is mapped, so a 64 TiB volume that holds 1 GiB costs a handful of pages. An empty slot means
/// "never written / discarded" (reads as zeros, or falls through to a clone's parent). Not
/// thread-safe: the owner guards it.
public struct ChunkMap: Sendable {
    public static let pageShift = 10
    public static let pageSize = 1 << pageShift
    // Each page interleaves (chunk, birth) per slot; chunk 0 marks an empty slot.
    private var pages: [UInt64: [UInt64]] = [:]
    private var pageCounts: [UInt64: Int] = [:]
    /// Number of occupied slots.
    public private(set) var count = 0

    public init() {}

    @inline(__always) private static func split(_ index: UInt64) -> (UInt64, Int) {
        (index >> UInt64(pageShift), Int(index & UInt64(pageSize - 1)) * 2)
    }

    /// The chunk in a slot (`.none` when empty). Setting stores birth epoch 0.
    public subscript(index: UInt64) -> ChunkID {
        get { entry(index)?.chunk ?? .none }
        set { set(index, newValue.isNone ? nil : MapEntry(chunk: newValue, birth: 0)) }
    }

    public func entry(_ index: UInt64) -> MapEntry? {
        let (key, slot) = Self.split(index)
        guard let page = pages[key], page[slot] != 0 else { return nil }
        return MapEntry(chunk: ChunkID(page[slot]), birth: page[slot + 1])
    }

    public mutating func set(_ index: UInt64, _ entry: MapEntry?) {
        let (key, slot) = Self.split(index)
        let old = pages[key]?[slot] ?? 0
        let new = entry?.chunk.rawValue ?? 0
        if old == 0 && new == 0 { return }
        if old == 0 {
            if pages[key] == nil { pages[key] = [UInt64](repeating: 0, count: Self.pageSize * 2) }
            pageCounts[key, default: 0] += 1
            count += 1
        } else if new == 0 {
            count -= 1
            let left = pageCounts[key, default: 1] - 1
            if left == 0 {
                pages[key] = nil
                pageCounts[key] = nil
                return
            }
            pageCounts[key] = left
        }
        pages[key]![slot] = new
        pages[key]![slot + 1] = entry?.birth ?? 0
    }

    /// The first occupied index ≥ `index` and < `limit`, or nil.
    public func nextMapped(from index: UInt64, below limit: UInt64) -> UInt64? {
        var i = index
        while i < limit {
            let key = i >> UInt64(Self.pageShift)
            if let page = pages[key] {
                let end = min(limit, (key + 1) << UInt64(Self.pageShift))
                while i < end {
                    if page[Int(i & UInt64(Self.pageSize - 1)) * 2] != 0 { return i }
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

    /// The first empty index ≥ `index` (may equal `limit` when everything below is occupied).
    public func nextUnmapped(from index: UInt64, below limit: UInt64) -> UInt64 {
        var i = index
        while i < limit {
            let key = i >> UInt64(Self.pageShift)
            guard let page = pages[key] else { return i }
            let end = min(limit, (key + 1) << UInt64(Self.pageShift))
            while i < end {
                if page[Int(i & UInt64(Self.pageSize - 1)) * 2] == 0 { return i }
                i += 1
            }
        }
        return limit
    }

    /// Every occupied (index, entry) with index in `range`, in index order.
    public func records(in range: Range<UInt64>) -> [(index: UInt64, entry: MapEntry)] {
        var out: [(UInt64, MapEntry)] = []
        for key in pages.keys.sorted() {
            let base = key << UInt64(Self.pageShift)
            if base >= range.upperBound || base + UInt64(Self.pageSize) <= range.lowerBound { continue }
            let page = pages[key]!
            for slot in 0..<Self.pageSize where page[slot * 2] != 0 {
                let idx = base + UInt64(slot)
                if range.contains(idx) {
                    out.append((idx, MapEntry(chunk: ChunkID(page[slot * 2]), birth: page[slot * 2 + 1])))
                }
            }
        }
        return out
    }

    /// Every (index, chunk) pair with index in `range`, in index order.
    public func entries(in range: Range<UInt64>) -> [(index: UInt64, chunk: ChunkID)] {
        records(in: range).map { ($0.index, $0.entry.chunk) }
    }

    /// Every occupied entry, in index order.
    public var allEntries: [(index: UInt64, chunk: ChunkID)] { entries(in: 0..<UInt64.max) }
}
