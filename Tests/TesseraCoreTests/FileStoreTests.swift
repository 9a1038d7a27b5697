// FileStore behaviour beyond the shared conformance suite: reopening, a full store, slot reuse only after
// a durable delete, replace atomicity across a reopen, setup errors, and a real (loop) block device.
// A crash is simulated by dropping the store without flush and reopening the file: what the table on
// the file says is what a restarted daemon sees.

import Foundation
import TesseraCore
import TesseraStores
import TesseraTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("FileStore")
struct FileStoreTests {
    static let cs = 64 * 1024
    /// Header block + one table block + `slots` slots: exactly `slots` chunks fit.
    static func size(slots: Int) -> UInt64 { UInt64(8192 + slots * cs) }

    static func write(_ store: FileStore, _ chunk: ChunkID, at offset: Int = 0, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try store.write(chunk, offset: offset, from: $0) }
    }

    static func read(_ store: FileStore, _ chunk: ChunkID, at offset: Int = 0, count: Int = cs) throws -> [UInt8] {
        var out = [UInt8](repeating: 0xEE, count: count)
        try out.withUnsafeMutableBytes { try store.read(chunk, offset: offset, into: $0) }
        return out
    }

    static func setupError(_ body: () throws -> Void) -> String {
        do {
            try body()
            return "no error"
        } catch let e as StoreSetupError {
            return e.description
        } catch {
            return "unexpected \(error)"
        }
    }

    @Test func reopenKeepsChunksAndLabels() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path + "/store"
        let a = pattern(Self.cs, seed: 1)
        let label = ChunkLabel(volume: VolumeID(9), index: 77, epoch: 3)
        let uuid: String
        do {
            let store = try FileStore.create(path: path, size: Self.size(slots: 8), chunkSize: Self.cs)
            #expect(store.slotCount == 8)
            uuid = store.uuid
            try Self.write(store, ChunkID(1), a)
            try Self.write(store, ChunkID(2), at: 5000, [1, 2, 3])
            try store.setLabel(ChunkID(1), label)
            try Self.write(store, ChunkID(3), [4])
            try store.delete(ChunkID(3))
            try store.flush()
        }
        do {
            let store = try FileStore.open(path: path, chunkSize: Self.cs)
            #expect(store.uuid == uuid)
            #expect(Set(try store.allChunks()) == [ChunkID(1), ChunkID(2)])
            #expect(try Self.read(store, ChunkID(1)) == a)
            #expect(try Self.read(store, ChunkID(2), at: 4999, count: 5) == [0, 1, 2, 3, 0])
            #expect(try store.label(of: ChunkID(1)) == label)
            #expect(try store.label(of: ChunkID(2)) == nil)
            #expect(
                try store.usage()
                    == StoreUsage(
                        totalBytes: 8 * UInt64(Self.cs), freeBytes: 6 * UInt64(Self.cs),
                        usedBytes: 2 * UInt64(Self.cs)))
            // A label set after reopening is written too.
            try store.setLabel(ChunkID(2), label)
            try store.flush()
        }
        #expect(try FileStore.open(path: path, chunkSize: Self.cs).label(of: ChunkID(2)) == label)
    }

    @Test func unflushedChunksAreAbsentAfterAReopen() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path + "/store"
        do {
            let store = try FileStore.create(path: path, size: Self.size(slots: 4), chunkSize: Self.cs)
            try Self.write(store, ChunkID(1), [1])
            try store.flush()
            try Self.write(store, ChunkID(2), [2])  // never flushed: its entry is not in the table
        }
        let store = try FileStore.open(path: path, chunkSize: Self.cs)
        #expect(try store.allChunks() == [ChunkID(1)])
        #expect(try store.usage().freeBytes == 3 * UInt64(Self.cs))
    }

    @Test func fullStoreThrowsNoSpaceAndWorksAgainAfterDeleteAndFlush() throws {
        let dir = try TemporaryDirectory()
        let store = try FileStore.create(path: dir.path + "/store", size: Self.size(slots: 3), chunkSize: Self.cs)
        for n in 1...3 as ClosedRange<UInt64> { try Self.write(store, ChunkID(n), pattern(Self.cs, seed: n)) }
        #expect(try store.usage().freeBytes == 0)
        #expect(throws: StoreError.noSpace) { try Self.write(store, ChunkID(4), [4]) }
        #expect(throws: StoreError.noSpace) {
            try [UInt8](repeating: 1, count: 10).withUnsafeBytes { try store.replace(ChunkID(1), with: $0) }
        }
        try store.delete(ChunkID(2))
        // The slot is not reused before the delete is durable.
        #expect(throws: StoreError.noSpace) { try Self.write(store, ChunkID(4), [4]) }
        try store.flush()
        try Self.write(store, ChunkID(4), at: 100, [4])
        // The reused slot reads zeros where the new chunk was not written.
        var expected = [UInt8](repeating: 0, count: Self.cs)
        expected[100] = 4
        #expect(try Self.read(store, ChunkID(4)) == expected)
        #expect(try Self.read(store, ChunkID(1)) == pattern(Self.cs, seed: 1))
        #expect(try Self.read(store, ChunkID(3)) == pattern(Self.cs, seed: 3))
    }

    @Test func replacedSlotIsFreedOnlyByTheFlushThatMakesTheSwitchDurable() throws {
        let dir = try TemporaryDirectory()
        let store = try FileStore.create(path: dir.path + "/store", size: Self.size(slots: 2), chunkSize: Self.cs)
        try Self.write(store, ChunkID(1), pattern(Self.cs, seed: 1))
        try pattern(100, seed: 2).withUnsafeBytes { try store.replace(ChunkID(1), with: $0) }
        // Both slots are taken: the old one still backs the table entry on the file.
        #expect(throws: StoreError.noSpace) { try Self.write(store, ChunkID(2), [2]) }
        try store.flush()
        try Self.write(store, ChunkID(2), at: 10, [2])
        #expect(try Self.read(store, ChunkID(2), at: 0, count: 12) == [UInt8](repeating: 0, count: 10) + [2, 0])
        #expect(try Self.read(store, ChunkID(1)) == pattern(100, seed: 2) + [UInt8](repeating: 0, count: Self.cs - 100))
    }

    @Test func replaceThenReopenShowsTheOldOrTheNewContentNeverAMix() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path + "/store"
        let old = pattern(Self.cs, seed: 10)
        let new = pattern(Self.cs - 4096, seed: 11) + [UInt8](repeating: 0, count: 4096)
        let label = ChunkLabel(volume: VolumeID(1), index: 2, epoch: 0)
        var oldEntry = [UInt8](repeating: 0, count: 64)
        do {
            let store = try FileStore.create(path: path, size: Self.size(slots: 4), chunkSize: Self.cs)
            try Self.write(store, ChunkID(7), old)
            try store.setLabel(ChunkID(7), label)
            try store.flush()
            try Array(new[..<(Self.cs - 4096)]).withUnsafeBytes { try store.replace(ChunkID(7), with: $0) }
            #expect(try Self.read(store, ChunkID(7)) == new)
            // Dropped without a flush: the table on the file still names the old slot.
        }
        do {
            let store = try FileStore.open(path: path, chunkSize: Self.cs)
            #expect(try Self.read(store, ChunkID(7)) == old)
            #expect(try store.label(of: ChunkID(7)) == label)
            let fd = open(path, O_RDONLY)
            defer { close(fd) }
            #expect(oldEntry.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 64, 4096) } == 64)
            try Array(new[..<(Self.cs - 4096)]).withUnsafeBytes { try store.replace(ChunkID(7), with: $0) }
            try store.flush()
            #expect(try Self.read(store, ChunkID(7)) == new)
        }
        do {
            let store = try FileStore.open(path: path, chunkSize: Self.cs)
            #expect(try Self.read(store, ChunkID(7)) == new)
            #expect(try store.label(of: ChunkID(7)) == label, "replace keeps the label")
        }
        // A crash after the new entry was durable but before the old slot's entry was cleared: both
        // entries name the chunk. Put the old entry (slot 0) back to make that state.
        do {
            let fd = open(path, O_WRONLY)
            #expect(oldEntry.withUnsafeBytes { pwrite(fd, $0.baseAddress, 64, 4096) } == 64)
            close(fd)
        }
        do {
            let store = try FileStore.open(path: path, chunkSize: Self.cs)
            #expect(try Self.read(store, ChunkID(7)) == new, "the higher sequence wins")
            #expect(try store.allChunks() == [ChunkID(7)])
            #expect(try store.usage().usedBytes == UInt64(Self.cs))
            try store.flush()  // clears the loser
        }
        let store = try FileStore.open(path: path, chunkSize: Self.cs)
        #expect(try Self.read(store, ChunkID(7)) == new)
        #expect(try store.usage().freeBytes == 3 * UInt64(Self.cs))
    }

    @Test func badInputsGiveClearErrors() throws {
        let dir = try TemporaryDirectory()
        let cs = Self.cs
        #expect(
            Self.setupError { _ = try FileStore.create(path: dir.path, size: 1 << 20, chunkSize: cs) }
                .contains("is a directory"))
        #expect(
            Self.setupError { _ = try FileStore.create(path: dir.path + "/new", size: nil, chunkSize: cs) }
                .contains("a size is needed"))
        #expect(
            Self.setupError {
                _ = try FileStore.create(path: dir.path + "/small", size: 8192 + UInt64(cs) - 1, chunkSize: cs)
            }
            .contains("too small"))
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/small"), "a failed create leaves no file")
        let foreign = dir.path + "/foreign"
        #expect(FileManager.default.createFile(atPath: foreign, contents: Data("hello".utf8)))
        #expect(
            Self.setupError { _ = try FileStore.create(path: foreign, size: 1 << 20, chunkSize: cs) }
                .contains("not empty and is not a Tessera file store"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: foreign)) == Data("hello".utf8), "left untouched")
        #expect(
            Self.setupError { _ = try FileStore.open(path: foreign, chunkSize: cs) }
                .contains("not a Tessera file store"))
        #expect(
            Self.setupError { _ = try FileStore.open(path: dir.path + "/absent", chunkSize: cs) }
                .contains("No such file"))

        let path = dir.path + "/store"
        do {
            let store = try FileStore.create(path: path, size: Self.size(slots: 2), chunkSize: cs)
            #expect(Self.setupError { _ = try FileStore.open(path: path, chunkSize: cs) }.contains("in use"))
            try Self.write(store, ChunkID(1), [1])
            try store.flush()
        }
        #expect(
            Self.setupError { _ = try FileStore.open(path: path, chunkSize: 2 * cs) }
                .contains("holds chunks of \(cs) bytes"))
        #expect(
            Self.setupError { _ = try FileStore.create(path: path, size: nil, chunkSize: cs) }
                .contains("already holds a Tessera file store"))
        #expect(try FileStore.open(path: path, chunkSize: cs).allChunks() == [ChunkID(1)], "refused create kept it")
        // force formats it again, keeping the size.
        let again = try FileStore.create(path: path, size: nil, chunkSize: cs, force: true)
        #expect(again.slotCount == 2)
        #expect(try again.allChunks().isEmpty)
    }

    @Test func damagedOrTruncatedStoresAreRefused() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path + "/store"
        _ = try FileStore.create(path: path, size: Self.size(slots: 4), chunkSize: Self.cs)
        #expect(truncate(path, off_t(Self.size(slots: 3))) == 0)
        #expect(Self.setupError { _ = try FileStore.open(path: path, chunkSize: Self.cs) }.contains("truncated"))
        let fd = open(path, O_WRONLY)
        var byte: UInt8 = 0xFF
        #expect(pwrite(fd, &byte, 1, 20) == 1)  // inside the slot count
        close(fd)
        #expect(Self.setupError { _ = try FileStore.open(path: path, chunkSize: Self.cs) }.contains("damaged"))
    }

    @Test func aDamagedTableEntryHidesItsChunkAndKeepsItsSlot() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path + "/store"
        do {
            let store = try FileStore.create(path: path, size: Self.size(slots: 3), chunkSize: Self.cs)
            try Self.write(store, ChunkID(1), [1])
            try Self.write(store, ChunkID(2), [2])
            try store.flush()
        }
        let fd = open(path, O_WRONLY)
        var byte: UInt8 = 0x55
        #expect(pwrite(fd, &byte, 1, 4096 + 64 + 20) == 1)  // slot 1's entry
        close(fd)
        let store = try FileStore.open(path: path, chunkSize: Self.cs)
        #expect(store.damagedSlots == 1)
        #expect(try store.allChunks().count == 1)
        #expect(try store.usage().freeBytes == UInt64(Self.cs), "the damaged slot is not free")
    }

    @Test func createFailsClearlyWhenTheFilesystemIsFull() throws {
        guard getuid() == 0 else { return }  // needs a small tmpfs
        let dir = try TemporaryDirectory()
        let mnt = try dir.subdirectory("mnt")
        guard run("/usr/bin/mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt).status == 0 else {
            Issue.record("cannot mount a tmpfs")
            return
        }
        defer { _ = run("/usr/bin/umount", mnt) }
        let message = Self.setupError {
            _ = try FileStore.create(path: mnt + "/store", size: 8 << 20, chunkSize: Self.cs)
        }
        #expect(message.contains("not enough space") && message.contains("ENOSPC"), "\(message)")
        #expect(!FileManager.default.fileExists(atPath: mnt + "/store"))
    }

    @Test(.enabled(if: getuid() == 0 && FileManager.default.fileExists(atPath: "/dev/loop-control")))
    func loopBlockDevice() throws {
        let dir = try TemporaryDirectory()
        let image = dir.path + "/disk.img"
        #expect(FileManager.default.createFile(atPath: image, contents: nil))
        #expect(truncate(image, 16 << 20) == 0)
        try withLoopDevice(over: image) { device in
            let data = pattern(Self.cs, seed: 5)
            do {
                #expect(
                    Self.setupError { _ = try FileStore.create(path: device, size: 32 << 20, chunkSize: Self.cs) }
                        .contains("less than"))
                let store = try FileStore.create(path: device, size: nil, chunkSize: Self.cs)
                #expect(store.isBlockDevice)
                #expect(store.slotCount == 255, "the whole device")
                try Self.write(store, ChunkID(1), data)
                try Self.write(store, ChunkID(2), at: 9000, [9])
                try store.setLabel(ChunkID(1), ChunkLabel(volume: VolumeID(3), index: 4, epoch: 5))
                try store.flush()
                try store.delete(ChunkID(2))
                try store.flush()
                try Self.write(store, ChunkID(3), at: 1, [3])
                #expect(
                    try Self.read(store, ChunkID(3), at: 0, count: 9002) == [0, 3] + [UInt8](repeating: 0, count: 9000))
                try store.flush()
            }
            do {
                let store = try FileStore.open(path: device, chunkSize: Self.cs)
                #expect(Set(try store.allChunks()) == [ChunkID(1), ChunkID(3)])
                #expect(try Self.read(store, ChunkID(1)) == data)
                #expect(try store.label(of: ChunkID(1)) == ChunkLabel(volume: VolumeID(3), index: 4, epoch: 5))
                #expect(Self.setupError { _ = try FileStore.open(path: device, chunkSize: Self.cs) }.contains("in use"))
            }
            #expect(
                Self.setupError { _ = try FileStore.create(path: device, size: nil, chunkSize: Self.cs) }
                    .contains("already holds"))
            do {
                let forced = try FileStore.create(path: device, size: 8 << 20, chunkSize: Self.cs, force: true)
                #expect(try forced.allChunks().isEmpty)
                #expect(forced.slotCount == 127, "the first 8 MiB")
            }
        }
    }
}

