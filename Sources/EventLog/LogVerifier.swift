import Foundation

/// A head an auditor keeps outside the system: `cdc log digest` prints it, `cdc log verify --digest`
/// proves the log still holds exactly that history.
public struct LogDigest: Codable, Equatable, Sendable {
    public var format = "cdc-log-digest-1"
    /// Number of records covered (the head when taken).
    public var seq: UInt64
    /// Commit LSN of the last covered transaction.
    public var lsn: String
    /// Its commit time (RFC 3339), if known.
    public var commitTime: String?
    /// RFC 6962 Merkle root (hex) over records 1...seq.
    public var root: String
    /// The source the log belongs to.
    public var systemIdentifier: String?
    public var database: String?

    enum CodingKeys: String, CodingKey {
        case format, seq, lsn, root, database
        case commitTime = "commit_time"
        case systemIdentifier = "system_identifier"
    }

    public init(seq: UInt64, lsn: String, commitTime: String?, root: String, systemIdentifier: String?, database: String?) {
        self.seq = seq
        self.lsn = lsn
        self.commitTime = commitTime
        self.root = root
        self.systemIdentifier = systemIdentifier
        self.database = database
    }
}

/// The first record that does not hold, and why.
public struct VerificationFailure: Error, CustomStringConvertible, Sendable {
    public var seq: UInt64
    public var reason: String
    public var description: String { "verification failed at seq \(seq): \(reason)" }
}

/// What a successful verification covered.
public struct VerificationReport: Sendable {
    public var records: UInt64 = 0
    public var transactions: UInt64 = 0
    public var rootsChecked = 0
    /// Interior Merkle node hashes (the `nodes` sub-database) found equal to the recomputed ones.
    public var nodesChecked = 0
    public var head: UInt64 = 0
    public var root: Hash = []
    public var digestChecked = false
}

extension EventLog {
    /// The current head as a digest.
    public func digest() throws -> LogDigest {
        let (position, frontier) = try environment.withTransaction(readOnly: true) { txn in
            (try readPosition(txn), try readFrontier(txn))
        }
        let source = try sourceIdentity()
        return LogDigest(seq: position.head, lsn: position.lastCommitLSN.description,
                         commitTime: position.lastCommitTime.map { rfc3339(microseconds: $0) },
                         root: hex(frontier.root), systemIdentifier: source?.systemIdentifier, database: source?.database)
    }

