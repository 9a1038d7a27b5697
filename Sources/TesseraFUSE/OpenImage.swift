import TesseraCore
import TesseraEngine

#if canImport(Glibc)
    import Glibc
#endif

/// What an open file handle (`fi->fh`, retained) refers to: the stack of a live volume, or a snapshot's
/// view of it (read-only), and the volume itself for its attributes and open count.
final class OpenImage: Sendable {
    let volume: Volume
    /// Every read, write, flush, discard, seek and copy of the handle goes here.
    let io: any VolumeStore
    /// The process that opened it (0 when not visible from the daemon's pid namespace).
    let pid: pid_t
    init(_ volume: Volume, io: any VolumeStore, pid: pid_t) {
        self.volume = volume
        self.io = io
        self.pid = pid
    }
    var readOnly: Bool { io.isReadOnly }
}
