import TesseraCore
import TesseraTestSupport
import Testing

@Suite("ChunkMap")
struct ChunkMapTests {
    static let page = UInt64(ChunkMap.pageSize)

    @Test func setClearAndCount() {
        var m = ChunkMap()
        #expect(m.count == 0)
        #expect(m[0].isNone)
        m[0] = ChunkID(10)
        m[5] = ChunkID(11)
        m[5] = ChunkID(12)  // replace: count unchanged
        #expect(m.count == 2)
        #expect(m[5] == ChunkID(12))
        m[7] = .none  // clearing an empty slot changes nothing
        #expect(m.count == 2)
        m[0] = .none
        #expect(m.count == 1)
        #expect(m[0].isNone)
        m[5] = .none
        #expect(m.count == 0)
        #expect(m.allEntries.isEmpty)
    }

    @Test func nextMappedAndUnmappedAcrossPageBoundaries() {
        let p = Self.page
        var m = ChunkMap()
        // Mapped: the last slot of page 0, the whole of page 1, the first slot of page 3.
        m[p - 1] = ChunkID(1)
        for i in p..<2 * p { m[i] = ChunkID(100 + i) }
        m[3 * p] = ChunkID(2)
        let limit = 10 * p
        #expect(m.nextMapped(from: 0, below: limit) == p - 1)
        #expect(m.nextMapped(from: p - 1, below: limit) == p - 1)
        #expect(m.nextMapped(from: 2 * p, below: limit) == 3 * p, "skips the empty page 2")
        #expect(m.nextMapped(from: 3 * p + 1, below: limit) == nil)
        #expect(m.nextMapped(from: 0, below: p - 1) == nil, "limit is exclusive")
        #expect(m.nextMapped(from: 2 * p, below: 3 * p) == nil, "limit before the next page's entry")
        #expect(m.nextUnmapped(from: 0, below: limit) == 0)
        #expect(m.nextUnmapped(from: p - 1, below: limit) == 2 * p, "runs over the full page 1")
        #expect(m.nextUnmapped(from: p, below: p + 10) == p + 10, "everything below the limit is mapped")
        #expect(m.nextUnmapped(from: 3 * p, below: limit) == 3 * p + 1)
        #expect(m.nextUnmapped(from: 5 * p, below: limit) == 5 * p)
    }

    @Test func entriesInRange() {
        let p = Self.page
        var m = ChunkMap()
        let indices: [UInt64] = [0, 3, p - 1, p, 2 * p + 5, 9 * p]
        for i in indices { m[i] = ChunkID(i + 1) }
        #expect(m.entries(in: 0..<UInt64.max).map(\.index) == indices, "in index order")
        #expect(m.entries(in: 3..<p).map(\.index) == [3, p - 1])
        #expect(m.entries(in: p..<p + 1).map(\.index) == [p])
        #expect(m.entries(in: 4..<p - 1).isEmpty)
        #expect(m.entries(in: 2 * p + 5..<9 * p + 1).map(\.chunk) == [ChunkID(2 * p + 6), ChunkID(9 * p + 1)])
        #expect(m.allEntries.count == m.count)
    }

    @Test(arguments: [1 << 40, (1 << 40) + 1023, 1 << 46, (1 << 50) / 4096 - 1] as [UInt64])
    func largeSparseIndices(index: UInt64) {
        var m = ChunkMap()
        m[index] = ChunkID(77)
        m[3] = ChunkID(78)
        #expect(m.count == 2)
        #expect(m[index] == ChunkID(77))
        #expect(m[index - 1].isNone)
        #expect(m[index + 1].isNone)
        #expect(m.nextMapped(from: 4, below: index + 1) == index, "jumps the empty pages, index \(index)")
        #expect(m.nextMapped(from: 4, below: index) == nil)
        #expect(m.nextUnmapped(from: index, below: index + 2) == index + 1)
        #expect(m.entries(in: 4..<UInt64(1) << 62).map(\.index) == [index])
        m[index] = .none
        #expect(m.count == 1)
        #expect(m.nextMapped(from: 4, below: UInt64(1) << 62) == nil)
    }

    @Test(arguments: [1, 2, 3] as [UInt64])
    func randomOperationsMatchADictionary(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var m = ChunkMap()
        var d: [UInt64: ChunkID] = [:]
        let span = 4 * Self.page
        for _ in 0..<5000 {
            let i = UInt64.random(in: 0..<span, using: &rng)
            if rng.chance(0.3) {
                m[i] = .none
                d[i] = nil
            } else {
                let c = ChunkID(UInt64.random(in: 1...1_000_000, using: &rng))
                m[i] = c
                d[i] = c
            }
        }
        #expect(m.count == d.count, "seed \(seed)")
        #expect(m.allEntries.map(\.index) == d.keys.sorted(), "seed \(seed)")
        for _ in 0..<200 {
            let from = UInt64.random(in: 0..<span, using: &rng)
            let limit = UInt64.random(in: from...span, using: &rng)
            let mapped = d.keys.filter { $0 >= from && $0 < limit }.min()
            #expect(m.nextMapped(from: from, below: limit) == mapped, "seed \(seed) from \(from) below \(limit)")
            let unmapped = (from..<limit).first { d[$0] == nil } ?? limit
            #expect(m.nextUnmapped(from: from, below: limit) == unmapped, "seed \(seed) from \(from) below \(limit)")
        }
    }
}
