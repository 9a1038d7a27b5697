// The volume stack as the FUSE adapter uses it: a layer installed through the engine's hook sees every
// operation of an open image, snapshot images are read-only views, and a clone's stack has the shape of
// any other volume's. Also the one decoding of inode numbers (Node).
import Foundation
import Synchronization
import TesseraCore
import TesseraTestSupport
import Testing

@testable import TesseraEngine
@testable import TesseraFUSE

/// A pass-through layer that counts each operation by name (views it gives count into the same tally).
final class CountingLayer: VolumeStore {
    let below: any VolumeStore
    let tally: Tally
    init(over below: any VolumeStore, tally: Tally) {
        self.below = below
        self.tally = tally
    }

    final class Tally: Sendable {
        private let counts = Mutex<[String: Int]>([:])
        func count(_ op: String) { counts.withLock { $0[op, default: 0] += 1 } }
        subscript(_ op: String) -> Int { counts.withLock { $0[op] ?? 0 } }
    }

    var size: UInt64 { below.size }
    var isReadOnly: Bool { below.isReadOnly }
    var bottom: any VolumeStore { below.bottom }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(StoreError) -> Int {
        tally.count("read")
        return try below.read(at: offset, into: buffer)
    }
    func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(StoreError) {
        tally.count("write")
        try below.write(at: offset, from: buffer)
    }
    func discard(at offset: UInt64, length: UInt64) throws(StoreError) {
        tally.count("discard")
        try below.discard(at: offset, length: length)
    }
    func extend(to end: UInt64) throws(StoreError) {
        tally.count("extend")
        try below.extend(to: end)
    }
    func resize(to size: UInt64) throws(StoreError) {
        tally.count("resize")
        try below.resize(to: size)
    }
    func flush(dataOnly: Bool) throws(StoreError) {
        tally.count(dataOnly ? "fdatasync" : "flush")
        try below.flush(dataOnly: dataOnly)
    }
    func seek(from offset: UInt64, data: Bool) -> UInt64? {
        tally.count("seek")
        return below.seek(from: offset, data: data)
    }
    func copy(from source: any VolumeStore, at sourceOffset: UInt64, to offset: UInt64, length: UInt64)
        throws(StoreError) -> UInt64
    {
        tally.count("copy")
        return try below.copy(from: source, at: sourceOffset, to: offset, length: length)
    }
    func view(at epoch: UInt64, size: UInt64) -> any VolumeStore {
        tally.count("view")
        return CountingLayer(over: below.view(at: epoch, size: size), tally: tally)
    }
}

/// The layers of a stack, top first, by type name (the bottom last).
func shape(_ top: any VolumeStore) -> [String] {
    var names = [String(describing: type(of: top))]
    var store = top
    while true {
        if let layer = store as? CountingLayer {
            store = layer.below
        } else if let layer = store as? QoSLayer {
            store = layer.below
        } else if let layer = store as? CDPLayer {
            store = layer.below
        } else {
            return names
        }
        names.append(String(describing: type(of: store)))
    }
}

/// An initialised data directory and an engine over it whose every volume has a CountingLayer over its map
/// (under the QoS layer, which is always on top).
final class CountedEngine {
    let dir: TemporaryDirectory
    let data: DataDirectory
    let tally = CountingLayer.Tally()
    let engine: Engine
    static let chunkSize: UInt64 = 64 * 1024

    init() throws {
        dir = try TemporaryDirectory(prefix: "tessera-stack-test")
        data = DataDirectory(path: dir.path + "/data")
        try Engine.initialize(data, chunkSize: Self.chunkSize)
        engine = try Self.open(data, tally)
    }

    static func open(_ data: DataDirectory, _ tally: CountingLayer.Tally) throws -> Engine {
        try Engine(data, volumeLayers: [{ _, below in CountingLayer(over: below, tally: tally) }])
    }

    /// The handle FUSE's open gives a live image.
    func open(_ name: String) throws -> OpenImage {
        let v = try #require(engine.volume(named: name))
        return OpenImage(v, io: engine.stack(of: v), throttle: engine.throttle(of: v), pid: 0)
    }
}

@Suite struct VolumeStackTests {
    let cs = CountedEngine.chunkSize

