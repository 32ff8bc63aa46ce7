import Foundation

/// The `nodes` sub-database: the hashes of the perfect subtrees of height >= ``minimumHeight`` (16 or
/// more leaves), keyed by 8-byte big-endian end seq (the seq of the subtree's last leaf) ‖ u8 height, so
/// that they are appended in order. Written by the writer in the transaction that writes the leaf
/// completing the subtree (the frontier computes exactly these hashes when it merges); smaller subtrees
/// are computed from at most 8 leaves, missing ones (a log written before `nodes` existed and not yet
/// opened by a newer writer) from their children. Derived: `cdc log verify` recomputes and compares them.
public enum MerkleNodes {
    public static let minimumHeight: UInt8 = 4

    /// The key of the subtree of `height` whose last leaf is record `endSeq`.
    public static func key(endSeq: UInt64, height: UInt8) -> [UInt8] {
        var key = keyBytes(endSeq)
        key.append(height)
        return key
    }
}

/// An inclusion proof of one record (RFC 9162 2.1.3), as `cdc log prove` prints it.
public struct InclusionProof: Equatable, Sendable {
    public static let format = "cdc-inclusion-proof-1"
    public var seq: UInt64
    public var treeSize: UInt64
    public var leafHash: Hash
    public var record: [UInt8]
    public var path: [Hash]
    public var root: Hash

    public init(seq: UInt64, treeSize: UInt64, leafHash: Hash, record: [UInt8], path: [Hash], root: Hash) {
        (self.seq, self.treeSize, self.leafHash, self.record, self.path, self.root) = (seq, treeSize, leafHash, record, path, root)
    }

    /// One JSON line, keys in the documented order.
    public var json: String {
        var w = JSONWriter(capacity: 256 + record.count * 2 + path.count * 70)
        w.raw("{\"format\":\""); w.raw(Self.format)
        w.raw("\",\"seq\":"); w.number(seq)
        w.raw(",\"tree_size\":"); w.number(treeSize)
        w.raw(",\"leaf_hash\":\""); w.raw(hex(leafHash))
        w.raw("\",\"record\":\""); w.raw(base64(record))
        w.raw("\",\"path\":["); proofPath(path, &w)
        w.raw("],\"root\":\""); w.raw(hex(root)); w.raw("\"}")
        return String(decoding: w.bytes, as: UTF8.self)
    }

    /// Checks the proof by itself: the record against its leaf hash, the path against the root.
    public func verify() throws {
        guard seq >= 1 else { throw MerkleProof.Failure("seq must be 1 or more (leaf index = seq - 1)") }
        guard seq <= treeSize else { throw MerkleProof.Failure("seq \(seq) is past the tree size \(treeSize)") }
        let computed = record.withUnsafeBytes { MerkleFrontier.leafHash($0) }
        guard computed == leafHash else {
            throw MerkleProof.Failure("the record does not match leaf_hash: SHA-256(0x00 || record) is \(hex(computed))")
        }
        try MerkleProof.verifyInclusion(index: seq - 1, size: treeSize, leafHash: leafHash, path: path, root: root)
    }
}

/// A consistency proof between two tree sizes (RFC 9162 2.1.4), as `cdc log prove --consistency` prints it.
public struct ConsistencyProof: Equatable, Sendable {
    public static let format = "cdc-consistency-proof-1"
    public var oldSize: UInt64
    public var newSize: UInt64
    public var oldRoot: Hash
    public var newRoot: Hash
    public var path: [Hash]

    public init(oldSize: UInt64, newSize: UInt64, oldRoot: Hash, newRoot: Hash, path: [Hash]) {
        (self.oldSize, self.newSize, self.oldRoot, self.newRoot, self.path) = (oldSize, newSize, oldRoot, newRoot, path)
    }

    public var json: String {
        var w = JSONWriter(capacity: 256 + path.count * 70)
        w.raw("{\"format\":\""); w.raw(Self.format)
        w.raw("\",\"old_size\":"); w.number(oldSize)
        w.raw(",\"new_size\":"); w.number(newSize)
        w.raw(",\"old_root\":\""); w.raw(hex(oldRoot))
        w.raw("\",\"new_root\":\""); w.raw(hex(newRoot))
        w.raw("\",\"path\":["); proofPath(path, &w); w.raw("]}")
        return String(decoding: w.bytes, as: UTF8.self)
    }

    public func verify() throws {
        try MerkleProof.verifyConsistency(oldSize: oldSize, newSize: newSize, oldRoot: oldRoot, newRoot: newRoot, path: path)
    }
}

