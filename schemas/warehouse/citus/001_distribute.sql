-- Warehouse (star schema) of the surgical-robotics platform on Citus (distributed PostgreSQL): runs
-- after ../001_tables.sql (the tables, as on PostgreSQL) and before ../002_dim_date_time.sql, and lays
-- the tables out over the cluster (schemas/projections/surgical-robotics-citus.toml):
--
--   * dim_date, dim_time and the SCD2 dimensions become REFERENCE tables: one copy on every node, so
--     a join of a fact with any dimension runs on the fact's shards without moving rows (Redshift's
--     DISTSTYLE ALL in the seed). Their keys stay those of 001, partial unique index included.
--   * fact_procedures and fact_procedure_telemetry are DISTRIBUTED by procedure_key and COLOCATED: a
--     procedure's row and its telemetry rows live in one shard, so the views' join of the two runs
--     shard by shard. The shard count is the cluster's citus.shard_count when this file first runs
--     (README.md, "On Citus").
--   * Citus accepts a unique constraint on a distributed table only when it includes the
--     distribution column. So before the facts are distributed, their business-key constraints
--     (procedure_id, telemetry_id) become plain indexes and fact_procedure_telemetry's primary key
--     becomes (procedure_key, telemetry_key), with a plain index on telemetry_key. Business-key
--     uniqueness of the facts is then kept by cdc alone (one row per grain: the projector finds a
--     grain's row before it writes it).
--
-- Re-runnable like the other files (cdc runs them again at the end of a replay to build the deferred
-- indexes): a table is changed and distributed only while it is not distributed yet (pg_dist_partition),
-- in one DO block, so each statement cdc sends is a single command; the indexes are plain top-level
-- CREATE INDEX IF NOT EXISTS. 001's unknown members, inserted before the tables were distributed, are
-- copied into the shards, and the copies left in the coordinator's local tables removed
-- (truncate_local_data_after_distributing_table).

DO $$
DECLARE
    dimension text;
BEGIN
    FOREACH dimension IN ARRAY ARRAY['dim_date', 'dim_time', 'dim_facilities', 'dim_surgeons', 'dim_robots'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = dimension::regclass) THEN
            PERFORM create_reference_table(dimension);
            PERFORM truncate_local_data_after_distributing_table(dimension);
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'fact_procedures'::regclass) THEN
        ALTER TABLE fact_procedures DROP CONSTRAINT fact_procedures_procedure_id_key;
        PERFORM create_distributed_table('fact_procedures', 'procedure_key', colocate_with => 'none');
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'fact_procedure_telemetry'::regclass) THEN
        ALTER TABLE fact_procedure_telemetry DROP CONSTRAINT fact_procedure_telemetry_telemetry_id_key;
        ALTER TABLE fact_procedure_telemetry DROP CONSTRAINT fact_procedure_telemetry_pkey;
        ALTER TABLE fact_procedure_telemetry ADD CONSTRAINT fact_procedure_telemetry_pkey PRIMARY KEY (procedure_key, telemetry_key);
        PERFORM create_distributed_table('fact_procedure_telemetry', 'procedure_key', colocate_with => 'fact_procedures');
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS fact_procedures_procedure_id_idx
    ON fact_procedures (procedure_id);
CREATE INDEX IF NOT EXISTS fact_procedure_telemetry_key_idx
    ON fact_procedure_telemetry (telemetry_key);
CREATE INDEX IF NOT EXISTS fact_procedure_telemetry_telemetry_id_idx
    ON fact_procedure_telemetry (telemetry_id);