    @Test func aLayerOverTheMapSeesEveryOperation() throws {
        let t = try CountedEngine()
        try t.engine.createVolumes(name: "vm", size: 8 * cs)
        let image = try t.open("vm")
        #expect(image.io is QoSLayer)  // always on top (Stacks.swift)
        #expect(image.admitted is CountingLayer)
        #expect(image.io.bottom === image.volume)
        #expect(!image.readOnly)

        let data = [UInt8](repeating: 7, count: Int(cs) + 100)
        try image.io.write(data, at: 10)
        #expect(try image.io.read(at: 10, count: data.count) == data)
        try image.io.flush(dataOnly: true)
        try image.io.flush(dataOnly: false)
        try image.io.discard(at: 0, length: 2 * cs)
        #expect(try image.io.read(at: 10, count: 4) == [0, 0, 0, 0])
        try image.io.extend(to: 9 * cs)
        #expect(image.io.seek(from: 0, data: true) == nil)
        try image.io.write([1, 2, 3], at: 3 * cs)
        #expect(try image.io.copy(from: image.io, at: 3 * cs, to: 5 * cs, length: cs) == cs)
        #expect(try image.io.read(at: 5 * cs, count: 3) == [1, 2, 3])
        for op in ["write", "read", "fdatasync", "flush", "discard", "extend", "seek", "copy"] {
            #expect(t.tally[op] > 0, "the layer did not see \(op)")
        }
        // What the engine does to a volume (truncate, the final flush) goes through the stack too.
        let flushes = t.tally["flush"]
        try t.engine.resize(image.volume, to: 4 * cs)
        #expect(t.tally["resize"] == 1)
        #expect(image.io.size == 4 * cs)
        try t.engine.flushAll()
        #expect(t.tally["flush"] > flushes + 1)
    }

    @Test func snapshotViewsAreReadOnly() throws {
        let t = try CountedEngine()
        try t.engine.createVolumes(name: "vm", size: 4 * cs)
        let live = try t.open("vm")
        try live.io.write([UInt8](repeating: 1, count: 100), at: 0)
        try t.engine.createSnapshot(name: "s", volumes: ["vm"])
        try live.io.write([UInt8](repeating: 2, count: 100), at: 0)

        let snapshot = try #require(t.engine.snapshotImages("s")?.first)
        let view = OpenImage(snapshot.volume, io: t.engine.view(of: snapshot), pid: 0)
        #expect(t.tally["view"] == 1)
        #expect(view.readOnly)
        #expect(view.io.bottom is VolumeView)
        #expect(try view.io.read(at: 0, count: 100) == [UInt8](repeating: 1, count: 100))
        #expect(view.io.seek(from: 0, data: true) == 0)
        #expect(throws: StoreError.readOnly) { try view.io.write([9], at: 0) }
        #expect(throws: StoreError.readOnly) { try view.io.discard(at: 0, length: cs) }
        #expect(throws: StoreError.readOnly) { try view.io.extend(to: 8 * cs) }
        #expect(throws: StoreError.readOnly) { try view.io.resize(to: cs) }
        #expect(throws: StoreError.readOnly) { try view.io.copy(from: live.io, at: 0, to: 0, length: cs) }
        #expect(StoreError.readOnly.errno == EROFS)
        // A view is a source like any other: copying from it gives the snapshot's bytes.
        #expect(try live.io.copy(from: view.io, at: 0, to: 2 * cs, length: cs) == cs)
        #expect(try live.io.read(at: 2 * cs, count: 100) == [UInt8](repeating: 1, count: 100))
        #expect(try view.io.read(at: 0, count: 100) == [UInt8](repeating: 1, count: 100))
    }

    @Test func aCloneHasTheSameStack() throws {
        let t = try CountedEngine()
        try t.engine.createVolumes(name: "vm", size: 4 * cs)
        let live = try t.open("vm")
        try live.io.write([UInt8](repeating: 5, count: 10), at: 0)
        let clone = try t.engine.clone("vm", as: "copy")
        let stack = t.engine.stack(of: clone)
        #expect(shape(stack) == ["QoSLayer", "CountingLayer", "CDPLayer", "Volume"])
        #expect(shape(stack) == shape(live.io))
        #expect(stack.bottom === clone)
        let writes = t.tally["write"]
        try stack.write([6], at: 0)
        #expect(t.tally["write"] == writes + 1)
        #expect(try stack.read(at: 0, count: 2) == [6, 5])
        #expect(try live.io.read(at: 0, count: 2) == [5, 5])
    }

