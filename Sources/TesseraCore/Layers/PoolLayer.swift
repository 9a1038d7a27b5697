// PoolLayer — routes chunks to the placement units of one pool and hands out new chunk IDs.
//
// Address space: chunks. A ChunkID carries its placement unit in its top 16 bits, so routing a read or
// write is one dictionary lookup; no table per chunk. A unit is served by a ChunkStore (its primary
// store's stack, or a ReplaceLayer while a store is replaced; `serve` swaps it); which physical store
// that is never shows in a chunk ID, so stores can be swapped under a unit without touching any map.
//
// State: the member units and, per unit, the next serial to hand out. Serials only grow; the catalog
// records the high-water mark with every map commit (`nextSerials`), and on open the engine raises
// each counter past every chunk found on the unit's stores, so an ID is never handed out twice.
//
// Placement: smooth weighted round-robin over the units, weighted by each one's free space, so
// consecutive chunks (a sequential write) land on different units and a unit with twice the room
// gets twice the chunks. Free space is an estimate: read from `usage()` when a unit joins and on
// `refreshCapacity()` / `updateCapacity` (the engine calls them periodically), lowered by one chunk per
// allocation and raised by one per delete. A unit that answered `.noSpace` is used only when no other
// has room; a unit whose estimate is 0 is skipped. With no room left anywhere, allocation refreshes
// the estimates (at most once a second) and then fails with `.noSpace`, which the client sees as ENOSPC.
// Shared filesystems: units whose usage names the same filesystem (two directory stores on one
// disk) share its free space: together they weigh what the filesystem has free (each in proportion
// to its own estimate, which a quota may cap), so the disk is not counted twice.
// Health: each unit has a StoreHealth. A data-path call that fails with an outage error (`.io`,
// `.readOnly`) marks the unit unreachable at once; an unreachable unit takes no new chunks while a
// reachable unit has room (it is the last resort, so a pool whose every unit is down still fails
// with the stores' own error, not ENOSPC). Only the engine's probe returns a unit to service.
// Invariants: every data-path method is written out here (no default pass-through), so a method added
// to ChunkStore cannot silently bypass routing.
// Lock order: members (short, never across I/O). Health is read with an atomic load, outside it.
import Synchronization

public final class PoolLayer: ChunkStore {
    public let chunkSize: Int

    private struct Member {
        let store: any ChunkStore
        let health: StoreHealth
        var nextSerial: UInt64
        var full = false
        /// Leaving the pool: takes no new chunk at all (its chunks stay readable).
        var retired = false
        /// Estimated free space, in chunks (the filesystem's free space capped by the store's quota).
        var freeChunks: UInt64 = 0
        /// The filesystem this store shares with others, and its estimated free chunks.
        var filesystem: UInt64?
        var filesystemFree: UInt64 = 0
        /// Smooth weighted round-robin accumulator.
        var current: Int64 = 0
    }
    private struct State {
        var members: [UnitID: Member] = [:]
        var order: [UnitID] = []
        var lastRefresh: ContinuousClock.Instant?
    }
    private let state = Lock(State())

    public init(chunkSize: Int) {
        self.chunkSize = chunkSize
    }

    /// Adds a unit served by `store`; `nextSerial` is the first serial it may hand out. `health` is its health
    /// record (shared with the engine's checker); a new one when nil.
    public func add(_ id: UnitID, store: any ChunkStore, nextSerial: UInt64, health: StoreHealth? = nil) {
        precondition(store.chunkSize == chunkSize, "a pool's stores share its chunk size")
        let usage = Self.usage(of: store)
        state.withLock { s in
            s.members[id] = Member(store: store, health: health ?? StoreHealth(), nextSerial: max(1, nextSerial))
            s.order.append(id)
            if let usage { Self.apply(usage, to: id, &s, chunkSize: chunkSize) }
        }
    }

    private static func usage(of store: any ChunkStore) -> StoreUsage? {
        do { return try store.usage() } catch {
            Log.error("cannot read the free space of a store: \(error)")
            return nil
        }
    }

