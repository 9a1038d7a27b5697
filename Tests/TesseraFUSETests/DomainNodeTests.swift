// Inode numbers of domain directories (images, .snapshots, .cdp, .diff): every kind of node decodes to itself, and a domain's directories never share a number
// with a volume, a snapshot directory or an image.

import TesseraCore
import Testing

@testable import TesseraFUSE

@Suite struct DomainNodeTests {
    static let nodes: [Node] = [
        .root, .snapshots, .volume(VolumeID(1)), .volume(VolumeID((1 << 39) - 1)), .snapshotDir(1),
        .snapshotDir((1 << 43) - 1), .domain(2), .domainSnapshots(2), .domain(3), .domainSnapshots(3),
        .domain((1 << 42) - 1), .domainSnapshots((1 << 42) - 1), .domainCDP(2), .domainDiff(2),
        .domainCDP((1 << 42) - 1), .domainDiff((1 << 42) - 1), .cdp, .diff,
        .snapshotImage(snapshot: 5, volume: VolumeID(7)),
    ]

    @Test(arguments: nodes)
    func decodesToItself(_ node: Node) {
        #expect(Node(node.ino) == node)
    }

    @Test func numbersAreDistinct() {
        #expect(Set(Self.nodes.map(\.ino)).count == Self.nodes.count)
    }

    @Test func domainDirectories() {
        #expect(Node.volumes(of: 1) == .root && Node.snapshots(of: 1) == .snapshots)
        #expect(Node.volumes(of: 4) == .domain(4) && Node.snapshots(of: 4) == .domainSnapshots(4))
        #expect(Node.domain(4).volumesOf == 4 && Node.domainSnapshots(4).snapshotsOf == 4)
        #expect(Node.domainSnapshots(4).isSnapshotDirectory && !Node.domain(4).isSnapshotDirectory)
        #expect(Node.cdp(of: 1) == .cdp && Node.diff(of: 1) == .diff)
        #expect(Node.cdp(of: 4) == .domainCDP(4) && Node.diff(of: 4) == .domainDiff(4))
        #expect(Node.domainCDP(4).cdpOf == 4 && Node.domainDiff(4).diffOf == 4 && Node.domainDiff(4).domainOf == 4)
        #expect(Node.domainCDP(4).isSnapshotDirectory && Node.domainDiff(4).isSnapshotDirectory)
        #expect(Node.domainCDP(4).volumesOf == nil && Node.domain(4).cdpOf == nil)
        #expect(
            Node.root.volumesOf == 1 && Node.snapshots.snapshotsOf == 1 && Node.volume(VolumeID(1)).volumesOf == nil)
    }
}
