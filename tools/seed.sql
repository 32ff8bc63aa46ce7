-- tools/seed.sql — deterministic sample data for the source schema.
--
--   psql -v ON_ERROR_STOP=1 -f schemas/source/001_tables.sql
--   psql -v ON_ERROR_STOP=1 -f tools/seed.sql
--
-- Loads, in one transaction, into empty tables:
--     20 facilities           FAC-001 .. FAC-020
--    150 surgeons             SRG-0001 .. SRG-0150
--     60 robots               ROB-001 .. ROB-060
--  2,000 procedures           PROC-000001 .. PROC-002000 (2025-01 .. 2026-10;
--                             ~97% completed with an outcome, the rest cancelled)
--   ~19k telemetry samples    5..15 per completed procedure
--   ~300 maintenance events   MNT-00001 ..
-- and creates the sequence `workload_seq` used by tools/workload for new ids.
--
-- Deterministic: setseed() fixes random(), every draw happens in a
-- materialized CTE scanned in a fixed order, and no value depends on now().
-- Running it twice gives byte-identical tables.

\set ON_ERROR_STOP on
\set QUIET on

BEGIN;

SET LOCAL search_path = public;
SET LOCAL client_min_messages = warning;

-- Refuse to seed on top of existing data (ids would collide half-way).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM facilities) OR EXISTS (SELECT 1 FROM surgeons)
       OR EXISTS (SELECT 1 FROM surgical_robots) OR EXISTS (SELECT 1 FROM surgical_procedures) THEN
        RAISE EXCEPTION 'seed.sql: source tables are not empty; load the seed into a fresh schema';
    END IF;
END $$;

-- Ids for rows created by tools/workload ('PROC-W00000001', 'SRG-W...', ...).
CREATE SEQUENCE IF NOT EXISTS workload_seq;

SELECT setseed(0.20261122) AS seeded \gset

-- ---------------------------------------------------------------------------
-- Lookup data (temporary: not part of the captured schema)
-- ---------------------------------------------------------------------------

-- Procedure catalogue: which procedures each specialization performs.
-- tools/workload.d/new_procedure.sql carries the same list.
CREATE TEMP TABLE seed_catalog (
    specialization  text,
    procedure_type  text,
    category        text,
    gender          text,        -- NULL = either
    min_minutes     int,
    max_minutes     int,
    base_complexity numeric,
    base_stay_days  int
) ON COMMIT DROP;

INSERT INTO seed_catalog VALUES
    ('General Surgery', 'Cholecystectomy',            'General',     NULL,  45, 120, 3.5, 1),
    ('General Surgery', 'Inguinal Hernia Repair',     'General',     NULL,  40, 110, 3.0, 0),
    ('General Surgery', 'Ventral Hernia Repair',      'General',     NULL,  60, 180, 4.5, 1),
    ('General Surgery', 'Nissen Fundoplication',      'General',     NULL,  90, 180, 5.5, 1),
    ('General Surgery', 'Sleeve Gastrectomy',         'Bariatric',   NULL,  60, 150, 5.0, 2),
    ('General Surgery', 'Roux-en-Y Gastric Bypass',   'Bariatric',   NULL, 120, 240, 6.5, 2),
    ('Urology',         'Radical Prostatectomy',      'Urologic',    'M',  150, 300, 7.0, 1),
    ('Urology',         'Partial Nephrectomy',        'Urologic',    NULL, 150, 270, 7.5, 2),
    ('Urology',         'Radical Cystectomy',         'Urologic',    NULL, 240, 420, 8.5, 6),
    ('Urology',         'Pyeloplasty',                'Urologic',    NULL, 120, 210, 5.5, 1),
    ('Gynecology',      'Hysterectomy',               'Gynecologic', 'F',   90, 210, 5.0, 1),
    ('Gynecology',      'Myomectomy',                 'Gynecologic', 'F',  120, 240, 5.5, 1),
    ('Gynecology',      'Sacrocolpopexy',             'Gynecologic', 'F',  150, 270, 6.0, 1),
    ('Gynecology',      'Endometriosis Excision',     'Gynecologic', 'F',   90, 240, 6.0, 1),
    ('Cardiothoracic',  'Lobectomy',                  'Thoracic',    NULL, 150, 300, 7.5, 4),
    ('Cardiothoracic',  'Mitral Valve Repair',        'Cardiac',     NULL, 180, 360, 9.0, 5),
    ('Cardiothoracic',  'Thymectomy',                 'Thoracic',    NULL,  90, 210, 6.5, 3),
    ('Colorectal',      'Low Anterior Resection',     'Colorectal',  NULL, 180, 360, 8.0, 5),
    ('Colorectal',      'Right Hemicolectomy',        'Colorectal',  NULL, 120, 240, 6.0, 4),
    ('Colorectal',      'Sigmoid Colectomy',          'Colorectal',  NULL, 150, 270, 6.5, 4),
    ('Colorectal',      'Rectopexy',                  'Colorectal',  NULL, 120, 210, 5.5, 2);

