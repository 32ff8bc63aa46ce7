-- robot_maintenance: a maintenance visit. Inserts a robot_maintenance row and
-- updates the robot: last_maintenance_date; total_procedures_count synced
-- with the robot's own odometer (which also counts dry-lab/training sessions,
-- so it may move by 0..2); and status (a robot in maintenance goes back to
-- 'active'; an active one is taken out of service 1 time in 5).
-- (random pick of the robot: see new_procedure.sql)
\set rw random(1, 100)
\set rn random(1, 60)
\set kind random(1, 100)
\set odo random(0, 2)
\set tech random(1, 12)
\set flip random(1, 5)
BEGIN;
WITH r AS (
    (SELECT robot_id FROM surgical_robots
     WHERE robot_id >= (SELECT CASE WHEN :rw <= 85 THEN 'ROB-' || lpad((:rn)::text, 3, '0')
                                    ELSE 'ROB-W' || lpad((1 + floor(random() * last_value))::bigint::text, 8, '0') END
                        FROM workload_seq)
     ORDER BY robot_id LIMIT 1)
    UNION ALL
    (SELECT robot_id FROM surgical_robots ORDER BY robot_id LIMIT 1)
    LIMIT 1
), m AS (
    INSERT INTO robot_maintenance (maintenance_id, robot_id, maintenance_date, maintenance_type, technician, notes)
    SELECT 'MNT-W' || lpad(nextval('workload_seq')::text, 8, '0'), r.robot_id, current_date,
           CASE WHEN :kind <= 55 THEN 'Preventive'
                WHEN :kind <= 75 THEN 'Calibration'
                WHEN :kind <= 93 THEN 'Corrective'
                ELSE 'Instrument Arm Replacement' END,
           (ARRAY['J. Alvarez','K. Brennan','L. Osei','M. Duarte','N. Feldman','P. Iyer',
                  'R. Kowalczyk','S. Lindqvist','T. Moreau','V. Nakamura','W. Okoro','Y. Petrova'])[:tech],
           CASE WHEN :kind <= 55 THEN 'Scheduled quarterly service; all checks passed'
                WHEN :kind <= 75 THEN 'Arm kinematics and camera calibration'
                WHEN :kind <= 93 THEN 'Replaced faulty instrument drive interface'
                ELSE 'Patient-side arm replaced after torque sensor fault' END
    FROM r
    RETURNING robot_id
)
UPDATE surgical_robots sr
SET last_maintenance_date = current_date,
    status = CASE WHEN sr.status <> 'active' THEN 'active'
                  WHEN :flip = 1 THEN 'maintenance'
                  ELSE 'active' END,
    total_procedures_count = coalesce(sr.total_procedures_count, 0) + :odo
FROM m
WHERE sr.robot_id = m.robot_id;
COMMIT;
