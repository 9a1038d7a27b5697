// PoolLayer — routes physical chunks to the stores of one pool and hands out new chunk IDs.
//
// Address space: physical chunks. A ChunkID carries its store in its top 16 bits, so routing a read or
// write is one dictionary lookup; no table per chunk.
//
// State: the member stores and, per store, the next serial to hand out. Serials only grow; the
// catalog records the high-water mark with every map commit (`nextSerials`), and on open the engine
// raises each counter past every chunk found on the store, so an ID is never handed out twice.
//
// Placement: new chunks go round-robin over the members (striping sequential writes), skipping a
// member that reports no space; with no member left the write fails with `.noSpace`.
// Invariants: every data-path method is written out here (no default pass-through), so a method added
// to ChunkStore cannot silently bypass routing.
// Lock order: members (short, never across I/O).
import Synchronization

public final class PoolLayer: ChunkStore {
    public let chunkSize: Int

    private struct Member {
        let store: any ChunkStore
        var nextSerial: UInt64
        var full = false
    }
    private struct State {
        var members: [StoreID: Member] = [:]
        var order: [StoreID] = []
        var cursor = 0
    }
    private let state = Mutex(State())

    public init(chunkSize: Int) {
        self.chunkSize = chunkSize
    }

    /// Adds a store; `nextSerial` is the first serial it may hand out.
    public func add(_ id: StoreID, store: any ChunkStore, nextSerial: UInt64) {
        precondition(store.chunkSize == chunkSize, "a pool's stores share its chunk size")
        state.withLock { s in
            s.members[id] = Member(store: store, nextSerial: max(1, nextSerial))
            s.order.append(id)
        }
    }

    public var storeIDs: [StoreID] { state.withLock { $0.order } }

    public func store(_ id: StoreID) -> (any ChunkStore)? { state.withLock { $0.members[id]?.store } }

    /// The member stores in order (garbage collection and fsck walk each store's own chunks, so a
    /// stray file that routes nowhere is still found and removed).
    public var members: [(id: StoreID, store: any ChunkStore)] {
        state.withLock { s in s.order.compactMap { id in s.members[id].map { (id, $0.store) } } }
    }

    /// The serial each store will hand out next; what the catalog must record before maps that use
    /// them commit.
    public func nextSerials() -> [StoreID: UInt64] {
        state.withLock { s in s.members.mapValues { $0.nextSerial } }
    }

    /// Raises a store's counter to at least `serial`.
    public func raiseSerial(_ id: StoreID, to serial: UInt64) {
        state.withLock { s in
            if let m = s.members[id], m.nextSerial < serial { s.members[id]!.nextSerial = serial }
        }
    }

    /// Picks a store for a new chunk and reserves an ID on it. The chunk exists once written.
    public func allocate() throws(StoreError) -> ChunkID {
        let id: ChunkID? = state.withLock { s in
            for _ in 0..<s.order.count {
                let sid = s.order[s.cursor % s.order.count]
                s.cursor &+= 1
                guard let m = s.members[sid], !m.full else { continue }
                s.members[sid]!.nextSerial += 1
                return ChunkID(store: sid, serial: m.nextSerial)
            }
            return nil
        }
        guard let id else { throw .noSpace }
        return id
    }

    /// Marks a store full (after it answered ENOSPC) or usable again.
    public func setFull(_ id: StoreID, _ full: Bool) {
        state.withLock { s in if s.members[id] != nil { s.members[id]!.full = full } }
    }

    private func route(_ chunk: ChunkID) throws(StoreError) -> any ChunkStore {
        guard let s = state.withLock({ $0.members[chunk.store]?.store }) else { throw .missing(chunk: chunk) }
        return s
    }

    public func read(_ chunk: ChunkID, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) {
        try route(chunk).read(chunk, offset: offset, into: buffer)
    }

    public func write(_ chunk: ChunkID, offset: Int, from buffer: UnsafeRawBufferPointer) throws(StoreError) {
        try route(chunk).write(chunk, offset: offset, from: buffer)
    }

    public func replace(_ chunk: ChunkID, with buffer: UnsafeRawBufferPointer) throws(StoreError) {
        try route(chunk).replace(chunk, with: buffer)
    }

    public func readAll(_ chunk: ChunkID) throws(StoreError) -> [UInt8] {
        try route(chunk).readAll(chunk)
    }

    public func prefersWholeChunks(_ chunk: ChunkID) -> Bool {
        (try? route(chunk).prefersWholeChunks(chunk)) ?? false
    }

    public func zero(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        try route(chunk).zero(chunk, offset: offset, length: length)
    }

    public func delete(_ chunk: ChunkID) throws(StoreError) {
        try route(chunk).delete(chunk)
        setFull(chunk.store, false)
    }

    public func setLabel(_ chunk: ChunkID, _ label: ChunkLabel) throws(StoreError) {
        try route(chunk).setLabel(chunk, label)
    }

    public func label(of chunk: ChunkID) throws(StoreError) -> ChunkLabel? {
        try route(chunk).label(of: chunk)
    }

    public func check(_ chunk: ChunkID) throws(StoreError) -> ChunkCheck {
        try route(chunk).check(chunk)
    }

    public func flush() throws(StoreError) {
        let stores = state.withLock { s in s.order.compactMap { s.members[$0]?.store } }
        var failure: StoreError?
        for s in stores {
            do { try s.flush() } catch { failure = error }
        }
        if let failure { throw failure }
    }

    public func flush(chunks: Set<ChunkID>) throws(StoreError) {
        var failure: StoreError?
        for (id, group) in Dictionary(grouping: chunks, by: \.store) {
            guard let store = state.withLock({ $0.members[id]?.store }) else { continue }
            do { try store.flush(chunks: Set(group)) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    public func usage() throws(StoreError) -> StoreUsage {
        let stores = state.withLock { s in s.order.compactMap { s.members[$0]?.store } }
        var total = StoreUsage(totalBytes: 0, freeBytes: 0, usedBytes: 0)
        for s in stores {
            let u = try s.usage()
            total.totalBytes += u.totalBytes
            total.freeBytes += u.freeBytes
            total.usedBytes += u.usedBytes
        }
        return total
    }

    public func allChunks() throws(StoreError) -> [ChunkID] {
        let stores = state.withLock { s in s.order.compactMap { s.members[$0]?.store } }
        var out: [ChunkID] = []
        for s in stores { out += try s.allChunks() }
        return out
    }
}
