// swift-tools-version:6.0
import PackageDescription

// One module per concern:
//   CLibPQ, CLMDB  - C bindings (system libraries, no vendored sources)
//   PGClient       - a small, typed Swift wrapper over libpq (queries, COPY, replication CopyBoth)
//   EventLog       - the append-only LMDB event log: record format, writer, readers, JSONL export
//   Capture        - pgoutput decoding, the initial snapshot and the replication client loop
//   Projection     - projection mappings (source tables -> SCD2 dimensions and facts) and the projectors
//   CDCService     - configuration, `init` and the long-running capture service
//   cdc            - the command-line interface
let package = Package(
    name: "cdc",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "cdc", targets: ["cdc"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .systemLibrary(
            name: "CLMDB",
            pkgConfig: "lmdb",
            providers: [.apt(["liblmdb-dev"])]
        ),
        .target(
            name: "PGClient",
            dependencies: ["CLibPQ"]
        ),
        .target(
            name: "EventLog",
            dependencies: ["CLMDB", .product(name: "Crypto", package: "swift-crypto")]
        ),
        .target(
            name: "Capture",
            dependencies: [
                "PGClient", "EventLog",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "Projection",
            dependencies: [
                "EventLog", "PGClient",
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .target(
            name: "CDCService",
            dependencies: [
                "Capture", "EventLog", "PGClient", "Projection",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ]
        ),
        .executableTarget(
            name: "cdc",
            dependencies: [
                "CDCService", "EventLog", "Projection", "PGClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "TestSupport",
            dependencies: ["PGClient"],
            path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "CDCTests",
            dependencies: ["TestSupport", "PGClient", "EventLog", "Capture", "CDCService", "Projection"]
        ),
    ]
)
