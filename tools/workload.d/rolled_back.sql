-- rolled_back: a transaction that changes several tables and then rolls
-- back. It must leave no trace in the tables (only a consumed workload_seq
-- value) and no committed change for a CDC consumer.
\set rn random(1, 60)
\set sn random(1, 150)
\set fn random(1, 20)
\set delta random(1, 9)
BEGIN;
WITH p AS (
    INSERT INTO surgical_procedures (procedure_id, robot_id, surgeon_id, facility_id, procedure_type,
                                     procedure_category, patient_id, patient_age, patient_gender,
                                     start_time, status)
    SELECT 'PROC-W' || lpad(nextval('workload_seq')::text, 8, '0'), r.robot_id,
           'SRG-' || lpad((:sn)::text, 4, '0'), r.facility_id,
           'Cholecystectomy', 'General', 'PT-ROLLBACK', 50, 'F', now(), 'in_progress'
    FROM surgical_robots r
    WHERE r.robot_id = 'ROB-' || lpad((:rn)::text, 3, '0')
    RETURNING procedure_id, start_time
)
INSERT INTO procedure_telemetry (procedure_id, sample_timestamp, tool_type, tool_active, video_fps)
SELECT p.procedure_id, p.start_time + make_interval(secs => g), 'Cadiere Forceps', true, 60
FROM p, generate_series(1, 5) AS g;
UPDATE surgical_robots SET total_procedures_count = total_procedures_count + :delta
WHERE robot_id = 'ROB-' || lpad((:rn)::text, 3, '0');
UPDATE facilities SET bed_count = bed_count + :delta
WHERE facility_id = 'FAC-' || lpad((:fn)::text, 3, '0');
ROLLBACK;
