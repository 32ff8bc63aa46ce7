-- surgeon_certification: a surgeon (not yet 'Master') moves up one
-- certification level: Basic -> Advanced -> Expert -> Master.
-- A no-op when every surgeon is already a Master.
-- (random pick of the surgeon: see new_procedure.sql)
\set sw random(1, 100)
\set sn random(1, 150)
BEGIN;
UPDATE surgeons
SET certification_level = CASE certification_level
        WHEN 'Basic' THEN 'Advanced'
        WHEN 'Advanced' THEN 'Expert'
        ELSE 'Master' END
WHERE surgeon_id = (
    (SELECT surgeon_id FROM surgeons
     WHERE surgeon_id >= (SELECT CASE WHEN :sw <= 85 THEN 'SRG-' || lpad((:sn)::text, 4, '0')
                                      ELSE 'SRG-W' || lpad((1 + floor(random() * last_value))::bigint::text, 8, '0') END
                          FROM workload_seq)
       AND certification_level IS DISTINCT FROM 'Master'
     ORDER BY surgeon_id LIMIT 1)
    UNION ALL
    (SELECT surgeon_id FROM surgeons WHERE certification_level IS DISTINCT FROM 'Master' ORDER BY surgeon_id LIMIT 1)
    LIMIT 1);
COMMIT;
