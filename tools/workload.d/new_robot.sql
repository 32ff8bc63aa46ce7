-- new_robot: a newly installed robot ('ROB-W' || workload_seq), active,
-- on current software, at a random facility.
-- (random pick of the facility: see new_procedure.sql)
\set fw random(1, 100)
\set fn random(1, 20)
\set m random(1, 6)
\set serial random(10000, 99999)
BEGIN;
WITH s AS (SELECT nextval('workload_seq') AS n)
INSERT INTO surgical_robots (robot_id, robot_serial_number, robot_model, manufacturer, facility_id,
                             install_date, software_version, hardware_revision, status,
                             last_maintenance_date, total_procedures_count, total_operating_hours)
SELECT 'ROB-W' || lpad(s.n::text, 8, '0'),
       m.prefix || (:serial)::text || '-W' || s.n,
       m.model, m.manufacturer,
       (
           (SELECT facility_id FROM facilities
            WHERE facility_id >= (SELECT CASE WHEN :fw <= 85 THEN 'FAC-' || lpad((:fn)::text, 3, '0')
                                              ELSE 'FAC-W' || lpad((1 + floor(random() * last_value))::bigint::text, 8, '0') END
                                  FROM workload_seq)
            ORDER BY facility_id LIMIT 1)
           UNION ALL
           (SELECT facility_id FROM facilities ORDER BY facility_id LIMIT 1)
           LIMIT 1),
       current_date, m.version, m.revision, 'active', current_date, 0, 0
FROM s, (VALUES (1, 'da Vinci Xi', 'Intuitive Surgical', 'SK',  '5.0.1', 'Rev E'),
                (2, 'da Vinci 5',  'Intuitive Surgical', 'DV5', '1.0.2', 'Rev A'),
                (3, 'da Vinci SP', 'Intuitive Surgical', 'SP',  '2.3.1', 'Rev B'),
                (4, 'Hugo RAS',    'Medtronic',          'HUG', '1.5.0', 'Rev B'),
                (5, 'Versius',     'CMR Surgical',       'CMR', '3.2.2', 'Gen 2'),
                (6, 'Senhance',    'Asensus Surgical',   'TSX', '2.7.1', 'Rev D')
        ) AS m(n, model, manufacturer, prefix, version, revision)
WHERE m.n = :m;
COMMIT;
