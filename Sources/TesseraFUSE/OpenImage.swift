import TesseraEngine

/// What an open file handle (`fi->fh`, retained) refers to: a live volume, or a volume as a snapshot
/// captured it (read-only, its epoch and its size then).
final class OpenImage: Sendable {
    let volume: Volume
    let epoch: UInt64?
    let size: UInt64?
    init(_ volume: Volume, epoch: UInt64? = nil, size: UInt64? = nil) {
        self.volume = volume
        self.epoch = epoch
        self.size = size
    }
    var readOnly: Bool { epoch != nil }
}
