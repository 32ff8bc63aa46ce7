// swift-tools-version:6.0
import PackageDescription

// One module per concern:
//   CLibPQ, CLMDB, COpenSSL - C bindings (system libraries, no vendored sources; OpenSSL's libcrypto
//                    for the Merkle tree's SHA-256 only)
//   PGClient       - a small, typed Swift wrapper over libpq (queries, COPY, replication CopyBoth)
//   EventLog       - the append-only LMDB event log: record format, writer, readers, JSONL export
//   Lifecycle      - the service lifecycle: stop signal, backoff, dedicated threads, loop health
//   Capture        - pgoutput decoding, the initial snapshot and the replication client loop
//   Projection     - projection mappings (source tables -> SCD2 dimensions and facts) and the projectors
//   CDCService     - configuration, `init`, `status` and the services of `cdc run` (capture, projection,
//                    history index, monitor, systemd notify, the metrics and health HTTP endpoint)
//   cdc            - the command-line interface
let package = Package(
    name: "cdc",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "cdc", targets: ["cdc"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.1.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.65.0"),
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
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]
        ),
        .target(
            name: "PGClient",
            dependencies: ["CLibPQ"]
        ),
        .target(
            name: "EventLog",
            dependencies: ["CLMDB", "COpenSSL", .product(name: "Crypto", package: "swift-crypto")]
        ),
        .target(
            name: "Lifecycle",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "Capture",
            dependencies: [
                "PGClient", "EventLog", "Lifecycle",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
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
                "Capture", "EventLog", "Lifecycle", "PGClient", "Projection",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "cdc",
            dependencies: [
                "CDCService", "EventLog", "Lifecycle", "Projection", "PGClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            // jemalloc instead of glibc's malloc: the projector allocates and frees millions of small
            // row values per replay, and glibc's consolidation of freed chunks cost about a fifth of a
            // replay's CPU (measured at 1 M events: 9.2 -> 7.0 CPU-s, 10.2 -> 8.2 s). Debian's
            // libjemalloc-dev (tools/install-deps); the binary then needs libjemalloc2.
            linkerSettings: [.linkedLibrary("jemalloc", .when(platforms: [.linux]))]
        ),
        .target(
            name: "TestSupport",
            dependencies: ["PGClient"],
            path: "Tests/TestSupport"
        ),
        // Pure unit tests: no PostgreSQL, no cdc binary; `swift test --filter EventLogTests` (or
        // CaptureTests, ProjectionTests) runs in seconds.
        .testTarget(
            name: "EventLogTests",
            dependencies: ["EventLog", "TestSupport", .product(name: "Crypto", package: "swift-crypto")]
        ),
        .testTarget(
            name: "CaptureTests",
            dependencies: ["Capture", "EventLog"]
        ),
        .testTarget(
            name: "ProjectionTests",
            dependencies: ["Projection", "EventLog", .product(name: "Crypto", package: "swift-crypto")]
        ),
        // Integration tests against real PostgreSQL clusters and the real `cdc` binary.
        .testTarget(
            name: "CDCTests",
            dependencies: ["TestSupport", "PGClient", "EventLog", "Capture", "CDCService", "Projection"]
        ),
    ]
)
