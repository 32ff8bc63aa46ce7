-- Warehouse (star schema) of the surgical-robotics platform: tables.
--
-- Shapes and names follow the seed warehouse (Redshift DDL in
-- /work/shared/seeds/001_...: dim_date, dim_time, dim_facilities, dim_surgeons,
-- dim_robots, fact_procedures, fact_procedure_telemetry), translated to
-- PostgreSQL and extended for continuous, replayable SCD Type 2 projection
-- from the event log.
--
-- The schema is NOT named here: every name is unqualified. Run with the
-- target schema first on the search_path, e.g.
--
--   psql -v ON_ERROR_STOP=1 --single-transaction \
--        -c 'SET search_path TO dw' -f schemas/warehouse/001_tables.sql
--
-- The file has no transaction control (BEGIN/COMMIT), so a program may run it
-- inside its own transaction; with psql use --single-transaction. It is
-- re-runnable: IF NOT EXISTS everywhere, unknown members ON CONFLICT DO NOTHING
-- (a table that already exists is kept as it is, not altered).
--
-- Conventions
--   * Surrogate keys (facility_key, surgeon_key, robot_key, procedure_key,
--     telemetry_key) are plain integer/bigint primary keys with no identity or
--     sequence default: the projector assigns them deterministically, so a
--     replay of the same log yields the same keys.
--   * Text columns are `text` (the seed's VARCHAR(n)): the source columns are
--     unbounded text, and a bounded warehouse column could reject a valid
--     source row. On Redshift use the seed's VARCHAR lengths.
--   * Timestamps are timestamptz. created_at / updated_at / valid_from /
--     valid_to hold SOURCE COMMIT TIMES (from the log), never the time the
--     warehouse was written, so there are no now()/GETDATE() defaults.
--   * Date keys are YYYYMMDD integers, time keys HHMM00 integers (minute
--     grain), computed by the projector in the configured warehouse time zone
--     ([warehouse] timezone, default UTC).
--   * No foreign-key constraints (the seed has none; Redshift does not enforce
--     them): fact keys always resolve because of the unknown member (-1) and
--     inferred members, and constraints would only order the projector's
--     writes and complicate TRUNCATE on replay.
--
-- SCD Type 2 columns (dim_facilities, dim_surgeons, dim_robots)
--   effective_date   date of valid_from (seed column)
--   expiration_date  date of valid_to; NULL while current (seed column)
--   is_current       true for the open version (seed column); = (valid_to IS NULL)
--   valid_from       source commit time of the change that opened the version
--   valid_to         source commit time of the change that closed it; NULL while
--                    current. Half-open: a version is valid in [valid_from, valid_to).
--   change_type      'INSERT' | 'UPDATE' | 'DELETE': the source operation that
--                    opened the version (NULL for the unknown member)
--   record_hash      hash over the version's type-2 columns (change detection:
--                    a change that leaves it equal is a type-1 overwrite or no-op)
--   source_lsn       commit LSN of the change that opened the version
--   is_inferred      Kimball inferred member: the row was created because a fact
--                    referenced a business key before its dimension row arrived
--                    (descriptive NOT NULL columns hold 'Unknown' until then)
--   At most one current row per business key (unique partial index); an index
--   on (business key, valid_from) serves point-in-time lookups.
--
-- Unknown member: every SCD2 dimension has a row with surrogate key -1,
-- business key NULL (only rows with a negative key may have a NULL business
-- key), name 'Unknown', is_current true, valid_from 1900-01-01 00:00 UTC.
-- A fact whose dimension cannot be determined points at -1, so fact foreign
-- keys are never NULL.