-- ---------------------------------------------------------------------------
-- Facilities (20 US hospitals; FAC-001..005 are the ones in the warehouse docs)
-- ---------------------------------------------------------------------------

INSERT INTO facilities (facility_id, facility_name, city, state, country, facility_type, bed_count) VALUES
    ('FAC-001', 'Memorial Medical Center',             'Boston',         'MA', 'USA', 'Teaching Hospital',         850),
    ('FAC-002', 'St. Mary''s Hospital',                'New York',       'NY', 'USA', 'Private Hospital',          600),
    ('FAC-003', 'Bay Area Surgical Institute',         'San Francisco',  'CA', 'USA', 'Specialty Center',          400),
    ('FAC-004', 'Texas Medical Complex',               'Houston',        'TX', 'USA', 'Teaching Hospital',         900),
    ('FAC-005', 'Pacific Northwest Regional',          'Seattle',        'WA', 'USA', 'Regional Hospital',         550),
    ('FAC-006', 'Lakeshore University Hospital',       'Chicago',        'IL', 'USA', 'Academic Medical Center',  1100),
    ('FAC-007', 'Desert Valley Medical Center',        'Phoenix',        'AZ', 'USA', 'Community Hospital',        420),
    ('FAC-008', 'Peachtree Surgical Hospital',         'Atlanta',        'GA', 'USA', 'Specialty Center',          180),
    ('FAC-009', 'Front Range Health Center',           'Denver',         'CO', 'USA', 'Regional Hospital',         510),
    ('FAC-010', 'Twin Cities Academic Medical Center', 'Minneapolis',    'MN', 'USA', 'Academic Medical Center',   980),
    ('FAC-011', 'Gulf Coast General Hospital',         'Tampa',          'FL', 'USA', 'Community Hospital',        380),
    ('FAC-012', 'Music City Medical Center',           'Nashville',      'TN', 'USA', 'Teaching Hospital',         720),
    ('FAC-013', 'Capitol Heights Hospital',            'Washington',     'DC', 'USA', 'Private Hospital',          460),
    ('FAC-014', 'Cuyahoga University Medical Center',  'Cleveland',      'OH', 'USA', 'Academic Medical Center',  1250),
    ('FAC-015', 'Wasatch Surgical Center',             'Salt Lake City', 'UT', 'USA', 'Ambulatory Surgery Center',  60),
    ('FAC-016', 'Charlotte Regional Medical Center',   'Charlotte',      'NC', 'USA', 'Regional Hospital',         640),
    ('FAC-017', 'Rose City General Hospital',          'Portland',       'OR', 'USA', 'Community Hospital',        350),
    ('FAC-018', 'Schuylkill University Hospital',      'Philadelphia',   'PA', 'USA', 'Academic Medical Center',  1020),
    ('FAC-019', 'Bayou Medical Center',                'New Orleans',    'LA', 'USA', 'Teaching Hospital',         560),
    ('FAC-020', 'Silver State Surgical Hospital',      'Las Vegas',      'NV', 'USA', 'Specialty Center',          220);

-- ---------------------------------------------------------------------------
-- Surgeons (150). Names: 30 first x 40 last names, each pair used once.
-- Certification follows experience (with some noise).
-- ---------------------------------------------------------------------------

