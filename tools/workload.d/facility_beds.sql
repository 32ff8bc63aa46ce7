-- facility_beds: licensed bed count changes (new wing, ward closure).
\set delta random(-40, 60)
-- (random pick of the facility: see new_procedure.sql)
\set fw random(1, 100)
\set fn random(1, 20)
BEGIN;
UPDATE facilities
SET bed_count = greatest(20, coalesce(bed_count, 100) + :delta)
WHERE facility_id = (
    (SELECT facility_id FROM facilities
     WHERE facility_id >= (SELECT CASE WHEN :fw <= 85 THEN 'FAC-' || lpad((:fn)::text, 3, '0')
                                       ELSE 'FAC-W' || lpad((1 + floor(random() * last_value))::bigint::text, 8, '0') END
                           FROM workload_seq)
     ORDER BY facility_id LIMIT 1)
    UNION ALL
    (SELECT facility_id FROM facilities ORDER BY facility_id LIMIT 1)
    LIMIT 1);
COMMIT;
