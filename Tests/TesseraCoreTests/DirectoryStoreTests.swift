// DirectoryStore behaviour beyond the shared conformance suite: its on-disk layout and setup errors.
// (A crash cannot be simulated in-process here; the engine's recovery tests and the integration crash
// test cover durability.)

import Foundation
import TesseraCore
import TesseraStores
import TesseraTestSupport
import Testing

@Suite("DirectoryStore")
struct DirectoryStoreTests {
    @Test func chunkFilesLiveUnderChunksXXAndGoAwayOnDelete() throws {
        let dir = try TemporaryDirectory()
        let store = try DirectoryStore(root: dir.path, chunkSize: 64 * 1024)
        let fm = FileManager.default
        #expect(try fm.contentsOfDirectory(atPath: dir.path + "/chunks").count == 256, "chunks/00 … chunks/ff")
        let chunks = [
            ChunkID(0x1), ChunkID(0xAB), ChunkID(0x1_0000_0000_02FF), ChunkID(unit: UnitID(3), serial: 0x1234),
        ]
        for c in chunks {
            try [UInt8](repeating: 1, count: 100).withUnsafeBytes { try store.write(c, offset: 0, from: $0) }
        }
        try store.flush()
        for c in chunks {
            let sub = String(format: "%02x", c.rawValue & 0xff)
            let path = "\(dir.path)/chunks/\(sub)/\(String(c.rawValue, radix: 16))"
            #expect(fm.fileExists(atPath: path), "\(c) at \(path)")
        }
        try store.delete(chunks[2])
        try store.flush()
        #expect(!fm.fileExists(atPath: "\(dir.path)/chunks/ff/10000000002ff"))
        #expect(Set(try store.allChunks()) == Set([chunks[0], chunks[1], chunks[3]]))
    }

    @Test func chunksSurviveReopening() throws {
        let dir = try TemporaryDirectory()
        do {
            let store = try DirectoryStore(root: dir.path, chunkSize: 4096)
            try [UInt8]([1, 2, 3]).withUnsafeBytes { try store.write(ChunkID(5), offset: 4000, from: $0) }
            try store.flush()
        }
        let again = try DirectoryStore(root: dir.path, chunkSize: 4096)
        var out = [UInt8](repeating: 9, count: 4)
        try out.withUnsafeMutableBytes { try again.read(ChunkID(5), offset: 3999, into: $0) }
        #expect(out == [0, 1, 2, 3])
        #expect(try again.allChunks() == [ChunkID(5)])
    }

    @Test func foreignFilesAreNotChunks() throws {
        let dir = try TemporaryDirectory()
        let store = try DirectoryStore(root: dir.path, chunkSize: 4096)
        // Names that are not a non-zero hex ID must never be taken for chunks (and never deleted by GC).
        for name in ["chunks/00/0", "chunks/01/notes.txt", "chunks/02/.hidden"] {
            #expect(FileManager.default.createFile(atPath: dir.path + "/" + name, contents: Data([1])))
        }
        #expect(try store.allChunks() == [])
    }

    @Test func missingRootIsRefusedWithAMessage() throws {
        let dir = try TemporaryDirectory()
        let e = #expect(throws: StoreSetupError.self) {
            _ = try DirectoryStore(root: dir.path + "/nope", chunkSize: 4096)
        }
        #expect(e?.description.contains("does not exist") == true)
    }

    @Test func manyOpenChunksBeyondTheFdCache() throws {
        let dir = try TemporaryDirectory()
        let store = try DirectoryStore(root: dir.path, chunkSize: 4096, maxOpenFiles: 8)
        for i in 1...40 as ClosedRange<UInt64> {
            try [UInt8(i)].withUnsafeBytes { try store.write(ChunkID(i), offset: 0, from: $0) }
            if i % 10 == 0 { try store.flush() }
        }
        try store.flush()
        for i in 1...40 as ClosedRange<UInt64> {
            var b: [UInt8] = [0]
            try b.withUnsafeMutableBytes { try store.read(ChunkID(i), offset: 0, into: $0) }
            #expect(b == [UInt8(i)])
        }
    }
}