INSERT INTO surgeons (surgeon_id, surgeon_name, specialization, years_experience, certification_level)
WITH draw AS MATERIALIZED (
    SELECT i, random() AS r_spec, random() AS r_years, random() AS r_cert
    FROM generate_series(1, 150) AS i
    ORDER BY i
), names AS (
    SELECT ARRAY['James','Maria','Robert','Priya','Michael','Elena','David','Aisha','William','Sofia',
                 'Daniel','Mei','Thomas','Fatima','Andrew','Hannah','Carlos','Grace','Samuel','Olivia',
                 'Kenji','Rachel','Omar','Laura','Benjamin','Ana','Victor','Nadia','Jonathan','Chloe'] AS f,
           ARRAY['Smith','Patel','Nguyen','Garcia','Johnson','Kim','Chen','Williams','Rodriguez','Okafor',
                 'Brown','Shah','Miller','Lopez','Davis','Cohen','Wilson','Martinez','Anderson','Tanaka',
                 'Thomas','Hernandez','Moore','Singh','Taylor','Rossi','Jackson','Murphy','White','Kowalski',
                 'Harris','Novak','Martin','Ali','Thompson','Schmidt','Clark','Yamamoto','Lewis','Fischer'] AS l
), d AS (
    SELECT i,
           CASE WHEN r_spec < 0.30 THEN 'General Surgery'
                WHEN r_spec < 0.52 THEN 'Urology'
                WHEN r_spec < 0.74 THEN 'Gynecology'
                WHEN r_spec < 0.88 THEN 'Colorectal'
                ELSE 'Cardiothoracic' END AS spec,
           2 + floor(r_years * 33)::int AS years,
           r_cert
    FROM draw
)
SELECT 'SRG-' || lpad(i::text, 4, '0'),
       'Dr. ' || n.f[1 + i % 30] || ' ' || n.l[1 + (i + 7 * (i / 30)) % 40],
       spec,
       years,
       CASE WHEN years + (r_cert * 8 - 4) < 6  THEN 'Basic'
            WHEN years + (r_cert * 8 - 4) < 13 THEN 'Advanced'
            WHEN years + (r_cert * 8 - 4) < 22 THEN 'Expert'
            ELSE 'Master' END
FROM d, names n
ORDER BY i;

-- ---------------------------------------------------------------------------
-- Robots (60). Robots 1..40 go round-robin over the 20 facilities so every
-- facility has at least two; the rest are placed at random.
-- ---------------------------------------------------------------------------

CREATE TEMP TABLE seed_models (
    model text, manufacturer text, serial_prefix text,
    versions text[], revisions text[], lo numeric, hi numeric
) ON COMMIT DROP;

-- lo/hi: cumulative share of the fleet for this model.
INSERT INTO seed_models VALUES
    ('da Vinci Xi', 'Intuitive Surgical', 'SK',    ARRAY['4.2.1','4.3.0','4.3.2','5.0.1'], ARRAY['Rev C','Rev D','Rev E'], 0.00, 0.45),
    ('da Vinci X',  'Intuitive Surgical', 'SR',    ARRAY['4.1.3','4.2.1','4.3.0'],         ARRAY['Rev B','Rev C'],         0.45, 0.55),
    ('da Vinci SP', 'Intuitive Surgical', 'SP',    ARRAY['2.1.0','2.2.3','2.3.1'],         ARRAY['Rev A','Rev B'],         0.55, 0.67),
    ('Hugo RAS',    'Medtronic',          'HUG',   ARRAY['1.3.0','1.4.2','1.5.0'],         ARRAY['Rev A','Rev B'],         0.67, 0.82),
    ('Versius',     'CMR Surgical',       'CMR',   ARRAY['3.0.5','3.1.0','3.2.2'],         ARRAY['Gen 1','Gen 2'],         0.82, 0.95),
    ('Senhance',    'Asensus Surgical',   'TSX',   ARRAY['2.6.0','2.7.1'],                 ARRAY['Rev C','Rev D'],         0.95, 1.01);

INSERT INTO surgical_robots (robot_id, robot_serial_number, robot_model, manufacturer, facility_id,
                             install_date, software_version, hardware_revision, status,
                             last_maintenance_date, total_procedures_count, total_operating_hours)
WITH draw AS MATERIALIZED (
    SELECT i, random() AS r_model, random() AS r_fac, random() AS r_serial, random() AS r_install,
           random() AS r_ver, random() AS r_rev, random() AS r_status
    FROM generate_series(1, 60) AS i
    ORDER BY i
)
SELECT 'ROB-' || lpad(d.i::text, 3, '0'),
       m.serial_prefix || lpad((10000 + floor(d.r_serial * 89999))::int::text, 5, '0') || '-' || lpad(d.i::text, 3, '0'),
       m.model,
       m.manufacturer,
       'FAC-' || lpad((CASE WHEN d.i <= 40 THEN 1 + (d.i - 1) % 20 ELSE 1 + floor(d.r_fac * 20)::int END)::text, 3, '0'),
       date '2018-01-01' + floor(d.r_install * 2400)::int,                   -- 2018 .. mid 2024
       m.versions[1 + floor(d.r_ver * array_length(m.versions, 1))::int],
       m.revisions[1 + floor(d.r_rev * array_length(m.revisions, 1))::int],
       CASE WHEN d.r_status < 0.08 THEN 'maintenance' ELSE 'active' END,
       NULL, 0, 0                                                            -- filled in below
