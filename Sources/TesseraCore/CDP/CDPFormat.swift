// CDPFormat — the on-disk format of a CDP journal segment (DATA/cdp/VOLUME-ID/GGGGGGGGGGGGGGGG-PPPPPP.seg).
//
// A segment: a 32-byte header ("TCDPSEG1", generation, part, zero), then records back to back. A record:
// a 56-byte header, all little-endian —
//   magic u32 · kind u32 · seq u64 · time i64 (ns since 1970, UTC) · offset u64 · length u64 ·
//   volume size after it u64 · payload length u32 · CRC32C u32 (of the header with this field 0, then
//   the payload)
// — then the payload (a write's bytes; none for a discard or a resize). A record that does not check
// (a torn tail after a crash) ends the segment: it and everything after it are ignored.
import CLinux

/// What a journal record did to the volume.
public enum CDPKind: UInt32, Sendable {
    /// `length` bytes written at `offset` (the payload).
    case write = 1
    /// `offset ..< offset + length` made to read as zeros.
    case discard = 2
    /// The size changed to `volumeSize`; a shrink also zeroes `offset ..< offset + length` (the part cut off).
    case resize = 3
}

/// One record's header as it is written.
public struct CDPRecordHeader: Equatable, Sendable {
    public var kind: CDPKind
    public var seq: UInt64
    public var time: Int64
    public var offset: UInt64
    public var length: UInt64
    public var volumeSize: UInt64
    public var payload: UInt32

    public init(
        kind: CDPKind, seq: UInt64, time: Int64, offset: UInt64, length: UInt64, volumeSize: UInt64,
        payload: UInt32
    ) {
        self.kind = kind
        self.seq = seq
        self.time = time
        self.offset = offset
        self.length = length
        self.volumeSize = volumeSize
        self.payload = payload
    }
}

public enum CDPFormat {
    public static let segmentMagic: [UInt8] = Array("TCDPSEG1".utf8)
    public static let segmentHeaderSize = 32
    public static let recordMagic: UInt32 = 0x5244_5043  // "CPDR"
    public static let headerSize = 56
    /// A segment is closed and a new part begun past this many bytes (retention drops whole segments).
    public static let segmentLimit: UInt64 = 64 << 20
    /// Largest payload accepted when scanning (a write is split into pieces of at most this).
    public static let maxPayload: UInt32 = 8 << 20

    public static func segmentName(generation: UInt64, part: UInt64) -> String {
        hex(generation, 16) + "-" + hex(part, 6) + ".seg"
    }

    /// (generation, part) from a segment file name; nil for anything else.
    public static func parseSegmentName(_ name: String) -> (generation: UInt64, part: UInt64)? {
        guard name.hasSuffix(".seg") else { return nil }
        let parts = name.dropLast(4).split(separator: "-")
        guard parts.count == 2, let g = UInt64(parts[0], radix: 16), let p = UInt64(parts[1], radix: 16) else {
            return nil
        }
        return (g, p)
    }

    private static func hex(_ v: UInt64, _ width: Int) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }

    public static func segmentHeader(generation: UInt64, part: UInt64) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: segmentHeaderSize)
        b.replaceSubrange(0..<8, with: segmentMagic)
        put(generation, into: &b, at: 8)
        put(part, into: &b, at: 16)
        return b
    }

    /// The generation a segment header names; nil when it is not one.
    public static func parseSegmentHeader(_ b: [UInt8]) -> UInt64? {
        guard b.count >= segmentHeaderSize, Array(b[0..<8]) == segmentMagic else { return nil }
        return get(b, 8)
    }

    /// The header bytes of `h` with its CRC over them and `payload`.
    public static func encode(_ h: CDPRecordHeader, payload: UnsafeRawBufferPointer?) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: headerSize)
        put32(recordMagic, into: &b, at: 0)
        put32(h.kind.rawValue, into: &b, at: 4)
        put(h.seq, into: &b, at: 8)
        put(UInt64(bitPattern: h.time), into: &b, at: 16)
        put(h.offset, into: &b, at: 24)
        put(h.length, into: &b, at: 32)
        put(h.volumeSize, into: &b, at: 40)
        put32(h.payload, into: &b, at: 48)
        var crc = b.withUnsafeBytes { tessera_crc32c(0, $0.baseAddress, $0.count) }
        if let payload, payload.count > 0 { crc = tessera_crc32c(crc, payload.baseAddress, payload.count) }
        put32(crc, into: &b, at: 52)
        return b
    }

    /// The header in `b` (headerSize bytes) and its recorded CRC, when the magic and kind are sane; the
    /// caller checks the CRC with `crc(of:payload:)`.
    public static func decode(_ b: [UInt8]) -> (CDPRecordHeader, crc: UInt32)? {
        guard b.count >= headerSize, get32(b, 0) == recordMagic, let kind = CDPKind(rawValue: get32(b, 4)) else {
            return nil
        }
        let payload = get32(b, 48)
        guard payload <= maxPayload, kind == .write || payload == 0 else { return nil }
        let h = CDPRecordHeader(
            kind: kind, seq: get(b, 8), time: Int64(bitPattern: get(b, 16)), offset: get(b, 24), length: get(b, 32),
            volumeSize: get(b, 40), payload: payload)
        return (h, get32(b, 52))
    }

    /// The CRC a record with header bytes `b` (its CRC field ignored) and `payload` must carry.
    public static func crc(of b: [UInt8], payload: [UInt8]) -> UInt32 {
        var h = Array(b[0..<headerSize])
        put32(0, into: &h, at: 52)
        let c = h.withUnsafeBytes { tessera_crc32c(0, $0.baseAddress, $0.count) }
        return payload.withUnsafeBytes { $0.count == 0 ? c : tessera_crc32c(c, $0.baseAddress, $0.count) }
    }

    static func put(_ v: UInt64, into b: inout [UInt8], at i: Int) {
        for k in 0..<8 { b[i + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(k))) }
    }
    static func put32(_ v: UInt32, into b: inout [UInt8], at i: Int) {
        for k in 0..<4 { b[i + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(k))) }
    }
    static func get(_ b: [UInt8], _ i: Int) -> UInt64 {
        (0..<8).reduce(0) { $0 | UInt64(b[i + $1]) << (8 * UInt64($1)) }
    }
    static func get32(_ b: [UInt8], _ i: Int) -> UInt32 {
        (0..<4).reduce(0) { $0 | UInt32(b[i + $1]) << (8 * UInt32($1)) }
    }
}
