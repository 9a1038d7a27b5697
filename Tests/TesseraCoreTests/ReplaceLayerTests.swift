// ReplaceLayer alone, over two checksummed memory stores: the copier and four writer threads race over
// the same chunks (old ones, and new ones handed out after the job began); afterwards the target alone
// reads exactly what a shadow copy says, labels included, and the source still holds every write.

import Synchronization
import TesseraCore
import TesseraTestSupport
import Testing

@Suite("ReplaceLayer")
struct ReplaceLayerTests {
    static let cs = 16 * 1024

    @Test func copyRacingWritersLeavesTheTargetComplete() throws {
        let cs = Self.cs
        let a = MemoryStore(chunkSize: ChecksumLayer.innerChunkSize(for: cs))
        let b = MemoryStore(chunkSize: ChecksumLayer.innerChunkSize(for: cs))
        let source = ChecksumLayer(over: a)
        let target = ChecksumLayer(over: b)
        let unit = UnitID(5)
        @Sendable func id(_ serial: Int) -> ChunkID { ChunkID(unit: unit, serial: UInt64(serial)) }
        // 40 chunks before the job, each labelled; 41…60 are handed out during it.
        let shadow = Mutex<[Int: [UInt8]]>([:])
        for s in 1...40 {
            var rng = SplitMix64(seed: UInt64(s))
            let bytes = rng.bytes(cs)
            try bytes.withStoreBytes { (p) throws(StoreError) in try source.write(id(s), offset: 0, from: p) }
            try source.setLabel(id(s), ChunkLabel(volume: VolumeID(1), index: UInt64(s), epoch: 0))
            shadow.withLock { $0[s] = bytes }
        }
        let layer = ReplaceLayer(source: source, sourceRaw: a, target: target, targetRaw: b)
        layer.begin(end: 40, cursor: 0)
        let copier = Mutex(0)
        Threads.run(5) { t in
            if t == 0 {
                var batch: Set<ChunkID> = []
                let pending = (try? layer.pending()) ?? []
                for c in pending {
                    _ = try? layer.copy(c)
                    batch.insert(c)
                    if batch.count == 8 {
                        _ = try? layer.persist(batch)
                        batch = []
                    }
                }
                _ = try? layer.persist(batch)
                _ = try? layer.seal()
                copier.withLock { $0 = pending.count }
                return
            }
            var rng = SplitMix64(seed: UInt64(100 + t))
            for i in 0..<150 {
                // Writer t owns the serials ≡ t (mod 4), so the shadow's order per chunk is the writer's.
                let s = 4 * Int(rng.next() % 15) + t
                let off = Int(rng.next() % UInt64(cs / 4096)) * 4096
                let data = [UInt8](repeating: UInt8(truncatingIfNeeded: i + t), count: 4096)
                do {
                    try data.withStoreBytes { (p) throws(StoreError) in try layer.write(id(s), offset: off, from: p) }
                } catch {
                    Issue.record("write \(s) failed: \(error)")
                    return
                }
                shadow.withLock { sh in
                    var chunk = sh[s] ?? [UInt8](repeating: 0, count: cs)
                    chunk.replaceSubrange(off..<off + 4096, with: data)
                    sh[s] = chunk
                }
            }
        }
        #expect(copier.withLock { $0 } == 40)
        #expect(layer.copied == 40 && layer.persisted == 40)
        let want = shadow.withLock { $0 }
        for (s, bytes) in want {
            #expect(try target.readAll(id(s)) == bytes, "target, serial \(s)")
            #expect(try source.readAll(id(s)) == bytes, "source, serial \(s)")
            #expect(try layer.readAll(id(s)) == bytes, "through the layer, serial \(s)")
            if s <= 40 {
                #expect(try target.label(of: id(s)) == ChunkLabel(volume: VolumeID(1), index: UInt64(s), epoch: 0))
            }
        }
        #expect(Set(try target.allChunks()) == Set(want.keys.map(id)))
    }

    @Test func beforeBeginEverythingIsTheSourcesAlone() throws {
        let a = MemoryStore(chunkSize: Self.cs)
        let b = MemoryStore(chunkSize: Self.cs)
        let layer = ReplaceLayer(source: a, sourceRaw: a, target: b, targetRaw: b)
        let c = ChunkID(unit: UnitID(1), serial: 7)
        try [UInt8](repeating: 3, count: 10).withStoreBytes { (p) throws(StoreError) in
            try layer.write(c, offset: 0, from: p)
        }
        #expect(try b.allChunks().isEmpty)
        #expect(try layer.readAll(c).prefix(10) == [UInt8](repeating: 3, count: 10)[...])
        // After begin (E = 7), a new serial goes to both; serial 7 waits for the copier.
        layer.begin(end: 7, cursor: 0)
        let fresh = ChunkID(unit: UnitID(1), serial: 8)
        try [UInt8](repeating: 4, count: 10).withStoreBytes { (p) throws(StoreError) in
            try layer.write(fresh, offset: 0, from: p)
        }
        #expect(try b.allChunks() == [fresh])
        #expect(try a.allChunks().sorted() == [c, fresh])
        #expect(try layer.copy(c) > 0)
        #expect(try layer.persist([c]) == 7)
        #expect(try b.allChunks().sorted() == [c, fresh])
    }
}
