import Foundation
import Testing
import TestSupport

/// `[privacy]`: columns hashed (keyed HMAC-SHA-256) or redacted at capture, before anything is written.
@Suite(.timeLimit(.minutes(15))) struct PrivacyTests {
    static let secret = "PATIENT-SECRET-0001"
    static let other = "PATIENT-SECRET-0002"

    static let parents = """
        INSERT INTO facilities VALUES ('F1', 'General', 'Boston', 'MA', 'US', 'Academic', 100);
        INSERT INTO surgeons VALUES ('S1', 'Dr One', 'Urology', 10, 'Expert');
        INSERT INTO surgical_robots (robot_id, robot_serial_number, robot_model, facility_id) VALUES ('R1', 'SN1', 'da Vinci Xi', 'F1');
        """

    static func procedure(_ id: String, patient: String, gender: String = "F", age: Int = 61) -> String {
        """
        INSERT INTO surgical_procedures (procedure_id, robot_id, surgeon_id, facility_id, procedure_type, procedure_category,
                                         patient_id, patient_age, patient_gender, start_time)
        VALUES ('\(id)', 'R1', 'S1', 'F1', 'Cholecystectomy', 'General', '\(patient)', \(age), '\(gender)', '2025-01-01 10:00:00+00')
        """
    }

    /// Writes a 32-byte key file (mode 0600) and returns its path and hex form.
    static func writeKey(_ ws: CDCWorkspace, mode: mode_t = 0o600) throws -> (path: String, hex: String) {
        let key = (0..<32).map { UInt8(($0 * 37 + 11) % 256) }
        let path = ws.directory + "/privacy.key"
        #expect(FileManager.default.createFile(atPath: path, contents: Data(key)), "key file \(path) written")
        chmod(path, mode)
        return (path, key.map { String(format: "%02x", $0) }.joined())
    }

    static func appendPrivacy(_ ws: CDCWorkspace, _ section: String) throws {
        let text = try String(contentsOfFile: ws.configPath, encoding: .utf8) + "\n[privacy]\n" + section + "\n"
        try text.write(toFile: ws.configPath, atomically: true, encoding: .utf8)
    }

    /// HMAC-SHA-256 computed by openssl, independently of cdc.
    static func openSSLHMAC(_ value: String, keyHex: String) throws -> String {
        let result = try Shell.run("/bin/sh", ["-c", "printf '%s' \"$1\" | openssl dgst -sha256 -mac HMAC -macopt hexkey:\(keyHex) -r", "sh", value])
        guard result.status == 0, let digest = result.stdout.split(separator: " ").first else {
            throw TestFailure("openssl failed: \(result.stderr)")
        }
        return String(digest)
    }

    @Test func hashedAndRedactedColumnsNeverReachTheLogInClearText() throws {
        let ws = try CDCWorkspace("privacy")
        defer { ws.tearDown() }
        let key = try Self.writeKey(ws)
        try Self.appendPrivacy(ws, """
            key_file = "\(key.path)"
            hash = ["public.surgical_procedures.patient_id"]
            redact = ["public.surgical_procedures.patient_gender", "public.surgical_procedures.patient_age"]
            """)
        try ws.sql(Self.parents)
        try ws.sql(Self.procedure("P1", patient: Self.secret))  // in the snapshot
        try ws.initialize()
        try ws.sql(Self.procedure("P2", patient: Self.secret))  // streamed: same patient
        try ws.sql(Self.procedure("P3", patient: Self.other))
        try ws.sql("UPDATE surgical_procedures SET patient_id = '\(Self.other)', status = 'completed' WHERE procedure_id = 'P2'")
        try ws.sql("UPDATE surgical_procedures SET patient_id = NULL WHERE procedure_id = 'P3'")
        try ws.sql("DELETE FROM surgical_procedures WHERE procedure_id = 'P1'")
        try ws.catchUp()

        let events = try ws.rowEvents(table: "surgical_procedures")
        #expect(events.map { $0["op"] as? String } == ["snapshot", "insert", "insert", "update", "update", "delete"])
        let secretHash = try Self.openSSLHMAC(Self.secret, keyHex: key.hex)
        let otherHash = try Self.openSSLHMAC(Self.other, keyHex: key.hex)
        #expect(secretHash.count == 64 && secretHash != otherHash)
        let patients = events.filter { $0["op"] as? String != "delete" }.map { row($0)?["patient_id"] as? String }
        #expect(patients == [secretHash, secretHash, otherHash, otherHash, nil],
                "snapshot and stream hash alike, equal values correlate, NULL stays NULL: \(patients)")
        for event in events.filter({ $0["op"] as? String != "delete" }) {
            #expect(row(event)?["patient_gender"] is NSNull, "redacted: \(event)")
            #expect(row(event)?["patient_age"] is NSNull, "redacted (a smallint): \(event)")
            #expect(row(event)?["procedure_type"] as? String == "Cholecystectomy", "other columns are untouched")
        }
        #expect(row(events[3])?["status"] as? String == "completed")
        #expect(row(events.last, "before")?["procedure_id"] as? String == "P1", "the delete keeps its key")

        // Not in the export, and not anywhere in the LMDB file either.
        let data = try Data(contentsOf: URL(fileURLWithPath: ws.logPath + "/data.mdb"))
        #expect(data.range(of: Data(Self.secret.utf8)) == nil, "the clear-text patient id is not in data.mdb")
        #expect(data.range(of: Data(Self.other.utf8)) == nil)
        #expect(data.range(of: Data(secretHash.utf8)) != nil, "its hash is")

        // stats names the protection and the key's id, never the key.
        let stats = try ws.cdc(["log", "stats", "--log", ws.logPath, "--format", "json"])
        #expect(stats.status == 0, "\(stats.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(stats.stdout.utf8)) as? [String: Any]
        let epochs = json?["privacy"] as? [[String: Any]] ?? []
        #expect(epochs.count == 1 && epochs.first?["since_seq"] as? Int == 1, "\(stats.stdout)")
        let policy = epochs.first?["policy"] as? [String: Any]
        #expect(policy?["columns"] as? [String: String] == [
            "public.surgical_procedures.patient_id": "hash",
            "public.surgical_procedures.patient_gender": "redact",
            "public.surgical_procedures.patient_age": "redact",
        ])
        #expect((policy?["key_id"] as? String)?.count == 16)
        #expect(!stats.stdout.contains(key.hex))
        let text = try ws.cdc(["log", "stats", "--log", ws.logPath, "--format", "text"])
        #expect(text.stdout.contains("public.surgical_procedures.patient_id  hash"), "\(text.stdout)")
        #expect(text.stdout.contains("privacy from seq 1 on, HMAC key id"), "\(text.stdout)")
    }

    @Test func aChangedPolicyIsRecordedFromTheNextEventOn() throws {
        let ws = try CDCWorkspace("privacy_change")
        defer { ws.tearDown() }
        try ws.sql(Self.parents)
        try ws.initialize()
        try ws.sql(Self.procedure("P1", patient: Self.secret))
        try ws.catchUp()
        let head = try ws.export().count
        // The operator starts protecting the column: later events are redacted, earlier ones stay.
        try Self.appendPrivacy(ws, #"redact = ["public.surgical_procedures.patient_gender"]"#)
        try ws.sql(Self.procedure("P2", patient: Self.other, gender: "M"))
        try ws.catchUp()
        let events = try ws.rowEvents(table: "surgical_procedures")
        #expect(events.map { row($0)?["patient_gender"] as? String } == ["F", nil])
        #expect(events.map { row($0)?["patient_id"] as? String } == [Self.secret, Self.other], "not listed: as the source holds it")

        let stats = try ws.cdc(["log", "stats", "--log", ws.logPath, "--format", "text"])
        #expect(stats.stdout.contains("privacy from seq 1...\(head):\n  no column protected"), "\(stats.stdout)")
        #expect(stats.stdout.contains("privacy from seq \(head + 1) on:"), "\(stats.stdout)")
        #expect(stats.stdout.contains("public.surgical_procedures.patient_gender  redact"), "\(stats.stdout)")
    }

    @Test(arguments: [
        ("unknown column", #"redact = ["public.surgical_procedures.patient_name"]"#, "public.surgical_procedures.patient_name"),
        ("hash of a number", #"hash = ["public.surgical_procedures.patient_age"]"# + "\nkey_file = \"KEY600\"", "hash applies to text columns only"),
        ("redacted key", #"redact = ["public.surgical_procedures.procedure_id"]"#, "replica identity"),
        ("no key file", #"hash = ["public.surgical_procedures.patient_id"]"#, "privacy.key_file"),
        ("not schema.table.column", #"redact = ["patient_id"]"#, "schema.table.column"),
        ("world-readable key", #"hash = ["public.surgical_procedures.patient_id"]"# + "\nkey_file = \"KEY644\"", "chmod 600"),
        ("short key", #"hash = ["public.surgical_procedures.patient_id"]"# + "\nkey_file = \"SHORTKEY\"", "at least 32"),
    ])
    func aProtectionThatCannotApplyStopsInitBeforeAnythingIsWritten(_ name: String, _ section: String, _ expected: String) throws {
        let ws = try CDCWorkspace("privacy_bad")
        defer { ws.tearDown() }
        let key = try Self.writeKey(ws, mode: 0o644)
        let good = ws.directory + "/good.key"
        try FileManager.default.copyItem(atPath: key.path, toPath: good)
        chmod(good, 0o600)
        let short = ws.directory + "/short.key"
        #expect(FileManager.default.createFile(atPath: short, contents: Data("tooshort".utf8)))
        chmod(short, 0o600)
        try Self.appendPrivacy(ws, section.replacingOccurrences(of: "KEY644", with: key.path).replacingOccurrences(of: "KEY600", with: good).replacingOccurrences(of: "SHORTKEY", with: short))
        let result = try ws.cdc(["init", "--config", ws.configPath])
        #expect(result.status != 0, "\(name): init must fail")
        let lines = result.stderr.split(separator: "\n").filter { $0.hasPrefix("cdc: error:") }
        #expect(lines.count == 1 && lines.first?.contains(expected) == true, "\(name): \(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: ws.logPath + "/data.mdb"), "\(name): no log was created")
        #expect(try ws.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '\(ws.slot)'")[0][0] == "0",
                "\(name): no slot was created")
    }

    @Test func replicaIdentityFullBeforeImagesAreHashedToo() throws {
        let ws = try CDCWorkspace("privacy_full")
        defer { ws.tearDown() }
        let key = try Self.writeKey(ws)
        try ws.sql("ALTER TABLE surgical_procedures REPLICA IDENTITY FULL")
        // Under FULL every column is part of the identity: redaction would lose the row's key.
        try Self.appendPrivacy(ws, """
            key_file = "\(key.path)"
            hash = ["public.surgical_procedures.patient_id"]
            redact = ["public.surgical_procedures.patient_gender"]
            """)
        expectOneLineError(try ws.cdc(["init", "--config", ws.configPath]), naming: ["patient_gender", "replica identity"])
        try ws.writeConfig()
        try Self.appendPrivacy(ws, """
            key_file = "\(key.path)"
            hash = ["public.surgical_procedures.patient_id"]
            """)

        try ws.sql(Self.parents)
        try ws.sql(Self.procedure("P1", patient: Self.secret))
        try ws.initialize()
        try ws.sql(Self.procedure("P2", patient: Self.secret))
        try ws.sql("UPDATE surgical_procedures SET status = 'completed' WHERE procedure_id = 'P1'")           // patient unchanged
        try ws.sql("UPDATE surgical_procedures SET patient_id = '\(Self.other)' WHERE procedure_id = 'P2'")   // patient changed
        try ws.sql("DELETE FROM surgical_procedures WHERE procedure_id = 'P2'")
        try ws.catchUp()

        let secretHash = try Self.openSSLHMAC(Self.secret, keyHex: key.hex)
        let otherHash = try Self.openSSLHMAC(Self.other, keyHex: key.hex)
        let events = try ws.rowEvents(table: "surgical_procedures")
        #expect(events.map { $0["op"] as? String } == ["snapshot", "insert", "update", "update", "delete"])
        let changes = events.filter { $0["op"] as? String == "update" || $0["op"] as? String == "delete" }
        #expect(changes.map { $0["before_kind"] as? String } == ["row", "row", "row"], "FULL sends the whole old row")
        #expect(changes.map { row($0, "before")?["patient_id"] as? String } == [secretHash, secretHash, otherHash],
                "the old rows' patient ids are hashed like the new ones")
        #expect(changes.map { row($0, "before")?["procedure_type"] as? String } == ["Cholecystectomy", "Cholecystectomy", "Cholecystectomy"],
                "the other columns of the old rows are as the source held them")
        #expect(events.filter { $0["op"] as? String != "delete" }.map { row($0)?["patient_id"] as? String }
                    == [secretHash, secretHash, secretHash, otherHash])

        let data = try Data(contentsOf: URL(fileURLWithPath: ws.logPath + "/data.mdb"))
        #expect(!occurs(Self.secret, in: data) && !occurs(Self.other, in: data), "no clear-text patient id in data.mdb")
        #expect(occurs(otherHash, in: data))
    }

    /// Policies that cannot apply, set after `cdc init` (which had a good one): `cdc run` must refuse
    /// them before it writes anything. KEY is the good key file, replaced in the entry as named.
    static let badRunPolicies: [(String, String, String)] = [
        ("unknown column", #"redact = ["public.surgical_procedures.patient_name"]"#, "public.surgical_procedures.patient_name"),
        ("hash of a number", #"hash = ["public.surgical_procedures.patient_age"]"# + "\nkey_file = \"KEY\"",
         "public.surgical_procedures.patient_age"),
        ("redacted key", #"redact = ["public.surgical_procedures.procedure_id"]"#, "public.surgical_procedures.procedure_id"),
        ("short key", #"hash = ["public.surgical_procedures.patient_id"]"# + "\nkey_file = \"SHORT\"", "SHORT"),
        ("world-readable key", #"hash = ["public.surgical_procedures.patient_id"]"# + "\nkey_file = \"OPEN\"", "OPEN"),
        ("missing key file", #"hash = ["public.surgical_procedures.patient_id"]"# + "\nkey_file = \"GONE\"", "GONE"),
    ]

    @Test(arguments: badRunPolicies)
    func runRefusesAPolicyThatCannotApplyBeforeWritingAnything(_ name: String, _ section: String, _ expected: String) throws {
        let ws = try CDCWorkspace("privacy_run")
        defer { ws.tearDown() }
        let key = try Self.writeKey(ws)
        let good = "key_file = \"\(key.path)\"\nhash = [\"public.surgical_procedures.patient_id\"]"
        try Self.appendPrivacy(ws, good)
        try ws.sql(Self.parents)
        try ws.initialize()
        // Changes waiting in the slot, to the protected table and another one.
        try ws.sql("INSERT INTO facilities VALUES ('F2', 'Second', 'Austin', 'TX', 'US', 'Community', 50)")
        try ws.sql(Self.procedure("P1", patient: Self.secret))
        let before = try ws.exportLines()
        let privacyBefore = try ws.stats()["privacy"] as? [Any]
        let confirmed = "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '\(ws.slot)'"
        let confirmedBefore = try ws.sql(confirmed)

        let files = ["SHORT": ws.directory + "/short.key", "OPEN": ws.directory + "/open.key", "GONE": ws.directory + "/gone.key"]
        _ = FileManager.default.createFile(atPath: files["SHORT"]!, contents: Data("only 16 bytes ..".utf8))
        chmod(files["SHORT"]!, 0o600)
        try FileManager.default.copyItem(atPath: key.path, toPath: files["OPEN"]!)
        chmod(files["OPEN"]!, 0o644)
        var edited = section.replacingOccurrences(of: "KEY", with: key.path)
        var words = [expected]
        for (placeholder, path) in files {
            edited = edited.replacingOccurrences(of: placeholder, with: path)
            words = words.map { $0 == placeholder ? path : $0 }
        }
        try ws.writeConfig()
        try Self.appendPrivacy(ws, edited)

        let result = try ws.runToCurrentLSN()
        expectOneLineError(result, naming: words)
        #expect(try ws.exportLines() == before, "\(name): the log is unchanged")
        #expect(try ws.stats()["privacy"] as? [Any] as NSArray? == privacyBefore as NSArray?, "\(name): no policy was recorded")
        #expect(try ws.sql(confirmed) == confirmedBefore, "\(name): nothing was confirmed to the server")

        // With the good policy back, the changes that waited arrive, protected.
        try ws.writeConfig()
        try Self.appendPrivacy(ws, good)
        try ws.catchUp()
        let procedures = try ws.rowEvents(table: "surgical_procedures")
        #expect(procedures.map { row($0)?["patient_id"] as? String } == [try Self.openSSLHMAC(Self.secret, keyHex: key.hex)])
        #expect(try ws.rowEvents(table: "facilities").map { row($0)?["facility_id"] as? String } == ["F1", "F2"])
    }
}
