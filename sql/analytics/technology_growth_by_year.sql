-- The most used technologies and their growth: the 20 technologies used by the most companies,
-- with how many companies that were added in each of the last three years use them, and the
-- growth of the last full year over the year before.
-- Run: make sql FILE=sql/analytics/technology_growth_by_year.sql
WITH usage AS (
    SELECT unnest(technologies) AS technology, year(created_at) AS added_year
    FROM companies
),
top AS (
    SELECT technology, count(*) AS companies
    FROM usage GROUP BY technology ORDER BY companies DESC, technology LIMIT 20
),
latest AS (SELECT max(added_year) AS y FROM usage)
SELECT
    t.technology,
    t.companies,
    count(*) FILTER (WHERE u.added_year = l.y - 2) AS added_two_years_before,
    count(*) FILTER (WHERE u.added_year = l.y - 1) AS added_last_full_year,
    count(*) FILTER (WHERE u.added_year = l.y) AS added_this_year,
    round(100.0 * (count(*) FILTER (WHERE u.added_year = l.y - 1))
          / nullif(count(*) FILTER (WHERE u.added_year = l.y - 2), 0) - 100, 1) AS growth_pct
FROM top t
JOIN usage u USING (technology)
CROSS JOIN latest l
GROUP BY t.technology, t.companies
ORDER BY t.companies DESC, t.technology;
