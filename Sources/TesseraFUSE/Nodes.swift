import TesseraCore

/// What an inode number of the mount names, decoded in this one place. Volume and snapshot IDs are never
/// reused, so a number is stable for the life of what it names and never names something else later.
///   1 root · 2 .snapshots · 3 .cdp · 16+V volume V · 2^40+S snapshot directory S · 2^48 | S<<24 | V image
///   of V in S · 2^60+N the CDP image (volume, instant) numbered N by the engine's CDPRegistry · 4 .diff ·
///   2^59+N the diff directory "FROM..TO" numbered N · 2^58+N the diff image "VOL@FROM..TO" numbered N
/// (0 and 5…15 name nothing: `.none`). CDP image numbers are stable for the life of the daemon only,
/// which is all the kernel needs (it forgets them when the mount goes).
enum Node: Equatable {
    case root
    case snapshots
    case volume(VolumeID)
    case snapshotDir(Int64)
    case snapshotImage(snapshot: Int64, volume: VolumeID)
    case cdp
    case cdpImage(UInt64)
    case diff
    case diffDir(UInt64)
    case diffImage(UInt64)
    case none

    private static let volumeBase: UInt64 = 16
    private static let snapshotDirBase: UInt64 = 1 << 40
    private static let snapshotImageBase: UInt64 = 1 << 48
    private static let cdpImageBase: UInt64 = 1 << 60
    private static let diffDirBase: UInt64 = 1 << 59
    private static let diffImageBase: UInt64 = 1 << 58

    init(_ ino: UInt64) {
        switch ino {
        case 1: self = .root
        case 2: self = .snapshots
        case 3: self = .cdp
        case 4: self = .diff
        case Self.cdpImageBase...: self = .cdpImage(ino - Self.cdpImageBase)
        case Self.diffDirBase..<Self.cdpImageBase: self = .diffDir(ino - Self.diffDirBase)
        case Self.diffImageBase..<Self.diffDirBase: self = .diffImage(ino - Self.diffImageBase)
        case Self.volumeBase..<Self.snapshotDirBase: self = .volume(VolumeID(Int64(ino - Self.volumeBase)))
        case Self.snapshotDirBase..<Self.snapshotImageBase: self = .snapshotDir(Int64(ino - Self.snapshotDirBase))
        case Self.snapshotImageBase...:
            let rest = ino - Self.snapshotImageBase
            self = .snapshotImage(snapshot: Int64(rest >> 24), volume: VolumeID(Int64(rest & 0xff_ffff)))
        default: self = .none
        }
    }

    var ino: UInt64 {
        switch self {
        case .root: 1
        case .snapshots: 2
        case .volume(let id): Self.volumeBase + UInt64(id.rawValue)
        case .snapshotDir(let id): Self.snapshotDirBase + UInt64(id)
        case .snapshotImage(let snapshot, let volume):
            Self.snapshotImageBase | UInt64(snapshot) << 24 | UInt64(volume.rawValue)
        case .cdp: 3
        case .cdpImage(let n): Self.cdpImageBase + n
        case .diff: 4
        case .diffDir(let n): Self.diffDirBase + n
        case .diffImage(let n): Self.diffImageBase + n
        case .none: 0
        }
    }

    /// `.snapshots` or a snapshot's directory: read-only directories (EROFS for changes in them).
    var isSnapshotDirectory: Bool {
        switch self {
        case .snapshots, .snapshotDir, .cdp, .diff, .diffDir: true
        default: false
        }
    }

    static let imageSuffix = ".img"
    static let snapshotsName = ".snapshots"
    static let cdpName = ".cdp"
    static let diffName = ".diff"

    /// "vm1.img" → "vm1"; nil for names that are not images.
    static func volumeName(fromFile name: String) -> String? {
        guard name.hasSuffix(imageSuffix), name.count > imageSuffix.count else { return nil }
        return String(name.dropLast(imageSuffix.count))
    }
}
