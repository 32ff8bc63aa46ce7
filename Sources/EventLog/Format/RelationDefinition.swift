/// One version of a published table's definition, as pgoutput's Relation message describes it.
///
/// Every row record refers to the sequence number of the relation record that describes it, so the
/// log alone says what each value means, across ADD COLUMN, DROP COLUMN and type changes.
public struct RelationDefinition: Equatable, Sendable {
    /// One column.
    public struct Column: Equatable, Sendable {
        /// The column's name.
        public var name: String
        /// The type's OID in the source database.
        public var typeOID: UInt32
        /// The type modifier (`atttypmod`), -1 when none.
        public var typeModifier: Int32
        /// True when the column is part of the replica identity (the key sent with updates and deletes).
        public var isKey: Bool
        /// The type's name (`int4`, `numeric`, `public.mood`), for readers without the source catalog.
        public var typeName: String

        public init(name: String, typeOID: UInt32, typeModifier: Int32, isKey: Bool, typeName: String) {
            self.name = name
            self.typeOID = typeOID
            self.typeModifier = typeModifier
            self.isKey = isKey
            self.typeName = typeName
        }
    }

    /// The table's OID in the source database.
    public var oid: UInt32
    /// The schema (namespace) name.
    public var namespace: String
    /// The table name.
    public var name: String
    /// The replica identity setting: `d` default, `n` nothing, `f` full, `i` index.
    public var replicaIdentity: UInt8
    /// The published columns, in order.
    public var columns: [Column]

    public init(oid: UInt32, namespace: String, name: String, replicaIdentity: UInt8, columns: [Column]) {
        self.oid = oid
        self.namespace = namespace
        self.name = name
        self.replicaIdentity = replicaIdentity
        self.columns = columns
    }

    /// Positions of the replica-identity key columns, in column order.
    public var keyColumnIndices: [Int] { columns.indices.filter { columns[$0].isKey } }

    /// `schema.table`, as exports print it.
    public var qualifiedName: String { namespace + "." + name }
}
