-- Refresh, step 3: the snapshot's query tables, in the attached database `snap`.
-- Input: checked_companies, checked_contacts. Only good rows (reason IS NULL) go in.
--
-- company / contact hold the records sorted by id, plus lower-case match keys and flags so
-- that a search compares short, pre-folded values instead of folding strings on every row.
-- company_technology and title are small lookup tables: a technology filter and a job-title
-- substring match run over them, then select rows by integer id.

CREATE TABLE snap.company AS
SELECT
    CAST(row_number() OVER (ORDER BY id) - 1 AS INTEGER) AS idx,
    id, name, domain,
    CASE WHEN domain IS NOT NULL
         THEN nullif(lower(list_last(string_split(rtrim(domain, '.'), '.'))), '') END AS tld,
    industry, "function", city, state, country, technologies, employee_count, created_at,
    lower(industry) AS industry_key,
    lower("function") AS function_key,
    lower(city) AS city_key,
    lower(state) AS state_key,
    lower(country) AS country_key
FROM checked_companies
WHERE reason IS NULL
ORDER BY id;

CREATE TABLE snap.company_technology AS
SELECT DISTINCT lower(tech) AS tech_key, idx AS company_idx
FROM (SELECT idx, unnest(technologies) AS tech FROM snap.company)
ORDER BY tech_key, company_idx;

CREATE TABLE snap.title AS
SELECT CAST(row_number() OVER (ORDER BY title_key) - 1 AS INTEGER) AS idx, title_key
FROM (SELECT DISTINCT lower(job_title) AS title_key FROM checked_contacts
      WHERE reason IS NULL AND job_title IS NOT NULL);

CREATE TABLE snap.contact AS
SELECT
    k.id, k.company_id, co.idx AS company_idx,
    k.first_name, k.last_name, k.job_title, k.department, k.seniority,
    k.work_email, k.personal_emails, k.linkedin_url, k.is_decision_maker,
    ti.idx AS title_idx,
    lower(k.department) AS department_key,
    lower(k.seniority) AS seniority_key,
    len(k.personal_emails) > 0 AS has_personal_email,
    k.linkedin_url IS NOT NULL AS has_linkedin
FROM checked_contacts k
JOIN snap.company co ON co.id = k.company_id
LEFT JOIN snap.title ti ON ti.title_key = lower(k.job_title)
WHERE k.reason IS NULL
ORDER BY k.id;