FROM draw d
JOIN seed_models m ON d.r_model >= m.lo AND d.r_model < m.hi
ORDER BY d.i;

-- ---------------------------------------------------------------------------
-- Procedures (2,000 historical, 2025-01-06 .. 2026-10-30, weekdays,
-- starting 12:00..20:45 UTC = 7-15h US Eastern). Facility = robot's facility,
-- procedure type drawn from the surgeon's specialization.
-- ---------------------------------------------------------------------------

CREATE TEMP TABLE seed_procedures ON COMMIT DROP AS
WITH draw AS MATERIALIZED (
    SELECT i, random() AS r_robot, random() AS r_surgeon, random() AS r_type, random() AS r_day,
              random() AS r_slot, random() AS r_dur, random() AS r_cx, random() AS r_age,
              random() AS r_gender, random() AS r_patient, random() AS r_status
    FROM generate_series(1, 2000) AS i
    ORDER BY i
), cat AS (
    SELECT c.*, row_number() OVER (PARTITION BY specialization ORDER BY procedure_type) - 1 AS k,
           count(*) OVER (PARTITION BY specialization) AS n
    FROM seed_catalog c
), base AS (
    SELECT d.*,
           'ROB-' || lpad((1 + floor(d.r_robot * 60))::int::text, 3, '0')   AS robot_id,
           'SRG-' || lpad((1 + floor(d.r_surgeon * 150))::int::text, 4, '0') AS surgeon_id,
           -- 2025-01-06 is a Monday: 95 weeks x 5 weekdays
           date '2025-01-06' + 7 * (floor(d.r_day * 475)::int / 5) + floor(d.r_day * 475)::int % 5 AS day
    FROM draw d
)
SELECT b.i,
       'PROC-' || lpad(b.i::text, 6, '0') AS procedure_id,
       b.robot_id, b.surgeon_id, r.facility_id,
       c.procedure_type, c.category AS procedure_category,
       'PT-' || lpad((100000 + floor(b.r_patient * 899999))::int::text, 7, '0') AS patient_id,
       (CASE WHEN c.category = 'Gynecologic' THEN 28 + floor(b.r_age * 50)
             ELSE 22 + floor(b.r_age * 64) END)::smallint AS patient_age,
       coalesce(c.gender, CASE WHEN b.r_gender < 0.5 THEN 'F' ELSE 'M' END) AS patient_gender,
       b.day::timestamp AT TIME ZONE 'UTC'
           + make_interval(hours => 12, mins => 15 * floor(b.r_slot * 36)::int) AS start_time,
       (c.min_minutes + floor(b.r_dur * (c.max_minutes - c.min_minutes)))::int AS duration_minutes,
       round(greatest(1.0, least(10.0, c.base_complexity + (b.r_cx - 0.5)::numeric * 3)), 1) AS complexity_score,
       CASE WHEN b.r_status < 0.03 THEN 'cancelled' ELSE 'completed' END AS status,
       c.base_stay_days
FROM base b
JOIN surgical_robots r ON r.robot_id = b.robot_id
JOIN surgeons s ON s.surgeon_id = b.surgeon_id
JOIN cat c ON c.specialization = s.specialization AND c.k = floor(b.r_type * c.n)
ORDER BY b.i;

INSERT INTO surgical_procedures (procedure_id, robot_id, surgeon_id, facility_id, procedure_type,
                                 procedure_category, patient_id, patient_age, patient_gender,
                                 start_time, end_time, duration_minutes, complexity_score, status)
SELECT procedure_id, robot_id, surgeon_id, facility_id, procedure_type,
       procedure_category, patient_id, patient_age, patient_gender,
       start_time,
       CASE WHEN status = 'completed' THEN start_time + make_interval(mins => duration_minutes) END,
       CASE WHEN status = 'completed' THEN duration_minutes END,
       complexity_score, status
FROM seed_procedures
ORDER BY i;

-- ---------------------------------------------------------------------------
-- Outcomes for every completed procedure. Complications get likelier with
-- complexity and drive blood loss, length of stay, satisfaction, readmission.
-- ---------------------------------------------------------------------------

