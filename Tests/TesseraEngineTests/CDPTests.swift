// Continuous data protection through the engine: the image at every recorded instant equals a shadow
// copy taken then, byte for byte (instants inside one second and across seconds, over new bases); a torn
// journal tail after a crash keeps every instant up to the last flush; restore as a new volume and in
// place; retention by time and by size; and the bad-input table.
import Foundation
import TesseraCatalog
import TesseraCore
import TesseraTestSupport
import Testing

@testable import TesseraEngine

@Suite("CDP", .serialized)
struct CDPTests {
    static let size: UInt64 = 1 << 20

    /// Reads a whole image.
    static func contents(_ image: any VolumeStore) throws -> [UInt8] { try image.read(at: 0, count: Int(image.size)) }

    /// Checks SEEK_HOLE/SEEK_DATA of `image` against `expected`: every hole reads as zeros, and walking
    /// data and holes covers the image.
    static func checkSeek(_ image: any VolumeStore, _ expected: [UInt8]) {
        var at: UInt64 = 0
        while at < image.size {
            guard let hole = image.seek(from: at, data: false) else {
                Issue.record("SEEK_HOLE at \(at) gave ENXIO")
                return
            }
            let data = image.seek(from: hole, data: true) ?? image.size
            #expect(hole >= at && data >= hole)
            #expect(expected[Int(hole)..<Int(data)].allSatisfy { $0 == 0 }, "hole \(hole)..<\(data) holds data")
            at = max(data, hole + 1)
        }
    }

    /// Random writes, discards, flushes and new bases; after each, the instant and the expected image.
    static func workload(_ e: Engine, _ v: Volume, steps: Int, seed: UInt64) throws -> [(Int64, [UInt8])] {
        var rng = SplitMix64(seed: seed)
        var shadow = [UInt8](repeating: 0, count: Int(v.size))
        let top = e.stack(of: v)
        var points: [(Int64, [UInt8])] = [(CDPJournal.now(), shadow)]
        for step in 0..<steps {
            let offset = Int(rng.next() % (size - 20000))
            switch rng.next() % 10 {
            case 0:
                let n = Int(rng.next() % 9000) + 1
                try top.discard(at: UInt64(offset), length: UInt64(n))
                for i in offset..<offset + n { shadow[i] = 0 }
            case 1: try top.flush(dataOnly: false)
            case 2: try e.takeBase(v)
            default:
                let n = Int(rng.next() % 20000) + 1
                let bytes = [UInt8].pattern(n, seed: rng.next())
                try top.write(bytes, at: UInt64(offset))
                shadow.replaceSubrange(offset..<offset + n, with: bytes)
            }
            points.append((CDPJournal.now(), shadow))
            if step % 25 == 24 { Thread.sleep(forTimeInterval: 0.3) }  // instants across seconds too
        }
        return points
    }

    @Test(arguments: [UInt64(1), 2, 3])
    func imageAtEveryInstantMatchesTheShadow(seed: UInt64) throws {
        let t = try TestData()
        try t.withEngine { e in
            let v = try e.createVolumes(name: "vm", size: Self.size)[0]
            _ = try e.enableCDP("vm", window: 3600, maxSize: nil)
            let points = try Self.workload(e, v, steps: 80, seed: seed)
            for (i, (time, expected)) in points.enumerated() {
                let image = try e.cdpImage(v, at: time)
                #expect(image.size == Self.size)
                #expect(try Self.contents(image) == expected, "instant #\(i) (seed \(seed))")
                if i % 10 == 0 { Self.checkSeek(image, expected) }
            }
            // By name, too.
            let last = try #require(points.last)
            #expect(try Self.contents(try e.cdpImage("vm", at: CDPTime.format(last.0))) == last.1)
        }
    }

