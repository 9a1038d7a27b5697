// PoolLayer placement: weighted by free space, striped, full stores skipped, ENOSPC only when the whole
// pool is full, and room that comes back is used again; unreachable stores skipped; stores on one
// filesystem share its room.

import Foundation
import TesseraCore
import TesseraStores
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
            layer.add(UnitID(Int64(i + 1)), store: s, nextSerial: 1)
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
        let picks = try (0..<8).map { _ in try layer.allocate().unit.rawValue }
        for i in 1..<picks.count { #expect(picks[i] != picks[i - 1], "consecutive chunks on one store: \(picks)") }
    }

    @Test func placementFollowsFreeSpace() throws {
        let (layer, _) = pool([2000, 1000])
        var counts: [Int64: Int] = [:]
        for _ in 0..<300 { counts[try layer.allocate().unit.rawValue, default: 0] += 1 }
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
        #expect(ids.filter { $0.unit == UnitID(1) }.count == 2)
        #expect(throws: StoreError.noSpace) { _ = try layer.allocate() }
        // Room comes back: the pool takes chunks again.
        try layer.delete(ids[0])
        let again = try layer.allocate()
        try fill(layer, again)
        #expect(again.unit == ids[0].unit)
    }

    @Test func aStoreThatAnswersNoSpaceIsMarkedFull() throws {
        let (_, stores) = pool([1000, 1000])
        // Store 1 believes it has room, but its medium fills up behind its back.
        let faulty = FaultyStore(wrapping: stores[0], seed: 1)
        let layer2 = PoolLayer(chunkSize: Self.cs)
        layer2.add(UnitID(1), store: faulty, nextSerial: 1)
        layer2.add(UnitID(2), store: stores[1], nextSerial: 1)
        faulty.rules = [.init([.write], .always, .noSpace)]
        let first = try layer2.allocate()
        let target = first.unit == UnitID(1) ? first : try layer2.allocate()
        #expect(target.unit == UnitID(1))
        #expect(throws: StoreError.noSpace) { try fill(layer2, target) }
        for _ in 0..<6 { #expect(try layer2.allocate().unit == UnitID(2)) }
    }

    @Test func capacityFromAStoreJoiningLater() throws {
        let (layer, _) = pool([1])
        try fill(layer, try layer.allocate())
        #expect(throws: StoreError.noSpace) { _ = try layer.allocate() }
        layer.add(UnitID(9), store: MemoryStore(chunkSize: Self.cs, capacity: 10 * UInt64(Self.cs)), nextSerial: 1)
        #expect(try layer.allocate().unit == UnitID(9))
    }

    // MARK: Health

    @Test func aStoreThatFailsIsMarkedUnreachableAndSkippedUntilItIsBack() throws {
        let (_, stores) = pool([1000, 1000])
        let faulty = FaultyStore(wrapping: stores[0], seed: 2)
        let layer = PoolLayer(chunkSize: Self.cs)
        let health = StoreHealth()
        layer.add(UnitID(1), store: faulty, nextSerial: 1, health: health)
        layer.add(UnitID(2), store: stores[1], nextSerial: 1)
        faulty.rules = [.init([.write, .read], .always, .io)]
        var target = try layer.allocate()
        if target.unit != UnitID(1) { target = try layer.allocate() }
        #expect(target.unit == UnitID(1))
        #expect(throws: StoreError.io(errno: 5, chunk: target)) { try fill(layer, target) }
        #expect(!health.isReachable)
        #expect(health.snapshot.lastError?.contains("errno 5") == true, "\(health.snapshot)")
        for _ in 0..<20 { #expect(try layer.allocate().unit == UnitID(2), "an unreachable store took a new chunk") }
        #expect(layer.placementShares()[UnitID(1)] == nil)
        // A missing chunk or no space says nothing about reachability: only outages count.
        #expect(!StoreHealth.isOutage(.missing(chunk: target)) && !StoreHealth.isOutage(.noSpace))
        #expect(StoreHealth.isOutage(.readOnly))
        // Back in service (what the engine's probe does): it takes chunks again.
        faulty.rules = []
        #expect(health.markReachable())
        let picks = try (0..<4).map { _ in try layer.allocate().unit }
        #expect(picks.contains(UnitID(1)), "\(picks)")
    }

    @Test func whenEveryStoreIsDownTheirOwnErrorShowsNotNoSpace() throws {
        let store = FaultyStore(wrapping: MemoryStore(chunkSize: Self.cs, capacity: 100 * UInt64(Self.cs)), seed: 3)
        let layer = PoolLayer(chunkSize: Self.cs)
        layer.add(UnitID(1), store: store, nextSerial: 1)
        store.rules = [.init([.write], .always, .readOnly)]
        let c = try layer.allocate()
        #expect(throws: StoreError.readOnly) { try fill(layer, c) }
        #expect(layer.health(UnitID(1))?.isReachable == false)
        // The last resort: still allocated on (and failing with the store's error), never ENOSPC.
        #expect(try layer.allocate().unit == UnitID(1))
    }

    // MARK: Shared filesystems

    private func usage(free: UInt64, fs: UInt64? = nil, fsFree: UInt64 = 0) -> StoreUsage {
        let cs = UInt64(Self.cs)
        return StoreUsage(
            totalBytes: 4000 * cs, freeBytes: free * cs, usedBytes: 0,
            filesystem: fs.map { FilesystemUsage(id: $0, totalBytes: 4000 * cs, freeBytes: fsFree * cs) })
    }

    @Test func storesOnOneFilesystemShareItsRoomInPlacement() throws {
        let (layer, _) = pool([1000, 1000, 1000])
        layer.updateCapacity(UnitID(1), usage(free: 1000, fs: 7, fsFree: 1000))
        layer.updateCapacity(UnitID(2), usage(free: 1000, fs: 7, fsFree: 1000))
        layer.updateCapacity(UnitID(3), usage(free: 1000))
        let shares = layer.placementShares()
        // The filesystem (1000 free) weighs as much as store 3 (1000 free), split between its two stores.
        #expect(abs((shares[UnitID(1)] ?? 0) - 0.25) < 0.01, "\(shares)")
        #expect(abs((shares[UnitID(2)] ?? 0) - 0.25) < 0.01, "\(shares)")
        #expect(abs((shares[UnitID(3)] ?? 0) - 0.5) < 0.01, "\(shares)")
        var counts: [Int64: Int] = [:]
        for _ in 0..<400 { counts[try layer.allocate().unit.rawValue, default: 0] += 1 }
        #expect((190...210).contains(counts[3] ?? 0), "\(counts)")
        #expect((90...110).contains(counts[1] ?? 0) && (90...110).contains(counts[2] ?? 0), "\(counts)")
    }

    @Test func aQuotaCapsAStoreOnASharedFilesystem() throws {
        let (layer, _) = pool([1000, 1000])
        // Store 1 has a quota that leaves it 100 chunks; store 2 the whole filesystem (1000).
        layer.updateCapacity(UnitID(1), usage(free: 100, fs: 7, fsFree: 1000))
        layer.updateCapacity(UnitID(2), usage(free: 1000, fs: 7, fsFree: 1000))
        let shares = layer.placementShares()
        #expect(abs((shares[UnitID(1)] ?? 0) - 100.0 / 1100) < 0.02, "\(shares)")
        #expect(abs((shares[UnitID(2)] ?? 0) - 1000.0 / 1100) < 0.02, "\(shares)")
    }

    @Test func combinedFiguresCountASharedFilesystemOnce() throws {
        let dir = try TemporaryDirectory()
        let a = try DirectoryStore(root: try dir.subdirectory("a"), chunkSize: Self.cs)
        let b = try DirectoryStore(root: try dir.subdirectory("b"), chunkSize: Self.cs)
        let ua = try a.usage()
        let ub = try b.usage()
        let fs = try #require(ua.filesystem)
        #expect(ub.filesystem?.id == fs.id, "two directories of one filesystem name the same filesystem")
        let both = StoreUsage.combined([ua, ub])
        #expect(both.totalBytes == fs.totalBytes, "the disk counted once, not twice")
        #expect(both.freeBytes <= max(ua.freeBytes, ub.freeBytes))
        // Beside a store elsewhere (no filesystem of its own), that one adds up.
        let other = StoreUsage(totalBytes: 10, freeBytes: 4, usedBytes: 6)
        #expect(StoreUsage.combined([ua, ub, other]).totalBytes == fs.totalBytes + 10)
        // A quota caps a directory store's figures (a placement limit).
        #expect(a.setQuota(UInt64(4 * Self.cs)))
        let capped = try a.usage()
        #expect(capped.totalBytes == UInt64(4 * Self.cs))
        #expect(capped.freeBytes == UInt64(4 * Self.cs))
        #expect(StoreUsage.combined([capped, ub]).totalBytes == fs.totalBytes)
        let layer = PoolLayer(chunkSize: Self.cs)
        layer.add(UnitID(1), store: a, nextSerial: 1)
        layer.add(UnitID(2), store: b, nextSerial: 1)
        #expect((layer.placementShares()[UnitID(1)] ?? 1) < 0.02, "a 4-chunk quota beside a whole disk")
    }

    @Test func aDirectoryStoreProbeNeedsItsLayout() throws {
        let dir = try TemporaryDirectory()
        let root = try dir.subdirectory("s")
        let s = try DirectoryStore(root: root, chunkSize: Self.cs)
        try s.probe()
        // What a filesystem unmounted under the store leaves: an empty directory. Not healthy.
        try FileManager.default.removeItem(atPath: root + "/chunks")
        #expect(throws: StoreError.self) { try s.probe() }
    }
}
