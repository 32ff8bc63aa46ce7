-- robot_move: a robot is relocated to another facility (SCD2 change of
-- dim_robots.facility_key in the warehouse).
-- (random picks: see new_procedure.sql)
\set rw random(1, 100)
\set rn random(1, 60)
\set fw random(1, 100)
\set fn random(1, 20)
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
)
UPDATE surgical_robots sr
SET facility_id = coalesce(
        (SELECT f.facility_id FROM facilities f
         WHERE f.facility_id >= (SELECT CASE WHEN :fw <= 85 THEN 'FAC-' || lpad((:fn)::text, 3, '0')
                                            ELSE 'FAC-W' || lpad((1 + floor(random() * last_value))::bigint::text, 8, '0') END
                                 FROM workload_seq)
           AND f.facility_id <> sr.facility_id
         ORDER BY f.facility_id LIMIT 1),
        (SELECT f.facility_id FROM facilities f
         WHERE f.facility_id <> sr.facility_id
         ORDER BY f.facility_id LIMIT 1))
FROM r
WHERE sr.robot_id = r.robot_id;
COMMIT;
