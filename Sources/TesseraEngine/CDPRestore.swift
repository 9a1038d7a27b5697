// CDPRestore — restore a protected volume to an instant (in place, or as a new volume), and retention.
//
// Restore as NEWVOL: a clone of the base (O(1)) with the blocks the journal changed between the base and
// the instant copied in from the image — O(what was written since the base), not O(volume).
// Restore in place: the live volume differs from the image only in the blocks written (and the ranges
// discarded) after the instant; those are copied back from the image through the volume's own stack, so
// the journal records the restore too and it can itself be undone. Refused while the image is open.
//
// Retention (the mount's CDP thread, every few seconds): a new base every window/8 (10 s to 1 h), or once
// a quarter of --max-size was journaled since the last; the oldest base and its segments go when the
// next base is older than the window, or while the journal is over --max-size (the window start then
// moves forward, and status and the log say so; marks before it go with it).
import Foundation
import TesseraCatalog
import TesseraCore

extension Engine {
    /// `cdp restore`: `name` as it was at `spec` (a time or a mark), as `newName` or in place.
    public func restoreCDP(
        _ name: String, at spec: String, as newName: String?, domain: String = DomainRecord.defaultName
    )
        throws(TesseraError) -> VolumeInfo
    {
        let (v, _) = try requireProtected(name, domain: domain)
        let time = try instant(v, spec)
        let image = try cdpImage(v, at: time)
        if let newName {
            try Self.checkName(newName, "volume")
            if volume(named: newName, domainID: v.record.domainId) != nil {
                throw TesseraError(.exists, "a volume named '\(newName)' already exists\(inDomain(v.record.domainId))")
            }
            guard let base = cdpBases(v).last(where: { $0.captured <= time }) else {
                throw TesseraError(.invalid, "no base at \(CDPTime.format(time))")
            }
            let clone = try cloneVolume(base.name + "/" + v.name, as: newName, domain: domain)
            let regions = Self.regions(blocks: image.writtenBlocks, ranges: image.discardedRanges)
            do {
                try apply(image, regions, to: stack(of: clone))
            } catch {
                try? unlink(clone)
                throw error
            }
            Log.info("cdp: restored '\(name)' at \(CDPTime.format(time)) as '\(newName)'")
            return info(clone)
        }
        if v.isOpen { throw TesseraError(.busy, "volume '\(name)' is open; close it before restoring it in place") }
        let j = cdp.journal(for: v.id)
        let (blocks, ranges) = j.withIndex { index in
            (
                index.blocksChanged(from: image.fromSeq, after: time),
                index.ranges(overlapping: 0, .max, from: image.fromSeq, until: .max).filter { $0.time > time }
            )
        }
        try apply(image, Self.regions(blocks: blocks, ranges: ranges), to: stack(of: v))
        Log.info("cdp: restored '\(name)' in place to \(CDPTime.format(time))")
        notify(v.id)
        return info(v)
    }

    /// Sorted, merged byte ranges covering `blocks` (4 KiB each) and `ranges`.
    static func regions(blocks: [UInt64], ranges: [CDPRange]) -> [(UInt64, UInt64)] {
        var all = blocks.map { ($0 * CDPIndex.blockSize, ($0 + 1) * CDPIndex.blockSize) }
        all += ranges.map { ($0.offset, $0.offset + $0.length) }
        all.sort { $0.0 < $1.0 }
        var merged: [(UInt64, UInt64)] = []
        for r in all {
            if let last = merged.last, r.0 <= last.1 {
                merged[merged.count - 1].1 = max(last.1, r.1)
            } else {
                merged.append(r)
            }
        }
        return merged
    }

    /// Makes `target` equal to `image` on `regions` (and in size), then durable.
    private func apply(_ image: CDPImage, _ regions: [(UInt64, UInt64)], to target: any VolumeStore)
        throws(TesseraError)
    {
        let piece = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: piece, alignment: 4096)
        defer { buffer.deallocate() }
        do {
            if target.size != image.size { try target.resize(to: image.size) }
            for (start, end) in regions {
                var at = start
                let stop = min(end, image.size)
                while at < stop {
                    let n = Int(min(UInt64(piece), stop - at))
                    let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n])
                    let got = try image.read(at: at, into: chunk)
                    guard got == n else { throw StoreError.io(errno: EIO, chunk: .none) }
                    if chunk.allSatisfy({ $0 == 0 }) {
                        try target.discard(at: at, length: UInt64(n))
                    } else {
                        try target.write(at: at, from: UnsafeRawBufferPointer(chunk))
                    }
                    at += UInt64(n)
                }
            }
            try target.flush(dataOnly: false)
        } catch {
            throw TesseraError(.io, "restore failed: \(error)")
        }
    }

    // MARK: Retention

    /// One pass of retention over every protected volume (see the file comment).
    public func runCDPRetention(now: Int64 = CDPJournal.now()) {
        guard let records = try? catalog.cdpRecords() else { return }
        for var r in records {
            guard let v = volume(id: VolumeID(r.volumeId)) else { continue }
            let j = cdp.journal(for: v.id)
            guard j.isActive, let newest = cdpBases(v).last else { continue }
            let window = r.windowSeconds * 1_000_000_000
            let every = min(max(window / 8, 10_000_000_000), 3_600_000_000_000)
            let cap = r.maxSize.map { UInt64($0) }
            var overCap: Bool { cap.map { j.retainedBytes > $0 } ?? false }
            let sinceBase = j.bytes(since: newest.generation)
            if now - newest.captured >= every || cap.map({ sinceBase > $0 / 4 }) == true
                || (overCap && cdpBases(v).count == 1)
            {
                do { try takeBase(v) } catch { Log.error("cdp: no new base for '\(v.name)': \(error)") }
            }
            var bases = cdpBases(v)
            while bases.count > 1 {
                let byTime = bases[1].captured <= now - window
                let bySize = !byTime && overCap
                guard byTime || bySize else { break }
                do {
                    try dropSnapshot(bases[0].name, domainID: v.record.domainId)
                } catch {
                    Log.error("cdp: cannot drop the oldest base of '\(v.name)': \(error)")
                    break
                }
                j.drop(before: bases[1].generation)
                try? catalog.deleteMarks(volume: v.id, before: bases[1].captured)
                if bySize {
                    let message =
                        "window start moved from \(CDPTime.format(bases[0].captured)) to "
                        + "\(CDPTime.format(bases[1].captured)): the journal reached --max-size "
                        + ByteSize.format(cap ?? 0)
                    Log.info("cdp: '\(v.name)': \(message)")
                    r.note = message
                    try? catalog.updateCDP(r)
                }
                bases.removeFirst()
            }
        }
    }
}
