-- Warehouse: population of dim_date and dim_time (tables from 001_tables.sql).
--
-- Pure SQL (generate_series), idempotent (INSERT ... ON CONFLICT DO NOTHING:
-- running it again inserts nothing and changes nothing). Unqualified names:
-- run with the warehouse schema on the search_path, e.g.
--
--   psql -v ON_ERROR_STOP=1 -c 'SET search_path TO dw' -f schemas/warehouse/002_dim_date_time.sql
--
-- Derived from the seed's 02-populate-dimensions.sql, with these differences:
--   * range 2020-01-01 .. 2035-12-31 (5,844 days; the seed had 10 years);
--   * month_name / day_name without the blank padding of to_char's 'Month' /
--     'Day' ('May', not 'May      '), always English;
--   * holidays (the seed's fixed dates Jan 1, Jul 4, Dec 25) are computed in
--     the INSERT instead of by later UPDATEs, so a re-run is a no-op.

-- dim_date: one row per day. Fiscal year starts on October 1 and is named
-- after the calendar year it ends in (2024-10-01 is in FY2025, fiscal Q1).
INSERT INTO dim_date (date_key, date, year, quarter, month, month_name, week,
                      day_of_month, day_of_week, day_name, is_weekend, is_holiday,
                      fiscal_year, fiscal_quarter)
SELECT
    to_char(d, 'YYYYMMDD')::integer                           AS date_key,
    d                                                         AS date,
    extract(year    FROM d)::smallint                         AS year,
    extract(quarter FROM d)::smallint                         AS quarter,
    extract(month   FROM d)::smallint                         AS month,
    to_char(d, 'FMMonth')                                     AS month_name,
    extract(week    FROM d)::smallint                         AS week,
    extract(day     FROM d)::smallint                         AS day_of_month,
    extract(dow     FROM d)::smallint                         AS day_of_week,
    to_char(d, 'FMDay')                                       AS day_name,
    extract(dow FROM d) IN (0, 6)                             AS is_weekend,
    (extract(month FROM d), extract(day FROM d)) IN ((1, 1), (7, 4), (12, 25))
                                                              AS is_holiday,
    (extract(year FROM d) + CASE WHEN extract(month FROM d) >= 10 THEN 1 ELSE 0 END)::smallint
                                                              AS fiscal_year,
    (CASE
        WHEN extract(month FROM d) IN (10, 11, 12) THEN 1
        WHEN extract(month FROM d) IN (1, 2, 3)    THEN 2
        WHEN extract(month FROM d) IN (4, 5, 6)    THEN 3
        ELSE 4
     END)::smallint                                           AS fiscal_quarter
FROM generate_series(DATE '2020-01-01', DATE '2035-12-31', INTERVAL '1 day') AS g(ts)
CROSS JOIN LATERAL (SELECT g.ts::date AS d) AS x
ON CONFLICT (date_key) DO NOTHING;

-- dim_time: one row per minute of the day (1,440 rows), key HHMM00.
INSERT INTO dim_time (time_key, time_value, hour, minute, second, hour_12, am_pm,
                      time_of_day, business_hours)
SELECT
    h * 10000 + m * 100                                       AS time_key,
    make_time(h, m, 0)                                        AS time_value,
    h::smallint                                               AS hour,
    m::smallint                                               AS minute,
    0::smallint                                               AS second,
    (CASE WHEN h = 0 THEN 12 WHEN h > 12 THEN h - 12 ELSE h END)::smallint
                                                              AS hour_12,
    CASE WHEN h < 12 THEN 'AM' ELSE 'PM' END                  AS am_pm,
    CASE
        WHEN h >= 5  AND h < 12 THEN 'Morning'
        WHEN h >= 12 AND h < 17 THEN 'Afternoon'
        WHEN h >= 17 AND h < 21 THEN 'Evening'
        ELSE 'Night'
    END                                                       AS time_of_day,
    h >= 8 AND h < 18                                         AS business_hours
FROM generate_series(0, 1439) AS g(n)
CROSS JOIN LATERAL (SELECT g.n / 60 AS h, g.n % 60 AS m) AS x
ON CONFLICT (time_key) DO NOTHING;
