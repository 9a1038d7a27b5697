import TesseraCore

/// Inode numbers of the mount. Volume IDs are never reused, so `volumeBase + id` is a stable inode
/// for the life of the volume and never names another one later.
enum Inode {
    static let root: UInt64 = 1
    static let snapshots: UInt64 = 2
    static let volumeBase: UInt64 = 16

    static func volume(_ id: VolumeID) -> UInt64 { volumeBase + UInt64(id.rawValue) }
    static func volumeID(_ ino: UInt64) -> VolumeID? { ino >= volumeBase ? VolumeID(Int64(ino - volumeBase)) : nil }

    static let imageSuffix = ".img"
    static let snapshotsName = ".snapshots"

    /// "vm1.img" → "vm1"; nil for names that are not images.
    static func volumeName(fromFile name: String) -> String? {
        guard name.hasSuffix(imageSuffix), name.count > imageSuffix.count else { return nil }
        return String(name.dropLast(imageSuffix.count))
    }
}
