import CoreMetrics
import Foundation
import Lifecycle
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle

/// The metrics cdc exports, with their help texts and histogram buckets: one table for every name,
/// so `/metrics` carries `# HELP` for each (promtool insists) and the buckets fit what is measured.
enum MetricCatalog {
    static let help: [String: String] = [
        "cdc_capture_lag_bytes": "The source server's WAL end (latest XLogData or keepalive) minus the position durable in the log.",
        "cdc_capture_latency_seconds": "Source commit to durable in the log, per transaction.",
        "cdc_log_events_total": "Events made durable in the log by this process, by source table and operation.",
        "cdc_log_transactions_total": "Source transactions made durable in the log by this process.",
        "cdc_log_head_seq": "Sequence number of the last visible record of the log.",
        "cdc_log_size_bytes": "Size of the log's data file (data.mdb).",
        "cdc_log_commit_records": "Records per durable log commit (group-commit size).",
        "cdc_log_commit_seconds": "Duration of one durable log commit.",
        "cdc_replication_connected": "1 while the replication stream is established.",
        "cdc_capture_paused": "1 while capture is paused because the log cannot be written (disk full, read-only, I/O errors); it resumes by itself.",
        "cdc_log_write_failures_total": "Failed log writes (each retried), by reason: log_no_space, log_io_error, log_read_only, log_map_full.",
        "cdc_replication_reconnects_total": "Reconnections to the source after a lost replication connection.",
        "cdc_stream_open_transactions": "Streamed in-progress transactions (pgoutput protocol 2) received in part and not yet committed or aborted.",
        "cdc_stream_transactions_total": "Streamed transactions that ended, by outcome: committed (written to the log) or aborted (dropped).",
        "cdc_stream_spilled_bytes_total": "Bytes of streamed changes moved from memory to <log>/inflight/ (beyond the 8 MiB buffer).",
        "cdc_backfill_tables_pending": "Backfills (tables joining the publication, cdc snapshot requests) not yet done.",
        "cdc_backfill_rows_total": "Rows written to the log as snapshot records by backfill chunks, by source table.",
        "cdc_backfill_chunks_total": "Backfill chunks made durable in the log, by source table.",
        "cdc_backfill_deferred_chunks_total": "Backfill chunks read again later because their snapshot did not yet see a transaction the stream had delivered committed (synchronous replication), by source table.",
        "cdc_slot_retained_wal_bytes": "WAL the source keeps for the replication slot (current WAL position minus restart_lsn).",
        "cdc_slot_retained_wal_limit_bytes": "[source] max_retained_wal: above it the service is not ready.",
        "cdc_slot_wal_status": "1 for the slot's current wal_status (pg_replication_slots), 0 for the others.",
        "cdc_slot_active": "1 while a walsender streams from the slot.",
        "cdc_slot_safe_wal_size_bytes": "WAL that can still be written before the slot is in danger of losing WAL (pg_replication_slots.safe_wal_size).",
        "cdc_projection_lag_seconds": "Now minus the commit time of the oldest log transaction not yet in the warehouse; 0 when caught up.",
        "cdc_projection_lag_records": "Log records not yet applied to the warehouse.",
        "cdc_projection_last_seq": "The last log record applied to the warehouse (its checkpoint).",
        "cdc_projection_batch_seconds": "Duration of one projection batch (fold and warehouse transaction).",
        "cdc_projection_rows_total": "Warehouse rows inserted, updated or deleted by the projector, by warehouse table.",
        "cdc_warehouse_connected": "1 while the projector is connected to the warehouse.",
        "cdc_history_index_lag_records": "Log records not yet in the history index.",
        "cdc_loop_seconds_since_iteration": "Seconds since each loop that must make progress last iterated.",
        "cdc_build_info": "Always 1; the labels say which cdc this is.",
        "process_cpu_seconds_total": "User and system CPU time spent by the process.",
        "process_resident_memory_bytes": "Resident memory of the process.",
        "process_open_fds": "Open file descriptors of the process.",
        "process_max_fds": "The process's limit of open file descriptors.",
        "process_start_time_seconds": "Start time of the process since the Unix epoch.",
    ]

