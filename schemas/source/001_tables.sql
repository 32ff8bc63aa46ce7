-- Source (operational) schema of the surgical-robotics platform.
--
-- This is the contract `cdc` captures from: table names, column names and
-- key types are exact and must not drift. The warehouse dimensions/facts in
-- the seed documents (dim_facilities, dim_surgeons, dim_robots,
-- fact_procedures, fact_procedure_telemetry) are derived from these tables.
--
-- Apply with:  psql -v ON_ERROR_STOP=1 -f schemas/source/001_tables.sql
--
-- NOT NULL is used only where the warehouse requires a value
-- (names, model/serial, procedure type/category, the keys a fact row needs).

BEGIN;

SET LOCAL search_path = public;

-- ---------------------------------------------------------------------------
-- Dimensions
-- ---------------------------------------------------------------------------

CREATE TABLE facilities (
    facility_id     text PRIMARY KEY,              -- 'FAC-001'
    facility_name   text NOT NULL,
    city            text,
    state           text,                          -- two-letter US state code
    country         text,
    facility_type   text,                          -- 'Academic Medical Center', 'Teaching Hospital', ...
    bed_count       int
);

CREATE TABLE surgeons (
    surgeon_id           text PRIMARY KEY,         -- 'SRG-0001'
    surgeon_name         text NOT NULL,
    specialization       text,                     -- 'General Surgery', 'Urology', ...
    years_experience     int,
    certification_level  text                      -- 'Basic' | 'Advanced' | 'Expert' | 'Master'
);

CREATE TABLE surgical_robots (
    robot_id                text PRIMARY KEY,      -- 'ROB-001'
    robot_serial_number     text NOT NULL,
    robot_model             text NOT NULL,         -- 'da Vinci Xi', 'da Vinci SP', 'Hugo RAS', 'Versius', ...
    manufacturer            text,
    facility_id             text REFERENCES facilities (facility_id),
    install_date            date,
    software_version        text,                  -- '4.2.1'
    hardware_revision       text,
    status                  text,                  -- 'active' | 'maintenance'
    last_maintenance_date   date,
    total_procedures_count  int DEFAULT 0,
    total_operating_hours   numeric(10,2) DEFAULT 0
);

CREATE INDEX surgical_robots_facility_id_idx ON surgical_robots (facility_id);

-- ---------------------------------------------------------------------------
-- Procedures and their outcome (1:0..1)
-- ---------------------------------------------------------------------------

CREATE TABLE surgical_procedures (
    procedure_id        text PRIMARY KEY,          -- 'PROC-000001' (workload: 'PROC-W00000001')
    robot_id            text NOT NULL REFERENCES surgical_robots (robot_id),
    surgeon_id          text NOT NULL REFERENCES surgeons (surgeon_id),
    facility_id         text NOT NULL REFERENCES facilities (facility_id),
    procedure_type      text NOT NULL,             -- 'Radical Prostatectomy', 'Cholecystectomy', ...
    procedure_category  text NOT NULL,             -- 'Urologic', 'General', ...
    patient_id          text,
    patient_age         smallint,
    patient_gender      text,                      -- 'M' | 'F'
    start_time          timestamptz NOT NULL,
    end_time            timestamptz,
    duration_minutes    int,
    complexity_score    numeric(3,1),              -- 1.0 .. 10.0
    status              text NOT NULL DEFAULT 'scheduled'  -- 'scheduled' | 'in_progress' | 'completed' | 'cancelled'
);

CREATE INDEX surgical_procedures_robot_id_idx    ON surgical_procedures (robot_id);
CREATE INDEX surgical_procedures_surgeon_id_idx  ON surgical_procedures (surgeon_id);
CREATE INDEX surgical_procedures_facility_id_idx ON surgical_procedures (facility_id);
-- Finding the procedures still running (workload "complete procedure").
CREATE INDEX surgical_procedures_in_progress_idx ON surgical_procedures (start_time)
    WHERE status = 'in_progress';

CREATE TABLE procedure_outcomes (
    procedure_id                text PRIMARY KEY
                                REFERENCES surgical_procedures (procedure_id) ON DELETE CASCADE,
    success_status              text,              -- 'Successful' | 'Partially Successful' | 'Converted to Open' | 'Unsuccessful'
    blood_loss_ml               int,
    complication_level          text,              -- 'None' | 'Minor' | 'Moderate' | 'Severe'
    hospital_stay_days          int,
    patient_satisfaction_score  numeric(3,1),      -- 1.0 .. 10.0
    readmission_30day           boolean
);
-- (procedure_id is the primary key, so the FK column is already indexed.)

-- ---------------------------------------------------------------------------
-- Robot maintenance log
-- ---------------------------------------------------------------------------

CREATE TABLE robot_maintenance (
    maintenance_id    text PRIMARY KEY,            -- 'MNT-00001'
    robot_id          text NOT NULL REFERENCES surgical_robots (robot_id),
    maintenance_date  date,
    maintenance_type  text,                        -- 'Preventive', 'Corrective', 'Software Update', ...
    technician        text,
    notes             text
);

CREATE INDEX robot_maintenance_robot_id_idx ON robot_maintenance (robot_id);

-- ---------------------------------------------------------------------------
-- Telemetry samples recorded by the robot during a procedure
-- ---------------------------------------------------------------------------

CREATE TABLE procedure_telemetry (
    telemetry_id        bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    procedure_id        text NOT NULL
                        REFERENCES surgical_procedures (procedure_id) ON DELETE CASCADE,
    sample_timestamp    timestamptz NOT NULL,
    arm_position_x      numeric(10,4),             -- mm
    arm_position_y      numeric(10,4),
    arm_position_z      numeric(10,4),
    arm_rotation_x      numeric(10,4),             -- degrees
    arm_rotation_y      numeric(10,4),
    arm_rotation_z      numeric(10,4),
    force_feedback      numeric(10,4),             -- newtons
    tool_type           text,
    tool_active         boolean,
    camera_zoom         numeric(5,2),
    lighting_level      int,                       -- percent
    system_temperature  numeric(5,2),              -- degrees Celsius
    motor_current       numeric(8,4),              -- amperes
    network_latency_ms  int,
    video_fps           int
);

CREATE INDEX procedure_telemetry_procedure_id_idx ON procedure_telemetry (procedure_id);

COMMIT;