    @Test func aVolumeOfAnotherDomainIsProtectedListedAndRestoredInItsDomain() throws {
        let t = try TestData()
        try t.withEngine { e in
            try e.createDomain("team")
            let team = try e.domainID("team")
            let mine = try e.createVolumes(name: "vm", size: Self.size)[0]
            let theirs = try e.createVolumes(name: "vm", size: Self.size, domain: "team")[0]
            try e.stack(of: mine).write(.pattern(8192, seed: 1), at: 0)
            _ = try e.enableCDP("vm", window: 3600, maxSize: nil, domain: "team")
            #expect(try e.cdpInfos().isEmpty)  // the default domain's vm is not protected
            #expect(try e.cdpInfos(domain: "team").map(\.volume) == ["vm"])
            expectCode(.notFound) { _ = try e.cdpInfos("vm") }
            try e.stack(of: theirs).write(.pattern(8192, seed: 2), at: 4096)
            try e.stack(of: theirs).flush(dataOnly: false)
            _ = try e.markCDP("vm", mark: "one", domain: "team")
            let one = try Self.contents(theirs)
            try e.stack(of: theirs).write(.pattern(4096, seed: 3), at: 0)
            #expect(e.cdpListing().isEmpty)
            #expect(e.cdpListing(domainID: team).map(\.name).sorted().last == "vm@one")
            #expect(try Self.contents(try e.cdpImage("vm", at: "one", domain: "team")) == one)
            expectCode(.notFound) { _ = try e.cdpImage("vm", at: "one") }
            let restored = try e.restoreCDP("vm", at: "one", as: "back", domain: "team")
            #expect(restored.domain == "team")
            let back = try #require(e.volume(named: "back", domainID: team))
            #expect(try Self.contents(back) == one)
            #expect(e.volume(named: "back") == nil)
            try e.disableCDP("vm", domain: "team")
            #expect(try e.cdpInfos(domain: "team").isEmpty)
        }
    }

    @Test func tornTailAfterACrashKeepsEveryInstantUpToTheLastFlush() throws {
        let t = try TestData()
        let (flushed, expected) = try t.withEngine { e -> (Int64, [UInt8]) in
            let v = try e.createVolumes(name: "vm", size: Self.size)[0]
            _ = try e.enableCDP("vm", window: 3600, maxSize: nil)
            let points = try Self.workload(e, v, steps: 30, seed: 9)
            try e.stack(of: v).flush(dataOnly: false)
            return try #require(points.last)
        }
        // The crash: a record torn half way at the end of the newest segment.
        let dir = t.data.cdpPath + "/1"
        let seg = try #require(try FileManager.default.contentsOfDirectory(atPath: dir).sorted().last)
        let handle = try #require(FileHandle(forWritingAtPath: dir + "/" + seg))
        handle.seekToEndOfFile()
        let h = CDPRecordHeader(
            kind: .write, seq: 1 << 40, time: CDPJournal.now(), offset: 0, length: 4096, volumeSize: Self.size,
            payload: 4096)
        let payload = [UInt8](repeating: 0xAB, count: 4096)
        handle.write(Data(payload.withUnsafeBytes { CDPFormat.encode(h, payload: $0) } + payload[0..<1000]))
        try handle.close()
        try t.withEngine { e in
            let v = try #require(e.volume(named: "vm"))
            #expect(try Self.contents(try e.cdpImage(v, at: flushed)) == expected)
            #expect(try Self.contents(try e.cdpImage(v, at: CDPJournal.now())) == expected)
            // The journal goes on after the torn tail.
            try e.stack(of: v).write([1, 2, 3], at: 0)
            var now = expected
            now.replaceSubrange(0..<3, with: [1, 2, 3])
            #expect(try Self.contents(try e.cdpImage(v, at: CDPJournal.now())) == now)
        }
    }

