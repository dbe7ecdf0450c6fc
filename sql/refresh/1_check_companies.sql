-- Refresh, step 1: type and check every company row of the drop.
-- Input: raw_companies (every column as text, technologies as a text list, source_row).
-- Output: checked_companies, one row per input row: typed values, and `reason` (NULL = good).
-- Rules are SPEC section 4; the first broken rule of a row is its reason.

-- Text is put in Unicode NFC, so that one spelling composed two ways (u + U+0308, or ü) is one
-- value: matched alike (requests are NFC too, service/search_requests.py) and served alike.
CREATE MACRO clean_text(x) AS nullif(trim(nfc_normalize(x), whitespace_chars()), '');
-- A list column: each item cleaned, the empty ones dropped; no list at all is an empty list.
CREATE MACRO clean_list(xs) AS
    coalesce(list_filter(list_transform(xs, lambda v: clean_text(v)), lambda v: v IS NOT NULL),
             []::VARCHAR[]);

CREATE TABLE typed_companies AS
SELECT
    source_row,
    clean_text(id) AS id,
    clean_text(name) AS name,
    lower(clean_text(domain)) AS domain,
    clean_text(industry) AS industry,
    clean_text("function") AS "function",
    clean_text(city) AS city,
    clean_text(state) AS state,
    clean_text(country) AS country,
    clean_list(technologies) AS technologies,
    clean_text(employee_count) AS employee_count_text,
    CASE WHEN regexp_full_match(clean_text(employee_count), '[+-]?[0-9]{1,18}')
         THEN CAST(clean_text(employee_count) AS BIGINT) END AS employee_count,
    clean_text(created_at) AS created_at_text,
    timezone('UTC', try_cast(clean_text(created_at) AS TIMESTAMPTZ)) AS created_at,
    clean_text(linkedin_url) AS linkedin_url,
    clean_list(generic_emails) AS generic_emails
FROM raw_companies;

CREATE TABLE checked_companies AS
WITH duplicated AS (
    -- A drop that disagrees with itself is not guessed at: every row of such an id goes.
    SELECT id FROM typed_companies WHERE id IS NOT NULL GROUP BY id HAVING count(*) > 1
)
SELECT
    t.* EXCLUDE (employee_count_text, created_at_text),
    CASE
        WHEN t.id IS NULL THEN 'missing required value: id'
        WHEN t.name IS NULL THEN 'missing required value: name'
        WHEN t.created_at_text IS NULL THEN 'missing required value: created_at'
        WHEN t.created_at IS NULL THEN 'unreadable value: created_at'
        WHEN t.employee_count_text IS NOT NULL AND t.employee_count IS NULL
            THEN 'unreadable value: employee_count'
        WHEN t.employee_count < 0 THEN 'invalid value: employee_count is negative'
        WHEN d.id IS NOT NULL THEN 'duplicate id'
    END AS reason
FROM typed_companies t
LEFT JOIN duplicated d ON d.id = t.id;

DROP TABLE typed_companies;
