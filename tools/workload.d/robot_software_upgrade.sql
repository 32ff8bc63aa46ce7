-- robot_software_upgrade: a robot gets a new software release (patch bump,
-- 1 in 10 a minor-version bump) and the update is logged as maintenance.
-- (random pick of the robot: see new_procedure.sql)
\set rw random(1, 100)
\set rn random(1, 60)
\set minor random(1, 10)
\set tech random(1, 6)
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
), u AS (
    UPDATE surgical_robots sr
    SET software_version = CASE
            WHEN :minor = 1 THEN split_part(sr.software_version, '.', 1) || '.'
                                 || (split_part(sr.software_version, '.', 2)::int + 1) || '.0'
            ELSE split_part(sr.software_version, '.', 1) || '.' || split_part(sr.software_version, '.', 2) || '.'
                 || (coalesce(nullif(split_part(sr.software_version, '.', 3), ''), '0')::int + 1)
        END
    FROM r
    WHERE sr.robot_id = r.robot_id
    RETURNING sr.robot_id, sr.software_version
)
INSERT INTO robot_maintenance (maintenance_id, robot_id, maintenance_date, maintenance_type, technician, notes)
SELECT 'MNT-W' || lpad(nextval('workload_seq')::text, 8, '0'), u.robot_id, current_date, 'Software Update',
       (ARRAY['J. Alvarez','K. Brennan','L. Osei','M. Duarte','N. Feldman','P. Iyer'])[:tech],
       'System software updated to ' || u.software_version || '; post-update self-test passed'
FROM u;
COMMIT;