INSERT INTO procedure_outcomes (procedure_id, success_status, blood_loss_ml, complication_level,
                                hospital_stay_days, patient_satisfaction_score, readmission_30day)
WITH draw AS MATERIALIZED (
    SELECT p.*, random() AS r_comp, random() AS r_succ, random() AS r_blood,
           random() AS r_stay, random() AS r_sat, random() AS r_readm
    FROM seed_procedures p
    WHERE p.status = 'completed'
    ORDER BY p.i
), d AS (
    SELECT *,
           CASE WHEN r_comp < 0.70 - complexity_score * 0.02 THEN 'None'
                WHEN r_comp < 0.90 - complexity_score * 0.01 THEN 'Minor'
                WHEN r_comp < 0.975 THEN 'Moderate'
                ELSE 'Severe' END AS complication
    FROM draw
)
SELECT procedure_id,
       CASE WHEN complication = 'Severe' AND r_succ < 0.30 THEN 'Converted to Open'
            WHEN complication = 'Severe' AND r_succ < 0.45 THEN 'Unsuccessful'
            WHEN complication IN ('Moderate', 'Severe') AND r_succ < 0.60 THEN 'Partially Successful'
            WHEN r_succ < 0.02 THEN 'Partially Successful'
            ELSE 'Successful' END,
       (15 + duration_minutes * (0.3 + r_blood)
           * CASE complication WHEN 'None' THEN 1 WHEN 'Minor' THEN 1.5 WHEN 'Moderate' THEN 2.5 ELSE 4 END)::int,
       complication,
       base_stay_days + floor(r_stay * 2)::int
           + CASE complication WHEN 'None' THEN 0 WHEN 'Minor' THEN 1 WHEN 'Moderate' THEN 3 ELSE 7 END,
       round(greatest(1.0, least(10.0, 9.6 - r_sat::numeric * 1.8
           - CASE complication WHEN 'None' THEN 0 WHEN 'Minor' THEN 0.8 WHEN 'Moderate' THEN 2 ELSE 3.5 END)), 1),
       r_readm < CASE complication WHEN 'None' THEN 0.03 WHEN 'Minor' THEN 0.07 WHEN 'Moderate' THEN 0.15 ELSE 0.30 END
FROM d
ORDER BY i;

-- ---------------------------------------------------------------------------
-- Telemetry: 5..15 samples spread over each completed procedure (~19k rows).
-- ---------------------------------------------------------------------------

INSERT INTO procedure_telemetry (procedure_id, sample_timestamp, arm_position_x, arm_position_y,
                                 arm_position_z, arm_rotation_x, arm_rotation_y, arm_rotation_z,
                                 force_feedback, tool_type, tool_active, camera_zoom, lighting_level,
                                 system_temperature, motor_current, network_latency_ms, video_fps)
WITH p AS MATERIALIZED (
    SELECT i, procedure_id, start_time, duration_minutes, 5 + floor(random() * 11)::int AS n
    FROM seed_procedures
    WHERE status = 'completed'
    ORDER BY i
), s AS MATERIALIZED (
    SELECT p.i, g.j, p.procedure_id, p.n,
           p.start_time + make_interval(secs => p.duration_minutes * 60.0 * g.j / (p.n + 1)) AS ts,
           random() AS r1, random() AS r2, random() AS r3, random() AS r4, random() AS r5,
           random() AS r6, random() AS r7, random() AS r8, random() AS r9, random() AS r10,
           random() AS r11, random() AS r12, random() AS r13, random() AS r14
    FROM p CROSS JOIN LATERAL generate_series(1, p.n) AS g(j)
    ORDER BY p.i, g.j
)
SELECT procedure_id, ts,
       round((r1 * 500 - 250)::numeric, 4),                  -- arm position, mm
       round((r2 * 500 - 250)::numeric, 4),
       round((r3 * 300 - 50)::numeric, 4),
       round((r4 * 360 - 180)::numeric, 4),                  -- rotation, degrees
       round((r5 * 180 - 90)::numeric, 4),
       round((r6 * 360 - 180)::numeric, 4),
       round((r7 * r7 * 14 + 0.2)::numeric, 4),              -- force, N (mostly light)
       (ARRAY['Monopolar Curved Scissors','Maryland Bipolar Forceps','Large Needle Driver',
              'Cadiere Forceps','Vessel Sealer Extend','Permanent Cautery Hook',
              'SureForm 45 Stapler','Medium-Large Clip Applier'])[1 + floor(r8 * 8)::int],
       r9 < 0.7,
       round((1 + r10 * 9)::numeric, 2),                     -- camera zoom 1x..10x
       60 + floor(r11 * 41)::int,                            -- lighting 60..100 %
       round((36.5 + r12 * 6 + 2.0 * j / n)::numeric, 2),    -- warms up during the case
       round((0.8 + r13 * 2.4)::numeric, 4),                 -- motor current, A
       2 + floor(r14 * r14 * r14 * 28)::int,                 -- latency, ms (long tail)
       CASE WHEN r14 < 0.97 THEN 60 ELSE 30 END
