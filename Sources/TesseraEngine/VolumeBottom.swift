// VolumeBottom — the thin map as the bottom of every volume stack: the live `Volume` and `VolumeView`
// (a volume as a snapshot captured it) conform to VolumeStore.
//
// Address space: volume bytes above, physical chunks of the pool below (see Volume.swift).
// A view is read-only: every change throws `.readOnly`; it has nothing to flush (a snapshot is committed
// before it shows). A copy takes its source's bottom, which in this engine is always one of these two.
import TesseraCore

extension Volume: VolumeStore {
    public var isReadOnly: Bool { false }
    public var bottom: any VolumeStore { self }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) -> Int {
        try read(at: offset, into: buffer, epoch: nil, viewSize: nil)
    }

    public func seek(from offset: UInt64, data: Bool) -> UInt64? {
        seek(from: offset, data: data, epoch: nil, viewSize: nil)
    }

    public func copy(from source: any VolumeStore, at sourceOffset: UInt64, to offset: UInt64, length: UInt64)
        throws(StoreError) -> UInt64
    {
        let image = Self.image(of: source.bottom)
        return try copy(
            from: image.volume, at: sourceOffset, to: offset, length: length, sourceEpoch: image.epoch,
            sourceSize: image.size)
    }

    public func view(at epoch: UInt64, size: UInt64) -> any VolumeStore { VolumeView(self, epoch: epoch, size: size) }

    /// The volume, epoch and size a bottom reads (nil epoch and size: the live volume).
    private static func image(of bottom: any VolumeStore) -> (volume: Volume, epoch: UInt64?, size: UInt64?) {
        switch bottom {
        case let volume as Volume: return (volume, nil, nil)
        case let view as VolumeView: return (view.volume, view.epoch, view.size)
        default: preconditionFailure("every volume stack of this engine ends in a thin map")
        }
    }
}

/// A volume as a snapshot (or a clone's source epoch) captured it: read-only, `size` bytes.
public final class VolumeView: VolumeStore {
    public let volume: Volume
    public let epoch: UInt64
    public let size: UInt64

    init(_ volume: Volume, epoch: UInt64, size: UInt64) {
        self.volume = volume
        self.epoch = epoch
        self.size = size
    }

    public var isReadOnly: Bool { true }
    public var bottom: any VolumeStore { self }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) -> Int {
        try volume.read(at: offset, into: buffer, epoch: epoch, viewSize: size)
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(StoreError) { throw .readOnly }
    public func discard(at offset: UInt64, length: UInt64) throws(StoreError) { throw .readOnly }
    public func extend(to end: UInt64) throws(StoreError) { throw .readOnly }
    public func resize(to size: UInt64) throws(StoreError) { throw .readOnly }
    public func flush(dataOnly: Bool) throws(StoreError) {}

    public func seek(from offset: UInt64, data: Bool) -> UInt64? {
        volume.seek(from: offset, data: data, epoch: epoch, viewSize: size)
    }

    public func copy(from source: any VolumeStore, at sourceOffset: UInt64, to offset: UInt64, length: UInt64)
        throws(StoreError) -> UInt64
    {
        throw .readOnly
    }

    public func view(at epoch: UInt64, size: UInt64) -> any VolumeStore { volume.view(at: epoch, size: size) }
}