    @Test func restoreAsANewVolumeAndInPlace() throws {
        let t = try TestData()
        try t.withEngine { e in
            let v = try e.createVolumes(name: "vm", size: Self.size)[0]
            let top = e.stack(of: v)
            try top.write(.pattern(300_000, seed: 1), at: 0)
            _ = try e.enableCDP("vm", window: 3600, maxSize: nil)
            try top.write(.pattern(5000, seed: 2), at: 4000)
            let early = try v.contents()
            _ = try e.markCDP("vm", mark: "before-upgrade")
            try top.write(.pattern(70000, seed: 3), at: 100_000)
            try top.discard(at: 0, length: 65536)
            try top.resize(to: Self.size * 2)
            let late = try v.contents()
            let lateTime = CDPJournal.now()

            _ = try e.restoreCDP("vm", at: "before-upgrade", as: "copy")
            let copy = try #require(e.volume(named: "copy"))
            #expect(copy.size == Self.size)
            #expect(try copy.contents() == early)
            #expect(try v.contents() == late)

            v.opened()
            expectCode(.busy) { _ = try e.restoreCDP("vm", at: "before-upgrade", as: nil) }
            _ = v.closed()
            _ = try e.restoreCDP("vm", at: "before-upgrade", as: nil)
            #expect(v.size == Self.size)
            #expect(try v.contents() == early)
            // The restore is journaled: the instant before it still reads as it was.
            #expect(try Self.contents(try e.cdpImage(v, at: lateTime)) == late)
            _ = try e.restoreCDP("vm", at: CDPTime.format(lateTime), as: nil)
            #expect(try v.contents() == late)
        }
    }

    @Test func retentionByTimeAndBySize() throws {
        let t = try TestData()
        try t.withEngine { e in
            let v = try e.createVolumes(name: "vm", size: Self.size)[0]
            _ = try e.enableCDP("vm", window: 10, maxSize: 1 << 20)
            let top = e.stack(of: v)
            let start = try #require(e.cdpInfos("vm").first?.windowStart)
            try top.write(.pattern(4096, seed: 1), at: 0)
            let early = CDPJournal.now()
            _ = try e.markCDP("vm", mark: "old")
            // By time: 20 s later, a new base; the old one is past the 10 s window and goes.
            e.runCDPRetention(now: CDPJournal.now() + 20_000_000_000)
            e.runCDPRetention(now: CDPJournal.now() + 40_000_000_000)
            let info = try #require(e.cdpInfos("vm").first)
            #expect(info.windowStart != start)
            #expect(info.bases == 1)
            #expect(info.marks.isEmpty)
            expectCode(.invalid) { _ = try e.cdpImage(v, at: early) }
            expectCode(.notFound) { _ = try e.cdpImage("vm", at: "old") }

            // By size: 2 MiB into a 1 MiB cap; the oldest instants go, and status says so.
            for i in 0..<32 { try top.write(.pattern(65536, seed: UInt64(i)), at: UInt64(i % 16) * 65536) }
            let expected = try v.contents()
            #expect(try #require(e.cdpInfos("vm").first).retainedBytes > 1 << 20)
            e.runCDPRetention()
            let capped = try #require(e.cdpInfos("vm").first)
            #expect(capped.retainedBytes < 1 << 20)
            #expect(capped.warnings.contains { $0.contains("--max-size") }, "\(capped.warnings)")
            #expect(try Self.contents(try e.cdpImage(v, at: CDPJournal.now())) == expected)
        }
    }

    /// A diff applied over the image at FROM (its data ranges, by SEEK_DATA/SEEK_HOLE) gives the image at TO.
    @Test func aDiffAppliedOverFromGivesTo() throws {
        let t = try TestData()
        try t.withEngine { e in
            let v = try e.createVolumes(name: "vm", size: Self.size)[0]
            let top = e.stack(of: v)
            try top.write(.pattern(Int(Self.size), seed: 1), at: 0)
            _ = try e.enableCDP("vm", window: 3600, maxSize: nil)
            try top.write(.pattern(10000, seed: 2), at: 5000)
            _ = try e.markCDP("vm", mark: "from")
            let from = try v.contents()
            _ = try Self.workload(e, v, steps: 40, seed: 4)
            _ = try e.markCDP("vm", mark: "to")
            let to = try v.contents()
            try top.write(.pattern(4096, seed: 5), at: 0)  // after TO: not in the diff

            let diff = try e.cdpDiff("vm", from: "from", to: "to")
            #expect(diff.size == Self.size)
            var rebuilt = from
            var at: UInt64 = 0
            var data: UInt64 = 0
            while let start = diff.seek(from: at, data: true) {
                let end = diff.seek(from: start, data: false) ?? diff.size
                let bytes = try diff.read(at: start, count: Int(end - start))
                rebuilt.replaceSubrange(Int(start)..<Int(end), with: bytes)
                data += end - start
                at = end
                if at >= diff.size { break }
            }
            #expect(rebuilt == to)
            #expect(data < Self.size)
            let whole = try Self.contents(diff)
            for r in diff.regions {
                #expect(Array(whole[Int(r.start)..<Int(r.end)]) == Array(to[Int(r.start)..<Int(r.end)]))
            }
            expectCode(.invalid) { _ = try e.cdpDiff("vm", from: "to", to: "from") }
            expectCode(.notFound) { _ = try e.cdpDiff("vm", from: "nope", to: "to") }
            expectCode(.invalid) { _ = try e.markCDP("vm", mark: "a..b") }
        }
    }