FROM s
ORDER BY i, j;

-- ---------------------------------------------------------------------------
-- Maintenance history: 3..7 events per robot between install and 2026-10-31.
-- ---------------------------------------------------------------------------

INSERT INTO robot_maintenance (maintenance_id, robot_id, maintenance_date, maintenance_type, technician, notes)
WITH r AS MATERIALIZED (
    SELECT robot_id, install_date, 3 + floor(random() * 5)::int AS n
    FROM surgical_robots
    ORDER BY robot_id
), e AS MATERIALIZED (
    SELECT r.robot_id, g.j,
           r.install_date + floor((date '2026-10-31' - r.install_date) * (g.j - random() * 0.9) / r.n)::int AS day,
           random() AS r_type, random() AS r_tech
    FROM r CROSS JOIN LATERAL generate_series(1, r.n) AS g(j)
    ORDER BY r.robot_id, g.j
), t AS (
    SELECT e.*,
           CASE WHEN r_type < 0.45 THEN 'Preventive'
                WHEN r_type < 0.65 THEN 'Software Update'
                WHEN r_type < 0.80 THEN 'Calibration'
                WHEN r_type < 0.93 THEN 'Corrective'
                ELSE 'Instrument Arm Replacement' END AS mtype
    FROM e
)
SELECT 'MNT-' || lpad(row_number() OVER (ORDER BY day, robot_id, j)::text, 5, '0'),
       robot_id, day, mtype,
       (ARRAY['J. Alvarez','K. Brennan','L. Osei','M. Duarte','N. Feldman','P. Iyer',
              'R. Kowalczyk','S. Lindqvist','T. Moreau','V. Nakamura','W. Okoro','Y. Petrova'])[1 + floor(r_tech * 12)::int],
       CASE mtype
            WHEN 'Preventive'                 THEN 'Scheduled quarterly service; all checks passed'
            WHEN 'Software Update'            THEN 'System software updated; post-update self-test passed'
            WHEN 'Calibration'                THEN 'Arm kinematics and camera calibration'
            WHEN 'Corrective'                 THEN 'Replaced faulty instrument drive interface'
            ELSE 'Patient-side arm replaced after torque sensor fault' END
FROM t
ORDER BY day, robot_id, j;

-- ---------------------------------------------------------------------------
-- Robot counters derived from the history above.
-- ---------------------------------------------------------------------------

UPDATE surgical_robots r
SET last_maintenance_date  = m.last_date,
    total_procedures_count = coalesce(p.cnt, 0),
    total_operating_hours  = coalesce(p.hours, 0)
FROM (SELECT robot_id, max(maintenance_date) AS last_date FROM robot_maintenance GROUP BY robot_id) m
LEFT JOIN (SELECT robot_id, count(*) AS cnt, round(sum(duration_minutes) / 60.0, 2) AS hours
           FROM surgical_procedures WHERE status = 'completed' GROUP BY robot_id) p USING (robot_id)
WHERE r.robot_id = m.robot_id;

COMMIT;

ANALYZE facilities, surgeons, surgical_robots, surgical_procedures, procedure_outcomes,
        robot_maintenance, procedure_telemetry;

\unset QUIET
SELECT 'facilities' AS table_name, count(*) AS rows FROM facilities
UNION ALL SELECT 'surgeons', count(*) FROM surgeons
UNION ALL SELECT 'surgical_robots', count(*) FROM surgical_robots
UNION ALL SELECT 'surgical_procedures', count(*) FROM surgical_procedures
UNION ALL SELECT 'procedure_outcomes', count(*) FROM procedure_outcomes
UNION ALL SELECT 'procedure_telemetry', count(*) FROM procedure_telemetry
UNION ALL SELECT 'robot_maintenance', count(*) FROM robot_maintenance;
