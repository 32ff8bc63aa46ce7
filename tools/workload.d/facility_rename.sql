-- facility_rename: a facility is rebranded, e.g. after a merger. The new name
-- is "<city> <suffix>"; sometimes it equals the old one (a no-op update that
-- still produces a change event).
\set n random(1, 8)
-- (random pick of the facility: see new_procedure.sql)
\set fw random(1, 100)
\set fn random(1, 20)
BEGIN;
UPDATE facilities
SET facility_name = coalesce(city, 'Community') || ' ' ||
        (ARRAY['Medical Center','University Hospital','Health System','General Hospital',
               'Regional Medical Center','Surgical Institute','Memorial Hospital','Health Campus'])[:n]
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