    /// Applies `diff`'s data ranges (by SEEK_DATA/SEEK_HOLE) over `from`.
    static func apply(_ diff: CDPDiffImage, over from: [UInt8]) throws -> [UInt8] {
        var out = from
        if out.count < Int(diff.size) { out += [UInt8](repeating: 0, count: Int(diff.size) - out.count) }
        var at: UInt64 = 0
        while at < diff.size, let start = diff.seek(from: at, data: true) {
            let end = diff.seek(from: start, data: false) ?? diff.size
            out.replaceSubrange(Int(start)..<Int(end), with: try diff.read(at: start, count: Int(end - start)))
            at = end
        }
        return Array(out[0..<Int(diff.size)])
    }

    /// Snapshot names bound diffs, also one taken while a writer keeps writing (its in-flight writes land
    /// on either side of the capture): a diff from it applied over it, or to it applied over the image
    /// at FROM, gives exactly the other end.
    @Test func snapshotsOfAProtectedVolumeBoundDiffs() throws {
        let t = try TestData()
        try t.withEngine { e in
            let v = try e.createVolumes(name: "vm", size: Self.size)[0]
            let top = e.stack(of: v)
            try top.write(.pattern(Int(Self.size), seed: 1), at: 0)
            try e.createSnapshot(name: "before", volumes: ["vm"])  // not protected yet
            _ = try e.enableCDP("vm", window: 3600, maxSize: nil)
            _ = try Self.workload(e, v, steps: 20, seed: 6)
            try e.createSnapshot(name: "s1", volumes: ["vm"])
            let s1 = try v.contents()
            _ = try Self.workload(e, v, steps: 20, seed: 7)
            _ = try e.markCDP("vm", mark: "m")
            let m = try v.contents()

            // s2 while a writer writes 4 KiB blocks without pause.
            let stop = Locked(false)
            let writer = Thread {
                var rng = SplitMix64(seed: 8)
                while !stop.value {
                    let block = rng.next() % (Self.size / 4096)
                    try? top.write(.pattern(4096, seed: rng.next()), at: block * 4096)
                }
            }
            writer.start()
            Thread.sleep(forTimeInterval: 0.05)
            try e.createSnapshot(name: "s2", volumes: ["vm"])
            Thread.sleep(forTimeInterval: 0.05)
            stop.withLock { $0 = true }
            while !writer.isFinished { Thread.sleep(forTimeInterval: 0.01) }
            let img = try #require(e.snapshotImages("s2")?.first)
            let s2 = try img.volume.read(at: 0, count: Int(img.size), epoch: img.epoch, viewSize: img.size)
            _ = try Self.workload(e, v, steps: 10, seed: 9)
            _ = try e.markCDP("vm", mark: "end")
            let end = try v.contents()

            #expect(try Self.apply(try e.cdpDiff("vm", from: "s1", to: "m"), over: s1) == m)
            #expect(try Self.apply(try e.cdpDiff("vm", from: "m", to: "s2"), over: m) == s2)
            #expect(try Self.apply(try e.cdpDiff("vm", from: "s1", to: "s2"), over: s1) == s2)
            #expect(try Self.apply(try e.cdpDiff("vm", from: "s2", to: "end"), over: s2) == end)
            #expect(try Self.contents(try e.cdpDiff("vm", from: "s1", to: "s2").image) == s2)
            expectCode(.invalid) { _ = try e.cdpDiff("vm", from: "before", to: "m") }
            expectCode(.invalid) { _ = try e.cdpDiff("vm", from: "s2", to: "s1") }
            _ = try e.createVolumes(name: "other", size: Self.size)
            try e.createSnapshot(name: "o", volumes: ["other"])
            expectCode(.notFound) { _ = try e.cdpDiff("vm", from: "o", to: "m") }
        }
    }