    private static func apply(_ u: StoreUsage, to id: UnitID, _ s: inout State, chunkSize: Int) {
        guard s.members[id] != nil else { return }
        let free = u.freeBytes / UInt64(chunkSize)
        s.members[id]!.freeChunks = free
        s.members[id]!.filesystem = u.filesystem?.id
        s.members[id]!.filesystemFree = (u.filesystem?.freeBytes ?? 0) / UInt64(chunkSize)
        if free > 0 { s.members[id]!.full = false }
    }

    /// Sets one member's figures (the engine's health checker read them); clears "full" where room came back.
    public func updateCapacity(_ id: UnitID, _ usage: StoreUsage) {
        state.withLock { s in Self.apply(usage, to: id, &s, chunkSize: chunkSize) }
    }

    /// Re-reads every reachable member's free space (placement weights) and clears "full" where room
    /// came back. An unreachable member is not asked (it might not answer); its estimate stays.
    public func refreshCapacity() {
        let stores = state.withLock { s in
            s.order.compactMap { id in s.members[id].flatMap { $0.health.isReachable ? (id, $0.store) : nil } }
        }
        var fresh: [UnitID: StoreUsage] = [:]
        for (id, store) in stores { fresh[id] = Self.usage(of: store) }
        state.withLock { s in
            s.lastRefresh = .now
            for (id, u) in fresh { Self.apply(u, to: id, &s, chunkSize: chunkSize) }
        }
    }

    /// Estimated free chunks per unit (0 when full).
    public func placementWeights() -> [UnitID: UInt64] {
        state.withLock { s in s.members.mapValues { $0.full ? 0 : $0.freeChunks } }
    }

    /// The share (0…1) of new chunks each unit takes now: what placement would do with the current
    /// estimates, health and shared filesystems. Stores that take none are absent.
    public func placementShares() -> [UnitID: Double] {
        state.withLock { s in
            let w = Self.weights(s)
            let total = Double(w.reduce(0) { $0 + $1.1 })
            guard total > 0 else { return [:] }
            return Dictionary(uniqueKeysWithValues: w.map { ($0.0, Double($0.1) / total) })
        }
    }

    public var unitIDs: [UnitID] { state.withLock { $0.order } }

    public func store(_ id: UnitID) -> (any ChunkStore)? { state.withLock { $0.members[id]?.store } }

    /// The health record of a member.
    public func health(_ id: UnitID) -> StoreHealth? { state.withLock { $0.members[id]?.health } }

    /// The units in order, with the store serving each (garbage collection and fsck walk each one's own chunks, so a
    /// stray file that routes nowhere is still found and removed).
    public var members: [(id: UnitID, store: any ChunkStore)] {
        state.withLock { s in s.order.compactMap { id in s.members[id].map { (id, $0.store) } } }
    }

    /// The serial each unit will hand out next; what the catalog must record before maps that use
    /// them commit.
    public func nextSerials() -> [UnitID: UInt64] {
        state.withLock { s in s.members.mapValues { $0.nextSerial } }
    }

    /// Raises a unit's counter to at least `serial`.
    public func raiseSerial(_ id: UnitID, to serial: UInt64) {
        state.withLock { s in
            if let m = s.members[id], m.nextSerial < serial { s.members[id]!.nextSerial = serial }
        }
    }

    /// Picks a unit for a new chunk and reserves an ID on it. The chunk exists once written.
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

    /// The members that may take the next chunk, with their weights in 1…64.
    /// Reachable members with room come first; among them, those that never answered "no space" (a
    /// member that did is a last resort: its estimate may still show room — a transient refusal, or room
    /// freed since — and only the estimates decide that the pool is full). Unreachable members are used
    /// only when no reachable one has room.
    private static func weights(_ s: State) -> [(UnitID, Int64)] {
        let roomy = s.order.filter { s.members[$0]!.freeChunks > 0 && !s.members[$0]!.retired }
        let reachable = roomy.filter { s.members[$0]!.health.isReachable }
        let pool = reachable.isEmpty ? roomy : reachable
        let preferred = pool.filter { !s.members[$0]!.full }
        let candidates = preferred.isEmpty ? pool : preferred
        // Members on one filesystem share what it has free, in proportion to their own estimates.
        var sum: [UInt64: UInt64] = [:]
        var fsFree: [UInt64: UInt64] = [:]
        for sid in candidates {
            guard let fs = s.members[sid]!.filesystem else { continue }
            sum[fs, default: 0] += s.members[sid]!.freeChunks
            fsFree[fs] = max(fsFree[fs] ?? 0, s.members[sid]!.filesystemFree)
        }
        let room = candidates.map { sid -> Double in
            let m = s.members[sid]!
            guard let fs = m.filesystem, let total = sum[fs], total > 0 else { return Double(m.freeChunks) }
            return Double(m.freeChunks) * Double(min(total, fsFree[fs] ?? total)) / Double(total)
        }
        // Relative to the roomiest member: stores with about the same room weigh the same, so they
        // alternate strictly instead of drifting with every chunk placed.
        let most = room.max() ?? 0
        guard most > 0 else { return [] }
        return zip(candidates, room).map { ($0, Int64(max(1, ($1 * 64 / most).rounded()))) }
    }