private func proofPath(_ path: [Hash], _ w: inout JSONWriter) {
    for (i, h) in path.enumerated() {
        if i > 0 { w.raw(",") }
        w.raw("\""); w.raw(hex(h)); w.raw("\"")
    }
}

/// A proof file: either kind, parsed strictly (every field present, hashes 32 bytes of lower-case hex).
public enum ProofFile: Sendable {
    case inclusion(InclusionProof)
    case consistency(ConsistencyProof)

    public static func parse(_ data: Data) throws -> ProofFile {
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw MerkleProof.Failure("not a JSON object")
        }
        func number(_ key: String) throws -> UInt64 {
            guard let n = object[key] as? NSNumber, let value = UInt64(exactly: n.doubleValue), "\(n)" == "\(value)" else {
                throw MerkleProof.Failure("field \(key) is missing or not a non-negative integer")
            }
            return value
        }
        func hash(_ key: String, _ value: Any?) throws -> Hash {
            guard let text = value as? String, let bytes = hexBytes(text), bytes.count == 32 else {
                throw MerkleProof.Failure("\(key) is not 64 hex digits")
            }
            return bytes
        }
        func path() throws -> [Hash] {
            guard let items = object["path"] as? [Any] else { throw MerkleProof.Failure("field path is missing or not an array") }
            return try items.enumerated().map { try hash("path[\($0.offset)]", $0.element) }
        }
        switch object["format"] as? String {
        case InclusionProof.format?:
            guard let text = object["record"] as? String, let record = Data(base64Encoded: text) else {
                throw MerkleProof.Failure("field record is missing or not base64")
            }
            return .inclusion(InclusionProof(seq: try number("seq"), treeSize: try number("tree_size"),
                                             leafHash: try hash("leaf_hash", object["leaf_hash"]), record: Array(record),
                                             path: try path(), root: try hash("root", object["root"])))
        case ConsistencyProof.format?:
            return .consistency(ConsistencyProof(oldSize: try number("old_size"), newSize: try number("new_size"),
                                                 oldRoot: try hash("old_root", object["old_root"]),
                                                 newRoot: try hash("new_root", object["new_root"]), path: try path()))
        default:
            throw MerkleProof.Failure("format is not \(InclusionProof.format) or \(ConsistencyProof.format)")
        }
    }
}

/// Lower-case or upper-case hex to bytes; nil when not hex.
public func hexBytes(_ text: String) -> [UInt8]? {
    let digits = Array(text.utf8)
    guard digits.count % 2 == 0 else { return nil }
    func value(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x61...0x66: return c - 0x61 + 10
        case 0x41...0x46: return c - 0x41 + 10
        default: return nil
        }
    }
    var out: [UInt8] = []
    out.reserveCapacity(digits.count / 2)
    var i = 0
    while i < digits.count {
        guard let hi = value(digits[i]), let lo = value(digits[i + 1]) else { return nil }
        out.append(hi << 4 | lo)
        i += 2
    }
    return out
}

/// A proof asked of the log that the log cannot give (a seq or size past the head).
public struct ProofRequestError: Error, CustomStringConvertible, Sendable {
    public var description: String
}

extension EventLog {
    /// The hash of the perfect subtree [start, start + 2^height): a stored leaf or node, else computed
    /// from its children.
    func perfectSubtree(_ txn: LMDBTransaction, start: UInt64, height: UInt8) throws -> Hash {
        if height == 0 {
            guard let leaf = try txn.get(leaves, key: keyBytes(start + 1)) else {
                throw EventLogError(.corrupt, "the Merkle leaf of record \(start + 1) is missing: run `cdc log verify`")
            }
            return Array(leaf)
        }
        let width = UInt64(1) << UInt64(height)
        if height >= MerkleNodes.minimumHeight, let nodes,
           let stored = try txn.get(nodes, key: MerkleNodes.key(endSeq: start + width, height: height)) {
            return Array(stored)
        }
        return MerkleFrontier.nodeHash(try perfectSubtree(txn, start: start, height: height - 1),
                                       try perfectSubtree(txn, start: start + width / 2, height: height - 1))
    }

    /// The RFC 6962 root of records 1...size (size <= head), from O(log size) stored hashes.
    public func root(size: UInt64) throws -> Hash {
        try environment.withTransaction(readOnly: true) { txn in
            let head = try readPosition(txn).head
            guard size <= head else { throw ProofRequestError(description: "tree size \(size) is past the head \(head)") }
            return try rootIn(txn, size: size)
        }
    }

