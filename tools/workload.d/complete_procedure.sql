-- complete_procedure: the oldest in-progress procedure finishes and its
-- outcome arrives. One transaction: update the procedure (end_time,
-- duration_minutes, status 'completed'), insert its procedure_outcomes row,
-- and bump the robot's counters. SKIP LOCKED keeps concurrent clients from
-- completing the same procedure; when nothing is in progress it is a no-op.
\set dur random(45, 300)
\set comp random(0, 999)
\set succ random(0, 999)
\set blood random(0, 999)
\set stay random(0, 2)
\set sat random(0, 18)
\set readm random(0, 999)
BEGIN;
WITH p AS (
    SELECT procedure_id, robot_id, start_time, complexity_score,
           greatest(1, least(:dur, floor(extract(epoch FROM now() - start_time) / 60)))::int AS minutes
    FROM surgical_procedures
    WHERE status = 'in_progress'
    ORDER BY start_time
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), u AS (
    UPDATE surgical_procedures sp
    SET end_time = p.start_time + make_interval(mins => p.minutes),
        duration_minutes = p.minutes,
        status = 'completed'
    FROM p
    WHERE sp.procedure_id = p.procedure_id
    RETURNING sp.procedure_id, sp.robot_id, p.minutes, p.complexity_score
), c AS (
    -- complications get likelier with complexity
    SELECT u.*,
           CASE WHEN :comp < 700 - complexity_score * 20 THEN 'None'
                WHEN :comp < 900 - complexity_score * 10 THEN 'Minor'
                WHEN :comp < 975 THEN 'Moderate'
                ELSE 'Severe' END AS complication
    FROM u
), o AS (
    INSERT INTO procedure_outcomes (procedure_id, success_status, blood_loss_ml, complication_level,
                                    hospital_stay_days, patient_satisfaction_score, readmission_30day)
    SELECT procedure_id,
           CASE WHEN complication = 'Severe' AND :succ < 300 THEN 'Converted to Open'
                WHEN complication = 'Severe' AND :succ < 450 THEN 'Unsuccessful'
                WHEN complication IN ('Moderate', 'Severe') AND :succ < 600 THEN 'Partially Successful'
                WHEN :succ < 20 THEN 'Partially Successful'
                ELSE 'Successful' END,
           (15 + minutes * (0.3 + :blood / 1000.0)
               * CASE complication WHEN 'None' THEN 1 WHEN 'Minor' THEN 1.5 WHEN 'Moderate' THEN 2.5 ELSE 4 END)::int,
           complication,
           1 + :stay + CASE complication WHEN 'None' THEN 0 WHEN 'Minor' THEN 1 WHEN 'Moderate' THEN 3 ELSE 7 END,
           greatest(1.0, round(9.6 - :sat / 10.0
               - CASE complication WHEN 'None' THEN 0 WHEN 'Minor' THEN 0.8 WHEN 'Moderate' THEN 2 ELSE 3.5 END, 1)),
           :readm < CASE complication WHEN 'None' THEN 30 WHEN 'Minor' THEN 70 WHEN 'Moderate' THEN 150 ELSE 300 END
    FROM c
    RETURNING procedure_id
)
UPDATE surgical_robots r
SET total_procedures_count = r.total_procedures_count + 1,
    total_operating_hours  = r.total_operating_hours + round(u.minutes / 60.0, 2)
FROM u
WHERE r.robot_id = u.robot_id;
COMMIT;
