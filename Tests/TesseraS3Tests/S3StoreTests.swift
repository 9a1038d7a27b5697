// S3Store against a real S3 server (Ceph RGW from Scripts/test, else moto): what the conformance suite
// does not cover — ranged reads past the object's end, read-modify-write under concurrency, labels in
// object metadata, listing pagination, atomic replace, quota, set-up errors, and bitrot (which the raw
// store returns and the ChecksumLayer above catches).

import Foundation
import TesseraCore
import TesseraStores
import TesseraTestSupport
import Testing

@testable import TesseraS3

@Suite("S3Store")
struct S3StoreTests {
    func write(_ store: any ChunkStore, _ chunk: ChunkID, at offset: Int, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try store.write(chunk, offset: offset, from: $0) }
    }

    func read(_ store: any ChunkStore, _ chunk: ChunkID, at offset: Int, count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0xEE, count: count)
        try out.withUnsafeMutableBytes { try store.read(chunk, offset: offset, into: $0) }
        return out
    }

    func objectSize(_ f: S3Fixture, _ chunk: ChunkID) throws -> Int {
        Int(try f.client.head(f.store.key(chunk)).headers.first(name: "content-length") ?? "") ?? -1
    }

    @Test func rangedReadsPastTheObjectsEnd() throws {
        let f = try S3Fixture()
        let c = f.chunk(0)
        let data = pattern(100, seed: 1)
        try write(f.store, c, at: 0, data)
        #expect(try objectSize(f, c) == 100, "only the written extent is stored")
        // Straddling the end: the tail reads as zeros.
        #expect(try read(f.store, c, at: 50, count: 200) == Array(data[50...]) + [UInt8](repeating: 0, count: 150))
        // Wholly past the end (the server answers 416): zeros.
        #expect(try read(f.store, c, at: f.chunkSize - 512, count: 512) == [UInt8](repeating: 0, count: 512))
        #expect(try read(f.store, c, at: 100, count: 1) == [0])
        #expect(try read(f.store, c, at: 99, count: 1) == [data[99]])
        // A chunk whose object is empty (all zeros) exists and reads as zeros.
        let z = f.chunk(1)
        try write(f.store, z, at: 0, [0, 0, 0])
        #expect(try objectSize(f, z) == 0)
        #expect(try read(f.store, z, at: 0, count: 16) == [UInt8](repeating: 0, count: 16))
        #expect(try f.store.readAll(z) == [])
        #expect(throws: StoreError.missing(chunk: f.chunk(2))) { _ = try read(f.store, f.chunk(2), at: 0, count: 1) }
        #expect(throws: StoreError.missing(chunk: f.chunk(2))) { _ = try f.store.readAll(f.chunk(2)) }
        #expect(f.store.prefersWholeChunks(c))
    }

    @Test func partialWritesAreReadModifyWriteAndNeverLoseEachOther() throws {
        let f = try S3Fixture()
        let c = f.chunk(0)
        let a = pattern(4096, seed: 1)
        let b = pattern(1000, seed: 2)
        try write(f.store, c, at: 0, a)
        try write(f.store, c, at: 10_000, b)
        var expected = a + [UInt8](repeating: 0, count: 10_000 - 4096) + b
        #expect(try f.store.readAll(c) == expected)
        try write(f.store, c, at: 2000, [9, 9, 9])
        expected.replaceSubrange(2000..<2003, with: [9, 9, 9])
        #expect(try f.store.readAll(c) == expected)
        // Zeroing the tail shortens the object; zeroing inside keeps the rest.
        try f.store.zero(c, offset: 9000, length: f.chunkSize - 9000)
        #expect(try f.store.readAll(c) == Array(expected[0..<4096]))
        // Eight threads patch disjoint ranges of one chunk at once: every patch survives.
        let d = f.chunk(1)
        let store = f.store
        let errors = Locked<[String]>([])
        Threads.run(8) { t in
            for round in 0..<3 {
                let piece = pattern(512, seed: UInt64(t * 10 + round))
                do {
                    try piece.withUnsafeBytes { try store.write(d, offset: t * 4096 + round * 512, from: $0) }
                } catch {
                    errors.withLock { $0.append("thread \(t): \(error)") }
                }
            }
        }
        #expect(errors.value == [])
        let all = try read(f.store, d, at: 0, count: 8 * 4096)
        for t in 0..<8 {
            for round in 0..<3 {
                let at = t * 4096 + round * 512
                #expect(
                    Array(all[at..<at + 512]) == pattern(512, seed: UInt64(t * 10 + round)),
                    "thread \(t) round \(round)")
            }
        }
    }

    @Test func labelsLiveInObjectMetadataAndSurviveReplaceAndReopen() throws {
        let f = try S3Fixture()
        let c = f.chunk(0)
        try write(f.store, c, at: 0, [1, 2, 3])
        let label = ChunkLabel(volume: VolumeID(42), index: 1 << 40, epoch: 7)
        try f.store.setLabel(c, label)
        let head = try f.client.head(f.store.key(c))
        #expect(head.headers.first(name: "x-amz-meta-tessera-label") == "42.1099511627776.7")
        #expect(try f.store.label(of: c) == label)
        #expect(try f.store.readAll(c) == [1, 2, 3], "the self-copy keeps the data")
        // A whole-chunk replace carries the label (known from memory).
        try [7, 7].withUnsafeBytes { try f.store.replace(c, with: $0) }
        #expect(try f.store.label(of: c) == label)
        // A fresh store (empty label cache) learns it with a HEAD before its first replace.
        let again = try f.reopen()
        defer { again.close() }
        #expect(try again.label(of: c) == label)
        try [8].withUnsafeBytes { try again.replace(c, with: $0) }
        #expect(try again.label(of: c) == label)
        #expect(try f.store.readAll(c) == [8])
        // A replace that creates a chunk gives it no label; setLabel on an absent chunk is `.missing`.
        let n = f.chunk(1)
        try [5].withUnsafeBytes { try again.replace(n, with: $0) }
        #expect(try again.label(of: n) == nil)
        #expect(throws: StoreError.missing(chunk: f.chunk(2))) { try again.setLabel(f.chunk(2), label) }
    }

    @Test func allChunksFollowsPaginationPastAThousandObjects() throws {
        let f = try S3Fixture(chunkSize: 16)
        let count = 1010
        let store = f.store
        let errors = Locked<[String]>([])
        let threads = 8
        Threads.run(threads) { t in
            for n in stride(from: t, to: count, by: threads) {
                let c = ChunkID(unit: UnitID(1), serial: UInt64(n) + 1)
                do { try [UInt8(n & 0x7f) | 1].withUnsafeBytes { try store.replace(c, with: $0) } } catch {
                    errors.withLock { $0.append("\(c): \(error)") }
                }
            }
        }
        #expect(errors.value == [])
        // Foreign keys under the prefix are not chunks.
        for name in ["chunks/readme", "chunks/00000000000000AB", "other/0000000000000001", "chunks/0000000000000001x"] {
            try [1].withUnsafeBytes { try f.client.put(f.endpoint.key(name), body: $0) }
        }
        let listed = try f.store.allChunks()
        #expect(listed.count == count)
        #expect(Set(listed) == Set((0..<count).map { ChunkID(unit: UnitID(1), serial: UInt64($0) + 1) }))
        #expect(try f.store.usage().usedBytes == UInt64(count))
        // A reopened store counts the same space from its listing (foreign keys not included).
        let again = try f.reopen()
        defer { again.close() }
        #expect(try again.usage().usedBytes == UInt64(count))
        #expect(try again.exactUsage().usedBytes == UInt64(count))
        // Small pages, to show the continuation token is followed (RGW and moto both honour max-keys).
        #expect(try f.client.listAll(prefix: f.store.chunksPrefix, pageSize: 97).count == count + 3)
    }

    @Test func replaceIsAtomicForConcurrentReaders() throws {
        let f = try S3Fixture()
        let c = f.chunk(0)
        let cs = f.chunkSize
        try [UInt8](repeating: 0xAA, count: cs).withUnsafeBytes { try f.store.replace(c, with: $0) }
        try [UInt8](repeating: 0xBB, count: 100).withUnsafeBytes { try f.store.replace(c, with: $0) }
        #expect(try f.store.readAll(c) == [UInt8](repeating: 0xBB, count: 100), "nothing of the longer old content")
        #expect(
            try read(f.store, c, at: 0, count: cs) == [UInt8](repeating: 0xBB, count: 100)
                + [UInt8](repeating: 0, count: cs - 100))
        // One writer swaps two full contents; readers must always see one of them whole.
        let store = f.store
        let torn = Locked<[String]>([])
        Threads.run(3) { t in
            for i in 0..<25 {
                do {
                    if t == 0 {
                        let byte: UInt8 = i % 2 == 0 ? 0x11 : 0x22
                        try [UInt8](repeating: byte, count: cs).withUnsafeBytes { try store.replace(c, with: $0) }
                    } else {
                        let all = try store.readAll(c)
                        let first = all.first ?? 0
                        if all.count != (first == 0xBB ? 100 : cs) || all.contains(where: { $0 != first }) {
                            torn.withLock { $0.append("reader \(t) saw a mix (\(all.count) bytes)") }
                        }
                    }
                } catch {
                    torn.withLock { $0.append("thread \(t): \(error)") }
                }
            }
        }
        #expect(torn.value == [])
    }

    @Test func quotaRefusesAPutThatWouldExceedIt() throws {
        let f = try S3Fixture(chunkSize: 4096, capacity: 3 * 4096)
        let full = pattern(4096, seed: 1)
        for n in 0..<3 { try write(f.store, f.chunk(n), at: 0, full) }
        #expect(try f.store.usage() == StoreUsage(totalBytes: 3 * 4096, freeBytes: 0, usedBytes: 3 * 4096))
        #expect(throws: StoreError.noSpace) { try write(f.store, f.chunk(3), at: 0, full) }
        #expect(throws: StoreError.missing(chunk: f.chunk(3))) { _ = try f.store.readAll(f.chunk(3)) }
        // Rewriting in place does not grow; shrinking frees; deleting frees.
        try write(f.store, f.chunk(0), at: 0, pattern(4096, seed: 2))
        try f.store.zero(f.chunk(1), offset: 2048, length: 2048)
        #expect(try f.store.usage().freeBytes == 2048)
        try f.store.delete(f.chunk(2))
        try write(f.store, f.chunk(3), at: 0, full)
        #expect(try f.store.exactUsage().usedBytes == 4096 * 3 - 2048)
    }

    @Test(
        .enabled(
            if: !S3TestServer.isMoto,
            "moto accepts any credentials: only a signature-checking server (Ceph RGW) can refuse a wrong secret"))
    func wrongSecretIsAClearSetupError() throws {
        let server = try S3TestServer.get()
        let endpoint = try S3Endpoint(url: server.url)
        let wrong = S3Credentials(accessKeyID: server.credentials.accessKeyID, secretAccessKey: "not-the-secret-xyz")
        #expect {
            _ = try S3Store(endpoint: endpoint, credentials: wrong, chunkSize: 4096, capacity: 1 << 30)
        } throws: { error in
            let text = "\(error)"
            return error is StoreSetupError && text.contains("access denied") && text.contains(endpoint.bucket)
                && !text.contains("not-the-secret-xyz")
        }
    }

    @Test func missingBucketIsAClearSetupError() throws {
        let server = try S3TestServer.get()
        let base = try S3Endpoint(url: server.url)
        let endpoint = try S3Endpoint(
            url: "http://\(base.host):\(base.port)/no-such-bucket-\(UInt32.random(in: 0...UInt32.max))")
        #expect {
            _ = try S3Store(endpoint: endpoint, credentials: server.credentials, chunkSize: 4096, capacity: 1 << 30)
        } throws: { error in
            "\(error)".contains("S3 bucket \"\(endpoint.bucket)\" does not exist at \(base.host):\(base.port)")
        }
    }

    @Test func aBucketThatVanishesIsAnIOErrorNotAMissingChunk() throws {
        let server = try S3TestServer.get()
        let base = try S3Endpoint(url: server.url)
        let endpoint = try S3Endpoint(
            url: "http://\(base.host):\(base.port)/tessera-gone-\(UInt32.random(in: 0...UInt32.max))")
        let admin = S3Client(endpoint: endpoint, credentials: server.credentials)
        defer { admin.shutdown() }
        try admin.createBucket()
        let store = try S3Store(endpoint: endpoint, credentials: server.credentials, chunkSize: 4096, capacity: 1 << 30)
        defer { store.close() }
        try admin.deleteBucket()
        let c = ChunkID(7)
        // NoSuchBucket must never read as "this chunk is absent" (that would hide the loss of every chunk).
        #expect { _ = try read(store, c, at: 0, count: 16) } throws: { ($0 as? StoreError)?.isIO == true }
        #expect { try store.delete(c) } throws: { ($0 as? StoreError)?.isIO == true }
        #expect { _ = try store.label(of: c) } throws: { ($0 as? StoreError) != .missing(chunk: c) }
    }

    @Test func unreachablePortFailsInBoundedTime() throws {
        let port = S3TestServer.freePort()
        let endpoint = try S3Endpoint(url: "http://127.0.0.1:\(port)/bucket")
        var options = S3ClientOptions()
        options.connectTimeout = .seconds(1)
        let start = Date()
        #expect {
            _ = try S3Store(
                endpoint: endpoint, credentials: S3Credentials(accessKeyID: "a", secretAccessKey: "b"), chunkSize: 4096,
                capacity: 1 << 30, options: options)
        } throws: { error in
            "\(error)".contains("cannot connect to S3 at 127.0.0.1:\(port)")
        }
        // 4 attempts, backoff ≤ 50 + 100 + 200 ms: well under the connect timeout times the attempts.
        #expect(Date().timeIntervalSince(start) < 4, "took \(Date().timeIntervalSince(start)) s")
    }

    @Test func bitrotComesBackFromTheRawStoreAndTheChecksumLayerCatchesIt() throws {
        // The raw store has no checksums: a flipped byte in the object is returned as data.
        let f = try S3Fixture()
        let c = f.chunk(0)
        let data = pattern(8192, seed: 5)
        try write(f.store, c, at: 0, data)
        try flipByte(f, c, at: 5000)
        var rotten = data
        rotten[5000] ^= 0x40
        #expect(try read(f.store, c, at: 0, count: 8192) == rotten)
        #expect(try f.store.check(c) == .unchecked)

        // ChecksumLayer over the S3Store (as the engine stacks it) turns the same damage into `.corrupt`.
        let g = try S3Fixture(chunkSize: ChecksumLayer.innerChunkSize(for: 64 * 1024))
        let layer = ChecksumLayer(over: g.store)
        try write(layer, c, at: 0, data)
        #expect(try read(layer, c, at: 0, count: 8192) == data)
        try flipByte(g, c, at: 5000)
        let fresh = ChecksumLayer(over: g.store)  // no cached tables: reads what the bucket holds
        #expect(throws: StoreError.corrupt(chunk: c, offset: 4096)) { _ = try read(fresh, c, at: 0, count: 8192) }
        #expect(try fresh.check(c) == .corrupt(offsets: [4096]))
    }

    /// Flips one bit of the byte at `offset` of `chunk`'s object, through the client, keeping its metadata.
    func flipByte(_ f: S3Fixture, _ chunk: ChunkID, at offset: Int) throws {
        let key = f.store.key(chunk)
        var bytes = try f.client.get(key).bodyBytes
        bytes[offset] ^= 0x40
        try bytes.withUnsafeBytes { try f.client.put(key, body: $0) }
    }
}

extension StoreError {
    var isIO: Bool {
        if case .io = self { return true }
        return false
    }
}
