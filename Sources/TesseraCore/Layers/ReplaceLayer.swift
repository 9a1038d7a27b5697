// ReplaceLayer — serves one placement unit from two stores while a replace job copies every chunk
// from the old store (source) to the new one (target), then lets the engine drop the source.
//
// Address space: physical chunks of one unit (under the pool layer, over each leg's checksum layer).
// Chunk IDs, map entries and share counts never change: only the store under the unit does.
//
// State, by a chunk's serial s (P ≤ C ≤ E):
//   E  the last serial handed out before the job started (recorded with the job);
//   C  copied: every chunk with s ≤ C that existed was copied to the target (the copier goes up in
//      serial order, one thread);
//   P  persisted: copies up to P are flushed on the target and the job's cursor in the catalog says P.
// Routing:
//   write, zero, markUnreadable, setLabel, delete: s ≤ C or s > E → source, then target; else source
//     only (the copier brings it over later). So the source always holds every chunk and every write:
//     cancelling, or a crash before the catalog names the target primary, loses nothing.
//   read, readAll, label, check: s ≤ P or s > E → target; else source. After a crash the catalog's
//     cursor (P) decides, so a chunk is read from the leg that was read before it, never a leg that
//     may have missed an in-flight write.
//   flush: both legs. usage: the leg with less room (new chunks go to both).
// A copy (copier) takes the chunk's stripe exclusively: read the source's raw chunk (below its checksum
// layer, so data, checksum table and unreadable marks travel as they are), replace it on the target,
// copy its label. A mutation takes the same stripe exclusively, since it decides its route from C,
// which a copy moves under that stripe (the volume engine already serialises writes to one chunk, so
// this costs little). Reads take no lock: the leg they read holds every write made through this layer.
// Finishing: `seal()` takes every stripe, lists the source once more and copies what a write created
// after the copier listed it (a serial ≤ E allocated before the job, written after), then C = E.
// Invariants: every data-path method is written out (no pass-through by default). A leg's errors go
// to the caller as they are (the pool layer marks the unit unreachable on an outage).
// Lock order: stripe → (nothing; the cursors are atomics).
import Synchronization

public final class ReplaceLayer: ChunkStore {
    public let chunkSize: Int
    public let source: any ChunkStore
    public let target: any ChunkStore
    /// The legs below their checksum layers: what the copier moves, byte for byte.
    private let sourceRaw: any ChunkStore
    private let targetRaw: any ChunkStore
    private let endSerial = Atomic<UInt64>(UInt64.max)
    private let copiedUpTo = Atomic<UInt64>(0)
    private let persistedUpTo = Atomic<UInt64>(0)
    private let stripes = StripedLocks()

    /// `source`/`target`: each leg's stack top; `sourceRaw`/`targetRaw`: the store under each leg's
    /// checksum layer (same inner chunk size). Until `begin`, every chunk is the source's alone.
    public init(source: any ChunkStore, sourceRaw: any ChunkStore, target: any ChunkStore, targetRaw: any ChunkStore) {
        precondition(source.chunkSize == target.chunkSize && sourceRaw.chunkSize == targetRaw.chunkSize)
        chunkSize = source.chunkSize
        self.source = source
        self.target = target
        self.sourceRaw = sourceRaw
        self.targetRaw = targetRaw
    }

    /// Sets E and the cursor (P = C = `cursor`, as the catalog recorded it), with every mutation held
    /// off: a new chunk whose serial is above E, written once this returns, goes to both legs.
    public func begin(end: UInt64, cursor: UInt64) {
        stripes.lockAll()
        defer { stripes.unlockAll() }
        endSerial.store(end, ordering: .releasing)
        copiedUpTo.store(min(cursor, end), ordering: .releasing)
        persistedUpTo.store(min(cursor, end), ordering: .releasing)
    }

    /// E: the last serial handed out before the job started (UInt64.max before `begin`).
    public var end: UInt64 { endSerial.load(ordering: .acquiring) }
    public var copied: UInt64 { copiedUpTo.load(ordering: .acquiring) }
    public var persisted: UInt64 { persistedUpTo.load(ordering: .acquiring) }

    private func readsTarget(_ c: ChunkID) -> Bool { c.serial > end || c.serial <= persisted }
    private func writesTarget(_ c: ChunkID) -> Bool { c.serial > end || c.serial <= copied }
    private func reader(_ c: ChunkID) -> any ChunkStore { readsTarget(c) ? target : source }

    /// Runs a mutation on the source, then on the target when `c` is there, under `c`'s stripe.
    private func mutate(_ c: ChunkID, _ body: (any ChunkStore) throws(StoreError) -> Void) throws(StoreError) {
        stripes.lockExclusive(c.rawValue)
        defer { stripes.unlock(c.rawValue) }
        try body(source)
        if writesTarget(c) { try body(target) }
    }

    // MARK: Copier (one thread: the job runner)

    /// The source's chunks the copier has still to copy (serials C+1 … E), in order.
    public func pending() throws(StoreError) -> [ChunkID] {
        let (c, e) = (copied, end)
        return try sourceRaw.allChunks().filter { $0.serial > c && $0.serial <= e }.sorted()
    }

