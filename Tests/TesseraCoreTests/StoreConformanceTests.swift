// The ChunkStore conformance suite (TesseraTestSupport/StoreConformance.swift), every case run against
// every store and every stack of the core. A new store or layer adds one case to StoreKind and one line
// to StoreFixture.make; a new contract case goes into StoreConformance and runs here (and over S3) by itself.

import TesseraCore
import TesseraStores
import TesseraTestSupport
import Testing

/// Every store and stack the suite runs against.
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case memory
    case directory
    case checksumOverMemory
    case checksumOverDirectory
    case poolOverTwoMemoryStores
    case poolOverDirectory
    /// What the engine builds for a pool of directory stores.
    case poolOverChecksumOverDirectory
    case faultyOverMemory
    /// A checksum layer over a store that wants whole chunks (what object stores get).
    case checksumOverWholeChunkMemory
    /// Compression over a store that takes whole objects (what an object store gets).
    case compressionOverMemory
    /// Checksums above compression: the checksum layer then works in whole chunks too.
    case checksumOverCompressionOverMemory
    case compressionOverDirectory
    /// A preallocated file of slots.
    case file
    /// What the engine builds over a file store.
    case checksumOverFile
    /// The RAM cache, 8 chunks big: the suite's writes overflow it (evictions, throttled write-back).
    case cacheOverMemory
    case cacheOverChecksumOverDirectory
    /// A cache over a store that wants whole chunks: fills by readAll, write-back by replace.
    case cacheOverWholeChunkMemory
    /// A unit being replaced (what the engine builds during `store replace`): two checksummed memory
    /// stores, serials 1…2 counted as copied, 3…4 not yet, the rest handed out since the job began.
    case replaceOverChecksumOverMemory

    var testDescription: String { rawValue }

    /// Whether the stack stores fewer bytes than it is given (usage may fall below the data written).
    var compresses: Bool {
        switch self {
        case .compressionOverMemory, .checksumOverCompressionOverMemory, .compressionOverDirectory: return true
        default: return false
        }
    }
}

/// A store under test, with what keeps it alive (temporary directories) and how to name its chunks.
final class StoreFixture: ConformanceFixture {
    static let chunkSize = 64 * 1024

    let store: any ChunkStore
    let kind: StoreKind
    /// Store IDs a chunk may name; a PoolLayer routes by them, plain stores ignore them.
    private let unitIDs: [Int64]
    private let dirs: [TemporaryDirectory]

    private init(_ kind: StoreKind, _ store: any ChunkStore, unitIDs: [Int64], dirs: [TemporaryDirectory] = []) {
        self.kind = kind
        self.store = store
        self.unitIDs = unitIDs
        self.dirs = dirs
    }

    deinit { (store as? CacheLayer)?.stop() }

    static func cache(over inner: any ChunkStore) -> CacheLayer {
        CacheLayer(over: inner, .init(capacity: 8 * chunkSize))
    }

