/// The closed set of failures on the data path. Thrown with typed throws so nothing is boxed per I/O;
/// the FUSE adapter turns each case into an errno in exactly one place.
public enum StoreError: Error, Equatable, Sendable {
    /// The backing medium failed (errno from the store, or a lost object). Surfaces as EIO.
    case io(errno: Int32, chunk: ChunkID)
    /// The store or pool has no room for a new chunk. Surfaces as ENOSPC.
    case noSpace
    /// The store has been made read-only underneath us (e.g. its filesystem remounted ro). Surfaces as EROFS.
    case readOnly
    /// A chunk that the map points at is not on the store. Surfaces as EIO.
    case missing(chunk: ChunkID)
    /// Stored bytes do not match their checksum (bitrot, a torn write, tampering). Surfaces as EIO;
    /// never returned as data.
    case corrupt(chunk: ChunkID, offset: Int)

    /// Classifies an errno from a store's syscall.
    public static func from(errno code: Int32, chunk: ChunkID) -> StoreError {
        switch code {
        case 28 /* ENOSPC */, 122 /* EDQUOT */: return .noSpace
        case 30 /* EROFS */: return .readOnly
        default: return .io(errno: code, chunk: chunk)
        }
    }
}