-- ===========================================================================
-- dim_date: one row per calendar day, 2020-01-01 .. 2035-12-31 (002).
-- Redshift (seed): DISTSTYLE ALL SORTKEY (date_key)
-- ===========================================================================
CREATE TABLE IF NOT EXISTS dim_date (
    date_key        integer  NOT NULL PRIMARY KEY,   -- YYYYMMDD
    date            date     NOT NULL UNIQUE,
    year            smallint NOT NULL,
    quarter         smallint NOT NULL,
    month           smallint NOT NULL,
    month_name      text     NOT NULL,               -- 'January'
    week            smallint NOT NULL,               -- ISO 8601 week number
    day_of_month    smallint NOT NULL,
    day_of_week     smallint NOT NULL,               -- 0 = Sunday .. 6 = Saturday
    day_name        text     NOT NULL,               -- 'Monday'
    is_weekend      boolean  NOT NULL,
    is_holiday      boolean  NOT NULL DEFAULT false, -- Jan 1, Jul 4, Dec 25
    fiscal_year     smallint NOT NULL,               -- fiscal year starts Oct 1: FY2025 = 2024-10-01 .. 2025-09-30
    fiscal_quarter  smallint NOT NULL                -- Oct-Dec 1, Jan-Mar 2, Apr-Jun 3, Jul-Sep 4
);

-- ===========================================================================
-- dim_time: one row per minute of the day (002).
-- Redshift (seed): DISTSTYLE ALL SORTKEY (time_key)
-- ===========================================================================
CREATE TABLE IF NOT EXISTS dim_time (
    time_key        integer  NOT NULL PRIMARY KEY,   -- HHMM00, e.g. 143000 = 14:30
    time_value      time     NOT NULL UNIQUE,
    hour            smallint NOT NULL,               -- 0 .. 23
    minute          smallint NOT NULL,               -- 0 .. 59
    second          smallint NOT NULL,               -- always 0 (minute grain)
    hour_12         smallint NOT NULL,               -- 1 .. 12
    am_pm           text     NOT NULL,               -- 'AM' | 'PM'
    time_of_day     text     NOT NULL,               -- 'Morning' 05-12 | 'Afternoon' 12-17 | 'Evening' 17-21 | 'Night'
    business_hours  boolean  NOT NULL                -- 08:00 .. 17:59
);

-- ===========================================================================
-- dim_facilities (SCD2) <- source facilities
-- Redshift (seed): DISTSTYLE ALL SORTKEY (facility_id, effective_date)
-- ===========================================================================
CREATE TABLE IF NOT EXISTS dim_facilities (
    facility_key     integer     NOT NULL PRIMARY KEY,
    facility_id      text,                            -- business key (facilities.facility_id); NULL only for key < 0
    facility_name    text        NOT NULL,
    city             text,
    state            text,
    country          text,
    facility_type    text,
    bed_count        integer,
    effective_date   date        NOT NULL,
    expiration_date  date,
    is_current       boolean     NOT NULL DEFAULT true,
    valid_from       timestamptz NOT NULL,
    valid_to         timestamptz,
    change_type      text,
    record_hash      text,
    source_lsn       pg_lsn,
    is_inferred      boolean     NOT NULL DEFAULT false,
    CONSTRAINT dim_facilities_business_key_chk CHECK (facility_id IS NOT NULL OR facility_key < 0),
    CONSTRAINT dim_facilities_current_chk      CHECK (is_current = (valid_to IS NULL)),
    CONSTRAINT dim_facilities_expiration_chk   CHECK ((expiration_date IS NULL) = (valid_to IS NULL)),
    CONSTRAINT dim_facilities_interval_chk     CHECK (valid_to IS NULL OR valid_to >= valid_from),
    CONSTRAINT dim_facilities_change_type_chk  CHECK (change_type IN ('INSERT', 'UPDATE', 'DELETE'))
);
CREATE UNIQUE INDEX IF NOT EXISTS dim_facilities_current_uidx
    ON dim_facilities (facility_id) WHERE is_current;
CREATE INDEX IF NOT EXISTS dim_facilities_id_valid_from_idx
    ON dim_facilities (facility_id, valid_from);