    /// Recomputes every hash and checks the structure of records `from...to` (default: all):
    /// dense sequence numbers, each record matching its leaf hash, decodable records, non-decreasing
    /// commit LSNs, whole transactions (one LSN and xid each, the head at a transaction's end), row
    /// records pointing at an earlier relation record, every stored Merkle root and the stored frontier
    /// equal to the recomputed ones, no root stored past the head, the resume position past the last
    /// commit, and, with `digest`, the root at the digest's seq equal to it.
    /// Throws ``VerificationFailure`` naming the first bad record.
    public func verify(from: UInt64 = 1, to: UInt64? = nil, digest: LogDigest? = nil) throws -> VerificationReport {
        let (position, storedFrontier) = try environment.withTransaction(readOnly: true) { txn in
            (try readPosition(txn), try readFrontier(txn))
        }
        let head = position.head
        let last = min(to ?? head, head)
        let first = max(from, 1)
        if let digest {
            guard digest.seq <= head else {
                throw VerificationFailure(seq: head, reason: "the digest covers \(digest.seq) records but the log has only \(head): records were removed")
            }
            guard first == 1 else { throw VerificationFailure(seq: first, reason: "--digest needs a verification from seq 1") }
        }
        var storedRoots: [UInt64: Hash] = [:]
        var lastRoot: UInt64 = 0
        try environment.withTransaction(readOnly: true) { txn in
            try txn.scan(roots, from: nil) { key, value in
                guard let seq = readU64(key) else { return true }
                if seq <= last { storedRoots[seq] = Array(value) }
                lastRoot = max(lastRoot, seq)
                return true
            }
        }
        var report = VerificationReport()
        report.head = head
        var frontier = MerkleFrontier()
        var checkedUpTo = max(last, digest?.seq ?? 0)
        checkedUpTo = min(checkedUpTo, head)
        // The recomputed subtrees come in key order (end seq, then height), as the stored ones are read.
        var nodes = storedNodes(through: checkedUpTo)
        /// The first stored node the tree does not have (reported after the records, as before).
        var stray: [UInt8]?
        /// Compares a subtree the recomputation completed with the one stored, when stored.
        func checkNode(_ seq: UInt64, _ height: UInt8, _ hash: Hash) throws {
            guard height >= MerkleNodes.minimumHeight else { return }
            let key = MerkleNodes.key(endSeq: seq, height: height)
            while let stored = try nodes.peek(), stored.key.lexicographicallyPrecedes(key) {
                if stray == nil { stray = stored.key }
                nodes.take()
            }
            guard let stored = try nodes.peek(), stored.key == key else { return }
            nodes.take()
            guard stored.hash == hash else {
                throw VerificationFailure(seq: seq, reason: "the Merkle node of height \(height) ending at this seq does not match the records (proofs would use it)")
            }
            report.nodesChecked += 1
        }

        // Leaves before `from` are taken as stored (their records are not re-read).
        if first > 1 {
            var expected: UInt64 = 1
            try scanLeaves(upTo: first - 1) { seq, leaf in
                guard seq == expected else { throw VerificationFailure(seq: expected, reason: "leaf hash missing") }
                try frontier.append(leaf: leaf) { try checkNode(seq, $0, $1) }
                expected += 1
            }
            guard expected == first else { throw VerificationFailure(seq: expected, reason: "leaf hash missing") }
        }

        var expected = first
        var previous: RecordHeader?
        var relationOIDs: [UInt64: UInt32] = [:]
        func fail(_ seq: UInt64, _ reason: String) -> VerificationFailure { VerificationFailure(seq: seq, reason: reason) }

        try scanRaw(from: first, to: checkedUpTo) { seq, bytes, storedLeaf in
            guard seq == expected else { throw fail(expected, "record is missing (the next record present is \(seq))") }
            let leaf = MerkleFrontier.leafHash(bytes)
            guard let storedLeaf, storedLeaf == leaf else {
                throw fail(seq, storedLeaf == nil ? "leaf hash is missing" : "record does not match its hash (changed after it was written)")
            }
            let record: Record
            do { record = try RecordCodec.decode(bytes) } catch { throw fail(seq, "undecodable record: \(error)") }
            let h = record.header
            if let p = previous {
                if h.lsn < p.lsn { throw fail(seq, "commit LSN \(h.lsn) is below the previous record's \(p.lsn)") }
                if !p.flags.contains(.endOfTransaction) {
                    if h.lsn != p.lsn || h.xid != p.xid {
                        throw fail(seq, "transaction at \(p.lsn) is cut short: this record belongs to another (\(h.lsn))")
                    }
                } else if h.lsn == p.lsn && h.op != .snapshot && p.op != .snapshot && h.xid != nil {
                    // (A backfill chunk, xid none, follows its high watermark's transaction at the same LSN.)
                    throw fail(seq, "a second transaction with commit LSN \(h.lsn)")
                }
            }
            switch record.body {
            case .relation(let definition):
                relationOIDs[seq] = definition.oid
            case .row, .truncate:
                guard h.relationSeq > 0, h.relationSeq < seq else {
                    throw fail(seq, "refers to relation record \(h.relationSeq), which does not precede it")
                }
                if relationOIDs[h.relationSeq] == nil {
                    guard let definition = try self.relationDefinition(h.relationSeq) else {
                        throw fail(seq, "refers to seq \(h.relationSeq), which is not a relation record")
                    }
                    relationOIDs[h.relationSeq] = definition.oid
                }
            case .message:
                break
            case .origin:
                // The first record of a replicated transaction, never on its own.
                if let p = previous, !p.flags.contains(.endOfTransaction) {
                    throw fail(seq, "an origin record inside a transaction (at \(h.lsn)): it must be its transaction's first record")
                }
                if h.xid == nil || h.flags.contains(.endOfTransaction) {
                    throw fail(seq, "an origin record outside a source transaction (at \(h.lsn))")
                }
            }
            if h.flags.contains(.endOfTransaction) { report.transactions += 1 }
            try frontier.append(leaf: leaf) { try checkNode(seq, $0, $1) }
            if let root = storedRoots[seq] {
                guard root == frontier.root else {
                    throw fail(seq, "the Merkle root stored at this head does not match the records up to it: history before it was rewritten")
                }
                report.rootsChecked += 1
            }
            if let digest, seq == digest.seq {
                guard hex(frontier.root) == digest.root else {
                    throw fail(seq, "the log's history up to this seq differs from the digest (root \(hex(frontier.root)) != \(digest.root)): it was rewritten")
                }
                report.digestChecked = true
            }
            report.records += 1
            previous = h
            expected = seq + 1
        }
        if expected <= checkedUpTo { throw fail(expected, "record is missing") }
        if stray == nil, let left = try nodes.peek() { stray = left.key }
        if let stray {
            let end = stray.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            throw fail(end, "a Merkle node of height \(stray.last ?? 0) is stored ending at this seq, which the tree does not have")
        }
        if checkedUpTo == head, head > 0 {
            guard previous?.flags.contains(.endOfTransaction) == true else {
                throw fail(head, "the head is not at the end of a transaction")
            }
            guard frontier == storedFrontier else {
                throw fail(head, "the stored Merkle frontier does not match the records")
            }
            // Roots are stored only at heads, and the head never moves back.
            guard lastRoot <= head else {
                throw fail(head, "a Merkle root is stored for seq \(lastRoot), past the head: records after the head were removed")
            }
            // Exactly once: the last transaction's commit LSN is below the resume position (the snapshot's
            // consistent point is the resume position itself), and last_commit_lsn lies between them.
            let top = previous!
            let snapshot = top.xid == nil && (top.op == .snapshot || top.op == .relation)
            guard position.resumeLSN > top.lsn || (snapshot && position.resumeLSN == top.lsn) else {
                throw fail(head, "meta resume_lsn \(position.resumeLSN) is not past the last transaction's commit LSN \(top.lsn): a restart would capture it again")
            }
            guard position.lastCommitLSN >= top.lsn, position.lastCommitLSN <= position.resumeLSN else {
                throw fail(head, "meta last_commit_lsn \(position.lastCommitLSN) does not match the records: the last transaction commits at \(top.lsn), the stream resumes at \(position.resumeLSN)")
            }
        }
        if let digest, digest.seq == 0 { report.digestChecked = digest.root == hex(MerkleFrontier().root) }
        report.root = frontier.root
        return report
    }

    /// Visits (seq, record bytes, stored leaf) in key order, in short read transactions.
    func scanRaw(from: UInt64, to: UInt64, _ body: (UInt64, UnsafeRawBufferPointer, Hash?) throws -> Void) throws {
        guard from <= to else { return }
        try batchedScan(events, from: from, batch: 5000, last: { _ in to }) { txn, seq, value in
            try body(seq, value, try txn.get(leaves, key: keyBytes(seq)).map { Array($0) })
            return true
        }
    }

    func scanLeaves(upTo last: UInt64, _ body: (UInt64, Hash) throws -> Void) throws {
        try batchedScan(leaves, from: 1, batch: 20000, last: { _ in last }) { _, seq, value in
            guard value.count == 32 else { throw VerificationFailure(seq: seq, reason: "the stored leaf hash is \(value.count) bytes, not 32") }
            try body(seq, Array(value))
            return true
        }
    }
}
