// Repairing a block that fails its checksum: a write that covers it works, also when a snapshot shares
// its chunk (copy-on-write copies the good blocks and carries the other bad ones as unreadable; the
// snapshot keeps the old chunk, bad block and all); a write that touches it without covering it fails.

import TesseraCatalog
import TesseraCore
import TesseraTestSupport
import Testing

@testable import TesseraEngine

@Suite("Repair of bad blocks")
struct RepairTests {
    static let cs = 64 * 1024
    static let bs = 4096

    /// A volume over a checksum layer over memory (piecewise, or whole-chunk like an object store).
    func wired(whole: Bool) throws -> (HandWiredVolume, MemoryStore) {
        let memory = MemoryStore(chunkSize: ChecksumLayer.innerChunkSize(for: Self.cs), wholeChunks: whole)
        return (try HandWiredVolume(store: ChecksumLayer(over: memory), size: UInt64(4 * Self.cs)), memory)
    }

    /// Flips a byte of chunk `index`'s block `block` on the memory store, behind the checksum layer.
    func damage(_ w: HandWiredVolume, _ memory: MemoryStore, index: UInt64, block: Int) throws {
        let chunk = w.volume.mapEntries.first { $0.index == index }!.chunk
        let at = block * Self.bs + 100
        var b: [UInt8] = [0]
        try b.withMutableStoreBytes { (p) throws(StoreError) in try memory.read(chunk, offset: at, into: p) }
        b[0] ^= 0x5a
        try b.withStoreBytes { (p) throws(StoreError) in try memory.write(chunk, offset: at, from: p) }
    }

    /// Takes a snapshot as the engine does (flush, hold the epoch, move on); returns its epoch.
    func snapshot(_ v: Volume) throws -> UInt64 {
        try v.flush()
        let e = v.epoch
        v.holdAndAdvance(e)
        return e
    }

    func read(_ v: Volume, at offset: Int, count: Int, epoch: UInt64? = nil) throws(StoreError) -> [UInt8] {
        var out = [UInt8](repeating: 0xEE, count: count)
        _ = try out.withMutableStoreBytes { (p) throws(StoreError) in
            try v.read(at: UInt64(offset), into: p, epoch: epoch, viewSize: epoch == nil ? nil : v.size)
        }
        return out
    }

    func expectCorrupt(_ what: Comment, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("\(what): no error", sourceLocation: sourceLocation)
        } catch StoreError.corrupt {
        } catch {
            Issue.record("\(what): \(error), expected corrupt", sourceLocation: sourceLocation)
        }
    }

    @Test(arguments: [false, true])
    func aWriteCoveringABadBlockSharedWithASnapshotWorks(whole: Bool) throws {
        let (w, memory) = try wired(whole: whole)
        let data = [UInt8].pattern(2 * Self.cs, seed: 1)
        try w.volume.write(data, at: 0)
        let snap = try snapshot(w.volume)
        try w.volume.flush()
        try damage(w, memory, index: 0, block: 1)
        try damage(w, memory, index: 0, block: 3)
        let v = w.volume
        expectCorrupt("reading the bad block") { _ = try read(v, at: Self.bs, count: Self.bs) }

        // A partial write into a bad block fails, and changes nothing.
        let before = v.mapEntries.map(\.chunk)
        expectCorrupt("a write touching the bad block without covering it") {
            try v.write([1, 2, 3], at: UInt64(Self.bs + 10))
        }
        #expect(v.mapEntries.map(\.chunk) == before)

        // Exactly the bad block: the copy-on-write takes the good blocks, carries block 3 as bad.
        let fresh = [UInt8].pattern(Self.bs, seed: 2)
        try v.write(fresh, at: UInt64(Self.bs))
        #expect(v.mapEntries.map(\.chunk) != before, "the shared chunk was copied, not written in place")
        expectBytes(try read(v, at: 0, count: Self.bs), Array(data[0..<Self.bs]), "block 0 copied")
        expectBytes(try read(v, at: Self.bs, count: Self.bs), fresh, "block 1 rewritten")
        expectBytes(
            try read(v, at: 2 * Self.bs, count: Self.bs), Array(data[2 * Self.bs..<3 * Self.bs]), "block 2 copied")
        expectCorrupt("block 3 stays bad in the new version") { _ = try read(v, at: 3 * Self.bs, count: Self.bs) }
        expectBytes(
            try read(v, at: 4 * Self.bs, count: 2 * Self.cs - 4 * Self.bs), Array(data[(4 * Self.bs)...]), "the rest")

        // The snapshot keeps its own copy, both bad blocks still bad.
        expectCorrupt("the snapshot's block 1") { _ = try read(v, at: Self.bs, count: Self.bs, epoch: snap) }
        expectCorrupt("the snapshot's block 3") { _ = try read(v, at: 3 * Self.bs, count: 10, epoch: snap) }
        expectBytes(try read(v, at: 0, count: Self.bs, epoch: snap), Array(data[0..<Self.bs]), "the snapshot's block 0")
        expectBytes(
            try read(v, at: Self.cs, count: Self.cs, epoch: snap), Array(data[Self.cs...]), "the snapshot's chunk 1")

        // Block 3 rewritten too: the live image reads entirely; durable across a reload.
        let fresh3 = [UInt8].pattern(Self.bs, seed: 3)
        try v.write(fresh3, at: UInt64(3 * Self.bs))
        try v.flush()
        try w.reload(store: ChecksumLayer(over: memory))
        var expected = data
        expected.replaceSubrange(Self.bs..<2 * Self.bs, with: fresh)
        expected.replaceSubrange(3 * Self.bs..<4 * Self.bs, with: fresh3)
        expectBytes(try read(w.volume, at: 0, count: 2 * Self.cs), expected, "live image after both rewrites")
    }

    @Test(arguments: [false, true])
    func aWriteCoveringABadBlockOfAnUnsharedChunkWorks(whole: Bool) throws {
        let (w, memory) = try wired(whole: whole)
        let data = [UInt8].pattern(Self.cs, seed: 4)
        try w.volume.write(data, at: 0)
        try w.volume.flush()
        try damage(w, memory, index: 0, block: 2)
        let v = w.volume
        expectCorrupt("a partial write into the bad block") { try v.write([9], at: UInt64(2 * Self.bs + 1)) }
        expectBytes(try read(v, at: 0, count: 2 * Self.bs), Array(data[0..<2 * Self.bs]), "the good blocks read")
        try v.write(.zeros(Self.bs), at: UInt64(2 * Self.bs))  // zeros through the write path
        var expected = data
        expected.replaceSubrange(2 * Self.bs..<3 * Self.bs, with: [UInt8].zeros(Self.bs))
        expectBytes(try read(v, at: 0, count: Self.cs), expected, "after rewriting the bad block with zeros")
    }

    /// A discard that covers the bad block of a shared chunk repairs it in the live image.
    @Test func aDiscardCoveringABadSharedBlockWorks() throws {
        let (w, memory) = try wired(whole: false)
        let data = [UInt8].pattern(Self.cs, seed: 5)
        try w.volume.write(data, at: 0)
        let snap = try snapshot(w.volume)
        try damage(w, memory, index: 0, block: 0)
        let v = w.volume
        try v.discard(at: 0, length: UInt64(Self.bs))
        var expected = data
        expected.replaceSubrange(0..<Self.bs, with: [UInt8].zeros(Self.bs))
        expectBytes(try read(v, at: 0, count: Self.cs), expected, "live image after the discard")
        expectCorrupt("the snapshot keeps the loss") { _ = try read(v, at: 0, count: 1, epoch: snap) }
    }
}