    @Test func badInputChangesNothing() throws {
        let t = try TestData()
        try t.withEngine { e in
            let v = try e.createVolumes(name: "vm", size: Self.size)[0]
            _ = try e.createVolumes(name: "plain", size: Self.size)
            expectCode(.invalid) { _ = try e.enableCDP("vm", window: 0, maxSize: nil) }
            expectCode(.invalid) { _ = try e.enableCDP("vm", window: 1 << 40, maxSize: nil) }
            expectCode(.invalid) { _ = try e.enableCDP("vm", window: 60, maxSize: 0) }
            expectCode(.notFound) { _ = try e.enableCDP("nope", window: 60, maxSize: nil) }
            #expect(try e.cdpInfos().isEmpty)
            _ = try e.enableCDP("vm", window: 3600, maxSize: nil)
            expectCode(.exists) { _ = try e.enableCDP("vm", window: 60, maxSize: nil) }
            let before = try e.cdpInfos()
            expectCode(.invalid) { _ = try e.cdpImage("vm", at: "2026-13-01T00:00:00Z") }
            expectCode(.invalid) { _ = try e.cdpImage("vm", at: CDPTime.format(CDPJournal.now() + 60_000_000_000)) }
            expectCode(.invalid) { _ = try e.cdpImage("vm", at: "2000-01-01T00:00:00Z") }
            expectCode(.notFound) { _ = try e.cdpImage("vm", at: "no-such-mark") }
            expectCode(.notFound) { _ = try e.cdpImage("plain", at: CDPTime.format(CDPJournal.now())) }
            expectCode(.notFound) { _ = try e.cdpImage("nope", at: CDPTime.format(CDPJournal.now())) }
            _ = try e.markCDP("vm", mark: "m")
            expectCode(.exists) { _ = try e.markCDP("vm", mark: "m") }
            expectCode(.invalid) { _ = try e.markCDP("vm", mark: "2026-12-02T11:20:05Z") }
            expectCode(.invalid) { _ = try e.markCDP("vm", mark: "a@b") }
            expectCode(.notFound) { _ = try e.markCDP("plain", mark: "m") }
            expectCode(.exists) { _ = try e.restoreCDP("vm", at: "m", as: "plain") }
            expectCode(.invalid) { _ = try e.restoreCDP("vm", at: "2000-01-01T00:00:00Z", as: "new") }
            #expect(e.volume(named: "new") == nil)
            expectCode(.notFound) { try e.disableCDP("plain") }
            expectCode(.busy) { try e.deleteVolume("vm") }
            expectCode(.notFound) { try e.deleteSnapshot(Engine.baseName(v.id, 0)) }
            #expect(!e.snapshotNames().contains { $0.hasPrefix(".") })
            var after = try e.cdpInfos()
            after[0].windowEnd = before[0].windowEnd
            after[0].bytesPerHour = before[0].bytesPerHour
            after[0].marks = before[0].marks
            #expect(after == before)
            try e.disableCDP("vm")
            #expect(try e.cdpInfos().isEmpty)
            #expect(e.snapshotInfos(domainID: DomainRecord.defaultID, hidden: true).isEmpty)
            #expect(!FileManager.default.fileExists(atPath: t.data.cdpPath + "/\(v.id.rawValue)"))
            try e.deleteVolume("vm")
        }
    }
}
