// The ChunkStore conformance suite (TesseraTestSupport/StoreConformance.swift), every case run over an
// S3Store and over ChecksumLayer(over: S3Store) — what the engine stacks on an object store. The cases
// are the core's (StoreConformanceTests); only the fixture is S3's, and it lives here so that the core's
// tests do not link the HTTP stack.

import TesseraCore
import TesseraS3
import TesseraTestSupport
import Testing

enum S3StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case s3
    case checksumOverS3
    var testDescription: String { rawValue }
}

/// The store under test over a fresh S3 prefix (deleted with the fixture).
final class S3StoreFixture: ConformanceFixture {
    static let chunkSize = 64 * 1024
    let store: any ChunkStore
    let s3: S3Fixture

    private init(_ store: any ChunkStore, _ s3: S3Fixture) {
        self.store = store
        self.s3 = s3
    }

    static func make(_ kind: S3StoreKind) throws -> S3StoreFixture {
        switch kind {
        case .s3:
            let s3 = try S3Fixture(chunkSize: chunkSize)
            return S3StoreFixture(s3.store, s3)
        case .checksumOverS3:
            let s3 = try S3Fixture(chunkSize: ChecksumLayer.innerChunkSize(for: chunkSize))
            return S3StoreFixture(ChecksumLayer(over: s3.store), s3)
        }
    }

    /// The store with how to name its chunks.
    var subject: ConformanceSubject {
        ConformanceSubject(store: store, chunkSize: Self.chunkSize) { [s3] n in s3.chunk(n) }
    }
}

@Suite("S3 ChunkStore conformance")
struct S3ConformanceTests {
    @Test(arguments: ConformanceCase.allCases, S3StoreKind.allCases)
    func contract(_ check: ConformanceCase, kind: S3StoreKind) throws {
        try check.run(on: S3StoreFixture.make(kind))
    }
}
