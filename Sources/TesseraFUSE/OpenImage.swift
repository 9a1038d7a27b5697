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
    /// The QoS layer on top of `io` (live images): reads and writes are admitted through it, and those
    /// that must wait are answered later from DeferredRequests.
    let throttle: QoSLayer?
    /// What reads and writes go to once admitted: the stack below the QoS layer, or `io` without one.
    let admitted: any VolumeStore
    /// The process that opened it (0 when not visible from the daemon's pid namespace).
    let pid: pid_t
    init(_ volume: Volume, io: any VolumeStore, throttle: QoSLayer? = nil, pid: pid_t) {
        self.volume = volume
        self.io = io
        let onTop = throttle.flatMap { $0 === io ? $0 : nil }
        self.throttle = onTop
        self.admitted = onTop?.below ?? io
        self.pid = pid
    }
    var readOnly: Bool { io.isReadOnly }
}
