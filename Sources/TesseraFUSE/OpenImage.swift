import TesseraEngine

#if canImport(Glibc)
    import Glibc
#endif

/// What an open file handle (`fi->fh`, retained) refers to: a live volume, or a volume as a snapshot
/// captured it (read-only, its epoch and its size then).
final class OpenImage: Sendable {
    let volume: Volume
    let epoch: UInt64?
    let size: UInt64?
    /// The process that opened it (0 when not visible from the daemon's pid namespace).
    let pid: pid_t
    init(_ volume: Volume, epoch: UInt64? = nil, size: UInt64? = nil, pid: pid_t) {
        self.volume = volume
        self.epoch = epoch
        self.size = size
        self.pid = pid
    }
    var readOnly: Bool { epoch != nil }
}
