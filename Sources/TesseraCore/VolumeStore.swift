// VolumeStore — the volume address space: what an image is to its clients (the FUSE adapter, the control
// plane). One protocol for every layer of a volume's stack: per-volume layers (QoS, the CDP journal) each
// implement it over the store below them, and the thin map (TesseraEngine's `Volume`, with its read-only
// views at a snapshot's epoch) is the bottom of every stack, as ChunkStore is for the storage side.
//
// Address space: volume bytes, 0 ..< size. Never-written ranges read as zeros.
// Threading: every method may be called from many threads at once (libfuse's workers), synchronously;
// data-path failures are StoreError only (typed throws, nothing boxed per I/O).
// A layer writes out every method (no default pass-through): a method added here later must be decided
// in each layer, or a layer that should have seen it (a journal, a throttle) is silently bypassed.
public protocol VolumeStore: AnyObject, Sendable {
    /// The virtual size in bytes (a view: the size its snapshot captured).
    var size: UInt64 { get }
    /// True for a view: every change (write, discard, extend, resize, copy into it) throws `.readOnly`.
    var isReadOnly: Bool { get }
    /// The thin map at the bottom of this stack (the bottom itself answers `self`).
    var bottom: any VolumeStore { get }

    /// Reads up to `buffer.count` bytes at `offset`; returns how many (short at the end, 0 past it).
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) -> Int
    /// Writes `buffer` at `offset`, growing the size when the write ends past it.
    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(StoreError)
    /// Makes the range read as zeros and frees the space it held (punch hole, zero range, discard).
    /// Does not change the size.
    func discard(at offset: UInt64, length: UInt64) throws(StoreError)
    /// Grows the size to at least `end` (fallocate without KEEP_SIZE); allocates nothing.
    func extend(to end: UInt64) throws(StoreError)
    /// Sets the size; shrinking drops every byte past the new end.
    func resize(to size: UInt64) throws(StoreError)
    /// The durability barrier: every change that returned before the call survives a crash when it
    /// returns. `dataOnly` (fdatasync) may leave a modification time that is all that changed.
    func flush(dataOnly: Bool) throws(StoreError)
    /// SEEK_DATA (`data: true`) or SEEK_HOLE from `offset`; nil means ENXIO (at or past the end).
    func seek(from offset: UInt64, data: Bool) -> UInt64?
    /// Copies `length` bytes of `source` (a stack of the same engine: its `bottom` is a thin map) at
    /// `sourceOffset` to `offset` here; returns the bytes copied (short at the source's end).
    func copy(from source: any VolumeStore, at sourceOffset: UInt64, to offset: UInt64, length: UInt64)
        throws(StoreError) -> UInt64
    /// The image as it was at `epoch` (a snapshot's), `size` bytes long: a read-only stack.
    func view(at epoch: UInt64, size: UInt64) -> any VolumeStore
}
