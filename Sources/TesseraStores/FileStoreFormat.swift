// FileStore's on-medium format, all integers little-endian:
//
//   0           header block, 4096 bytes: magic "TESSERAF" · format version u32 · entry size u32 (64) ·
//               chunk size u64 · slot count u64 · table offset u64 (4096) · data offset u64 · flags u32
//               (1 = free slots were not zeroed at format) · reserved u32 · UUID (16 bytes) · zeros ·
//               CRC32C of bytes 0..<124 at byte 124
//   4096        slot table: one 64-byte entry per slot, entry i describes slot i: chunk u64 (0 = free) ·
//               sequence u64 · label volume i64 · label index u64 · label epoch u64 · flags u32
//               (1 = labeled, 2 = the free slot may hold stale bytes) · slot index u32 · zeros ·
//               CRC32C of bytes 0..<60 at byte 60. An all-zero entry is a never-used slot.
//   data offset the slots, chunkSize bytes each, data offset = 4096 + table rounded up to 4 KiB.
//
// An entry is 64-byte aligned, so it never straddles a 512-byte sector: the medium writes it whole
// (the CRC catches the rare device that does not; such a slot is "damaged": never used, never listed).
import CLinux
import TesseraCore

extension FileStore {
    public static let formatVersion: UInt32 = 1
    static let magic: [UInt8] = Array("TESSERAF".utf8)
    static let headerBytes = 4096
    static let entryBytes = 64
    static let flagNotZeroed: UInt32 = 1
    static let entryLabeled: UInt32 = 1
    static let entryStale: UInt32 = 2

    /// Where the table and the slots go for a given size or slot count.
    struct Layout {
        let slots: Int
        let dataOffset: Int
        let end: Int

        init?(slots: Int, chunkSize: Int) {
            guard slots >= 1 else { return nil }
            self.slots = slots
            dataOffset = FileStore.headerBytes + (slots * FileStore.entryBytes + 4095) / 4096 * 4096
            end = dataOffset + slots * chunkSize
        }

        /// The most slots that fit in `size` bytes.
        init?(size: UInt64, chunkSize: Int) {
            guard size > UInt64(FileStore.headerBytes) else { return nil }
            var n = Int(
                min(
                    (size - UInt64(FileStore.headerBytes)) / UInt64(chunkSize + FileStore.entryBytes),
                    UInt64(UInt32.max)))
            while n >= 1, let l = Layout(slots: n, chunkSize: chunkSize), UInt64(l.end) > size { n -= 1 }
            self.init(slots: n, chunkSize: chunkSize)
        }

        static func minimumSize(chunkSize: Int) -> Int { FileStore.headerBytes + 4096 + chunkSize }
    }

    struct Header {
        var chunkSize: UInt64
        var slots: UInt64
        var dataOffset: UInt64
        var flags: UInt32
        var uuid: [UInt8]

        init(chunkSize: UInt64, slots: UInt64, dataOffset: UInt64, flags: UInt32, uuid: [UInt8]) {
            self.chunkSize = chunkSize
            self.slots = slots
            self.dataOffset = dataOffset
            self.flags = flags
            self.uuid = uuid
        }

        init(decoding raw: [UInt8], path: String) throws(StoreSetupError) {
            guard raw.loadLE(UInt32.self, at: 124) == crc(raw, 0..<124) else {
                throw StoreSetupError("the header of \(path) is damaged (checksum mismatch)")
            }
            let version = raw.loadLE(UInt32.self, at: 8)
            guard version == FileStore.formatVersion else {
                throw StoreSetupError(
                    "\(path) has file store format version \(version); this build reads version \(FileStore.formatVersion)"
                )
            }
            guard raw.loadLE(UInt32.self, at: 12) == UInt32(FileStore.entryBytes),
                raw.loadLE(UInt64.self, at: 32) == UInt64(FileStore.headerBytes)
            else {
                throw StoreSetupError("the header of \(path) is inconsistent (entry size or table offset)")
            }
            chunkSize = raw.loadLE(UInt64.self, at: 16)
            slots = raw.loadLE(UInt64.self, at: 24)
            dataOffset = raw.loadLE(UInt64.self, at: 40)
            flags = raw.loadLE(UInt32.self, at: 48)
            uuid = Array(raw[56..<72])
        }

        func encoded() -> [UInt8] {
            var raw = [UInt8](repeating: 0, count: FileStore.headerBytes)
            raw.replaceSubrange(0..<8, with: FileStore.magic)
            raw.storeLE(FileStore.formatVersion, at: 8)
            raw.storeLE(UInt32(FileStore.entryBytes), at: 12)
            raw.storeLE(chunkSize, at: 16)
            raw.storeLE(slots, at: 24)
            raw.storeLE(UInt64(FileStore.headerBytes), at: 32)
            raw.storeLE(dataOffset, at: 40)
            raw.storeLE(flags, at: 48)
            raw.replaceSubrange(56..<72, with: uuid)
            raw.storeLE(crc(raw, 0..<124), at: 124)
            return raw
        }
    }

    enum Entry {
        case never
        case damaged
        case entry(chunk: ChunkID, sequence: UInt64, label: ChunkLabel?, flags: UInt32)

        init(decoding raw: [UInt8], at base: Int, slot: UInt32) {
            if raw[base..<base + FileStore.entryBytes].allSatisfy({ $0 == 0 }) {
                self = .never
                return
            }
            guard raw.loadLE(UInt32.self, at: base + 60) == crc(raw, base..<base + 60),
                raw.loadLE(UInt32.self, at: base + 44) == slot
            else {
                self = .damaged
                return
            }
            let flags = raw.loadLE(UInt32.self, at: base + 40)
            let label =
                flags & FileStore.entryLabeled == 0
                ? nil
                : ChunkLabel(
                    volume: VolumeID(Int64(bitPattern: raw.loadLE(UInt64.self, at: base + 16))),
                    index: raw.loadLE(UInt64.self, at: base + 24), epoch: raw.loadLE(UInt64.self, at: base + 32))
            self = .entry(
                chunk: ChunkID(raw.loadLE(UInt64.self, at: base)),
                sequence: raw.loadLE(UInt64.self, at: base + 8), label: label, flags: flags)
        }

        static func encode(chunk: ChunkID, sequence: UInt64, label: ChunkLabel?, flags: UInt32, slot: UInt32) -> [UInt8]
        {
            var raw = [UInt8](repeating: 0, count: FileStore.entryBytes)
            raw.storeLE(chunk.rawValue, at: 0)
            raw.storeLE(sequence, at: 8)
            if let label {
                raw.storeLE(UInt64(bitPattern: label.volume.rawValue), at: 16)
                raw.storeLE(label.index, at: 24)
                raw.storeLE(label.epoch, at: 32)
            }
            raw.storeLE(flags | (label == nil ? 0 : FileStore.entryLabeled), at: 40)
            raw.storeLE(slot, at: 44)
            raw.storeLE(crc(raw, 0..<60), at: 60)
            return raw
        }
    }
}

private func crc(_ raw: [UInt8], _ range: Range<Int>) -> UInt32 {
    raw.withUnsafeBytes { p in tessera_crc32c(0, p.baseAddress! + range.lowerBound, range.count) }
}

extension Array where Element == UInt8 {
    fileprivate func loadLE<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        var v: T = 0
        for i in 0..<MemoryLayout<T>.size { v |= T(self[offset + i]) << (8 * i) }
        return v
    }

    fileprivate mutating func storeLE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        for i in 0..<MemoryLayout<T>.size { self[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
    }
}