    @Test func loadedVolumesGetTheSameStack() throws {
        let dir = try TemporaryDirectory(prefix: "tessera-stack-test")
        let data = DataDirectory(path: dir.path + "/data")
        try Engine.initialize(data, chunkSize: CountedEngine.chunkSize)
        let tally = CountingLayer.Tally()
        do {
            let engine = try CountedEngine.open(data, tally)
            try engine.createVolumes(name: "vm", size: 4 * cs)
            _ = try engine.clone("vm", as: "copy")
            try engine.flushAll()
        }
        let engine = try CountedEngine.open(data, tally)
        for name in ["vm", "copy"] {
            let v = try #require(engine.volume(named: name))
            #expect(shape(engine.stack(of: v)) == ["QoSLayer", "CountingLayer", "CDPLayer", "Volume"])
            #expect(engine.stack(of: v).bottom === v)
        }
    }

    @Test func anUnlinkedOpenImageKeepsItsStackUntilItsLastClose() throws {
        let t = try CountedEngine()
        try t.engine.createVolumes(name: "vm", size: 4 * cs)
        let image = try t.open("vm")
        image.volume.opened()  // as FUSE's attach
        try t.engine.unlink(image.volume)
        #expect(t.engine.stack(of: image.volume) === image.io)
        try t.engine.resize(image.volume, to: 2 * cs)  // ftruncate on the still-open file
        #expect(t.tally["resize"] == 1)
        t.engine.closed(image.volume)
        #expect(t.engine.stack(of: image.volume) === image.volume)
    }

    /// Every stack has the CDP journal over the map (passing through until the volume is protected) and
    /// QoS on top.
    @Test func withoutLayersQoSSitsOnTheJournalOverTheMap() throws {
        let dir = try TemporaryDirectory(prefix: "tessera-stack-test")
        let data = DataDirectory(path: dir.path + "/data")
        try Engine.initialize(data, chunkSize: CountedEngine.chunkSize)
        let engine = try Engine(data)
        let v = try engine.createVolumes(name: "vm", size: 4 * cs)[0]
        #expect(shape(engine.stack(of: v)) == ["QoSLayer", "CDPLayer", "Volume"])
        #expect(engine.throttle(of: v) === engine.stack(of: v))
        #expect(engine.stack(of: v).bottom === v)
    }
}

@Suite struct NodeTests {
    @Test(arguments: [
        Node.root, .snapshots, .volume(VolumeID(1)), .volume(VolumeID(1 << 30)), .snapshotDir(1), .snapshotDir(77),
        .snapshotImage(snapshot: 3, volume: VolumeID(9)),
        .snapshotImage(snapshot: 1 << 20, volume: VolumeID(0xff_ffff)), .cdp, .cdpImage(0), .cdpImage(1 << 40), .diff,
        .diffDir(0), .diffDir(7), .diffImage(0), .diffImage(1 << 40),
    ])
    func decodesWhatItEncodes(_ node: Node) {
        #expect(Node(node.ino) == node)
    }

    @Test func numbersOfTheLayout() {
        #expect(Node(1) == .root)
        #expect(Node(2) == .snapshots)
        #expect(Node(16 + 5) == .volume(VolumeID(5)))
        #expect(Node((1 << 40) + 4) == .snapshotDir(4))
        #expect(Node(1 << 48 | 3 << 24 | 7) == .snapshotImage(snapshot: 3, volume: VolumeID(7)))
        #expect(Node(3) == .cdp)
        #expect(Node(1 << 60 | 9) == .cdpImage(9))
        #expect(Node(4) == .diff)
        for ino: UInt64 in [0, 5, 15] { #expect(Node(ino) == .none) }
        #expect(Node.snapshots.isSnapshotDirectory && Node.snapshotDir(1).isSnapshotDirectory)
        #expect(
            !Node.root.isSnapshotDirectory && !Node.snapshotImage(snapshot: 1, volume: VolumeID(1)).isSnapshotDirectory)
    }
}