extension FileStoreTests {
    /// A device that cannot zero or discard (a loop over ramfs): slots are never assumed zero, so a slot
    /// whose old bytes were not erased is zeroed when it is taken. The image starts full of 0xAB.
    @Test(.enabled(if: getuid() == 0 && FileManager.default.fileExists(atPath: "/dev/loop-control")))
    func blockDeviceThatCannotZero() throws {
        let dir = try TemporaryDirectory()
        let mnt = try dir.subdirectory("ramfs")
        guard run("/usr/bin/mount", "-t", "ramfs", "ramfs", mnt).status == 0 else {
            Issue.record("cannot mount a ramfs")
            return
        }
        defer { _ = run("/usr/bin/umount", mnt) }
        let image = mnt + "/disk.img"
        #expect(FileManager.default.createFile(atPath: image, contents: Data(repeating: 0xAB, count: 8 << 20)))
        try withLoopDevice(over: image) { device in
            var expected = [UInt8](repeating: 0, count: Self.cs)
            expected[100] = 1
            do {
                let store = try FileStore.create(path: device, size: nil, chunkSize: Self.cs)
                try Self.write(store, ChunkID(1), at: 100, [1])
                #expect(try Self.read(store, ChunkID(1)) == expected, "a never-used slot of an unzeroed device")
                try Self.write(store, ChunkID(2), pattern(Self.cs, seed: 2))
                try store.flush()
                try store.delete(ChunkID(2))  // the punch fails: the slot keeps its bytes
                try store.flush()
                try Self.write(store, ChunkID(3), at: 100, [1])
                #expect(try Self.read(store, ChunkID(3)) == expected, "a reused slot whose punch failed")
                try store.flush()
            }
            let store = try FileStore.open(path: device, chunkSize: Self.cs)
            #expect(Set(try store.allChunks()) == [ChunkID(1), ChunkID(3)])
            #expect(try Self.read(store, ChunkID(3)) == expected)
            try Self.write(store, ChunkID(4), at: 100, [1])
            #expect(try Self.read(store, ChunkID(4)) == expected, "never-used slots stay suspect after a reopen")
        }
    }
}

/// Attaches `image` as a loop device, runs `body` with its path, and detaches it whatever happens.
private func withLoopDevice(over image: String, _ body: (String) throws -> Void) throws {
    let attach = run("/usr/sbin/losetup", "-f", "--show", image)
    guard attach.status == 0, attach.output.hasPrefix("/dev/loop") else {
        Issue.record("losetup failed: \(attach.output)")
        return
    }
    defer { #expect(run("/usr/sbin/losetup", "-d", attach.output).status == 0, "detach \(attach.output)") }
    try body(attach.output)
}

/// Runs a command, returning its exit status and its output (trimmed).
private func run(_ tool: String, _ args: String...) -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: tool)
    p.arguments = args
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    do { try p.run() } catch { return (-1, "\(error)") }
    let out = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
}