-- ===========================================================================
-- dim_surgeons (SCD2) <- source surgeons
-- Redshift (seed): DISTSTYLE ALL SORTKEY (surgeon_id, effective_date)
-- ===========================================================================
CREATE TABLE IF NOT EXISTS dim_surgeons (
    surgeon_key          integer     NOT NULL PRIMARY KEY,
    surgeon_id           text,                        -- business key (surgeons.surgeon_id); NULL only for key < 0
    surgeon_name         text        NOT NULL,
    specialization       text,
    years_experience     integer,                     -- a type-1 attribute in the workload's model (overwritten in place)
    certification_level  text,
    effective_date       date        NOT NULL,
    expiration_date      date,
    is_current           boolean     NOT NULL DEFAULT true,
    valid_from           timestamptz NOT NULL,
    valid_to             timestamptz,
    change_type          text,
    record_hash          text,
    source_lsn           pg_lsn,
    is_inferred          boolean     NOT NULL DEFAULT false,
    CONSTRAINT dim_surgeons_business_key_chk CHECK (surgeon_id IS NOT NULL OR surgeon_key < 0),
    CONSTRAINT dim_surgeons_current_chk      CHECK (is_current = (valid_to IS NULL)),
    CONSTRAINT dim_surgeons_expiration_chk   CHECK ((expiration_date IS NULL) = (valid_to IS NULL)),
    CONSTRAINT dim_surgeons_interval_chk     CHECK (valid_to IS NULL OR valid_to >= valid_from),
    CONSTRAINT dim_surgeons_change_type_chk  CHECK (change_type IN ('INSERT', 'UPDATE', 'DELETE'))
);
CREATE UNIQUE INDEX IF NOT EXISTS dim_surgeons_current_uidx
    ON dim_surgeons (surgeon_id) WHERE is_current;
CREATE INDEX IF NOT EXISTS dim_surgeons_id_valid_from_idx
    ON dim_surgeons (surgeon_id, valid_from);

-- ===========================================================================
-- dim_robots (SCD2) <- source surgical_robots
-- facility_key: the dim_facilities version that was current for the robot's
-- facility_id when this robot version opened (-1 when facility_id is NULL).
-- A robot moving to another facility opens a new robot version; a facility
-- changing does not re-version its robots (the views resolve the facility's
-- latest attributes through its business key).
-- Redshift (seed): DISTSTYLE KEY DISTKEY (robot_key) SORTKEY (robot_id, effective_date)
--   (the seed's DDL distributes dim_robots by key, although its architecture
--   text says "dimensions: DISTSTYLE ALL"; DISTSTYLE ALL suits its size better)
-- ===========================================================================
CREATE TABLE IF NOT EXISTS dim_robots (
    robot_key               integer       NOT NULL PRIMARY KEY,
    robot_id                text,                     -- business key (surgical_robots.robot_id); NULL only for key < 0
    robot_serial_number     text          NOT NULL,
    robot_model             text          NOT NULL,
    manufacturer            text,
    facility_key            integer       NOT NULL DEFAULT -1,  -- -> dim_facilities.facility_key (a version)
    install_date            date,
    software_version        text,
    hardware_revision       text,
    status                  text,
    last_maintenance_date   date,
    total_procedures_count  integer       DEFAULT 0,
    total_operating_hours   numeric(10,2) DEFAULT 0,
    effective_date          date          NOT NULL,
    expiration_date         date,
    is_current              boolean       NOT NULL DEFAULT true,
    valid_from              timestamptz   NOT NULL,
    valid_to                timestamptz,
    change_type             text,
    record_hash             text,
    source_lsn              pg_lsn,
    is_inferred             boolean       NOT NULL DEFAULT false,
    CONSTRAINT dim_robots_business_key_chk CHECK (robot_id IS NOT NULL OR robot_key < 0),
    CONSTRAINT dim_robots_current_chk      CHECK (is_current = (valid_to IS NULL)),
    CONSTRAINT dim_robots_expiration_chk   CHECK ((expiration_date IS NULL) = (valid_to IS NULL)),
    CONSTRAINT dim_robots_interval_chk     CHECK (valid_to IS NULL OR valid_to >= valid_from),
    CONSTRAINT dim_robots_change_type_chk  CHECK (change_type IN ('INSERT', 'UPDATE', 'DELETE'))
);
CREATE UNIQUE INDEX IF NOT EXISTS dim_robots_current_uidx
    ON dim_robots (robot_id) WHERE is_current;
