-- Where the decision makers sit: decision makers per department, and how reachable they are
-- (share with a work email or a LinkedIn profile).
-- Run: make sql FILE=sql/analytics/decision_makers_by_department.sql
SELECT
    coalesce(department, '(none)') AS department,
    count(*) AS decision_makers,
    round(100.0 * count(work_email) / count(*), 1) AS work_email_pct,
    round(100.0 * count(linkedin_url) / count(*), 1) AS linkedin_pct
FROM contacts
WHERE is_decision_maker
GROUP BY ALL
ORDER BY decision_makers DESC;
