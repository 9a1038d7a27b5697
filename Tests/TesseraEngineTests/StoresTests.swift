// Pools of several store kinds through the engine: placement over dir and file stores with and
// without compression, the RAM cache in front, scrub finding a damaged chunk, bad store specs.

import Foundation
import TesseraCore
import TesseraTestSupport
import Testing

@testable import TesseraEngine

@Suite("Stores and pools")
struct StoresTests {
    static let cs: UInt64 = 64 * 1024

    private func chunkFiles(_ dir: String) -> [String] {
        let chunks = dir + "/chunks"
        let subdirs = (try? FileManager.default.contentsOfDirectory(atPath: chunks)) ?? []
        return subdirs.flatMap { d in
            ((try? FileManager.default.contentsOfDirectory(atPath: chunks + "/" + d)) ?? []).map {
                chunks + "/" + d + "/" + $0
            }
        }
    }

    @Test(arguments: [0, 8 << 20] as [UInt64])
    func aPoolOfDirAndFileStoresSpreadsChunksAndSurvivesARestart(cacheSize: UInt64) throws {
        let t = try TestData(chunkSize: Self.cs)
        let dir = t.dir.path + "/d1"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let data = [UInt8].pattern(40 * Int(Self.cs), seed: 77)
        do {
            let engine = try Engine(t.data, cacheSize: cacheSize)
            try engine.createPool(name: "p", chunkSize: Self.cs)
            // Two file stores of the same size (one compressed): equal room, so an even, alternating spread.
            try engine.addStore(
                StoreSpec(
                    name: "f1", pool: "p", kind: .file, location: t.dir.path + "/f1.img",
                    options: StoreOptions(size: 64 << 20)))
            try engine.addStore(
                StoreSpec(
                    name: "f2", pool: "p", kind: .file, location: t.dir.path + "/f2.img",
                    options: StoreOptions(size: 64 << 20, compression: "zstd:3")))
            let v = try engine.createVolumes(name: "v", size: 64 * Self.cs, pool: "p")[0]
            try v.write(data, at: 0)
            try engine.flushAll()
            var infos = try engine.storeInfos(sample: 64)
            let f1 = try #require(infos.first { $0.name == "f1" })
            let f2 = try #require(infos.first { $0.name == "f2" })
            #expect(f1.chunks + f2.chunks == 40)
            #expect(abs(f1.chunks - f2.chunks) <= 2, "equal room → an even spread: \(f1.chunks) / \(f2.chunks)")
            #expect(f2.compression == "zstd:3" && f1.compression == "none")
            // A directory store joining later, on a filesystem with far more room, takes most new chunks.
            try engine.addStore(StoreSpec(name: "d1", pool: "p", kind: .dir, location: dir))
            try v.write(data, at: 0)  // rewrites in place: no new chunks
            try v.write([UInt8].pattern(20 * Int(Self.cs), seed: 78), at: 40 * Self.cs)
            try engine.flushAll()
            infos = try engine.storeInfos()
            let d1 = try #require(infos.first { $0.name == "d1" })
            #expect(d1.chunks >= 15, "weighted by free space: \(infos.map { ($0.name, $0.chunks) })")
            #expect(chunkFiles(dir).count == d1.chunks)
            engine.stopCaches()
        }
        let engine = try Engine(t.data, cacheSize: cacheSize)
        let v = try #require(engine.volume(named: "v"))
        #expect(try v.read(at: 0, count: data.count) == data)
        let report = try engine.scrub()
        #expect(report.chunks == 60 && report.findings.isEmpty && report.ok == 60)
        engine.stopCaches()
    }

    @Test func scrubFindsAFlippedByteAndNamesTheVolume() throws {
        let t = try TestData(chunkSize: Self.cs)
        let data = [UInt8].pattern(4 * Int(Self.cs), seed: 5)
        var victim = ""
        do {
            let engine = try Engine(t.data)
            let v = try engine.createVolumes(name: "vm", size: 8 * Self.cs)[0]
            try v.write(data, at: 0)
            try v.flush()
            victim = try #require(chunkFiles(t.data.defaultStorePath).sorted().first)
        }
        // Bitrot in the data part of one chunk file.
        let fd = open(victim, O_RDWR)
        #expect(fd >= 0)
        var byte: UInt8 = 0
        #expect(pread(fd, &byte, 1, 5000) == 1)
        byte ^= 0x40
        #expect(pwrite(fd, &byte, 1, 5000) == 1)
        close(fd)
        let engine = try Engine(t.data)
        var calls = 0
        let report = try engine.scrub { _, _ in calls += 1 }
        #expect(calls >= 4)
        #expect(report.chunks == 4)
        #expect(report.corrupt == 1)
        let f = try #require(report.findings.first)
        #expect(f.store == "default" && f.volume == "vm" && f.offsets == [4096])
        // The client sees EIO there, never the wrong bytes; the other chunks read fine.
        let v = try #require(engine.volume(named: "vm"))
        let index = try #require(f.volumeOffset)
        #expect(throws: StoreError.self) { _ = try v.read(at: index + 4096, count: 10) }
        let other = index == 0 ? Self.cs : 0
        #expect(try v.read(at: other, count: 100) == Array(data[Int(other)..<Int(other) + 100]))
        #expect(try engine.storeInfos().first?.checksumErrors ?? 0 > 0)
    }

    @Test func badStoreSpecsChangeNothing() throws {
        let t = try TestData(chunkSize: Self.cs)
        let engine = try Engine(t.data)
        let before = try engine.storeInfos()
        let missing = t.dir.path + "/nope"
        #expect(throws: TesseraError.self) {
            try engine.addStore(StoreSpec(name: "x", pool: "default", kind: .dir, location: missing))
        }
        #expect(throws: TesseraError.self) {
            try engine.addStore(StoreSpec(name: "x", pool: "nopool", kind: .dir, location: t.dir.path))
        }
        #expect(throws: TesseraError.self) {
            try engine.addStore(
                StoreSpec(
                    name: "default", pool: "default", kind: .file, location: t.dir.path + "/f",
                    options: StoreOptions(size: 8 << 20)))
        }
        #expect(throws: TesseraError.self) {
            try engine.addStore(
                StoreSpec(
                    name: "y", pool: "default", kind: .file, location: t.dir.path + "/g",
                    options: StoreOptions(size: 8 << 20, compression: "lz4")))
        }
        #expect(throws: TesseraError.self) {
            try engine.addStore(StoreSpec(name: "z", pool: "default", kind: .s3, location: "http://127.0.0.1:1/b"))
        }
        #expect(try engine.storeInfos().map(\.name) == before.map(\.name))
        #expect(!FileManager.default.fileExists(atPath: t.dir.path + "/g"), "no file left behind")
    }
}