CREATE INDEX IF NOT EXISTS dim_robots_id_valid_from_idx
    ON dim_robots (robot_id, valid_from);
CREATE INDEX IF NOT EXISTS dim_robots_facility_key_idx
    ON dim_robots (facility_key);

-- ===========================================================================
-- fact_procedures: one row per surgical_procedures row (business key
-- procedure_id), with the outcome columns from procedure_outcomes filled in
-- when the outcome arrives (accumulating snapshot; NULL until then).
--   robot_key / surgeon_key / facility_key: the dimension versions current
--     for the procedure's robot_id / surgeon_id / facility_id (the facility
--     where it was performed) when the projector wrote the row; -1 = unknown.
--   start_date_key / start_time_key: from start_time; end_*: from end_time.
--   created_at: commit time of the source INSERT; updated_at: commit time of
--     the latest source change to the procedure or its outcome (NULL if none).
--   source_lsn: commit LSN of the latest source change applied to the row.
-- Redshift (seed): DISTSTYLE KEY DISTKEY (robot_key) SORTKEY (start_date_key, robot_key)
-- ===========================================================================
CREATE TABLE IF NOT EXISTS fact_procedures (
    procedure_key               bigint       NOT NULL PRIMARY KEY,
    procedure_id                text         NOT NULL,   -- business key (surgical_procedures.procedure_id)
    robot_key                   integer      NOT NULL DEFAULT -1,
    surgeon_key                 integer      NOT NULL DEFAULT -1,
    facility_key                integer      NOT NULL DEFAULT -1,
    start_date_key              integer      NOT NULL,   -- YYYYMMDD
    start_time_key              integer      NOT NULL,   -- HHMM00
    end_date_key                integer,
    end_time_key                integer,
    procedure_type              text         NOT NULL,
    procedure_category          text         NOT NULL,
    patient_id                  text,
    patient_age                 smallint,
    patient_gender              text,
    duration_minutes            integer,
    complexity_score            numeric(3,1),
    success_status              text,                    -- procedure_outcomes
    blood_loss_ml               integer,                 -- procedure_outcomes
    complication_level          text,                    -- procedure_outcomes
    hospital_stay_days          integer,                 -- procedure_outcomes
    patient_satisfaction_score  numeric(3,1),            -- procedure_outcomes
    readmission_30day           boolean,                 -- procedure_outcomes
    status                      text         NOT NULL,   -- 'scheduled' | 'in_progress' | 'completed' | 'cancelled'
    source_lsn                  pg_lsn       NOT NULL,
    created_at                  timestamptz  NOT NULL,
    updated_at                  timestamptz,
    CONSTRAINT fact_procedures_procedure_id_key UNIQUE (procedure_id)
);
CREATE INDEX IF NOT EXISTS fact_procedures_start_date_key_idx ON fact_procedures (start_date_key, robot_key);
CREATE INDEX IF NOT EXISTS fact_procedures_robot_key_idx      ON fact_procedures (robot_key);
CREATE INDEX IF NOT EXISTS fact_procedures_surgeon_key_idx    ON fact_procedures (surgeon_key);
CREATE INDEX IF NOT EXISTS fact_procedures_facility_key_idx   ON fact_procedures (facility_key);

