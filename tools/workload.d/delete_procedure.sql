-- delete_procedure: a procedure record entered in error is removed; the
-- delete cascades to its telemetry and outcome. 70% target workload-created
-- procedures (in progress or completed), 30% seeded history.
\set pick random(1, 100)
\set h random(1, 2000)
BEGIN;
DELETE FROM surgical_procedures
WHERE procedure_id = (
    SELECT procedure_id FROM surgical_procedures
    WHERE procedure_id >= (SELECT CASE WHEN :pick <= 30
                                       THEN 'PROC-' || lpad((:h)::text, 6, '0')
                                       ELSE 'PROC-W' || lpad((1 + floor(random() * last_value))::bigint::text, 8, '0')
                                  END
                           FROM workload_seq)
    ORDER BY procedure_id
    LIMIT 1);
COMMIT;
