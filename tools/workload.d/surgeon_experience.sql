-- surgeon_experience: yearly experience increment (a type-1 attribute in the
-- warehouse: overwritten in place, no new dimension version).
-- (random pick of the surgeon: see new_procedure.sql)
\set sw random(1, 100)
\set sn random(1, 150)
BEGIN;
UPDATE surgeons
SET years_experience = coalesce(years_experience, 0) + 1
WHERE surgeon_id = (
    (SELECT surgeon_id FROM surgeons
     WHERE surgeon_id >= (SELECT CASE WHEN :sw <= 85 THEN 'SRG-' || lpad((:sn)::text, 4, '0')
                                      ELSE 'SRG-W' || lpad((1 + floor(random() * last_value))::bigint::text, 8, '0') END
                          FROM workload_seq)
     ORDER BY surgeon_id LIMIT 1)
    UNION ALL
    (SELECT surgeon_id FROM surgeons ORDER BY surgeon_id LIMIT 1)
    LIMIT 1);
COMMIT;
