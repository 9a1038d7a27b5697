// CDPLayer — the CDP journal as a per-volume layer: every change to the volume is appended to its
// journal (CDPJournal) before it goes down the stack; the journal is made durable by the image's fsync
// before the volume below flushes.
//
// Address space: volume bytes, above the thin map (Stacks.swift puts it lowest of the volume layers).
// States: the journal is inactive (the volume is not protected; every method passes through, at the cost
//   of two atomic adds per change) or active.
// Invariants: a change is journaled (stamped) before it reaches the layer below, and the gate is held
//   from the stamp to its return, so a generation switch can wait for it (CDPJournal.beginGeneration).
//   Reads, seeks and snapshot views are not the journal's business and pass through.
//   A copy (copy_file_range) into a protected volume is journaled as the bytes it writes (the chunk
//   sharing of a thin-map copy would bypass the journal); a copy from a CDP image (not a thin map) is
//   always done as reads and writes.
public final class CDPLayer: VolumeStore {
    public let below: any VolumeStore
    public let journal: CDPJournal

    public init(over below: any VolumeStore, journal: CDPJournal) {
        self.below = below
        self.journal = journal
    }

    public var size: UInt64 { below.size }
    public var isReadOnly: Bool { below.isReadOnly }
    public var bottom: any VolumeStore { below.bottom }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) -> Int {
        try below.read(at: offset, into: buffer)
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(StoreError) {
        let p = journal.gate.enter()
        defer { journal.gate.leave(p) }
        if buffer.count > 0 {
            try journal.append(
                .write, offset: offset, length: UInt64(buffer.count),
                volumeSize: max(below.size, offset + UInt64(buffer.count)), payload: buffer)
        }
        try below.write(at: offset, from: buffer)
    }

    public func discard(at offset: UInt64, length: UInt64) throws(StoreError) {
        let p = journal.gate.enter()
        defer { journal.gate.leave(p) }
        try journal.append(.discard, offset: offset, length: length, volumeSize: below.size)
        try below.discard(at: offset, length: length)
    }

    public func extend(to end: UInt64) throws(StoreError) {
        let p = journal.gate.enter()
        defer { journal.gate.leave(p) }
        let old = below.size
        if end > old { try journal.append(.resize, offset: end, length: 0, volumeSize: end) }
        try below.extend(to: end)
    }

    public func resize(to size: UInt64) throws(StoreError) {
        let p = journal.gate.enter()
        defer { journal.gate.leave(p) }
        let old = below.size
        if size != old {
            try journal.append(.resize, offset: size, length: old > size ? old - size : 0, volumeSize: size)
        }
        try below.resize(to: size)
    }

    public func flush(dataOnly: Bool) throws(StoreError) {
        try journal.sync()
        try below.flush(dataOnly: dataOnly)
    }

    public func seek(from offset: UInt64, data: Bool) -> UInt64? { below.seek(from: offset, data: data) }

    public func copy(from source: any VolumeStore, at sourceOffset: UInt64, to offset: UInt64, length: UInt64)
        throws(StoreError) -> UInt64
    {
        guard journal.isActive || source.bottom is CDPImage else {
            return try below.copy(from: source, at: sourceOffset, to: offset, length: length)
        }
        return try Self.copyBytes(from: source, at: sourceOffset, to: self, at: offset, length: length)
    }

    /// Copies by reading and writing (1 MiB at a time; ranges the source reports as holes are discarded).
    public static func copyBytes(
        from source: any VolumeStore, at sourceOffset: UInt64, to target: any VolumeStore, at offset: UInt64,
        length: UInt64
    ) throws(StoreError) -> UInt64 {
        let end = min(sourceOffset + length, source.size)
        guard end > sourceOffset else { return 0 }
        let piece = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: piece, alignment: 4096)
        defer { buffer.deallocate() }
        var at = sourceOffset
        while at < end {
            let n = Int(min(UInt64(piece), end - at))
            let got = try source.read(at: at, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<n]))
            if got == 0 { break }
            try target.write(at: offset + (at - sourceOffset), from: UnsafeRawBufferPointer(rebasing: buffer[0..<got]))
            at += UInt64(got)
        }
        return at - sourceOffset
    }

    public func view(at epoch: UInt64, size: UInt64) -> any VolumeStore { below.view(at: epoch, size: size) }
}