-- ===========================================================================
-- fact_procedure_telemetry: one row per procedure_telemetry row (business key
-- telemetry_id).
--   procedure_key: fact_procedures.procedure_key of procedure_id.
--   timestamp_key: dim_time key (HHMM00) of sample_timestamp, as in the seed ETL.
--   created_at / updated_at / source_lsn: as for fact_procedures.
-- Redshift (seed): DISTSTYLE KEY DISTKEY (procedure_key) SORTKEY (procedure_key, sample_timestamp)
-- ===========================================================================
CREATE TABLE IF NOT EXISTS fact_procedure_telemetry (
    telemetry_key       bigint        NOT NULL PRIMARY KEY,
    telemetry_id        bigint        NOT NULL,   -- business key (procedure_telemetry.telemetry_id)
    procedure_key       bigint        NOT NULL,
    procedure_id        text          NOT NULL,
    timestamp_key       integer       NOT NULL,   -- HHMM00 (dim_time)
    sample_timestamp    timestamptz   NOT NULL,
    arm_position_x      numeric(10,4),
    arm_position_y      numeric(10,4),
    arm_position_z      numeric(10,4),
    arm_rotation_x      numeric(10,4),
    arm_rotation_y      numeric(10,4),
    arm_rotation_z      numeric(10,4),
    force_feedback      numeric(10,4),
    tool_type           text,
    tool_active         boolean,
    camera_zoom         numeric(5,2),
    lighting_level      integer,
    system_temperature  numeric(5,2),
    motor_current       numeric(8,4),
    network_latency_ms  integer,
    video_fps           integer,
    source_lsn          pg_lsn        NOT NULL,
    created_at          timestamptz   NOT NULL,
    updated_at          timestamptz,
    CONSTRAINT fact_procedure_telemetry_telemetry_id_key UNIQUE (telemetry_id)
);
CREATE INDEX IF NOT EXISTS fact_procedure_telemetry_procedure_idx
    ON fact_procedure_telemetry (procedure_key, sample_timestamp);
CREATE INDEX IF NOT EXISTS fact_procedure_telemetry_procedure_id_idx
    ON fact_procedure_telemetry (procedure_id);

-- ===========================================================================
-- Unknown members (surrogate key -1).
-- ===========================================================================
INSERT INTO dim_facilities (facility_key, facility_id, facility_name, city, state, country,
                            facility_type, bed_count, effective_date, expiration_date, is_current,
                            valid_from, valid_to, change_type, record_hash, source_lsn, is_inferred)
VALUES (-1, NULL, 'Unknown', NULL, NULL, NULL,
        NULL, NULL, DATE '1900-01-01', NULL, true,
        TIMESTAMPTZ '1900-01-01 00:00:00+00', NULL, NULL, NULL, NULL, false)
ON CONFLICT (facility_key) DO NOTHING;

INSERT INTO dim_surgeons (surgeon_key, surgeon_id, surgeon_name, specialization, years_experience,
                          certification_level, effective_date, expiration_date, is_current,
                          valid_from, valid_to, change_type, record_hash, source_lsn, is_inferred)
VALUES (-1, NULL, 'Unknown', NULL, NULL,
        NULL, DATE '1900-01-01', NULL, true,
        TIMESTAMPTZ '1900-01-01 00:00:00+00', NULL, NULL, NULL, NULL, false)
ON CONFLICT (surgeon_key) DO NOTHING;

INSERT INTO dim_robots (robot_key, robot_id, robot_serial_number, robot_model, manufacturer,
                        facility_key, install_date, software_version, hardware_revision, status,
                        last_maintenance_date, total_procedures_count, total_operating_hours,
                        effective_date, expiration_date, is_current,
                        valid_from, valid_to, change_type, record_hash, source_lsn, is_inferred)
VALUES (-1, NULL, 'Unknown', 'Unknown', NULL,
        -1, NULL, NULL, NULL, NULL,
        NULL, NULL, NULL,
        DATE '1900-01-01', NULL, true,
        TIMESTAMPTZ '1900-01-01 00:00:00+00', NULL, NULL, NULL, NULL, false)
ON CONFLICT (robot_key) DO NOTHING;
