-- new_procedure: a procedure starts on a robot.
-- One transaction: the surgical_procedures row (status 'in_progress', id
-- 'PROC-W' || workload_seq) plus a burst of 5..20 telemetry samples for it.
-- Robot, surgeon and (matching the surgeon's specialization) procedure type
-- are picked at random; the facility is the robot's current facility.
-- The catalogue below mirrors seed_catalog in tools/seed.sql.
--
-- Random picks (here and in the other scripts) stay O(log n) as tables grow:
-- draw a key -- 85% a seeded id (ROB-001..060, SRG-0001..0150), 15% a
-- workload-created id ('ROB-W' || random value <= workload_seq) -- take the
-- first row >= key through the primary key, and wrap around to the first
-- row when nothing follows.
\set rw random(1, 100)
\set rn random(1, 60)
\set sw random(1, 100)
\set sn random(1, 150)
\set ago random(15, 240)
\set samples random(5, 20)
\set age random(22, 88)
\set cx random(-15, 15)
\set patient random(100000, 9999999)
\set g random(0, 1)
BEGIN;
WITH r AS (
    (SELECT robot_id, facility_id FROM surgical_robots
     WHERE robot_id >= (SELECT CASE WHEN :rw <= 85 THEN 'ROB-' || lpad((:rn)::text, 3, '0')
                                    ELSE 'ROB-W' || lpad((1 + floor(random() * last_value))::bigint::text, 8, '0') END
                        FROM workload_seq)
       AND status = 'active'
     ORDER BY robot_id LIMIT 1)
    UNION ALL
    (SELECT robot_id, facility_id FROM surgical_robots WHERE status = 'active' ORDER BY robot_id LIMIT 1)
    LIMIT 1
), s AS (
    (SELECT surgeon_id, specialization FROM surgeons
     WHERE surgeon_id >= (SELECT CASE WHEN :sw <= 85 THEN 'SRG-' || lpad((:sn)::text, 4, '0')
                                      ELSE 'SRG-W' || lpad((1 + floor(random() * last_value))::bigint::text, 8, '0') END
                          FROM workload_seq)
     ORDER BY surgeon_id LIMIT 1)
    UNION ALL
    (SELECT surgeon_id, specialization FROM surgeons ORDER BY surgeon_id LIMIT 1)
    LIMIT 1
), pick AS (
    SELECT c.*
    FROM s, (VALUES
        ('General Surgery', 'Cholecystectomy',          'General',     NULL, 3.5),
        ('General Surgery', 'Inguinal Hernia Repair',   'General',     NULL, 3.0),
        ('General Surgery', 'Ventral Hernia Repair',    'General',     NULL, 4.5),
        ('General Surgery', 'Nissen Fundoplication',    'General',     NULL, 5.5),
        ('General Surgery', 'Sleeve Gastrectomy',       'Bariatric',   NULL, 5.0),
        ('General Surgery', 'Roux-en-Y Gastric Bypass', 'Bariatric',   NULL, 6.5),
        ('Urology',         'Radical Prostatectomy',    'Urologic',    'M',  7.0),
        ('Urology',         'Partial Nephrectomy',      'Urologic',    NULL, 7.5),
        ('Urology',         'Radical Cystectomy',       'Urologic',    NULL, 8.5),
        ('Urology',         'Pyeloplasty',              'Urologic',    NULL, 5.5),
        ('Gynecology',      'Hysterectomy',             'Gynecologic', 'F',  5.0),
        ('Gynecology',      'Myomectomy',               'Gynecologic', 'F',  5.5),
        ('Gynecology',      'Sacrocolpopexy',           'Gynecologic', 'F',  6.0),
        ('Gynecology',      'Endometriosis Excision',   'Gynecologic', 'F',  6.0),
        ('Cardiothoracic',  'Lobectomy',                'Thoracic',    NULL, 7.5),
        ('Cardiothoracic',  'Mitral Valve Repair',      'Cardiac',     NULL, 9.0),
        ('Cardiothoracic',  'Thymectomy',               'Thoracic',    NULL, 6.5),
        ('Colorectal',      'Low Anterior Resection',   'Colorectal',  NULL, 8.0),
        ('Colorectal',      'Right Hemicolectomy',      'Colorectal',  NULL, 6.0),
        ('Colorectal',      'Sigmoid Colectomy',        'Colorectal',  NULL, 6.5),
        ('Colorectal',      'Rectopexy',                'Colorectal',  NULL, 5.5)
    ) AS c(specialization, procedure_type, category, gender, base_complexity)
    WHERE c.specialization = s.specialization
    ORDER BY random() LIMIT 1
), p AS (
    INSERT INTO surgical_procedures (procedure_id, robot_id, surgeon_id, facility_id, procedure_type,
                                     procedure_category, patient_id, patient_age, patient_gender,
                                     start_time, complexity_score, status)
    SELECT 'PROC-W' || lpad(nextval('workload_seq')::text, 8, '0'),
           r.robot_id, s.surgeon_id, r.facility_id, pick.procedure_type, pick.category,
           'PT-' || lpad((:patient)::text, 7, '0'),
           :age,
           coalesce(pick.gender, CASE WHEN :g = 0 THEN 'F' ELSE 'M' END),
           date_trunc('second', now()) - make_interval(mins => :ago),
           greatest(1.0, least(10.0, pick.base_complexity + (:cx)::numeric / 10)),
           'in_progress'
    FROM r, s, pick
    RETURNING procedure_id, start_time
)
INSERT INTO procedure_telemetry (procedure_id, sample_timestamp, arm_position_x, arm_position_y,
                                 arm_position_z, arm_rotation_x, arm_rotation_y, arm_rotation_z,
                                 force_feedback, tool_type, tool_active, camera_zoom, lighting_level,
                                 system_temperature, motor_current, network_latency_ms, video_fps)
SELECT p.procedure_id,
       p.start_time + (now() - p.start_time) * (g::float8 / :samples),
       round((random() * 500 - 250)::numeric, 4),
       round((random() * 500 - 250)::numeric, 4),
       round((random() * 300 - 50)::numeric, 4),
       round((random() * 360 - 180)::numeric, 4),
       round((random() * 180 - 90)::numeric, 4),
       round((random() * 360 - 180)::numeric, 4),
       round((power(random(), 2) * 14 + 0.2)::numeric, 4),
       (ARRAY['Monopolar Curved Scissors','Maryland Bipolar Forceps','Large Needle Driver',
              'Cadiere Forceps','Vessel Sealer Extend','Permanent Cautery Hook',
              'SureForm 45 Stapler','Medium-Large Clip Applier'])[1 + floor(random() * 8)::int],
       random() < 0.7,
       round((1 + random() * 9)::numeric, 2),
       60 + floor(random() * 41)::int,
       round((36.5 + random() * 6 + 2.0 * g / :samples)::numeric, 2),
       round((0.8 + random() * 2.4)::numeric, 4),
       2 + floor(power(random(), 3) * 28)::int,
       CASE WHEN random() < 0.97 THEN 60 ELSE 30 END
FROM p, generate_series(1, :samples) AS g;
COMMIT;