    /// Smooth weighted round-robin (each candidate gains its weight, the richest is picked and pays
    /// the total), then one chunk less free on the winner (and on its filesystem).
    private static func pick(_ s: inout State) -> ChunkID? {
        var total: Int64 = 0
        var best: UnitID?
        for (sid, weight) in weights(s) {
            total += weight
            s.members[sid]!.current += weight
            if best == nil || s.members[sid]!.current > s.members[best!]!.current { best = sid }
        }
        guard let sid = best else { return nil }
        s.members[sid]!.current -= total
        s.members[sid]!.freeChunks -= 1
        s.members[sid]!.nextSerial += 1
        if let fs = s.members[sid]!.filesystem {
            for other in s.order where s.members[other]!.filesystem == fs {
                let left = s.members[other]!.filesystemFree
                s.members[other]!.filesystemFree = left > 0 ? left - 1 : 0
                if other != sid { s.members[other]!.freeChunks = min(s.members[other]!.freeChunks, left) }
            }
        }
        return ChunkID(unit: sid, serial: s.members[sid]!.nextSerial - 1)
    }

    /// Takes a unit out of placement (no new chunk goes to it, whatever its room) or puts it back.
    public func setRetired(_ id: UnitID, _ retired: Bool) {
        state.withLock { s in if s.members[id] != nil { s.members[id]!.retired = retired } }
    }

    /// Serves a unit from another store (a replace job starts or ends), keeping its serials and
    /// placement figures. A request already routed finishes on the store it was routed to.
    public func serve(_ id: UnitID, with store: any ChunkStore, health: StoreHealth) {
        precondition(store.chunkSize == chunkSize, "a pool's stores share its chunk size")
        state.withLock { s in
            guard let m = s.members[id] else { return }
            var n = Member(store: store, health: health, nextSerial: m.nextSerial)
            (n.full, n.retired, n.freeChunks) = (m.full, m.retired, m.freeChunks)
            (n.filesystem, n.filesystemFree, n.current) = (m.filesystem, m.filesystemFree, m.current)
            s.members[id] = n
        }
    }

    /// Removes a unit: its chunks route nowhere from now on (the engine removes only an empty one).
    public func remove(_ id: UnitID) {
        state.withLock { s in
            s.members[id] = nil
            s.order.removeAll { $0 == id }
        }
    }

    /// Marks a unit full (after it answered ENOSPC) or usable again.
    public func setFull(_ id: UnitID, _ full: Bool) {
        state.withLock { s in if s.members[id] != nil { s.members[id]!.full = full } }
    }

    private func route(_ chunk: ChunkID) throws(StoreError) -> (any ChunkStore, StoreHealth) {
        guard let m = state.withLock({ $0.members[chunk.unit] }) else { throw .missing(chunk: chunk) }
        return (m.store, m.health)
    }

    /// Runs one request on `chunk`'s unit; an outage error marks the unit unreachable on its way out.
    private func onStore<T>(
        _ chunk: ChunkID, _ body: (any ChunkStore) throws(StoreError) -> T
    ) throws(StoreError) -> T {
        let (store, health) = try route(chunk)
        do { return try body(store) } catch {
            noticeFailure(chunk.unit, health, error)
            throw error
        }
    }

    private func noticeFailure(_ id: UnitID, _ health: StoreHealth, _ error: StoreError) {
        guard StoreHealth.isOutage(error) else { return }
        if health.markUnreachable(StoreHealth.describe(error)) {
            Log.error("\(id) is unreachable (\(error)); it takes no new chunks until it answers again")
        }
    }

