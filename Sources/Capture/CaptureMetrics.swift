import EventLog
import Metrics

/// Capture's metrics, through swift-metrics (`cdc run` exports them in Prometheus format at /metrics).
/// Names follow Prometheus conventions: base units, `_total` for counters.
///
/// Counts are recorded when records become durable in the log, never for what a lost connection
/// discarded, so `cdc_log_events_total` agrees with the log.
final class CaptureMetrics {
    /// The server's WAL end minus the end of the last transaction durable in the log.
    let lag = Gauge(label: "cdc_capture_lag_bytes")
    /// Source commit to durable in the log, per transaction.
    let latency = Metrics.Timer(label: "cdc_capture_latency_seconds")
    let transactions = Counter(label: "cdc_log_transactions_total")
    /// Records per durable LMDB commit (group-commit size) and the commit's duration.
    let commitRecords = Recorder(label: "cdc_log_commit_records", aggregate: true)
    let commitSeconds = Metrics.Timer(label: "cdc_log_commit_seconds")
    let connected = Gauge(label: "cdc_replication_connected")
    let reconnects = Counter(label: "cdc_replication_reconnects_total")
    /// 1 while capture is paused because the log cannot be written (disk full, I/O errors, ...).
    let paused = Gauge(label: "cdc_capture_paused")
    /// Failed log writes by cause (`log_no_space`, `log_io_error`, `log_read_only`, `log_map_full`).
    func writeFailures(_ code: String) -> Counter {
        Counter(label: "cdc_log_write_failures_total", dimensions: [("reason", code)])
    }
    /// `cdc_log_events_total{table,op}` by `relationSeq << 8 | op`.
    private var events: [UInt64: Counter] = [:]

    // Streaming of in-progress transactions (pgoutput protocol 2).
    /// Streamed transactions received in part and not yet committed or aborted.
    let streamOpen = Gauge(label: "cdc_stream_open_transactions")
    let streamCommitted = Counter(label: "cdc_stream_transactions_total", dimensions: [("outcome", "committed")])
    let streamAborted = Counter(label: "cdc_stream_transactions_total", dimensions: [("outcome", "aborted")])
    /// Bytes of streamed changes moved from memory to `<log>/inflight/`.
    let streamSpilled = Counter(label: "cdc_stream_spilled_bytes_total")

    // Backfill (DBLog chunks).
    /// Backfills (tables) not yet done.
    let backfillPending = Gauge(label: "cdc_backfill_tables_pending")
    private var backfillCounters: [String: (rows: Counter, chunks: Counter)] = [:]
    private var deferredCounters: [String: Counter] = [:]

    init() {
        connected.record(0)
        lag.record(0)
        paused.record(0)
        streamOpen.record(0)
        backfillPending.record(0)
    }

    /// `cdc_backfill_rows_total{table}` and `cdc_backfill_chunks_total{table}`: what backfill chunks made durable.
    func backfill(_ table: String) -> (rows: Counter, chunks: Counter) {
        if let counters = backfillCounters[table] { return counters }
        let counters = (Counter(label: "cdc_backfill_rows_total", dimensions: [("table", table)]),
                        Counter(label: "cdc_backfill_chunks_total", dimensions: [("table", table)]))
        backfillCounters[table] = counters
        return counters
    }

    /// `cdc_backfill_deferred_chunks_total{table}`: chunks put off because their snapshot did not yet
    /// see a transaction the stream had delivered committed.
    func deferredChunks(_ table: String) -> Counter {
        if let counter = deferredCounters[table] { return counter }
        let counter = Counter(label: "cdc_backfill_deferred_chunks_total", dimensions: [("table", table)])
        deferredCounters[table] = counter
        return counter
    }

    /// The events counter of (relation, op) in `key` (`relationSeq << 8 | op`); `table` names the relation.
    func events(_ key: UInt64, _ table: String) -> Counter {
        if let counter = events[key] { return counter }
        let op = Operation(rawValue: UInt8(truncatingIfNeeded: key)).map(\.name) ?? "unknown"
        let counter = Counter(label: "cdc_log_events_total", dimensions: [("table", table), ("op", op)])
        events[key] = counter
        return counter
    }
}