    static let durationBuckets: [String: [Duration]] = [
        "cdc_capture_latency_seconds": [.milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25),
                                        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
                                        .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30), .seconds(60)],
        "cdc_log_commit_seconds": [.microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .microseconds(2500),
                                   .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
                                   .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500)],
        "cdc_projection_batch_seconds": [.milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
                                         .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500),
                                         .seconds(5), .seconds(10), .seconds(30)],
    ]

    static let valueBuckets: [String: [Double]] = [
        "cdc_log_commit_records": [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100_000],
    ]

    static func descriptor(_ label: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: label, unitName: "", helpText: help[label] ?? "cdc metric \(label)")
    }
}

/// A swift-metrics backend over swift-prometheus's registry that gives each metric its help text and
/// buckets from ``MetricCatalog``.
public struct CatalogMetricsFactory: MetricsFactory {
    let registry: PrometheusCollectorRegistry

    public init(registry: PrometheusCollectorRegistry) { self.registry = registry }

    public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: MetricCatalog.descriptor(label), labels: dimensions)
    }

    public func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: MetricCatalog.descriptor(label), labels: dimensions)
    }

    public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: MetricCatalog.descriptor(label), labels: dimensions)
    }

    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard aggregate else { return registry.makeGauge(descriptor: MetricCatalog.descriptor(label), labels: dimensions) }
        return registry.makeValueHistogram(descriptor: MetricCatalog.descriptor(label), labels: dimensions,
                                           buckets: MetricCatalog.valueBuckets[label] ?? [1, 10, 100, 1000, 10000])
    }

    public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(descriptor: MetricCatalog.descriptor(label), labels: dimensions,
                                       buckets: MetricCatalog.durationBuckets[label] ?? [.milliseconds(1), .milliseconds(10), .milliseconds(100), .seconds(1), .seconds(10)])
    }

    public func destroyCounter(_ handler: any CounterHandler) {}
    public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {}
    public func destroyMeter(_ handler: any MeterHandler) {}
    public func destroyRecorder(_ handler: any RecorderHandler) {}
    public func destroyTimer(_ handler: any TimerHandler) {}
}

/// Why the metrics endpoint could not start: one line naming the address, the failing call and errno.
public struct MetricsServerError: Error, CustomStringConvertible, Sendable {
    public var listen: String
    public var reason: String
    public var description: String { "cannot listen on \(listen) for [metrics] listen: \(reason)" }
}

/// `cdc run`'s HTTP endpoint on `[metrics] listen`: `/metrics` (Prometheus text exposition),
/// `/healthz` (liveness) and `/readyz` (readiness), served by swift-nio on one event-loop thread of its
/// own, so a stalled capture or projection thread never stops it from answering.
public final class MetricsServer: Service, Sendable {
    public let address: String
    private let group: MultiThreadedEventLoopGroup
    private let channel: any Channel

    /// Binds `listen` at once, so that a port in use or a bad address fails `cdc run` before it starts
    /// anything else.
    public static func bind(listen: String, registry: PrometheusCollectorRegistry, context: RunContext,
                            logger: Logger) async throws -> MetricsServer {
        guard let (host, port) = Config.Metrics.split(listen) else {
            throw MetricsServerError(listen: listen, reason: "not HOST:PORT")
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let endpoints = Endpoints(registry: registry, context: context)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(ChannelOptions.backlog, value: 64)
            .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(HTTPHandler(endpoints: endpoints))
                }
            }
            .childChannelOption(ChannelOptions.maxMessagesPerRead, value: 1)
        do {
            let channel = try await bootstrap.bind(host: host, port: port).get()
            let bound = channel.localAddress.map { address -> String in
                let port = address.port ?? port
                return address.protocol == .inet6 ? "[\(address.ipAddress ?? host)]:\(port)" : "\(address.ipAddress ?? host):\(port)"
            } ?? listen
            logger.info("metrics listening", metadata: ["cdc.metrics.listen": "\(bound)"])
            return MetricsServer(address: bound, group: group, channel: channel)
        } catch {
            try? await group.shutdownGracefully()
            throw MetricsServerError(listen: listen, reason: Self.explain(error))
        }
    }

    private init(address: String, group: MultiThreadedEventLoopGroup, channel: any Channel) {
        self.address = address
        self.group = group
        self.channel = channel
    }

    static func explain(_ error: Error) -> String {
        if let error = error as? IOError {
            let hint: String
            switch error.errnoCode {
            case EADDRINUSE: hint = " — another process holds the port: stop it or choose a free HOST:PORT"
            case EADDRNOTAVAIL: hint = " — the host is not an address of this machine"
            case EACCES: hint = " — ports below 1024 need privileges: choose a port above 1023"
            default: hint = ""
            }
            return "\(String(cString: strerror(error.errnoCode))) (errno \(error.errnoCode), bind)" + hint
        }
        if let error = error as? SocketAddressError, case .unknown(let host, _) = error {
            return "cannot resolve host \"\(host)\" (getaddrinfo) — use an IP address or a name of this machine"
        }
        return "\(error)"
    }

    /// Serves until graceful shutdown (or cancellation), then closes the socket.
    public func run() async throws {
        try? await gracefulShutdown()
        await close()
    }

    /// Closes the socket and stops the event loop (also for a `cdc run` that fails before its group runs).
    public func close() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }
}

