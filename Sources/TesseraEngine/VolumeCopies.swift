// Volume copies — copy_file_range between images of one mount: whole chunks are shared (a share count,
// no bytes moved), the rest is copied. The invariants and lock order are Volume.swift's.
import Foundation
import Synchronization
import TesseraCatalog
import TesseraCore

extension Volume {
    // MARK: Copies inside the mount

    /// Copies `length` bytes from `source` at `sourceOffset` to this volume at `offset`. Whole chunks
    /// that line up are shared, not copied (the copy costs a map entry); the rest is copied, and holes
    /// of the source become holes here. Returns bytes copied (short at the source's end).
    public func copy(
        from source: Volume, at sourceOffset: UInt64, to offset: UInt64, length: UInt64,
        sourceEpoch: UInt64?, sourceSize: UInt64?
    ) throws(StoreError) -> UInt64 {
        let srcSize = sourceSize ?? source.size
        guard sourceOffset < srcSize else { return 0 }
        let total = min(length, srcSize - sourceOffset)
        let cs = UInt64(chunkSize)
        let canShare = source.pool === pool && source.chunkSize == chunkSize && sourceOffset % cs == offset % cs
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        var done: UInt64 = 0
        while done < total {
            let pos = sourceOffset + done
            let n = min(UInt64(source.chunkSize) - pos % UInt64(source.chunkSize), total - done, cs)
            if canShare && n == cs && !(source === self && pos == offset + done && sourceEpoch == nil) {
                try share(from: source, index: pos / cs, at: sourceEpoch, to: (offset + done) / cs)
                done += n
                continue
            }
            let isHole =
                source.seek(from: pos, data: true, epoch: sourceEpoch, viewSize: srcSize).map { $0 >= pos + n } ?? true
            if isHole {
                extend(to: offset + done + n)
                try discard(at: offset + done, length: n)
            } else {
                let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(n)])
                _ = try source.read(at: pos, into: piece, epoch: sourceEpoch, viewSize: srcSize)
                try write(at: offset + done, from: UnsafeRawBufferPointer(piece))
            }
            done += n
        }
        return total
    }

    /// Makes slot `target` of this volume refer to the chunk `source` shows at `index` (one more
    /// reference to it), or empties it when that is a hole.
    private func share(from source: Volume, index: UInt64, at sourceEpoch: UInt64?, to target: UInt64)
        throws(StoreError)
    {
        source.stripes.lockExclusive(index)
        do {
            // A partial chunk is shared only once whole (the other map must never see its holes).
            if sourceEpoch == nil { try source.foldIfPartial(index) }
        } catch {
            source.stripes.unlock(index)
            throw error
        }
        let chunk = source.resolve(index, at: sourceEpoch)
        if chunk.isReal { shares.add(chunk, 1) }  // from now on neither side writes it in place
        source.stripes.unlock(index)
        extend(to: (target + 1) * UInt64(chunkSize))
        stripes.lockExclusive(target)
        defer { stripes.unlock(target) }
        if chunk.isReal {
            do throws(StoreError) { try foldIfPartial(target) } catch {
                shares.add(chunk, -1)
                throw error
            }
            let born = epoch
            state.withLock { $0.shareDeltas[chunk, default: 0] += 1 }
            setLive(target, MapEntry(chunk: chunk, birth: born))
            touch(chunk)  // the source may not have synced it yet: our map must not commit before its data
        } else {
            try rewrite(target) { _, base throws(StoreError) in base.isNone ? .unchanged : .zeros }
        }
        state.withLock { $0.metaDirty = true }
    }
}
