-- Warehouse: analytical views (tables from 001_tables.sql, dim_date/dim_time
-- populated by 002_dim_date_time.sql).
--
-- Unqualified names; run with the warehouse schema on the search_path:
--
--   psql -v ON_ERROR_STOP=1 -c 'SET search_path TO dw' -f schemas/warehouse/003_views.sql
--
-- The eleven views of the seed (queries/01-create-views.sql) keep their names
-- and output columns (names, order, and the seed's aggregates), but are
-- correct when the dimensions carry history (SCD Type 2).
--
-- Why the seed's views are wrong under history: they join
-- `fact.robot_key = dim_robots.robot_key AND dim_robots.is_current`. A fact
-- points at the dimension VERSION that was current when it was recorded, so
-- once a robot gets a new version (software upgrade, move, ...) all its
-- earlier procedures silently drop out of every robot view; the same happens
-- for surgeons, and vw_facility_performance attributed procedures to the
-- facility a robot is at NOW rather than where the surgery took place.
--
-- History rules used here
--   R1 (all versions count): a fact is joined to the version it references,
--      that version's business key (robot_id / surgeon_id / facility_id) is
--      followed to the business key's LATEST version, and the fact is grouped
--      by that. A robot's or surgeon's figures therefore cover its procedures
--      across ALL its versions.
--   R2 (current attributes): descriptive columns (robot_model, surgeon_name,
--      specialization, facility_name, ...) come from the latest version.
--      "Latest" = the current version (is_current); for a business key
--      deleted at the source without a current row left, its last version
--      (greatest valid_from, then greatest surrogate key).
--   R3 (where performed): a procedure counts for the facility where it was
--      performed, i.e. the facility_key stored on the fact (resolved to the
--      facility's latest attributes by R1/R2), never the facility the robot is
--      at now. Exception, by design of the seed view: the robot-utilisation
--      views describe a ROBOT, so their facility columns are the robot's
--      current facility (the facility_key of the robot's latest version);
--      a robot that moved keeps ONE row with all its procedures.
--   R4 (unknown member): facts pointing at a -1 unknown member are kept and
--      reported under that member ('Unknown'); it is its own latest version.
--
-- Per view
--   vw_robot_utilization            R1+R2 by robot_id; facility = robot's current facility (R3 exception).
--                                   As in the seed: all procedure statuses.
--   vw_robot_utilization_monthly    same, per dim_date year/month of start_date_key.
--   vw_procedure_outcomes           facts only (no SCD dimension): unchanged from the seed.
--   vw_outcomes_by_robot_model      R1+R2: a procedure counts under its robot's current model.
--   vw_surgeon_performance          R1+R2 by surgeon_id; years_experience etc. from the latest version.
--   vw_surgeon_procedure_categories R1+R2 per surgeon (grouped by surgeon_id, not by name as the seed
--                                   did, so two surgeons with the same name are not merged) and category.
--   vw_facility_performance         R3: procedures by the facility where performed; robot_count and
--                                   surgeon_count = distinct robots/surgeons (business keys, not versions)
--                                   that performed completed procedures there.
--   vw_daily_procedure_volume       facts + dim_date only: unchanged from the seed.
--   vw_procedures_by_time_of_day    facts + dim_time only: unchanged from the seed.
--   vw_outcomes_by_demographics     facts only: unchanged from the seed.
--   vw_telemetry_system_health      per procedure: robot_model by R1+R2, facility_name by R3
--                                   (the procedure's own facility, as in the seed).
--
-- Helper views (not in the seed), one per SCD2 dimension, implementing R1/R2:
--   vw_facility_latest, vw_surgeon_latest, vw_robot_latest
--   One row per dimension row (version); <dim>_key is that version's key, every
--   other column describes the business key's LATEST version:
--   latest_<dim>_key, the business key, the descriptive columns, is_deleted
--   (the business key no longer exists at the source), is_inferred.
--   Join a fact with `JOIN vw_robot_latest r ON r.robot_key = p.robot_key`.
--
-- Dialect notes: PostgreSQL. The seed's DATEDIFF(day, a, b) is `b - a` on
-- dates, ::FLOAT is ::double precision.

-- ===========================================================================
-- HELPER VIEWS: version key -> latest version of the same business key
-- ===========================================================================

CREATE OR REPLACE VIEW vw_facility_latest AS
WITH ranked AS (
    SELECT d.*,
           row_number() OVER (PARTITION BY d.facility_id
                              ORDER BY d.is_current DESC, d.valid_from DESC, d.facility_key DESC) AS rn
    FROM dim_facilities d
    WHERE d.facility_id IS NOT NULL
),
latest AS (
    SELECT * FROM ranked WHERE rn = 1
)
SELECT
    v.facility_key,
    l.facility_key                                          AS latest_facility_key,
    l.facility_id,
    l.facility_name,
    l.city,
    l.state,
    l.country,
    l.facility_type,
    l.bed_count,
    (NOT l.is_current OR l.change_type = 'DELETE')          AS is_deleted,
    l.is_inferred
FROM dim_facilities v
INNER JOIN latest l ON l.facility_id = v.facility_id
UNION ALL
-- unknown member(s): no business key, each is its own latest version
SELECT
    v.facility_key, v.facility_key, v.facility_id, v.facility_name, v.city, v.state, v.country,
    v.facility_type, v.bed_count, false, v.is_inferred
FROM dim_facilities v
WHERE v.facility_id IS NULL;

CREATE OR REPLACE VIEW vw_surgeon_latest AS
WITH ranked AS (
    SELECT d.*,
           row_number() OVER (PARTITION BY d.surgeon_id
                              ORDER BY d.is_current DESC, d.valid_from DESC, d.surgeon_key DESC) AS rn
    FROM dim_surgeons d
    WHERE d.surgeon_id IS NOT NULL
),
latest AS (
    SELECT * FROM ranked WHERE rn = 1
)
SELECT
    v.surgeon_key,
    l.surgeon_key                                           AS latest_surgeon_key,
    l.surgeon_id,
    l.surgeon_name,
    l.specialization,
    l.years_experience,
    l.certification_level,
    (NOT l.is_current OR l.change_type = 'DELETE')          AS is_deleted,
    l.is_inferred
FROM dim_surgeons v
INNER JOIN latest l ON l.surgeon_id = v.surgeon_id
UNION ALL
SELECT
    v.surgeon_key, v.surgeon_key, v.surgeon_id, v.surgeon_name, v.specialization,
    v.years_experience, v.certification_level, false, v.is_inferred
FROM dim_surgeons v
WHERE v.surgeon_id IS NULL;

CREATE OR REPLACE VIEW vw_robot_latest AS
WITH ranked AS (
    SELECT d.*,
           row_number() OVER (PARTITION BY d.robot_id
                              ORDER BY d.is_current DESC, d.valid_from DESC, d.robot_key DESC) AS rn
    FROM dim_robots d
    WHERE d.robot_id IS NOT NULL
),
latest AS (
    SELECT * FROM ranked WHERE rn = 1
)
SELECT
    v.robot_key,
    l.robot_key                                             AS latest_robot_key,
    l.robot_id,
    l.robot_serial_number,
    l.robot_model,
    l.manufacturer,
    l.facility_key,                                         -- a dim_facilities version: resolve with vw_facility_latest
    l.install_date,
    l.software_version,
    l.hardware_revision,
    l.status,
    l.last_maintenance_date,
    l.total_procedures_count,
    l.total_operating_hours,
    (NOT l.is_current OR l.change_type = 'DELETE')          AS is_deleted,
    l.is_inferred
FROM dim_robots v
INNER JOIN latest l ON l.robot_id = v.robot_id
UNION ALL
SELECT
    v.robot_key, v.robot_key, v.robot_id, v.robot_serial_number, v.robot_model, v.manufacturer,
    v.facility_key, v.install_date, v.software_version, v.hardware_revision, v.status,
    v.last_maintenance_date, v.total_procedures_count, v.total_operating_hours, false, v.is_inferred
FROM dim_robots v
WHERE v.robot_id IS NULL;

-- ===========================================================================
-- ROBOT UTILIZATION VIEWS
-- ===========================================================================

-- View: Robot Utilization Summary
-- All procedures (any status, as in the seed) of the robot across all its
-- versions; robot and facility attributes from the latest versions; the
-- facility is the robot's current one.
CREATE OR REPLACE VIEW vw_robot_utilization AS
SELECT
    r.robot_id,
    r.robot_serial_number,
    r.robot_model,
    f.facility_name,
    f.city,
    f.state,
    COUNT(DISTINCT p.procedure_key) AS total_procedures,
    SUM(p.duration_minutes) / 60.0 AS total_operating_hours,
    AVG(p.duration_minutes) AS avg_procedure_duration_minutes,
    AVG(p.complexity_score) AS avg_complexity,
    MIN(d.date) AS first_procedure_date,
    MAX(d.date) AS last_procedure_date,
    (MAX(d.date) - MIN(d.date)) + 1 AS days_in_operation,
    COUNT(DISTINCT p.procedure_key)::double precision /
        NULLIF((MAX(d.date) - MIN(d.date)) + 1, 0) AS procedures_per_day
FROM fact_procedures p
INNER JOIN vw_robot_latest r ON r.robot_key = p.robot_key
INNER JOIN vw_facility_latest f ON f.facility_key = r.facility_key
INNER JOIN dim_date d ON d.date_key = p.start_date_key
GROUP BY r.latest_robot_key, r.robot_id, r.robot_serial_number, r.robot_model,
         f.facility_name, f.city, f.state;

-- View: Monthly Robot Utilization Trend
-- Same attribution as vw_robot_utilization, per calendar month of the start date.
CREATE OR REPLACE VIEW vw_robot_utilization_monthly AS
SELECT
    r.robot_id,
    r.robot_model,
    f.facility_name,
    d.year,
    d.month,
    d.month_name,
    COUNT(DISTINCT p.procedure_key) AS procedure_count,
    SUM(p.duration_minutes) / 60.0 AS operating_hours,
    AVG(p.duration_minutes) AS avg_duration,
    AVG(p.complexity_score) AS avg_complexity
FROM fact_procedures p
INNER JOIN vw_robot_latest r ON r.robot_key = p.robot_key
INNER JOIN vw_facility_latest f ON f.facility_key = r.facility_key
INNER JOIN dim_date d ON d.date_key = p.start_date_key
GROUP BY r.latest_robot_key, r.robot_id, r.robot_model, f.facility_name,
         d.year, d.month, d.month_name;

-- ===========================================================================
-- PROCEDURE OUTCOME VIEWS
-- ===========================================================================

-- View: Procedure Outcomes Summary (facts only; unchanged from the seed)
CREATE OR REPLACE VIEW vw_procedure_outcomes AS
SELECT
    p.procedure_type,
    p.procedure_category,
    COUNT(*) AS total_procedures,
    SUM(CASE WHEN p.success_status = 'Successful' THEN 1 ELSE 0 END) AS successful_count,
    SUM(CASE WHEN p.success_status = 'Successful' THEN 1 ELSE 0 END)::double precision /
        NULLIF(COUNT(*), 0) * 100 AS success_rate,
    AVG(p.duration_minutes) AS avg_duration_minutes,
    AVG(p.blood_loss_ml) AS avg_blood_loss_ml,
    AVG(p.hospital_stay_days) AS avg_hospital_stay_days,
    AVG(p.patient_satisfaction_score) AS avg_satisfaction_score,
    SUM(CASE WHEN p.complication_level IN ('Moderate', 'Severe') THEN 1 ELSE 0 END) AS complication_count,
    SUM(CASE WHEN p.readmission_30day = TRUE THEN 1 ELSE 0 END) AS readmission_count,
    SUM(CASE WHEN p.readmission_30day = TRUE THEN 1 ELSE 0 END)::double precision /
        NULLIF(COUNT(*), 0) * 100 AS readmission_rate
FROM fact_procedures p
WHERE p.status = 'completed'
GROUP BY p.procedure_type, p.procedure_category;

-- View: Outcomes by Robot Model
-- Completed procedures of every robot version, under the robot's current model.
CREATE OR REPLACE VIEW vw_outcomes_by_robot_model AS
SELECT
    r.robot_model,
    r.manufacturer,
    COUNT(DISTINCT p.procedure_key) AS total_procedures,
    AVG(p.complexity_score) AS avg_complexity,
    SUM(CASE WHEN p.success_status = 'Successful' THEN 1 ELSE 0 END)::double precision /
        NULLIF(COUNT(*), 0) * 100 AS success_rate,
    AVG(p.duration_minutes) AS avg_duration,
    AVG(p.blood_loss_ml) AS avg_blood_loss,
    AVG(p.patient_satisfaction_score) AS avg_satisfaction,
    SUM(CASE WHEN p.complication_level = 'None' THEN 1 ELSE 0 END)::double precision /
        NULLIF(COUNT(*), 0) * 100 AS no_complication_rate
FROM fact_procedures p
INNER JOIN vw_robot_latest r ON r.robot_key = p.robot_key
WHERE p.status = 'completed'
GROUP BY r.robot_model, r.manufacturer
ORDER BY total_procedures DESC;

-- ===========================================================================
-- SURGEON PERFORMANCE VIEWS
-- ===========================================================================

-- View: Surgeon Performance Summary
-- Completed procedures of the surgeon across all versions; attributes
-- (name, specialization, years_experience) from the latest version.
CREATE OR REPLACE VIEW vw_surgeon_performance AS
SELECT
    s.surgeon_id,
    s.surgeon_name,
    s.specialization,
    s.years_experience,
    COUNT(DISTINCT p.procedure_key) AS total_procedures,
    AVG(p.complexity_score) AS avg_complexity_score,
    SUM(CASE WHEN p.success_status = 'Successful' THEN 1 ELSE 0 END)::double precision /
        NULLIF(COUNT(*), 0) * 100 AS success_rate,
    AVG(p.duration_minutes) AS avg_procedure_duration,
    AVG(p.blood_loss_ml) AS avg_blood_loss,
    AVG(p.patient_satisfaction_score) AS avg_patient_satisfaction,
    SUM(CASE WHEN p.complication_level = 'None' THEN 1 ELSE 0 END)::double precision /
        NULLIF(COUNT(*), 0) * 100 AS no_complication_rate,
    SUM(CASE WHEN p.readmission_30day = FALSE OR p.readmission_30day IS NULL THEN 1 ELSE 0 END)::double precision /
        NULLIF(COUNT(*), 0) * 100 AS no_readmission_rate
FROM fact_procedures p
INNER JOIN vw_surgeon_latest s ON s.surgeon_key = p.surgeon_key
WHERE p.status = 'completed'
GROUP BY s.latest_surgeon_key, s.surgeon_id, s.surgeon_name, s.specialization, s.years_experience;

-- View: Surgeon Procedure Volume by Category
-- Per surgeon (business key) and procedure category; the surgeon's latest name.
CREATE OR REPLACE VIEW vw_surgeon_procedure_categories AS
SELECT
    s.surgeon_name,
    p.procedure_category,
    COUNT(*) AS procedure_count,
    AVG(p.complexity_score) AS avg_complexity,
    AVG(p.duration_minutes) AS avg_duration,
    SUM(CASE WHEN p.success_status = 'Successful' THEN 1 ELSE 0 END)::double precision /
        NULLIF(COUNT(*), 0) * 100 AS success_rate
FROM fact_procedures p
INNER JOIN vw_surgeon_latest s ON s.surgeon_key = p.surgeon_key
WHERE p.status = 'completed'
GROUP BY s.latest_surgeon_key, s.surgeon_name, p.procedure_category;

-- ===========================================================================
-- FACILITY ANALYTICS VIEWS
-- ===========================================================================

-- View: Facility Performance
-- Completed procedures by the facility where they were performed
-- (fact_procedures.facility_key), across all facility versions; robot_count /
-- surgeon_count count distinct robots / surgeons, not their versions.
CREATE OR REPLACE VIEW vw_facility_performance AS
SELECT
    f.facility_id,
    f.facility_name,
    f.city,
    f.state,
    f.facility_type,
    COUNT(DISTINCT r.latest_robot_key) AS robot_count,
    COUNT(DISTINCT p.procedure_key) AS total_procedures,
    COUNT(DISTINCT s.latest_surgeon_key) AS surgeon_count,
    AVG(p.duration_minutes) AS avg_procedure_duration,
    SUM(CASE WHEN p.success_status = 'Successful' THEN 1 ELSE 0 END)::double precision /
        NULLIF(COUNT(*), 0) * 100 AS success_rate,
    AVG(p.patient_satisfaction_score) AS avg_patient_satisfaction,
    AVG(p.hospital_stay_days) AS avg_hospital_stay
FROM fact_procedures p
INNER JOIN vw_facility_latest f ON f.facility_key = p.facility_key
INNER JOIN vw_robot_latest r ON r.robot_key = p.robot_key
INNER JOIN vw_surgeon_latest s ON s.surgeon_key = p.surgeon_key
WHERE p.status = 'completed'
GROUP BY f.latest_facility_key, f.facility_id, f.facility_name, f.city, f.state, f.facility_type;

-- ===========================================================================
-- TIME-BASED ANALYTICS VIEWS (no SCD dimension: unchanged from the seed)
-- ===========================================================================

-- View: Daily Procedure Volume
CREATE OR REPLACE VIEW vw_daily_procedure_volume AS
SELECT
    d.date,
    d.year,
    d.month,
    d.day_name,
    d.is_weekend,
    COUNT(DISTINCT p.procedure_key) AS procedure_count,
    AVG(p.duration_minutes) AS avg_duration,
    SUM(p.duration_minutes) / 60.0 AS total_operating_hours
FROM dim_date d
INNER JOIN fact_procedures p ON d.date_key = p.start_date_key
WHERE p.status = 'completed'
GROUP BY d.date, d.year, d.month, d.day_name, d.is_weekend
ORDER BY d.date;

-- View: Procedures by Time of Day
CREATE OR REPLACE VIEW vw_procedures_by_time_of_day AS
SELECT
    t.time_of_day,
    t.business_hours,
    COUNT(DISTINCT p.procedure_key) AS procedure_count,
    AVG(p.duration_minutes) AS avg_duration,
    AVG(p.complexity_score) AS avg_complexity,
    SUM(CASE WHEN p.success_status = 'Successful' THEN 1 ELSE 0 END)::double precision /
        NULLIF(COUNT(*), 0) * 100 AS success_rate
FROM dim_time t
INNER JOIN fact_procedures p ON t.time_key = p.start_time_key
WHERE p.status = 'completed'
GROUP BY t.time_of_day, t.business_hours
ORDER BY procedure_count DESC;

-- ===========================================================================
-- PATIENT DEMOGRAPHICS VIEWS (facts only: unchanged from the seed)
-- ===========================================================================

-- View: Outcomes by Patient Demographics
CREATE OR REPLACE VIEW vw_outcomes_by_demographics AS
SELECT
    p.patient_gender,
    CASE
        WHEN p.patient_age < 30 THEN '< 30'
        WHEN p.patient_age BETWEEN 30 AND 49 THEN '30-49'
        WHEN p.patient_age BETWEEN 50 AND 64 THEN '50-64'
        WHEN p.patient_age >= 65 THEN '65+'
        ELSE 'Unknown'
    END AS age_group,
    COUNT(*) AS procedure_count,
    AVG(p.complexity_score) AS avg_complexity,
    SUM(CASE WHEN p.success_status = 'Successful' THEN 1 ELSE 0 END)::double precision /
        NULLIF(COUNT(*), 0) * 100 AS success_rate,
    AVG(p.duration_minutes) AS avg_duration,
    AVG(p.blood_loss_ml) AS avg_blood_loss,
    AVG(p.hospital_stay_days) AS avg_hospital_stay,
    AVG(p.patient_satisfaction_score) AS avg_satisfaction
FROM fact_procedures p
WHERE p.status = 'completed'
  AND p.patient_age IS NOT NULL
GROUP BY p.patient_gender,
         CASE
            WHEN p.patient_age < 30 THEN '< 30'
            WHEN p.patient_age BETWEEN 30 AND 49 THEN '30-49'
            WHEN p.patient_age BETWEEN 50 AND 64 THEN '50-64'
            WHEN p.patient_age >= 65 THEN '65+'
            ELSE 'Unknown'
         END;

-- ===========================================================================
-- TELEMETRY ANALYTICS VIEWS
-- ===========================================================================

-- View: Telemetry System Health Summary
-- Per procedure: the robot's current model, the name (latest) of the facility
-- where the procedure was performed, the procedure's start date.
CREATE OR REPLACE VIEW vw_telemetry_system_health AS
SELECT
    p.procedure_id,
    r.robot_model,
    f.facility_name,
    d.date,
    COUNT(*) AS telemetry_sample_count,
    AVG(t.system_temperature) AS avg_temperature,
    MAX(t.system_temperature) AS max_temperature,
    AVG(t.motor_current) AS avg_motor_current,
    MAX(t.motor_current) AS max_motor_current,
    AVG(t.network_latency_ms) AS avg_network_latency,
    MAX(t.network_latency_ms) AS max_network_latency,
    AVG(t.video_fps) AS avg_video_fps,
    MIN(t.video_fps) AS min_video_fps
FROM fact_procedure_telemetry t
INNER JOIN fact_procedures p ON t.procedure_key = p.procedure_key
INNER JOIN vw_robot_latest r ON r.robot_key = p.robot_key
INNER JOIN vw_facility_latest f ON f.facility_key = p.facility_key
INNER JOIN dim_date d ON d.date_key = p.start_date_key
GROUP BY p.procedure_id, r.robot_model, f.facility_name, d.date;