    public func read(_ chunk: ChunkID, offset: Int, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) {
        try onStore(chunk) { (s) throws(StoreError) in try s.read(chunk, offset: offset, into: buffer) }
    }

    public func write(_ chunk: ChunkID, offset: Int, from buffer: UnsafeRawBufferPointer) throws(StoreError) {
        do throws(StoreError) {
            try onStore(chunk) { (s) throws(StoreError) in try s.write(chunk, offset: offset, from: buffer) }
        } catch .noSpace {
            setFull(chunk.unit, true)
            throw .noSpace
        }
    }

    public func replace(_ chunk: ChunkID, with buffer: UnsafeRawBufferPointer) throws(StoreError) {
        do throws(StoreError) {
            try onStore(chunk) { (s) throws(StoreError) in try s.replace(chunk, with: buffer) }
        } catch .noSpace {
            setFull(chunk.unit, true)
            throw .noSpace
        }
    }

    public func readAll(_ chunk: ChunkID) throws(StoreError) -> [UInt8] {
        try onStore(chunk) { (s) throws(StoreError) in try s.readAll(chunk) }
    }

    public func prefersWholeChunks(_ chunk: ChunkID) -> Bool {
        (try? route(chunk).0.prefersWholeChunks(chunk)) ?? false
    }

    public func zero(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        try onStore(chunk) { (s) throws(StoreError) in try s.zero(chunk, offset: offset, length: length) }
    }

    public func markUnreadable(_ chunk: ChunkID, offset: Int, length: Int) throws(StoreError) {
        try onStore(chunk) { (s) throws(StoreError) in try s.markUnreadable(chunk, offset: offset, length: length) }
    }

    public func delete(_ chunk: ChunkID) throws(StoreError) {
        try onStore(chunk) { (s) throws(StoreError) in try s.delete(chunk) }
        state.withLock { s in
            guard let m = s.members[chunk.unit] else { return }
            s.members[chunk.unit]!.full = false
            s.members[chunk.unit]!.freeChunks += 1
            // The room is back on the filesystem too, for every member on it (pick took it from all).
            if let fs = m.filesystem {
                for other in s.order where s.members[other]!.filesystem == fs { s.members[other]!.filesystemFree += 1 }
            }
        }
    }

    public func setLabel(_ chunk: ChunkID, _ label: ChunkLabel) throws(StoreError) {
        try onStore(chunk) { (s) throws(StoreError) in try s.setLabel(chunk, label) }
    }

    public func label(of chunk: ChunkID) throws(StoreError) -> ChunkLabel? {
        try onStore(chunk) { (s) throws(StoreError) in try s.label(of: chunk) }
    }

    public func check(_ chunk: ChunkID) throws(StoreError) -> ChunkCheck {
        try onStore(chunk) { (s) throws(StoreError) in try s.check(chunk) }
    }

    public func flush() throws(StoreError) {
        let stores = state.withLock { s in
            s.order.compactMap { id in s.members[id].map { (id, $0.store, $0.health) } }
        }
        var failure: StoreError?
        for (id, s, health) in stores {
            do { try s.flush() } catch {
                noticeFailure(id, health, error)
                failure = error
            }
        }
        if let failure { throw failure }
    }

    public func flush(chunks: Set<ChunkID>) throws(StoreError) {
        var failure: StoreError?
        for (id, group) in Dictionary(grouping: chunks, by: \.unit) {
            guard let m = state.withLock({ $0.members[id] }) else { continue }
            do { try m.store.flush(chunks: Set(group)) } catch {
                noticeFailure(id, m.health, error)
                failure = error
            }
        }
        if let failure { throw failure }
    }

    /// The members' figures combined, a shared filesystem counted once (see StoreUsage.combined).
    public func usage() throws(StoreError) -> StoreUsage {
        let stores = state.withLock { s in s.order.compactMap { s.members[$0]?.store } }
        var all: [StoreUsage] = []
        for s in stores { all.append(try s.usage()) }
        return StoreUsage.combined(all)
    }

    public func allChunks() throws(StoreError) -> [ChunkID] {
        let stores = state.withLock { s in s.order.compactMap { s.members[$0]?.store } }
        var out: [ChunkID] = []
        for s in stores { out += try s.allChunks() }
        return out
    }
}
