// The CDP journal alone: RFC 3339 instants, the record format, append and scan back, a torn tail, the
// index's slices and retention's drop.
import Foundation
import TesseraCore
import TesseraTestSupport
import Testing

@Suite struct CDPJournalTests {
    static let instants: [(String, Int64)] = [
        ("1970-01-01T00:00:00Z", 0),
        ("2026-12-02T11:20:05Z", 1_796_210_405_000_000_000),
        ("2026-12-02T11:20:05.5Z", 1_796_210_405_500_000_000),
        ("2026-12-02T12:20:05.000000001+01:00", 1_796_210_405_000_000_001),
        ("2026-12-02t06:50:05.123456789-04:30", 1_796_210_405_123_456_789),
        ("2024-02-29T00:00:00z", 1_709_164_800_000_000_000),
        ("2999-01-01T00:00:00Z", Int64.max),
    ]

    @Test(arguments: instants)
    func parsesRFC3339(text: String, ns: Int64) {
        #expect(CDPTime.parse(text) == ns)
    }

    @Test(arguments: [
        "", "2026-12-02", "2026-12-02T11:20:05", "2026-13-02T11:20:05Z", "2026-02-30T11:20:05Z",
        "2026-12-02T24:00:00Z", "2026-12-02T11:20:05.Z", "2026-12-02T11:20:05+0100", "yesterday",
        "2026-12-02T11:20:05Zjunk", "1969-12-31T23:59:59Z",
    ])
    func refusesMalformedTimes(text: String) {
        #expect(CDPTime.parse(text) == nil)
    }

    @Test func formatsRoundTrip() {
        for ns: Int64 in [0, 1, 1_796_210_405_000_000_000, 1_796_210_405_123_456_789, 4_102_444_799_999_999_999] {
            #expect(CDPTime.parse(CDPTime.format(ns)) == ns)
        }
        #expect(CDPTime.format(1_796_210_405_500_000_000) == "2026-12-02T11:20:05.5Z")
    }

    @Test func recordHeaderRoundTrips() {
        let h = CDPRecordHeader(
            kind: .write, seq: 42, time: 1_796_210_405_123_456_789, offset: 12288, length: 3, volumeSize: 1 << 30,
            payload: 3)
        let payload: [UInt8] = [1, 2, 3]
        let bytes = payload.withUnsafeBytes { CDPFormat.encode(h, payload: $0) }
        let decoded = CDPFormat.decode(bytes)
        #expect(decoded?.0 == h)
        #expect(decoded?.crc == CDPFormat.crc(of: bytes, payload: payload))
        #expect(decoded?.crc != CDPFormat.crc(of: bytes, payload: [1, 2, 4]))
    }

    private func write(_ j: CDPJournal, _ bytes: [UInt8], at offset: UInt64) throws {
        try bytes.withUnsafeBytes {
            try j.append(.write, offset: offset, length: UInt64(bytes.count), volumeSize: 1 << 20, payload: $0)
        }
    }

    @Test func appendScanAndTornTail() throws {
        let dir = try TemporaryDirectory(prefix: "cdp-journal")
        let j = CDPJournal(directory: dir.path + "/j")
        try j.open(generation: 0, volumeSize: 1 << 20)
        for i in 0..<10 { try write(j, [UInt8](repeating: UInt8(i + 1), count: 4096), at: UInt64(i) * 4096) }
        try j.discard(at: 0, length: 8192)
        try j.sync()
        let before = j.withIndexCount()
        #expect(before == 11)
        // A torn record at the end: its header claims a payload that is not all there.
        let seg = try #require(try FileManager.default.contentsOfDirectory(atPath: dir.path + "/j").sorted().last)
        let h = CDPRecordHeader(
            kind: .write, seq: 12, time: CDPJournal.now(), offset: 0, length: 4096, volumeSize: 0, payload: 4096)
        let payload = [UInt8](repeating: 9, count: 4096)
        var torn = payload.withUnsafeBytes { CDPFormat.encode(h, payload: $0) }
        torn += payload[0..<100]
        let handle = try #require(FileHandle(forWritingAtPath: dir.path + "/j/" + seg))
        handle.seekToEndOfFile()
        handle.write(Data(torn))
        try handle.close()

        let again = CDPJournal(directory: dir.path + "/j")
        try again.open(generation: 0, volumeSize: 1 << 20)
        #expect(again.withIndexCount() == 11)
        // Appends go on in a new part, numbered after the torn one.
        try write(again, [7], at: 5)
        let third = CDPJournal(directory: dir.path + "/j")
        try third.open(generation: 0, volumeSize: 1 << 20)
        #expect(third.withIndexCount() == 12)
    }

    @Test func indexSlicesByGenerationAndTime() throws {
        let dir = try TemporaryDirectory(prefix: "cdp-index")
        let j = CDPJournal(directory: dir.path + "/j")
        try j.open(generation: 0, volumeSize: 1 << 20)
        try write(j, [1], at: 0)
        let t1 = try #require(j.lastTime)
        j.beginGeneration(1)
        try write(j, [2], at: 1)
        try write(j, [3], at: 4096 * 3 + 5)
        let first1 = try #require(j.firstSeq(of: 1))
        j.withIndex { index in
            #expect(index.writes(block: 0, from: 0, until: t1).count == 1)
            #expect(index.writes(block: 0, from: 0, until: .max).count == 2)
            #expect(index.writes(block: 0, from: first1, until: .max).count == 1)
            #expect(index.writtenBlocks(from: 0, until: .max) == [0, 3])
            #expect(index.blocksChanged(from: 0, after: t1) == [0, 3])
        }
        let retained = j.retainedBytes
        j.drop(before: 1)
        #expect(j.retainedBytes < retained)
        j.withIndex { index in
            #expect(index.writes(block: 0, from: 0, until: .max).map(\.seq) == [first1])
        }
    }
}

extension CDPJournal {
    func discard(at offset: UInt64, length: UInt64) throws {
        try append(.discard, offset: offset, length: length, volumeSize: 1 << 20)
    }
    func withIndexCount() -> Int { withIndex { $0.count } }
}
