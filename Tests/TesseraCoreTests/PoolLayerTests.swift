// PoolLayer placement: weighted by free space, striped, full stores skipped, ENOSPC only when the whole
// pool is full, and room that comes back is used again.

import TesseraCore
import TesseraTestSupport
import Testing

@Suite("PoolLayer placement")
struct PoolLayerTests {
    static let cs = 64 * 1024

    private func pool(_ capacities: [UInt64]) -> (PoolLayer, [MemoryStore]) {
        let layer = PoolLayer(chunkSize: Self.cs)
        var stores: [MemoryStore] = []
        for (i, c) in capacities.enumerated() {
            let s = MemoryStore(chunkSize: Self.cs, capacity: c * UInt64(Self.cs))
            layer.add(StoreID(Int64(i + 1)), store: s, nextSerial: 1)
            stores.append(s)
        }
        return (layer, stores)
    }

    private func fill(_ layer: PoolLayer, _ chunk: ChunkID) throws {
        let data = [UInt8](repeating: 0xAB, count: Self.cs)
        try data.withUnsafeBytes { try layer.write(chunk, offset: 0, from: $0) }
    }

    @Test func equalStoresAlternateSoSequentialChunksStripe() throws {
        let (layer, _) = pool([1000, 1000])
        let picks = try (0..<8).map { _ in try layer.allocate().store.rawValue }
        for i in 1..<picks.count { #expect(picks[i] != picks[i - 1], "consecutive chunks on one store: \(picks)") }
    }

    @Test func placementFollowsFreeSpace() throws {
        let (layer, _) = pool([2000, 1000])
        var counts: [Int64: Int] = [:]
        for _ in 0..<300 { counts[try layer.allocate().store.rawValue, default: 0] += 1 }
        // 2:1 free space → about 2:1 placement.
        #expect((195...205).contains(counts[1] ?? 0), "\(counts)")
        #expect((95...105).contains(counts[2] ?? 0), "\(counts)")
    }

    @Test func aFullStoreIsSkippedAndAFullPoolSaysNoSpace() throws {
        let (layer, _) = pool([2, 6])
        var ids: [ChunkID] = []
        for _ in 0..<8 {
            let id = try layer.allocate()
            try fill(layer, id)
            ids.append(id)
        }
        #expect(ids.filter { $0.store == StoreID(1) }.count == 2)
        #expect(throws: StoreError.noSpace) { _ = try layer.allocate() }
        // Room comes back: the pool takes chunks again.
        try layer.delete(ids[0])
        let again = try layer.allocate()
        try fill(layer, again)
        #expect(again.store == ids[0].store)
    }

    @Test func aStoreThatAnswersNoSpaceIsMarkedFull() throws {
        let (_, stores) = pool([1000, 1000])
        // Store 1 believes it has room, but its medium fills up behind its back.
        let faulty = FaultyStore(wrapping: stores[0], seed: 1)
        let layer2 = PoolLayer(chunkSize: Self.cs)
        layer2.add(StoreID(1), store: faulty, nextSerial: 1)
        layer2.add(StoreID(2), store: stores[1], nextSerial: 1)
        faulty.rules = [.init([.write], .always, .noSpace)]
        let first = try layer2.allocate()
        let target = first.store == StoreID(1) ? first : try layer2.allocate()
        #expect(target.store == StoreID(1))
        #expect(throws: StoreError.noSpace) { try fill(layer2, target) }
        for _ in 0..<6 { #expect(try layer2.allocate().store == StoreID(2)) }
    }

    @Test func capacityFromAStoreJoiningLater() throws {
        let (layer, _) = pool([1])
        try fill(layer, try layer.allocate())
        #expect(throws: StoreError.noSpace) { _ = try layer.allocate() }
        layer.add(StoreID(9), store: MemoryStore(chunkSize: Self.cs, capacity: 10 * UInt64(Self.cs)), nextSerial: 1)
        #expect(try layer.allocate().store == StoreID(9))
    }
}
