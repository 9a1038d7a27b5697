// CDPDiffImage — a protected volume at instant TO in which every range the journal shows unchanged since
// instant FROM is a hole (MOUNT/.diff/FROM..TO/VOL.img): an incremental backup as a sparse file.
//
// Address space: volume bytes, 0 ..< the size at TO.
// Invariants: `regions` (sorted, disjoint, 4 KiB-aligned for writes) cover every byte written or
//   discarded between FROM and TO; they read as the image at TO, everything else as zeros and as a hole
//   for SEEK_HOLE/SEEK_DATA. A discarded range is data (zeros) here, not a hole: a hole means unchanged.
public final class CDPDiffImage: VolumeStore {
    public let image: CDPImage
    public let regions: [(start: UInt64, end: UInt64)]

    public init(image: CDPImage, regions: [(start: UInt64, end: UInt64)]) {
        self.image = image
        self.regions = regions
    }

    public var size: UInt64 { image.size }
    public var isReadOnly: Bool { true }
    public var bottom: any VolumeStore { image }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) -> Int {
        guard offset < size, buffer.count > 0 else { return 0 }
        let n = Int(min(UInt64(buffer.count), size - offset))
        let end = offset + UInt64(n)
        buffer.baseAddress!.initializeMemory(as: UInt8.self, repeating: 0, count: n)
        var i = firstRegion(endingAfter: offset)
        while i < regions.count && regions[i].start < end {
            let from = max(regions[i].start, offset)
            let to = min(regions[i].end, end)
            if to > from {
                let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[Int(from - offset)..<Int(to - offset)])
                _ = try image.read(at: from, into: piece)
            }
            i += 1
        }
        return n
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(StoreError) { throw .readOnly }
    public func discard(at offset: UInt64, length: UInt64) throws(StoreError) { throw .readOnly }
    public func extend(to end: UInt64) throws(StoreError) { throw .readOnly }
    public func resize(to size: UInt64) throws(StoreError) { throw .readOnly }
    public func flush(dataOnly: Bool) throws(StoreError) {}

    public func seek(from offset: UInt64, data: Bool) -> UInt64? {
        guard offset < size else { return nil }
        let i = firstRegion(endingAfter: offset)
        let inside = i < regions.count && regions[i].start <= offset
        if data {
            guard i < regions.count, regions[i].start < size else { return nil }
            return max(regions[i].start, offset)
        }
        return inside ? min(regions[i].end, size) : offset
    }

    /// The first region whose end is past `offset`.
    private func firstRegion(endingAfter offset: UInt64) -> Int {
        var lo = 0
        var hi = regions.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if regions[mid].end <= offset { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    public func copy(from source: any VolumeStore, at sourceOffset: UInt64, to offset: UInt64, length: UInt64)
        throws(StoreError) -> UInt64
    {
        throw .readOnly
    }

    public func view(at epoch: UInt64, size: UInt64) -> any VolumeStore { image.view(at: epoch, size: size) }
}
