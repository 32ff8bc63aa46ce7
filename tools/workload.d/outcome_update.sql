-- outcome_update: a readmission within 30 days is reported after the fact.
-- Flags readmission_30day, extends the stay and lowers satisfaction on an
-- existing outcome: 70% a workload-created procedure, 30% a seeded one.
-- The target key is computed once (InitPlan) so the lookup uses the PK index.
\set pick random(1, 100)
\set h random(1, 2000)
\set extra random(1, 6)
BEGIN;
UPDATE procedure_outcomes o
SET readmission_30day = true,
    hospital_stay_days = coalesce(o.hospital_stay_days, 0) + :extra,
    patient_satisfaction_score = greatest(1.0, o.patient_satisfaction_score - 1.5)
WHERE o.procedure_id = (
    SELECT procedure_id FROM procedure_outcomes
    WHERE procedure_id >= (SELECT CASE WHEN :pick <= 30
                                       THEN 'PROC-' || lpad((:h)::text, 6, '0')
                                       ELSE 'PROC-W' || lpad((1 + floor(random() * last_value))::bigint::text, 8, '0')
                                  END
                           FROM workload_seq)
      AND readmission_30day IS NOT TRUE
    ORDER BY procedure_id
    LIMIT 1);
COMMIT;
