// Volume flush — the durability barrier: fold partial chunks when due, sync the chunks written since the
// last flush, commit the map changes in one catalog transaction, then delete what the commit freed.
// The invariants and lock order are Volume.swift's.
import Foundation
import Synchronization
import TesseraCatalog
import TesseraCore

extension Volume {
    // MARK: Durability

    /// The durability barrier: when it returns, every write, discard and resize that returned before
    /// the call survives a crash. Stores first, then the map (data before metadata), then deletes.
    /// With `dataOnly` (fdatasync), a modification time that is all that changed is left for a later
    /// flush: the data is as durable, and no catalog commit is paid for the time alone.
    /// `quiesced`: the caller holds every stripe (a snapshot, a revert, a clone of the live volume).
    public func flush(dataOnly: Bool = false) throws(StoreError) { try flush(dataOnly: dataOnly, quiesced: false) }

    func flush(dataOnly: Bool = false, quiesced: Bool) throws(StoreError) {
        try flushLock.withLock { _ throws(StoreError) in try flushLocked(dataOnly: dataOnly, quiesced: quiesced) }
    }

    private func flushLocked(dataOnly: Bool, quiesced: Bool) throws(StoreError) {
        let taken: Taken = state.withLock { s in
            takeWriteTime(&s)
            let commitTime = s.timeDirty && !dataOnly
            let t = (
                s.changes, s.metaDirty || commitTime, s.pendingFree, s.record, s.unlinked, s.retainedAdds,
                s.retainedRemoves, s.shareDeltas, s.parentLimit, s.deletedFrees
            )
            s.deletedFrees = []
            s.changes = [:]
            s.metaDirty = false
            if commitTime { s.timeDirty = false }
            s.pendingFree = []
            s.retainedAdds = [:]
            s.retainedRemoves = []
            s.shareDeltas = [:]
            return t
        }
        let (changes, metaDirty, frees, record, unlinked, adds, removes, deltas, parentLimit, deleted) = taken
        if unlinked { return }  // its row is gone; its chunks go at last close
        // A partial chunk commits only once folded: whole and labelled.
        do throws(StoreError) {
            if !partials.isEmpty {
                for (index, entry) in changes {
                    guard let entry, partials[index]?.chunk == entry.chunk else { continue }
                    if !quiesced { stripes.lockExclusive(index) }
                    defer { if !quiesced { stripes.unlock(index) } }
                    try foldIfPartial(index)
                }
            }
        } catch {
            putBack(taken)
            throw error
        }
        // Taken after the map changes (and the folds): a new chunk is touched before its slot changes,
        // so every chunk those changes point at is in here (data before metadata).
        let touched = takeTouched()
        guard !changes.isEmpty || metaDirty || !frees.isEmpty || !adds.isEmpty || !removes.isEmpty || !deltas.isEmpty
        else {
            do throws(StoreError) {
                try io.flush(chunks: touched)
            } catch {
                retouch(touched)
                throw error
            }
            state.withLock { $0.deletedFrees += deleted }  // forgotten with the next commit
            return
        }
        do throws(StoreError) {
            try io.flush(chunks: touched)
            var commit = Catalog.VolumeCommit(size: UInt64(record.size), mtime: record.mtime)
            commit.epoch = UInt64(record.epoch)
            commit.parentLimit = parentLimit == UInt64.max ? nil : parentLimit
            commit.changes = changes
            commit.retainedAdds = adds.map { key, v in
                RetainedRecord(
                    volumeId: id.rawValue, idx: Int64(key.index), birth: Int64(v.birth),
                    chunk: Int64(bitPattern: v.chunk.rawValue), death: Int64(v.death))
            }
            commit.retainedRemoves = removes.map { ($0.index, $0.birth) }
            commit.shareDeltas = deltas
            commit.nextSerials = pool.nextSerials()
            commit.frees = frees
            commit.deleted = deleted
            do {
                try catalog.commitVolume(id, commit)
            } catch {
                Log.error("\(record.name): map commit failed: \(error)")
                throw StoreError.io(errno: 5, chunk: .none)
            }
        } catch {
            putBack(taken)
            retouch(touched)
            throw error
        }
        do throws(StoreError) {
            let gone = try releaseSpace(of: frees)
            state.withLock { $0.deletedFrees += gone }
        } catch {
            // The map is committed; the stores' flush of the deletes is what failed. Report it, and let
            // the next flush try those chunks' stores again.
            retouch(Set(frees))
            throw error
        }
    }

    /// What a flush takes from the state to commit.
    private typealias Taken = (
        changes: [UInt64: MapEntry?], metaDirty: Bool, frees: [ChunkID], record: VolumeRecord, unlinked: Bool,
        adds: [RetainedKey: Version], removes: Set<RetainedKey>, deltas: [ChunkID: Int], parentLimit: UInt64,
        deleted: [ChunkID]
    )

    /// Puts back what a failed flush took; newer changes win.
    private func putBack(_ t: Taken) {
        state.withLock { s in
            for (k, v) in t.changes where s.changes[k] == nil { s.changes.updateValue(v, forKey: k) }
            s.metaDirty = true
            s.pendingFree = t.frees + s.pendingFree
            for (k, v) in t.adds where s.retainedAdds[k] == nil && !s.retainedRemoves.contains(k) {
                s.retainedAdds[k] = v
            }
            for k in t.removes where s.retainedAdds[k] == nil { s.retainedRemoves.insert(k) }
            for (c, d) in t.deltas { s.shareDeltas[c, default: 0] += d }
            s.deletedFrees += t.deleted
        }
    }

    /// Deletes freed chunks, then flushes their stores so the space is really free again (a file store
    /// reuses a slot only once its delete is durable). A failed delete only logs: the maps no longer
    /// point at the chunk, and garbage collection at the next open removes it (its freed record is the
    /// proof). A failed flush throws. Returns the chunks deleted.
    @discardableResult
    private func releaseSpace(of chunks: [ChunkID]) throws(StoreError) -> [ChunkID] {
        guard !chunks.isEmpty else { return [] }
        var gone: [ChunkID] = []
        for chunk in chunks {
            do {
                try io.delete(chunk)
                gone.append(chunk)
            } catch { Log.error("\(name): cannot delete freed \(chunk): \(error)") }
        }
        try io.flush(chunks: Set(chunks))
        return gone
    }

    /// Frees every chunk (after the volume's row is gone from the catalog). Returns the share-count
    /// changes the catalog must record (unflushed ones and the references dropped here).
    func releaseAllChunks() -> [ChunkID: Int] {
        partials.removeAll()  // their bases are the holds' or the parent's, not theirs to free
        let (chunks, pending) = state.withLock { s in
            var all = s.pendingFree
            for (_, e) in s.map.records(in: 0..<UInt64.max) { all.append(e.chunk) }
            for v in s.retained.values.joined() { all.append(v.chunk) }
            let pending = s.shareDeltas
            s.map = ChunkMap()
            s.retained = [:]
            s.pendingFree = []
            s.changes = [:]
            s.shareDeltas = [:]
            return (all.filter(\.isReal), pending)
        }
        var deltas = pending
        var freed: [ChunkID] = []
        for chunk in chunks {
            if shares.extra(chunk) > 0 {
                shares.add(chunk, -1)
                deltas[chunk, default: 0] -= 1
                continue
            }
            freed.append(chunk)
        }
        do { try releaseSpace(of: freed) } catch {
            Log.error("\(name): cannot flush the deletes of its chunks: \(error)")
        }
        return deltas
    }
}
