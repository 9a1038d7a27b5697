import TesseraCore
import TesseraEngine

/// What an inode number of the mount names, decoded in this one place. Volume, snapshot and domain IDs
/// are never reused, so a number is stable for the life of what it names and never names something else.
///   1 root · 2 .snapshots · 3 .cdp · 4 .diff · 16+V volume V · 2^40+S snapshot directory S · 2^44+4D
///   directory of domain D · 2^44+4D+1 its .snapshots · +2 its .cdp · +3 its .diff · 2^48 | S<<24 | V image
///   of V in S · 2^58+N the diff image "VOL@FROM..TO" numbered N · 2^59+N the diff directory "FROM..TO"
///   numbered N · 2^60+N the CDP image (volume, instant) numbered N by the engine's CDPRegistry (0 and
///   5…15 name nothing: `.none`).
/// The root, .snapshots, .cdp and .diff are the default domain's directories; `.domain…` cases are never
/// the default domain's.
/// CDP and diff numbers are stable for the life of the daemon only, which is all the kernel needs.
enum Node: Equatable {
    case root
    case snapshots
    case volume(VolumeID)
    case snapshotDir(Int64)
    case domain(Int64)
    case domainSnapshots(Int64)
    case domainCDP(Int64)
    case domainDiff(Int64)
    case snapshotImage(snapshot: Int64, volume: VolumeID)
    case cdp
    case cdpImage(UInt64)
    case diff
    case diffDir(UInt64)
    case diffImage(UInt64)
    case none

    private static let volumeBase: UInt64 = 16
    private static let snapshotDirBase: UInt64 = 1 << 40
    private static let domainBase: UInt64 = 1 << 44
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
        case Self.snapshotDirBase..<Self.domainBase: self = .snapshotDir(Int64(ino - Self.snapshotDirBase))
        case Self.domainBase..<Self.snapshotImageBase:
            let rest = ino - Self.domainBase
            let d = Int64(rest >> 2)
            self = [.domain(d), .domainSnapshots(d), .domainCDP(d), .domainDiff(d)][Int(rest & 3)]
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
        case .domain(let id): Self.domainBase + UInt64(id) << 2
        case .domainSnapshots(let id): Self.domainBase + UInt64(id) << 2 + 1
        case .domainCDP(let id): Self.domainBase + UInt64(id) << 2 + 2
        case .domainDiff(let id): Self.domainBase + UInt64(id) << 2 + 3
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

    /// `.snapshots` (of any domain) or a snapshot's directory: read-only directories (EROFS for changes).
    var isSnapshotDirectory: Bool {
        switch self {
        case .snapshots, .domainSnapshots, .snapshotDir, .cdp, .domainCDP, .diff, .domainDiff, .diffDir: true
        default: false
        }
    }

    /// For a directory that holds volume images (the root, a domain's): the domain whose they are.
    var volumesOf: Int64? {
        switch self {
        case .root: Engine.defaultDomainID
        case .domain(let id): id
        default: nil
        }
    }

    /// For a `.snapshots` directory: the domain whose snapshots it lists.
    var snapshotsOf: Int64? {
        switch self {
        case .snapshots: Engine.defaultDomainID
        case .domainSnapshots(let id): id
        default: nil
        }
    }

    /// For a `.cdp` directory: the domain whose volumes' instants it holds.
    var cdpOf: Int64? {
        switch self {
        case .cdp: Engine.defaultDomainID
        case .domainCDP(let id): id
        default: nil
        }
    }

    /// For a `.diff` directory: the domain whose volumes' diffs it holds.
    var diffOf: Int64? {
        switch self {
        case .diff: Engine.defaultDomainID
        case .domainDiff(let id): id
        default: nil
        }
    }

    /// The domain any of a domain's own directories (images, .snapshots, .cdp, .diff) belongs to.
    var domainOf: Int64? { volumesOf ?? snapshotsOf ?? cdpOf ?? diffOf }

    /// The directory holding a domain's images (the root for the default domain) and its .snapshots.
    static func volumes(of domain: Int64) -> Node { domain == Engine.defaultDomainID ? .root : .domain(domain) }
    static func snapshots(of domain: Int64) -> Node {
        domain == Engine.defaultDomainID ? .snapshots : .domainSnapshots(domain)
    }
    static func cdp(of domain: Int64) -> Node { domain == Engine.defaultDomainID ? .cdp : .domainCDP(domain) }
    static func diff(of domain: Int64) -> Node { domain == Engine.defaultDomainID ? .diff : .domainDiff(domain) }

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
