@testable import Capture
import EventLog
import Testing

/// Column protection at capture, against HMAC-SHA-256 values computed outside cdc with
/// `printf VALUE | openssl dgst -sha256 -mac HMAC -macopt hexkey:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f`.
@Suite(.timeLimit(.minutes(15))) struct ColumnProtectorTests {
    static let key = (0..<32).map { UInt8($0) }
    static let vectors = [
        ("alice", "6eefad2bed97b6d93ee663d67a44b46016b3d79dcad54ada39b61a1d14874d1b"),
        ("", "d38b42096d80f45f826b44a9d5607de72496a415d3f4a1a8c88e3bb9da8dc1cb"),
        ("Zoë", "895eaa5b6ad2cd8a4aadf561368adafa408a261c6abf62b7d2b3de638877e91b"),
        ("a\tb", "523f00b4c1faa9ae2f5171109dd2751b755a15d4a35ee25d7a37002a9125a73f"),
    ]

    static let relation = RelationDefinition(oid: 16_385, namespace: "public", name: "patients", replicaIdentity: UInt8(ascii: "d"), columns: [
        .init(name: "id", typeOID: 23, typeModifier: -1, isKey: true, typeName: "int4"),
        .init(name: "name", typeOID: 25, typeModifier: -1, isKey: false, typeName: "text"),
        .init(name: "email", typeOID: 1043, typeModifier: 104, isKey: false, typeName: "varchar"),
        .init(name: "note", typeOID: 25, typeModifier: -1, isKey: false, typeName: "text"),
    ])

    static func protector(_ columns: [String: PrivacyPolicy.Method]) throws -> ColumnProtector {
        try ColumnProtector(columns: columns, key: key)
    }

    @Test func hashIsHMACSHA256AsLowercaseHex() throws {
        let p = try Self.protector(["public.patients.name": .hash])
        for (value, mac) in Self.vectors {
            #expect(p.hashed(value) == mac, "\(value)")
        }
        #expect(p.policy.keyID == PrivacyPolicy.keyID(of: Self.key))
    }

    @Test func pgoutputTuplesAreProtectedPerColumn() throws {
        let p = try Self.protector(["public.patients.name": .hash, "public.patients.email": .redact])
        let methods = try #require(try p.methods(for: Self.relation))
        #expect(methods == [nil, .hash, .redact, nil])
        var w = PgWire("I")
        w.int32(16_385)
        w.tag("N")
        w.tuple([.text("7"), .text("alice"), .text("alice@example.org"), .text("alice")])
        let row = try decoded(w) { message -> [Datum] in
            guard case .insert(_, let new) = message else { throw CaptureError(.other, "not an insert") }
            return try values(new, protecting: methods, with: p)
        }
        #expect(row == [text("7"), text(Self.vectors[0].1), .null, text("alice")])

        // NULL stays NULL and an unchanged TOASTed value stays unchanged, hashed or redacted.
        var u = PgWire("U")
        u.int32(16_385)
        u.tag("N")
        u.tuple([.text("7"), .null, .unchangedToast, .unchangedToast])
        let after = try decoded(u) { message -> [Datum] in
            guard case .update(_, _, _, let new) = message else { throw CaptureError(.other, "not an update") }
            return try values(new, protecting: methods, with: p)
        }
        #expect(after == [text("7"), .null, .unchangedToast, .unchangedToast])
    }

    @Test func tablesWithoutProtectedColumnsAreLeftAlone() throws {
        let p = try Self.protector(["public.other.name": .hash])
        #expect(try p.methods(for: Self.relation) == nil)
        #expect(try ColumnProtector(columns: [:], key: nil).methods(for: Self.relation) == nil)
    }

    @Test func methodsThatCannotApplyAreRefused() throws {
        let hashInt = #expect(throws: CaptureError.self) { try Self.protector(["public.patients.id": .hash]).methods(for: Self.relation) }
        #expect(hashInt?.code == .privacyPolicyInvalid)
        let redactKey = #expect(throws: CaptureError.self) { try Self.protector(["public.patients.id": .redact]).methods(for: Self.relation) }
        #expect(redactKey?.code == .privacyPolicyInvalid)
        let noKey = #expect(throws: CaptureError.self) { try ColumnProtector(columns: ["public.patients.name": .hash], key: nil) }
        #expect(noKey?.code == .privacyKeyMissing)
        // Redacting needs no key, and records none.
        let redactOnly = try ColumnProtector(columns: ["public.patients.note": .redact], key: nil)
        #expect(redactOnly.policy.keyID == nil)
    }
}
