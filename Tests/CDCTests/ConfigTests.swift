import CDCService
import Foundation
import Testing

/// `cdc.toml` parsing and validation (no server needed).
@Suite(.timeLimit(.minutes(15))) struct ConfigTests {
    static let secret = "hunter2-secret"

    static let full = """
        # every section
        [source]
        url = "host=db.internal port=5432 dbname=surgical user=cdc password=\(secret)"
        slot = "cdc_main"
        publication = "cdc_pub"
        tables = ["public.facilities", "public.surgeons"]

        [log]
        path = "/var/lib/cdc/log"

        [warehouse]
        url = "host=dw.internal dbname=warehouse user=cdc_dw"
        schema = "dw2"
        timezone = "Europe/Paris"
        mapping = "projections/surgical-robotics.toml"

        [metrics]
        listen = "0.0.0.0:9999"
        """

    @Test func validFullFile() throws {
        let config = try Config.parse(Self.full)
        #expect(config.source.url == "host=db.internal port=5432 dbname=surgical user=cdc password=\(Self.secret)")
        #expect(config.source.slot == "cdc_main")
        #expect(config.source.publication == "cdc_pub")
        #expect(config.source.tables == ["public.facilities", "public.surgeons"])
        #expect(config.log.path == "/var/lib/cdc/log")
        #expect(config.warehouse?.url == "host=dw.internal dbname=warehouse user=cdc_dw")
        #expect(config.warehouse?.schema == "dw2")
        #expect(config.warehouse?.timezone == "Europe/Paris")
        #expect(config.warehouse?.mapping == "projections/surgical-robotics.toml", "relative to the file's directory (none here)")
        let located = try Config.parse(Self.full, path: "/etc/cdc/cdc.toml")
        #expect(located.warehouse?.mapping == "/etc/cdc/projections/surgical-robotics.toml")
        #expect(config.metrics?.listen == "0.0.0.0:9999")
        // The url is secret: describing the source never shows it.
        #expect(!"\(config.source)".contains(Self.secret))
        #expect(!String(reflecting: config.source).contains(Self.secret))
        #expect(!String(describing: config).contains(Self.secret))
    }

    @Test func theREADMEExampleParses() throws {
        let readme = """
            [source]
            url = "host=db.internal port=5432 dbname=surgical user=cdc"  # libpq conninfo or postgresql:// URI
            slot = "cdc"                  # logical replication slot (created by cdc init)
            publication = "cdc"           # publication (created by cdc init if missing)
            # tables = ["public.facilities", "public.surgeons"]   # optional: tables of a new publication (default: all)

            [log]
            path = "/var/lib/cdc/log"     # the LMDB event log directory

            [warehouse]                   # optional: project the log into a star schema
            url = "host=dw.internal dbname=warehouse user=cdc_dw"
            schema = "dw"                 # default dw
            timezone = "UTC"              # date/time keys and effective dates (default UTC)
            mapping = "/usr/share/cdc/projections/surgical-robotics.toml"

            [metrics]                     # optional
            listen = "127.0.0.1:9187"

            [audit]                       # optional
            actor = true                  # record who made each transaction (default false; see "Who made a change")
            """
        let config = try Config.parse(readme)
        #expect(config.source.slot == "cdc")
        #expect(config.source.tables == nil)
        #expect(config.warehouse?.schema == "dw")
        #expect(config.metrics?.listen == "127.0.0.1:9187")
        #expect(config.auditActor)
    }

    @Test func defaults() throws {
        let minimal = try Config.parse("""
            [source]
            url = "postgresql://cdc@db.internal/surgical"
            slot = "cdc"
            publication = "cdc"
            [log]
            path = "/var/lib/cdc/log"
            """)
        #expect(minimal.source.tables == nil, "no tables: the publication gets all tables")
        #expect(minimal.warehouse == nil, "[warehouse] is optional")
        #expect(minimal.metrics == nil, "no [metrics]: no HTTP endpoint")
        #expect(!minimal.auditActor, "no [audit]: no actor trigger")

        let warehouse = try Config.parse("""
            [source]
            url = "postgresql://cdc@db.internal/surgical"
            slot = "cdc"
            publication = "cdc"
            [log]
            path = "/var/lib/cdc/log"
            [warehouse]
            url = "host=dw.internal dbname=warehouse"
            mapping = "/etc/cdc/m.toml"
            """)
        #expect(warehouse.warehouse?.schema == "dw")
        #expect(warehouse.warehouse?.timezone == "UTC")
    }

    struct Broken: Sendable, CustomTestStringConvertible {
        let name: String
        let text: String
        /// What the error must name.
        let names: String
        var testDescription: String { name }
    }

    static let source = """
        [source]
        url = "host=db.internal password=\(secret)"
        slot = "cdc"
        publication = "cdc"
        """
    static let log = """
        [log]
        path = "/var/lib/cdc/log"
        """

    static func replacing(_ line: String, with replacement: String) -> String {
        let text = source + "\n" + log
        precondition(text.contains(line))
        return text.replacingOccurrences(of: line, with: replacement)
    }

    static let broken: [Broken] = [
        Broken(name: "invalid TOML", text: "[source\n" + log, names: "line"),
        Broken(name: "unterminated url string", text: replacing("url = \"host=db.internal password=\(secret)\"",
                                                                with: "url = \"host=db.internal password=\(secret)"), names: "line"),
        Broken(name: "unknown key in [source]", text: replacing("slot = \"cdc\"", with: "slot = \"cdc\"\nhots = \"db\""), names: "source.hots"),
        Broken(name: "unknown section", text: source + "\n" + log + "\n[sourc]\nurl = \"x\"", names: "sourc"),
        Broken(name: "unknown key in [log]", text: source + "\n[log]\npath = \"/l\"\npaht = \"/m\"", names: "log.paht"),
        Broken(name: "missing url", text: replacing("url = \"host=db.internal password=\(secret)\"\n", with: ""), names: "source.url"),
        Broken(name: "missing slot", text: replacing("slot = \"cdc\"\n", with: ""), names: "source.slot"),
        Broken(name: "missing publication", text: replacing("publication = \"cdc\"", with: ""), names: "source.publication"),
        Broken(name: "slot is a number", text: replacing("slot = \"cdc\"", with: "slot = 5"), names: "source.slot"),
        Broken(name: "slot is not a name", text: replacing("slot = \"cdc\"", with: "slot = \"Bad-Slot\""), names: "source.slot"),
        Broken(name: "url is a number", text: replacing("url = \"host=db.internal password=\(secret)\"", with: "url = 5"), names: "source.url"),
        Broken(name: "url is empty", text: replacing("url = \"host=db.internal password=\(secret)\"", with: "url = \"\""), names: "source.url"),
        Broken(name: "tables is a string", text: replacing("publication = \"cdc\"", with: "publication = \"cdc\"\ntables = \"public.facilities\""), names: "source.tables"),
        Broken(name: "tables holds numbers", text: replacing("publication = \"cdc\"", with: "publication = \"cdc\"\ntables = [1, 2]"), names: "source.tables"),
        Broken(name: "origins is not any or none", text: replacing("publication = \"cdc\"", with: "publication = \"cdc\"\norigins = \"local\""), names: "source.origins"),
        Broken(name: "origins is a list", text: replacing("publication = \"cdc\"", with: "publication = \"cdc\"\norigins = [\"none\"]"), names: "source.origins"),
        Broken(name: "streaming is a string", text: replacing("publication = \"cdc\"", with: "publication = \"cdc\"\nstreaming = \"on\""), names: "source.streaming"),
        Broken(name: "backfill_chunk_size is zero", text: replacing("publication = \"cdc\"", with: "publication = \"cdc\"\nbackfill_chunk_size = 0"), names: "source.backfill_chunk_size"),
        Broken(name: "missing [source]", text: log, names: "[source]"),
        Broken(name: "source is not a section", text: "source = \"x\"\n" + log, names: "source"),
        Broken(name: "missing [log]", text: source, names: "[log]"),
        Broken(name: "log path is a number", text: source + "\n[log]\npath = 3", names: "log.path"),
        Broken(name: "warehouse without url", text: source + "\n" + log + "\n[warehouse]\nschema = \"dw\"", names: "warehouse.url"),
        Broken(name: "warehouse schema is a number", text: source + "\n" + log + "\n[warehouse]\nurl = \"x\"\nschema = 5", names: "warehouse.schema"),
        Broken(name: "warehouse without mapping", text: source + "\n" + log + "\n[warehouse]\nurl = \"x\"", names: "warehouse.mapping"),
        Broken(name: "warehouse timezone unknown", text: source + "\n" + log + "\n[warehouse]\nurl = \"x\"\nmapping = \"m.toml\"\ntimezone = \"Mars/Olympus\"", names: "warehouse.timezone"),
        Broken(name: "metrics listen is not HOST:PORT", text: source + "\n" + log + "\n[metrics]\nlisten = \"nohost\"", names: "metrics.listen"),
        Broken(name: "metrics listen is a number", text: source + "\n" + log + "\n[metrics]\nlisten = 9187", names: "metrics.listen"),
        Broken(name: "audit actor is a string", text: source + "\n" + log + "\n[audit]\nactor = \"yes\"", names: "audit.actor"),
        Broken(name: "unknown key in [audit]", text: source + "\n" + log + "\n[audit]\nactors = true", names: "audit.actors"),
    ]

    @Test(arguments: broken)
    func errorsNameTheKey(_ broken: Broken) throws {
        do {
            let config = try Config.parse(broken.text, path: "/etc/cdc/test.toml")
            Issue.record("parsed: \(config.source.slot)")
        } catch let error as ConfigError {
            let message = error.description
            #expect(message.contains(broken.names), "names \(broken.names): \(message)")
            #expect(message.contains("/etc/cdc/test.toml"), "names the file: \(message)")
            #expect(!message.contains("\n"), "one line: \(message)")
            #expect(!message.contains(Self.secret), "never echoes the url: \(message)")
        }
    }
}
