import COpenSSL
import Crypto

/// A 32-byte SHA-256 digest.
public typealias Hash = [UInt8]

/// A SHA-256 digest held inline (no heap allocation, no reference counting): the writer hashes two
/// million leaves and nodes for a million-record transaction, and a `[UInt8]` per hash (an allocation,
/// a release, a retain per copy) cost about as much as the hashing itself.
public struct MerkleHash: Equatable, Sendable {
    private var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    public init() {}

    /// The first 32 bytes of `bytes` (which must hold at least 32: check lengths read from storage or input first).
    public init(_ bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count >= 32, "a Merkle hash is 32 bytes")
        withUnsafeMutableBytes(of: &words) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[0..<32])) }
    }

    public init(_ bytes: Hash) {
        self.init()
        bytes.withUnsafeBytes { self = MerkleHash($0) }
    }

    /// The 32 bytes, valid only during the call.
    @inline(__always)
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try Swift.withUnsafeBytes(of: words, body)
    }

    public var bytes: Hash { withUnsafeBytes { Array($0) } }

    public static func == (a: MerkleHash, b: MerkleHash) -> Bool {
        a.words.0 == b.words.0 && a.words.1 == b.words.1 && a.words.2 == b.words.2 && a.words.3 == b.words.3
    }

    /// Finishes `context` into a digest.
    @inline(__always)
    fileprivate static func finishing(_ context: inout SHA256_CTX) -> MerkleHash {
        var digest = MerkleHash()
        Swift.withUnsafeMutableBytes(of: &digest.words) { out in
            _ = SHA256_Final(out.baseAddress!.assumingMemoryBound(to: UInt8.self), &context)
        }
        return digest
    }
}

/// The right edge of an RFC 6962 Merkle tree over the log's records: the roots of the perfect
/// subtrees that make up the first `size` leaves (at most 64), enough to append and to compute the root.
///
/// leaf = SHA-256(0x00 || record bytes), node = SHA-256(0x01 || left || right);
/// the root of n leaves is MTH(D[0..n)) as RFC 6962 §2.1 defines it (left subtree = largest power of two < n).
public struct MerkleFrontier: Equatable, Sendable {
    /// Number of leaves.
    public private(set) var size: UInt64 = 0
    /// Roots of the perfect subtrees, largest (leftmost) first; subtree i has 2^heights[i] leaves.
    private var nodes: [(height: UInt8, hash: MerkleHash)] = []

    public init() {}

    public static func == (a: MerkleFrontier, b: MerkleFrontier) -> Bool {
        a.size == b.size && a.nodes.elementsEqual(b.nodes) { $0.height == $1.height && $0.hash == $1.hash }
    }

    /// SHA-256(0x00 || record).
    ///
    /// The tree's hashes go through OpenSSL's libcrypto with the context on the stack: swift-crypto's
    /// `SHA256` allocates and frees a context object per hash, which was a quarter of the capture
    /// thread's time while a million-record transaction was written (the tests check these hashes
    /// against swift-crypto's and RFC 6962's vectors).
    public static func leafHash(_ record: UnsafeRawBufferPointer) -> Hash {
        leaf(record).bytes
    }

    /// SHA-256(0x00 || record), inline.
    @inline(__always)
    public static func leaf(_ record: UnsafeRawBufferPointer) -> MerkleHash {
        var context = SHA256_CTX()
        SHA256_Init(&context)
        var prefix: UInt8 = 0x00
        SHA256_Update(&context, &prefix, 1)
        if let base = record.baseAddress { SHA256_Update(&context, base, record.count) }
        return MerkleHash.finishing(&context)
    }

