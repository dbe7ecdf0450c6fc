-- Email and LinkedIn coverage by seniority: for each seniority, how many contacts there are
-- and what share has a work email, a personal email, a LinkedIn profile, or is a decision maker.
-- Run: make sql FILE=sql/analytics/coverage_by_seniority.sql
SELECT
    coalesce(seniority, '(none)') AS seniority,
    count(*) AS contacts,
    round(100.0 * count(work_email) / count(*), 1) AS work_email_pct,
    round(100.0 * count(*) FILTER (WHERE len(personal_emails) > 0) / count(*), 1)
        AS personal_email_pct,
    round(100.0 * count(linkedin_url) / count(*), 1) AS linkedin_pct,
    round(100.0 * count(*) FILTER (WHERE is_decision_maker) / count(*), 1) AS decision_maker_pct
FROM contacts
GROUP BY ALL
ORDER BY contacts DESC;
