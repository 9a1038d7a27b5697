// swift-tools-version:6.1
import PackageDescription

// Targets, one job each; dependencies point one way:
// CFuse3 ← TesseraFUSE; CZstd ← TesseraCore ← TesseraStores, TesseraCatalog ← TesseraEngine ← TesseraControl
// ← TesseraFUSE ← tessera; TesseraCore ← TesseraS3 (SigV4 over AsyncHTTPClient, kept out of the core and its tests)
// ← tessera; TesseraControl ← TesseraAPI (HTTP over Hummingbird, so NIO stays out of the engine) ← tessera.
// TesseraTestSupport serves the tests only.
let package = Package(
    name: "Tessera",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tessera", targets: ["tessera"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        // No traits: its ConfigurationSupport default would build swift-configuration for nothing.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
    ],
    targets: [
        .systemLibrary(
            name: "CFuse3",
            pkgConfig: "fuse3",
            providers: [.apt(["libfuse3-dev"])]
        ),
        .systemLibrary(
            name: "CZstd",
            pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]
        ),
        .target(name: "CLinux"),
        .target(
            name: "TesseraCore",
            dependencies: ["CLinux", "CZstd", .product(name: "SystemPackage", package: "swift-system")]
        ),
        .target(
            name: "TesseraStores",
            dependencies: ["TesseraCore", "CLinux", .product(name: "SystemPackage", package: "swift-system")]
        ),
        .target(
            name: "TesseraS3",
            dependencies: [
                "TesseraCore", "TesseraStores",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .target(
            name: "TesseraCatalog",
            dependencies: ["TesseraCore", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        .target(
            name: "TesseraEngine",
            dependencies: [
                "TesseraCore", "TesseraStores", "TesseraCatalog", .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "TesseraControl",
            dependencies: ["TesseraCore", "TesseraEngine"]
        ),
        .target(
            name: "TesseraAPI",
            dependencies: [
                "TesseraCore", "TesseraEngine", "TesseraControl",
                .product(name: "Hummingbird", package: "hummingbird"),
            ]
        ),
        .target(
            name: "TesseraFUSE",
            dependencies: ["CFuse3", "CLinux", "TesseraCore", "TesseraEngine"]
        ),
        .executableTarget(
            name: "tessera",
            dependencies: [
                "CLinux", "TesseraCore", "TesseraEngine", "TesseraControl", "TesseraAPI", "TesseraFUSE", "TesseraS3",
                "TesseraStores",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .target(
            name: "TesseraTestSupport",
            dependencies: ["TesseraCore"]
        ),
        .testTarget(
            name: "TesseraCoreTests",
            dependencies: ["TesseraCore", "TesseraStores", "TesseraTestSupport"]
        ),
        .testTarget(
            name: "TesseraS3Tests",
            dependencies: ["TesseraCore", "TesseraS3", "TesseraTestSupport"]
        ),
        .testTarget(
            name: "TesseraCatalogTests",
            dependencies: ["TesseraCore", "TesseraCatalog", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        .testTarget(
            name: "TesseraControlTests",
            dependencies: ["TesseraCore", "TesseraCatalog", "TesseraEngine", "TesseraControl", "TesseraTestSupport"]
        ),
        .testTarget(
            name: "TesseraFUSETests",
            dependencies: ["TesseraCore", "TesseraEngine", "TesseraFUSE", "TesseraTestSupport"]
        ),
        .testTarget(
            name: "TesseraEngineTests",
            dependencies: [
                "TesseraCore", "TesseraEngine", "TesseraCatalog", "TesseraStores", "TesseraTestSupport",
                .product(name: "GRDB", package: "GRDB.swift"),
            ]
        ),
    ]
)
