// Volume epochs — what snapshots, clones and revert do to one volume's map: quiesce, holds on epochs,
// advancing the epoch, the space a hold keeps, and going back to an epoch. The invariants and lock
// order are Volume.swift's.
import Foundation
import Synchronization
import TesseraCatalog
import TesseraCore

extension Volume {
    // MARK: Snapshots

    /// Stops all I/O on the volume (every stripe held) for an instant-consistent snapshot.
    func quiesce() { stripes.lockAll() }
    func resume() { stripes.unlockAll() }

    /// The epoch and size a snapshot taken now captures. Caller has quiesced and flushed.
    func captureInstant() -> (epoch: UInt64, size: UInt64) {
        state.withLock { s in (s.epoch, UInt64(s.record.size)) }
    }

    /// After the snapshot committed: hold `epoch` and write new data in `epoch + 1`.
    func holdAndAdvance(_ epoch: UInt64) {
        state.withLock { s in
            s.holds.append(epoch)
            s.holds.sort()
            if s.record.epoch <= Int64(epoch) { s.record.epoch = Int64(epoch + 1) }
        }
    }

    /// Adds a hold without changing the epoch (loading the catalog, cloning from a snapshot).
    func addHold(_ epoch: UInt64) {
        state.withLock { s in
            s.holds.append(epoch)
            s.holds.sort()
        }
    }

    /// Drops one hold of `epoch`; versions no remaining hold sees are released (deleted after the next
    /// commit). Returns the bytes that go.
    @discardableResult
    func removeHold(_ epoch: UInt64) -> UInt64 {
        state.withLock { s in
            if let i = s.holds.firstIndex(of: epoch) { s.holds.remove(at: i) }
            var freed: UInt64 = 0
            for (index, versions) in s.retained {
                var keep: [Version] = []
                for v in versions {
                    if s.holds.contains(where: { v.visible(at: $0) }) {
                        keep.append(v)
                        continue
                    }
                    let key = RetainedKey(index: index, birth: v.birth)
                    s.retainedAdds[key] = nil
                    s.retainedRemoves.insert(key)
                    if v.chunk.isReal && shares.extra(v.chunk) == 0 { freed += UInt64(chunkSize) }
                    drop(&s, v.chunk)
                }
                s.retained[index] = keep.isEmpty ? nil : keep
            }
            return freed
        }
    }

    /// Bytes that only the hold at `epoch` keeps (what deleting that snapshot would free).
    func exclusiveBytes(ofHold epoch: UInt64) -> UInt64 {
        state.withLock { s in
            var others = s.holds
            if let i = others.firstIndex(of: epoch) { others.remove(at: i) }
            // A chunk goes when every reference to it is a version only this hold sees.
            var refs: [ChunkID: Int] = [:]
            for v in s.retained.values.joined() where v.chunk.isReal && v.visible(at: epoch) {
                if !others.contains(where: { v.visible(at: $0) }) { refs[v.chunk, default: 0] += 1 }
            }
            let freed = refs.filter { chunk, n in n == 1 + shares.extra(chunk) }.count
            return UInt64(freed) * UInt64(chunkSize)
        }
    }

    /// Live bytes no snapshot, clone or other volume shares (what deleting the volume would free now).
    public var exclusiveBytes: UInt64 {
        state.withLock { s in
            UInt64(s.map.records(in: 0..<UInt64.max).filter { $0.entry.chunk.isReal && !isShared($0.entry, s) }.count)
                * UInt64(chunkSize)
        }
    }

    /// Bytes of retained versions (space snapshots hold beyond the live data).
    public var retainedBytes: UInt64 {
        state.withLock { s in UInt64(s.retained.values.joined().filter { $0.chunk.isReal }.count) * UInt64(chunkSize) }
    }

    /// Brings the live volume back to what it was at `epoch` (size `size`). Caller has quiesced it and
    /// made sure it is not open. Chunks the snapshot sees become shared with it, so later writes copy.
    func revert(to epoch: UInt64, size: UInt64) {
        state.withLock { s in
            var indexes = Set(s.map.records(in: 0..<UInt64.max).map(\.index))
            for (i, vs) in s.retained where vs.contains(where: { $0.visible(at: epoch) }) { indexes.insert(i) }
            let born = s.epoch
            for index in indexes.sorted() {
                let live = s.map.entry(index)
                let then: MapEntry?
                if let e = live, e.birth <= epoch {
                    continue  // unchanged since the snapshot
                } else if let v = s.retained[index]?.first(where: { $0.visible(at: epoch) }) {
                    then = MapEntry(chunk: v.chunk, birth: born)
                    if v.chunk.isReal {
                        shares.add(v.chunk, 1)
                        s.shareDeltas[v.chunk, default: 0] += 1
                    }
                } else {
                    then = nil
                }
                if let live {
                    if live.chunk.isTombstone { s.tombstones -= 1 }
                    release(&s, index, live)
                }
                s.map.set(index, then)
                if then?.chunk.isTombstone == true { s.tombstones += 1 }
                s.changes.updateValue(then, forKey: index)
            }
            s.record.size = Int64(size)
            s.record.mtime = Self.now()
            s.metaDirty = true
        }
    }
}