    /// The target's own chunks, unlayered (to clear it when the job is cancelled).
    public var targetStore: any ChunkStore { targetRaw }

    /// Copies chunk `c` (serial in C+1 … E, ascending across calls) to the target and moves C to its
    /// serial. Returns the raw bytes copied (0 when the source no longer has it).
    public func copy(_ c: ChunkID) throws(StoreError) -> Int {
        stripes.lockExclusive(c.rawValue)
        defer { stripes.unlock(c.rawValue) }
        let n = try copyLocked(c)
        copiedUpTo.store(max(copied, min(c.serial, end)), ordering: .releasing)
        return n
    }

    private func copyLocked(_ c: ChunkID) throws(StoreError) -> Int {
        let bytes: [UInt8]
        do { bytes = try sourceRaw.readAll(c) } catch .missing { return 0 }
        try bytes.withStoreBytes { (b) throws(StoreError) in try targetRaw.replace(c, with: b) }
        if let label = try sourceRaw.label(of: c) { try targetRaw.setLabel(c, label) }
        return bytes.count
    }

    /// The copies so far are durable: flushes them on the target and moves P to C. The caller records
    /// the returned cursor in the catalog afterwards (P in memory may run ahead of the catalog's: a
    /// crash then reads those chunks from the source, which holds every write too).
    public func persist(_ chunks: Set<ChunkID>) throws(StoreError) -> UInt64 {
        let upTo = copied
        try targetRaw.flush(chunks: chunks)
        persistedUpTo.store(upTo, ordering: .releasing)
        return upTo
    }

    /// The last step of the copy: with every write held off, copies the chunks a write created after
    /// the copier listed the source (serials above C, at most E), then C = E. Returns them.
    public func seal() throws(StoreError) -> [ChunkID] {
        stripes.lockAll()
        defer { stripes.unlockAll() }
        let late = try sourceRaw.allChunks().filter { $0.serial > copied && $0.serial <= end }.sorted()
        for c in late { _ = try copyLocked(c) }
        try targetRaw.flush(chunks: Set(late))
        copiedUpTo.store(end, ordering: .releasing)
        return late
    }

    // MARK: ChunkStore

    public func read(_ chunk: ChunkID, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) {
        try reader(chunk).read(chunk, offset: offset, into: buffer)
    }

    public func write(_ chunk: ChunkID, offset: Int, from buffer: UnsafeRawBufferPointer) throws(StoreError) {
        try mutate(chunk) { (s) throws(StoreError) in try s.write(chunk, offset: offset, from: buffer) }
    }

    public func zero(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        try mutate(chunk) { (s) throws(StoreError) in try s.zero(chunk, offset: offset, length: length) }
    }

    public func replace(_ chunk: ChunkID, with buffer: UnsafeRawBufferPointer) throws(StoreError) {
        try mutate(chunk) { (s) throws(StoreError) in try s.replace(chunk, with: buffer) }
    }

    public func readAll(_ chunk: ChunkID) throws(StoreError) -> [UInt8] { try reader(chunk).readAll(chunk) }

    public func prefersWholeChunks(_ chunk: ChunkID) -> Bool {
        source.prefersWholeChunks(chunk) || target.prefersWholeChunks(chunk)
    }

    public func markUnreadable(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        try mutate(chunk) { (s) throws(StoreError) in try s.markUnreadable(chunk, offset: offset, length: length) }
    }

    public func delete(_ chunk: ChunkID) throws(StoreError) {
        // On both legs whatever the cursors: a chunk the copier is about to list must not come back.
        stripes.lockExclusive(chunk.rawValue)
        defer { stripes.unlock(chunk.rawValue) }
        try source.delete(chunk)
        try target.delete(chunk)
    }

    public func flush() throws(StoreError) {
        try source.flush()
        try target.flush()
    }

    public func flush(chunks: Set<ChunkID>) throws(StoreError) {
        try source.flush(chunks: chunks)
        let there = chunks.filter(writesTarget)
        if !there.isEmpty { try target.flush(chunks: there) }
    }

    public func usage() throws(StoreError) -> StoreUsage {
        let s = try source.usage()
        let t = try target.usage()
        return s.freeBytes <= t.freeBytes ? s : t
    }

    /// Every chunk of either leg, once.
    public func allChunks() throws(StoreError) -> [ChunkID] {
        Array(Set(try source.allChunks()).union(try target.allChunks())).sorted()
    }

    public func setLabel(_ chunk: ChunkID, _ label: ChunkLabel) throws(StoreError) {
        try mutate(chunk) { (s) throws(StoreError) in try s.setLabel(chunk, label) }
    }

    public func label(of chunk: ChunkID) throws(StoreError) -> ChunkLabel? { try reader(chunk).label(of: chunk) }

    public func check(_ chunk: ChunkID) throws(StoreError) -> ChunkCheck { try reader(chunk).check(chunk) }
}