    static func make(_ kind: StoreKind) throws -> StoreFixture {
        let cs = chunkSize
        switch kind {
        case .memory:
            return StoreFixture(kind, MemoryStore(chunkSize: cs), unitIDs: [1, 2])
        case .directory:
            let dir = try TemporaryDirectory()
            return StoreFixture(kind, try DirectoryStore(root: dir.path, chunkSize: cs), unitIDs: [1, 2], dirs: [dir])
        case .checksumOverMemory:
            let inner = MemoryStore(chunkSize: ChecksumLayer.innerChunkSize(for: cs))
            return StoreFixture(kind, ChecksumLayer(over: inner), unitIDs: [1, 2])
        case .checksumOverDirectory:
            let dir = try TemporaryDirectory()
            let inner = try DirectoryStore(root: dir.path, chunkSize: ChecksumLayer.innerChunkSize(for: cs))
            return StoreFixture(kind, ChecksumLayer(over: inner), unitIDs: [1, 2], dirs: [dir])
        case .poolOverChecksumOverDirectory:
            let dir = try TemporaryDirectory()
            let inner = try DirectoryStore(root: dir.path, chunkSize: ChecksumLayer.innerChunkSize(for: cs))
            let pool = PoolLayer(chunkSize: cs)
            pool.add(UnitID(3), store: ChecksumLayer(over: inner), nextSerial: 1)
            return StoreFixture(kind, pool, unitIDs: [3], dirs: [dir])
        case .poolOverTwoMemoryStores:
            let pool = PoolLayer(chunkSize: cs)
            pool.add(UnitID(1), store: MemoryStore(chunkSize: cs), nextSerial: 1)
            pool.add(UnitID(2), store: MemoryStore(chunkSize: cs), nextSerial: 1)
            return StoreFixture(kind, pool, unitIDs: [1, 2])
        case .poolOverDirectory:
            let dir = try TemporaryDirectory()
            let pool = PoolLayer(chunkSize: cs)
            pool.add(UnitID(7), store: try DirectoryStore(root: dir.path, chunkSize: cs), nextSerial: 1)
            return StoreFixture(kind, pool, unitIDs: [7], dirs: [dir])
        case .checksumOverWholeChunkMemory:
            let inner = MemoryStore(chunkSize: ChecksumLayer.innerChunkSize(for: cs), wholeChunks: true)
            return StoreFixture(kind, ChecksumLayer(over: inner), unitIDs: [1, 2])
        case .compressionOverMemory:
            let inner = MemoryStore(chunkSize: CompressionLayer.innerChunkSize(for: cs), wholeChunks: true)
            return StoreFixture(kind, CompressionLayer(over: inner), unitIDs: [1, 2])
        case .checksumOverCompressionOverMemory:
            let compressed = ChecksumLayer.innerChunkSize(for: cs)
            let inner = MemoryStore(chunkSize: CompressionLayer.innerChunkSize(for: compressed), wholeChunks: true)
            return StoreFixture(kind, ChecksumLayer(over: CompressionLayer(over: inner)), unitIDs: [1, 2])
        case .compressionOverDirectory:
            let dir = try TemporaryDirectory()
            let inner = try DirectoryStore(root: dir.path, chunkSize: CompressionLayer.innerChunkSize(for: cs))
            return StoreFixture(kind, CompressionLayer(over: inner), unitIDs: [1, 2], dirs: [dir])
        case .file:
            let dir = try TemporaryDirectory()
            let store = try FileStore.create(path: dir.path + "/store", size: 256 * UInt64(cs), chunkSize: cs)
            return StoreFixture(kind, store, unitIDs: [1, 2], dirs: [dir])
        case .checksumOverFile:
            let dir = try TemporaryDirectory()
            let inner = ChecksumLayer.innerChunkSize(for: cs)
            let store = try FileStore.create(path: dir.path + "/store", size: 256 * UInt64(inner), chunkSize: inner)
            return StoreFixture(kind, ChecksumLayer(over: store), unitIDs: [1, 2], dirs: [dir])
        case .faultyOverMemory:
            return StoreFixture(kind, FaultyStore(wrapping: MemoryStore(chunkSize: cs), seed: 1), unitIDs: [1, 2])
        case .cacheOverMemory:
            return StoreFixture(kind, cache(over: MemoryStore(chunkSize: cs)), unitIDs: [1, 2])
        case .cacheOverChecksumOverDirectory:
            let dir = try TemporaryDirectory()
            let inner = try DirectoryStore(root: dir.path, chunkSize: ChecksumLayer.innerChunkSize(for: cs))
            return StoreFixture(kind, cache(over: ChecksumLayer(over: inner)), unitIDs: [1, 2], dirs: [dir])
        case .cacheOverWholeChunkMemory:
            return StoreFixture(kind, cache(over: MemoryStore(chunkSize: cs, wholeChunks: true)), unitIDs: [1, 2])
        case .replaceOverChecksumOverMemory:
            let (a, b) = (
                MemoryStore(chunkSize: ChecksumLayer.innerChunkSize(for: cs)),
                MemoryStore(chunkSize: ChecksumLayer.innerChunkSize(for: cs))
            )
            let layer = ReplaceLayer(
                source: ChecksumLayer(over: a), sourceRaw: a, target: ChecksumLayer(over: b), targetRaw: b)
            layer.begin(end: 4, cursor: 2)
            return StoreFixture(kind, layer, unitIDs: [1, 2])
        }
    }

    /// The store with how to name its chunks: consecutive numbers alternate between the stack's stores.
    var subject: ConformanceSubject {
        let unitIDs = self.unitIDs
        return ConformanceSubject(store: store, chunkSize: Self.chunkSize, compresses: kind.compresses) { n in
            ChunkID(unit: UnitID(unitIDs[n % unitIDs.count]), serial: UInt64(n) + 1)
        }
    }
}

@Suite("ChunkStore conformance")
struct StoreConformanceTests {
    @Test(arguments: ConformanceCase.allCases, StoreKind.allCases)
    func contract(_ check: ConformanceCase, kind: StoreKind) throws {
        try check.run(on: StoreFixture.make(kind))
    }
}