/// What the endpoints answer; called on the event loop.
struct Endpoints: Sendable {
    let registry: PrometheusCollectorRegistry
    let context: RunContext

    func respond(path: String) -> (HTTPResponseStatus, String, [UInt8]) {
        switch path {
        case "/metrics":
            return (.ok, "text/plain; version=0.0.4; charset=utf-8", registry.emitToBuffer())
        case "/healthz":
            let stalls = context.health.stalls()
            let loops = context.health.loops.map { loop in
                ["loop": loop.name, "seconds_since_iteration": (loop.secondsSinceBeat * 1000).rounded() / 1000, "phase": Self.phaseName(loop.phase)] as [String: Any]
            }
            let body: [String: Any] = ["status": stalls.isEmpty ? "ok" : "stalled", "loops": loops, "problems": stalls.map(Self.object)]
            return (stalls.isEmpty ? .ok : .serviceUnavailable, "application/json", Self.json(body))
        case "/readyz":
            let reasons = context.health.readinessProblems()
            let body: [String: Any] = ["ready": reasons.isEmpty, "reasons": reasons.map(Self.object)]
            return (reasons.isEmpty ? .ok : .serviceUnavailable, "application/json", Self.json(body))
        case "/":
            return (.ok, "text/plain; charset=utf-8", Array("cdc \(BuildInfo.version): /metrics /healthz /readyz\n".utf8))
        default:
            return (.notFound, "text/plain; charset=utf-8", Array("not found: try /metrics, /healthz or /readyz\n".utf8))
        }
    }

    static func phaseName(_ phase: LoopHealth.Phase) -> String {
        switch phase {
        case .starting: "starting"
        case .running: "running"
        case .retrying: "retrying"
        case .paused: "paused"
        case .stopped: "stopped"
        }
    }

    static func object(_ problem: HealthProblem) -> [String: Any] { ["code": problem.code, "message": problem.message] }

    static func json(_ object: [String: Any]) -> [UInt8] {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return Array(data) + [0x0A]
    }
}

/// One HTTP/1.1 connection: GET or HEAD on the endpoints, anything else 405.
final class HTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let endpoints: Endpoints
    private var request: HTTPRequestHead?

    init(endpoints: Endpoints) { self.endpoints = endpoints }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): request = head
        case .body: break
        case .end:
            guard let head = request else { return }
            request = nil
            respond(context: context, head: head)
        }
    }

    private func respond(context: ChannelHandlerContext, head: HTTPRequestHead) {
        var status: HTTPResponseStatus, type: String, body: [UInt8]
        var headers = HTTPHeaders()
        if head.method == .GET || head.method == .HEAD {
            let path = String(head.uri.prefix { $0 != "?" })
            (status, type, body) = endpoints.respond(path: path)
        } else {
            (status, type, body) = (.methodNotAllowed, "text/plain; charset=utf-8", Array("only GET and HEAD\n".utf8))
            headers.add(name: "Allow", value: "GET, HEAD")
        }
        headers.add(name: "Content-Type", value: type)
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Cache-Control", value: "no-store")
        let keepAlive = head.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { channel.close(promise: nil) }
        }
    }
}
