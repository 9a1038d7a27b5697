import TesseraCore

/// Inode numbers of the mount. Volume and snapshot IDs are never reused, so these numbers are stable
/// for the life of what they name and never name something else later.
///   1 root · 2 .snapshots · 16+V volume V · 2^40+S snapshot directory S · 2^48 | S<<24 | V image of V in S
enum Inode {
    static let root: UInt64 = 1
    static let snapshots: UInt64 = 2
    static let volumeBase: UInt64 = 16
    static let snapshotDirBase: UInt64 = 1 << 40
    static let snapshotImageBase: UInt64 = 1 << 48

    static func volume(_ id: VolumeID) -> UInt64 { volumeBase + UInt64(id.rawValue) }
    static func volumeID(_ ino: UInt64) -> VolumeID? {
        ino >= volumeBase && ino < snapshotDirBase ? VolumeID(Int64(ino - volumeBase)) : nil
    }
    static func isVolume(_ ino: UInt64) -> Bool { volumeID(ino) != nil }

    static func snapshotDir(_ id: Int64) -> UInt64 { snapshotDirBase + UInt64(id) }
    static func snapshotDirID(_ ino: UInt64) -> Int64? {
        ino >= snapshotDirBase && ino < snapshotImageBase ? Int64(ino - snapshotDirBase) : nil
    }

    static func snapshotImage(_ snapshot: Int64, _ volume: VolumeID) -> UInt64 {
        snapshotImageBase | UInt64(snapshot) << 24 | UInt64(volume.rawValue)
    }
    static func snapshotImageIDs(_ ino: UInt64) -> (snapshot: Int64, volume: VolumeID)? {
        guard ino >= snapshotImageBase else { return nil }
        let rest = ino - snapshotImageBase
        return (Int64(rest >> 24), VolumeID(Int64(rest & 0xff_ffff)))
    }

    static let imageSuffix = ".img"
    static let snapshotsName = ".snapshots"

    /// "vm1.img" → "vm1"; nil for names that are not images.
    static func volumeName(fromFile name: String) -> String? {
        guard name.hasSuffix(imageSuffix), name.count > imageSuffix.count else { return nil }
        return String(name.dropLast(imageSuffix.count))
    }
}
