-- new_facility: a hospital joins the network ('FAC-W' || workload_seq).
\set c random(1, 12)
\set t random(1, 5)
\set beds random(80, 900)
BEGIN;
INSERT INTO facilities (facility_id, facility_name, city, state, country, facility_type, bed_count)
SELECT 'FAC-W' || lpad(nextval('workload_seq')::text, 8, '0'),
       c.city || ' ' || (ARRAY['Medical Center','University Hospital','Community Hospital',
                               'Surgical Hospital','Regional Medical Center'])[:t],
       c.city, c.state, 'USA',
       (ARRAY['Teaching Hospital','Academic Medical Center','Community Hospital',
              'Specialty Center','Regional Hospital'])[:t],
       :beds
FROM (VALUES (1, 'Austin', 'TX'), (2, 'Columbus', 'OH'), (3, 'Indianapolis', 'IN'), (4, 'San Diego', 'CA'),
             (5, 'Kansas City', 'MO'), (6, 'Milwaukee', 'WI'), (7, 'Albuquerque', 'NM'), (8, 'Omaha', 'NE'),
             (9, 'Richmond', 'VA'), (10, 'Louisville', 'KY'), (11, 'Sacramento', 'CA'), (12, 'Pittsburgh', 'PA')
     ) AS c(n, city, state)
WHERE c.n = :c;
COMMIT;
