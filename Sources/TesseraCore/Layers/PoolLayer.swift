// PoolLayer — routes physical chunks to the stores of one pool and hands out new chunk IDs.
//
// Address space: physical chunks. A ChunkID carries its store in its top 16 bits, so routing a read or
// write is one dictionary lookup; no table per chunk.
//
// State: the member stores and, per store, the next serial to hand out. Serials only grow; the
// catalog records the high-water mark with every map commit (`nextSerials`), and on open the engine
// raises each counter past every chunk found on the store, so an ID is never handed out twice.
//
// Placement: smooth weighted round-robin over the members, weighted by each one's free space, so
// consecutive chunks (a sequential write) land on different stores and a store with twice the room
// gets twice the chunks. Free space is an estimate: read from `usage()` when a store joins and on
// `refreshCapacity()` (the engine calls it periodically), lowered by one chunk per allocation and
// raised by one per delete. A member that answered `.noSpace` is used only when no other has room; a
// member whose estimate is 0 is skipped. With no room left anywhere, allocation refreshes the
// estimates (at most once a second) and then fails with `.noSpace`, which the client sees as ENOSPC.
// Invariants: every data-path method is written out here (no default pass-through), so a method added
// to ChunkStore cannot silently bypass routing.
// Lock order: members (short, never across I/O).

public final class PoolLayer: ChunkStore {
    public let chunkSize: Int

    private struct Member {
        let store: any ChunkStore
        var nextSerial: UInt64
        var full = false
        /// Estimated free space, in chunks.
        var freeChunks: UInt64 = 0
        /// Smooth weighted round-robin accumulator.
        var current: Int64 = 0
    }
    private struct State {
        var members: [StoreID: Member] = [:]
        var order: [StoreID] = []
        var lastRefresh: ContinuousClock.Instant?
    }
    private let state = Lock(State())

    public init(chunkSize: Int) {
        self.chunkSize = chunkSize
    }

    /// Adds a store; `nextSerial` is the first serial it may hand out.
    public func add(_ id: StoreID, store: any ChunkStore, nextSerial: UInt64) {
        precondition(store.chunkSize == chunkSize, "a pool's stores share its chunk size")
        let free = Self.freeChunks(of: store, chunkSize: chunkSize) ?? 0
        state.withLock { s in
            s.members[id] = Member(store: store, nextSerial: max(1, nextSerial), freeChunks: free)
            s.order.append(id)
        }
    }

    private static func freeChunks(of store: any ChunkStore, chunkSize: Int) -> UInt64? {
        do { return try store.usage().freeBytes / UInt64(chunkSize) } catch {
            Log.error("cannot read the free space of a store: \(error)")
            return nil
        }
    }

    /// Re-reads every member's free space (placement weights) and clears "full" where room came back.
    public func refreshCapacity() {
        let stores = state.withLock { s in s.order.compactMap { id in s.members[id].map { (id, $0.store) } } }
        var fresh: [StoreID: UInt64] = [:]
        for (id, store) in stores { fresh[id] = Self.freeChunks(of: store, chunkSize: chunkSize) }
        state.withLock { s in
            s.lastRefresh = .now
            for (id, free) in fresh where s.members[id] != nil {
                s.members[id]!.freeChunks = free
                if free > 0 { s.members[id]!.full = false }
            }
        }
    }

    /// Estimated free chunks per store (what placement weighs).
    public func placementWeights() -> [StoreID: UInt64] {
        state.withLock { s in s.members.mapValues { $0.full ? 0 : $0.freeChunks } }
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
        if let id = state.withLock({ Self.pick(&$0) }) { return id }
        // Every member looks full: space may have come back (deletes elsewhere on its filesystem).
        let stale = state.withLock { s in s.lastRefresh.map { ContinuousClock.now - $0 > .seconds(1) } ?? true }
        if stale {
            refreshCapacity()
            if let id = state.withLock({ Self.pick(&$0) }) { return id }
        }
        throw .noSpace
    }

    /// Smooth weighted round-robin (each candidate gains its weight, the richest is picked and pays
    /// the total), then one chunk less free on the winner.
    private static func pick(_ s: inout State) -> ChunkID? {
        var total: Int64 = 0
        var best: StoreID?
        // Weights relative to the roomiest member, in 1…64: stores with about the same room weigh the
        // same, so they alternate strictly instead of drifting with every chunk placed.
        // A member that answered "no space" is a last resort: its estimate may still show room (a
        // transient refusal, or room freed since), and only the estimates decide that the pool is full.
        let roomy = s.order.filter { s.members[$0]!.freeChunks > 0 }
        let preferred = roomy.filter { !s.members[$0]!.full }
        let candidates = preferred.isEmpty ? roomy : preferred
        let most = candidates.map { s.members[$0]!.freeChunks }.max() ?? 0
        for sid in candidates {
            let m = s.members[sid]!
            let weight = Int64(max(1, (Double(m.freeChunks) * 64 / Double(most)).rounded()))
            total += weight
            s.members[sid]!.current += weight
            if best == nil || s.members[sid]!.current > s.members[best!]!.current { best = sid }
        }
        guard let sid = best else { return nil }
        s.members[sid]!.current -= total
        s.members[sid]!.freeChunks -= 1
        s.members[sid]!.nextSerial += 1
        return ChunkID(store: sid, serial: s.members[sid]!.nextSerial - 1)
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
        do throws(StoreError) {
            try route(chunk).write(chunk, offset: offset, from: buffer)
        } catch .noSpace {
            setFull(chunk.store, true)
            throw .noSpace
        }
    }

    public func replace(_ chunk: ChunkID, with buffer: UnsafeRawBufferPointer) throws(StoreError) {
        do throws(StoreError) {
            try route(chunk).replace(chunk, with: buffer)
        } catch .noSpace {
            setFull(chunk.store, true)
            throw .noSpace
        }
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

    public func markUnreadable(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        try route(chunk).markUnreadable(chunk, offset: offset, length: length)
    }

    public func delete(_ chunk: ChunkID) throws(StoreError) {
        try route(chunk).delete(chunk)
        state.withLock { s in
            if s.members[chunk.store] != nil {
                s.members[chunk.store]!.full = false
                s.members[chunk.store]!.freeChunks += 1
            }
        }
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