    /// SHA-256(0x01 || left || right), of whatever lengths the two are (a proof checker hashes what
    /// it was given).
    public static func nodeHash(_ left: Hash, _ right: Hash) -> Hash {
        var context = SHA256_CTX()
        SHA256_Init(&context)
        var prefix: UInt8 = 0x01
        SHA256_Update(&context, &prefix, 1)
        left.withUnsafeBytes { _ = SHA256_Update(&context, $0.baseAddress, $0.count) }
        right.withUnsafeBytes { _ = SHA256_Update(&context, $0.baseAddress, $0.count) }
        return MerkleHash.finishing(&context).bytes
    }

    /// SHA-256(0x01 || left || right), inline.
    @inline(__always)
    public static func node(_ left: MerkleHash, _ right: MerkleHash) -> MerkleHash {
        var context = SHA256_CTX()
        SHA256_Init(&context)
        var prefix: UInt8 = 0x01
        SHA256_Update(&context, &prefix, 1)
        left.withUnsafeBytes { _ = SHA256_Update(&context, $0.baseAddress, 32) }
        right.withUnsafeBytes { _ = SHA256_Update(&context, $0.baseAddress, 32) }
        return MerkleHash.finishing(&context)
    }

    /// Appends a leaf hash (32 bytes).
    public mutating func append(leaf: Hash) {
        append(leaf: MerkleHash(leaf)) { _, _ in }
    }

    /// Appends a leaf hash and reports each perfect subtree it completes, smallest first: its height
    /// (>= 1) and hash. The subtree of height h completed by leaf number `size` (after the append)
    /// covers leaves [size - 2^h, size).
    public mutating func append(leaf: Hash, completed: (_ height: UInt8, _ hash: Hash) throws -> Void) rethrows {
        try append(leaf: MerkleHash(leaf)) { height, hash in try completed(height, hash.bytes) }
    }

    /// ``append(leaf:completed:)`` with inline digests (the writer's path).
    @inline(__always)
    public mutating func append(leaf: MerkleHash, completed: (_ height: UInt8, _ hash: MerkleHash) throws -> Void) rethrows {
        nodes.append((0, leaf))
        size += 1
        while nodes.count >= 2, nodes[nodes.count - 1].height == nodes[nodes.count - 2].height {
            let right = nodes.removeLast()
            let left = nodes.removeLast()
            let merged = (height: left.height + 1, hash: Self.node(left.hash, right.hash))
            nodes.append(merged)
            try completed(merged.height, merged.hash)
        }
    }

    /// The tree's root; SHA-256 of the empty string for an empty tree (RFC 6962).
    public var root: Hash {
        guard var accumulator = nodes.last?.hash else { return Array(SHA256.hash(data: [UInt8]())) }
        for node in nodes.dropLast().reversed() {
            accumulator = Self.node(node.hash, accumulator)
        }
        return accumulator.bytes
    }

    /// u64 size, u8 count, then per node u8 height and 32 bytes.
    public var encoded: [UInt8] {
        var w = ByteWriter(capacity: 9 + nodes.count * 33)
        w.u64(size)
        w.u8(UInt8(nodes.count))
        for node in nodes {
            w.u8(node.height)
            node.hash.withUnsafeBytes { w.bytes.append(contentsOf: $0) }
        }
        return w.bytes
    }

    public init(encoded buffer: UnsafeRawBufferPointer) throws {
        var r = ByteReader(buffer)
        size = try r.u64()
        let count = Int(try r.u8())
        var total: UInt64 = 0
        for _ in 0..<count {
            let height = try r.u8()
            guard height < 64 else { throw FormatError.malformed("merkle node height \(height)") }
            nodes.append((height, MerkleHash(try r.bytes(32))))
            let (sum, overflow) = total.addingReportingOverflow(1 << UInt64(height))
            guard !overflow else { throw FormatError.malformed("merkle frontier covers more than 2^64 leaves") }
            total = sum
        }
        guard total == size else { throw FormatError.malformed("merkle frontier covers \(total) leaves, not \(size)") }
    }
}

/// Lower-case hex.
public func hex(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    out.reserveCapacity(bytes.count * 2)
    for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 15)]) }
    return String(decoding: out, as: UTF8.self)
}
