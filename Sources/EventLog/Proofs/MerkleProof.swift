/// RFC 9162 section 2.1 proofs over a Merkle tree whose perfect subtrees can be looked up: building
/// inclusion (2.1.3.1, PATH) and consistency (2.1.4.1, PROOF) proofs, and the verification algorithms
/// (2.1.3.2, 2.1.4.2), which need nothing but the proof.
///
/// A perfect subtree is named by its first leaf index and its height: it covers leaves
/// [start, start + 2^height), start a multiple of 2^height.
public enum MerkleProof {
    /// Why a proof did not verify (or cannot be built), one line.
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// The largest power of two smaller than n (n >= 2).
    static func split(_ n: UInt64) -> UInt64 {
        UInt64(1) << (63 - UInt64((n - 1).leadingZeroBitCount))
    }

    /// MTH(D[start..<end]) for a range of the RFC's recursion, from O(log n) perfect subtrees.
    public static func rangeHash(_ start: UInt64, _ end: UInt64, perfect: (UInt64, UInt8) throws -> Hash) rethrows -> Hash {
        let n = end - start
        if n & (n - 1) == 0, start % n == 0 { return try perfect(start, UInt8(n.trailingZeroBitCount)) }
        let k = split(n)
        return MerkleFrontier.nodeHash(try rangeHash(start, start + k, perfect: perfect), try rangeHash(start + k, end, perfect: perfect))
    }

    /// PATH(m, D[n]): the audit path of leaf index `m` in the tree of the first `n` leaves, leaf end first.
    public static func inclusionPath(index m: UInt64, size n: UInt64, perfect: (UInt64, UInt8) throws -> Hash) rethrows -> [Hash] {
        precondition(m < n)
        var siblings: [Hash] = []
        var (start, end) = (UInt64(0), n)
        while end - start > 1 {
            let k = split(end - start)
            if m < start + k {
                siblings.append(try rangeHash(start + k, end, perfect: perfect))
                end = start + k
            } else {
                siblings.append(try rangeHash(start, start + k, perfect: perfect))
                start += k
            }
        }
        return siblings.reversed()
    }

    /// PROOF(m, D[n]) = SUBPROOF(m, D[n], true); empty for m == 0 or m == n.
    public static func consistencyPath(from m: UInt64, to n: UInt64, perfect: (UInt64, UInt8) throws -> Hash) rethrows -> [Hash] {
        precondition(m <= n)
        guard m > 0, m < n else { return [] }
        func subproof(_ m: UInt64, _ start: UInt64, _ end: UInt64, _ complete: Bool) throws -> [Hash] {
            let n = end - start
            if m == n { return complete ? [] : [try rangeHash(start, end, perfect: perfect)] }
            let k = split(n)
            if m <= k {
                return try subproof(m, start, start + k, complete) + [try rangeHash(start + k, end, perfect: perfect)]
            }
            return try subproof(m - k, start + k, end, false) + [try rangeHash(start, start + k, perfect: perfect)]
        }
        return try subproof(m, 0, n, true)
    }

    /// RFC 9162 2.1.3.2: the root that `path` leads to from `leafHash` at `index` in a tree of `size`
    /// leaves; throws when the path has the wrong length for that position.
    public static func rootFromInclusion(index: UInt64, size: UInt64, leafHash: Hash, path: [Hash]) throws -> Hash {
        guard index < size else { throw Failure("leaf index \(index) is not below the tree size \(size)") }
        guard leafHash.count == 32, path.allSatisfy({ $0.count == 32 }) else { throw Failure("a hash is not 32 bytes") }
        var (fn, sn, r) = (index, size - 1, leafHash)
        for p in path {
            guard sn > 0 else { throw Failure("the path is longer than a tree of \(size) leaves needs") }
            if fn & 1 == 1 || fn == sn {
                r = MerkleFrontier.nodeHash(p, r)
                if fn & 1 == 0 {
                    while fn & 1 == 0 && fn != 0 { fn >>= 1; sn >>= 1 }
                }
            } else {
                r = MerkleFrontier.nodeHash(r, p)
            }
            fn >>= 1; sn >>= 1
        }
        guard sn == 0 else { throw Failure("the path is shorter than a tree of \(size) leaves needs") }
        return r
    }

    /// RFC 9162 2.1.3.2, the whole check.
    public static func verifyInclusion(index: UInt64, size: UInt64, leafHash: Hash, path: [Hash], root: Hash) throws {
        let computed = try rootFromInclusion(index: index, size: size, leafHash: leafHash, path: path)
        guard computed == root else {
            throw Failure("the inclusion path leads to root \(hex(computed)), not \(hex(root))")
        }
    }

    /// RFC 9162 2.1.4.2: that the tree of `oldSize` leaves with `oldRoot` is a prefix of the tree of
    /// `newSize` leaves with `newRoot`.
    public static func verifyConsistency(oldSize: UInt64, newSize: UInt64, oldRoot: Hash, newRoot: Hash, path: [Hash]) throws {
        guard oldSize <= newSize else { throw Failure("the old size \(oldSize) is above the new size \(newSize)") }
        guard oldRoot.count == 32, newRoot.count == 32, path.allSatisfy({ $0.count == 32 }) else { throw Failure("a hash is not 32 bytes") }
        if oldSize == newSize {
            guard path.isEmpty else { throw Failure("a proof between equal sizes must be empty") }
            guard oldRoot == newRoot else { throw Failure("equal sizes but different roots") }
            return
        }
        if oldSize == 0 {
            guard path.isEmpty else { throw Failure("a proof from the empty tree must be empty") }
            return
        }
        guard !path.isEmpty else { throw Failure("the consistency path is empty") }
        var path = path
        if oldSize & (oldSize - 1) == 0 { path.insert(oldRoot, at: 0) }
        var (fn, sn) = (oldSize - 1, newSize - 1)
        while fn & 1 == 1 { fn >>= 1; sn >>= 1 }
        var (fr, sr) = (path[0], path[0])
        for c in path.dropFirst() {
            guard sn > 0 else { throw Failure("the consistency path is longer than needed") }
            if fn & 1 == 1 || fn == sn {
                fr = MerkleFrontier.nodeHash(c, fr)
                sr = MerkleFrontier.nodeHash(c, sr)
                if fn & 1 == 0 {
                    while fn & 1 == 0 && fn != 0 { fn >>= 1; sn >>= 1 }
                }
            } else {
                sr = MerkleFrontier.nodeHash(sr, c)
            }
            fn >>= 1; sn >>= 1
        }
        guard sn == 0 else { throw Failure("the consistency path is shorter than needed") }
        guard fr == oldRoot else { throw Failure("the consistency path does not lead to the old root \(hex(oldRoot))") }
        guard sr == newRoot else { throw Failure("the consistency path does not lead to the new root \(hex(newRoot))") }
    }
}