    func rootIn(_ txn: LMDBTransaction, size: UInt64) throws -> Hash {
        guard size > 0 else { return MerkleFrontier().root }
        return try MerkleProof.rangeHash(0, size) { try perfectSubtree(txn, start: $0, height: $1) }
    }

    /// The inclusion proof of record `seq` in the tree of records 1...size (default: the head).
    public func inclusionProof(seq: UInt64, size: UInt64? = nil) throws -> InclusionProof {
        try environment.withTransaction(readOnly: true) { txn in
            let head = try readPosition(txn).head
            let size = size ?? head
            guard size <= head else { throw ProofRequestError(description: "tree size \(size) is past the head \(head)") }
            guard seq >= 1 else { throw ProofRequestError(description: "seq must be 1 or more") }
            guard seq <= size else { throw ProofRequestError(description: "seq \(seq) is past the tree size \(size)") }
            guard let record = try txn.get(events, key: keyBytes(seq)) else {
                throw EventLogError(.corrupt, "record \(seq) is missing: run `cdc log verify`")
            }
            let bytes = Array(record)
            let leaf = try perfectSubtree(txn, start: seq - 1, height: 0)
            let path = try MerkleProof.inclusionPath(index: seq - 1, size: size) { try perfectSubtree(txn, start: $0, height: $1) }
            return InclusionProof(seq: seq, treeSize: size, leafHash: leaf, record: bytes, path: path, root: try rootIn(txn, size: size))
        }
    }

    /// The consistency proof from the tree of `oldSize` records to the tree of `newSize` (default: the head).
    public func consistencyProof(oldSize: UInt64, newSize: UInt64? = nil) throws -> ConsistencyProof {
        try environment.withTransaction(readOnly: true) { txn in
            let head = try readPosition(txn).head
            let newSize = newSize ?? head
            guard newSize <= head else { throw ProofRequestError(description: "tree size \(newSize) is past the head \(head)") }
            guard oldSize <= newSize else { throw ProofRequestError(description: "the old tree size \(oldSize) is past the new tree size \(newSize)") }
            let path = try MerkleProof.consistencyPath(from: oldSize, to: newSize) { try perfectSubtree(txn, start: $0, height: $1) }
            return ConsistencyProof(oldSize: oldSize, newSize: newSize, oldRoot: try rootIn(txn, size: oldSize),
                                    newRoot: try rootIn(txn, size: newSize), path: path)
        }
    }

    /// The stored `nodes` entries whose end seq is at most `last`, in key order (end seq, then height),
    /// read in batches of short read transactions: what ``verify(from:to:digest:)`` walks alongside the
    /// nodes it recomputes, which come in the same order (about one node per eight records: held in
    /// memory, a 10-million-record log's were 200 MB).
    func storedNodes(through last: UInt64) -> StoredNodes { StoredNodes(log: self, last: last) }
}

/// The `nodes` sub-database in key order, up to a last end seq (see ``EventLog/storedNodes(through:)``).
struct StoredNodes {
    let log: EventLog
    let last: UInt64
    private var buffer: [(key: [UInt8], hash: Hash)] = []
    private var index = 0
    /// Where the next batch starts (exclusive of this key); nil before the first batch.
    private var after: [UInt8]?
    private var exhausted: Bool

    init(log: EventLog, last: UInt64) {
        self.log = log
        self.last = last
        exhausted = log.nodes == nil
    }

    /// The next stored node without taking it; nil when there are no more.
    mutating func peek() throws -> (key: [UInt8], hash: Hash)? {
        if index == buffer.count { try refill() }
        return index < buffer.count ? buffer[index] : nil
    }

    mutating func take() { index += 1 }

    private mutating func refill() throws {
        buffer.removeAll(keepingCapacity: true)
        index = 0
        guard !exhausted, let nodes = log.nodes else { return }
        let (start, last) = (after, self.last)
        var batch: [(key: [UInt8], hash: Hash)] = []
        var done = true
        try log.environment.withTransaction(readOnly: true) { txn in
            try txn.scan(nodes, from: start) { key, value in
                if let start, key.elementsEqual(start) { return true }
                guard key.count == 9 else { return true }  // not a node key: not this walk's business
                guard let end = readU64(UnsafeRawBufferPointer(rebasing: key[0..<8])), end <= last else { return false }
                batch.append((Array(key), Array(value)))
                if batch.count >= 20_000 { done = false; return false }
                return true
            }
        }
        buffer = batch
        after = batch.last?.key ?? after
        exhausted = done
    }
}
