-- new_surgeon: a surgeon joins ('SRG-W' || workload_seq); new hires are
-- mostly junior, which keeps surgeon_certification supplied with candidates.
\set f random(1, 20)
\set l random(1, 20)
\set spec random(1, 5)
\set years random(1, 15)
BEGIN;
INSERT INTO surgeons (surgeon_id, surgeon_name, specialization, years_experience, certification_level)
VALUES ('SRG-W' || lpad(nextval('workload_seq')::text, 8, '0'),
        'Dr. ' || (ARRAY['Alex','Beatriz','Chidi','Dana','Emil','Farah','Gabriel','Hiro','Ines','Jamal',
                         'Katya','Liam','Meera','Nikolai','Owen','Paula','Quinn','Rosa','Stefan','Tara'])[:f]
        || ' ' || (ARRAY['Abbott','Baker','Castillo','Dubois','Eriksen','Fong','Greene','Haddad','Ivanov','Jensen',
                         'Khan','Larsen','Mendes','Nakashima','Obi','Park','Quintero','Reyes','Sato','Turner'])[:l],
        (ARRAY['General Surgery','Urology','Gynecology','Cardiothoracic','Colorectal'])[:spec],
        :years,
        CASE WHEN :years < 6 THEN 'Basic' WHEN :years < 13 THEN 'Advanced'
             WHEN :years < 22 THEN 'Expert' ELSE 'Master' END);
COMMIT;
