-- Refresh, step 2: type and check every contact row of the drop.
-- Input: raw_contacts (text columns, personal_emails as a text list), checked_companies.
-- Output: checked_contacts with typed values and `reason` (NULL = good).

CREATE TABLE typed_contacts AS
SELECT
    source_row,
    clean_text(id) AS id,
    clean_text(company_id) AS company_id,
    clean_text(first_name) AS first_name,
    clean_text(last_name) AS last_name,
    clean_text(job_title) AS job_title,
    clean_text(department) AS department,
    clean_text(seniority) AS seniority,
    clean_text(work_email) AS work_email,
    clean_list(personal_emails) AS personal_emails,
    clean_text(linkedin_url) AS linkedin_url,
    clean_text(is_decision_maker) AS is_decision_maker_text,
    CASE lower(clean_text(is_decision_maker))
        WHEN 'true' THEN true WHEN '1' THEN true
        WHEN 'false' THEN false WHEN '0' THEN false
    END AS is_decision_maker
FROM raw_contacts;

CREATE TABLE checked_contacts AS
WITH duplicated AS (
    -- A drop that disagrees with itself is not guessed at: every row of such an id goes.
    SELECT id FROM typed_contacts WHERE id IS NOT NULL GROUP BY id HAVING count(*) > 1
),
company_state AS (
    SELECT id, min(reason) AS reason FROM checked_companies WHERE id IS NOT NULL GROUP BY id
)
SELECT
    t.* EXCLUDE (is_decision_maker_text, is_decision_maker),
    coalesce(t.is_decision_maker, false) AS is_decision_maker,
    CASE
        WHEN t.id IS NULL THEN 'missing required value: id'
        WHEN t.company_id IS NULL THEN 'missing required value: company_id'
        WHEN t.is_decision_maker_text IS NOT NULL AND t.is_decision_maker IS NULL
            THEN 'unreadable value: is_decision_maker'
        WHEN d.id IS NOT NULL THEN 'duplicate id'
        WHEN c.id IS NULL THEN 'company missing: no company with this company_id'
        WHEN c.reason IS NOT NULL THEN 'company left out: its company row was rejected'
    END AS reason
FROM typed_contacts t
LEFT JOIN duplicated d ON d.id = t.id
LEFT JOIN company_state c ON c.id = t.company_id;

DROP TABLE typed_contacts;
