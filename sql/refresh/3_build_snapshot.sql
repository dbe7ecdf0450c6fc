-- Refresh, step 3: the snapshot's query tables, in the attached database `snap`.
-- Input: checked_companies, checked_contacts. Only good rows (reason IS NULL) go in.
--
-- Shapes chosen by measurement at 1M companies / 10M contacts (see README, Performance):
-- * company / contact hold the records sorted by id, with a dense integer position (idx, cidx)
--   in id order, lower-case match keys and flags, so a search compares short pre-folded values.
-- * contact repeats its company's match keys (industry_key ... created_at, employee_count and
--   the company flags): those company filters are then a plain column test on contact, with
--   no join per row. Technologies, domains and company names, whose matches are few
--   companies, select the contacts by company_idx instead.
-- * company.contact_count answers the total of a contacts search that filters companies only.
-- * company_technology (sorted by technology), company_domain (sorted by the domain's hash) and
--   title (distinct titles) are lookup tables: a technology or domains filter or a job-title
--   substring match runs over them, then selects by integer.

CREATE TABLE company_base AS
SELECT
    CAST(row_number() OVER (ORDER BY id) - 1 AS INTEGER) AS idx,
    id, name, domain,
    -- The tld is the last label of the normalised domain (SPEC 3.1), as the filter's.
    list_last(string_split(normalised_domain(domain), '.')) AS tld,
    industry, "function", city, state, country, technologies, employee_count, created_at,
    linkedin_url, generic_emails,
    lower(industry) AS industry_key,
    lower("function") AS function_key,
    lower(city) AS city_key,
    lower(state) AS state_key,
    lower(country) AS country_key,
    normalised_domain(domain) AS domain_key,
    normalised_text(name) AS name_key,
    linkedin_url IS NOT NULL AS company_has_linkedin,
    len(generic_emails) > 0 AS company_has_generic_email
FROM checked_companies
WHERE reason IS NULL
ORDER BY id;

CREATE TABLE snap.title AS
SELECT CAST(row_number() OVER (ORDER BY title_key) - 1 AS INTEGER) AS idx, title_key
FROM (SELECT DISTINCT lower(job_title) AS title_key FROM checked_contacts
      WHERE reason IS NULL AND job_title IS NOT NULL);

CREATE TABLE snap.contact AS
SELECT
    CAST(row_number() OVER (ORDER BY k.id) - 1 AS INTEGER) AS cidx,
    k.id, k.company_id, co.idx AS company_idx,
    k.first_name, k.last_name, k.job_title, k.department, k.seniority,
    k.work_email, k.personal_emails, k.linkedin_url, k.is_decision_maker,
    ti.idx AS title_idx,
    lower(k.department) AS department_key,
    lower(k.seniority) AS seniority_key,
    len(k.personal_emails) > 0 AS has_personal_email,
    k.linkedin_url IS NOT NULL AS has_linkedin,
    co.industry_key, co.function_key, co.tld, co.city_key, co.state_key, co.country_key,
    co.created_at, co.employee_count, co.company_has_linkedin, co.company_has_generic_email
FROM checked_contacts k
JOIN company_base co ON co.id = k.company_id
LEFT JOIN snap.title ti ON ti.title_key = lower(k.job_title)
WHERE k.reason IS NULL
ORDER BY k.id;

CREATE TABLE snap.company AS
SELECT co.*, coalesce(counted.contact_count, 0) AS contact_count
FROM company_base co
LEFT JOIN (SELECT company_idx, count(*) AS contact_count FROM snap.contact GROUP BY ALL) counted
    ON counted.company_idx = co.idx
ORDER BY co.idx;

-- company_domain: each company's normalised domain beside its hash, sorted by hash. The domains
-- filter (up to 1,000 values) finds its companies by the hash, an integer, and checks the text
-- of those only: at 1M companies 20 ms instead of 30 ms for comparing every domain as text.
CREATE TABLE snap.company_domain AS
SELECT hash(domain_key) AS h, domain_key, idx FROM snap.company
WHERE domain_key IS NOT NULL
ORDER BY h;

CREATE TABLE snap.company_technology AS
SELECT DISTINCT lower(tech) AS tech_key, idx AS company_idx
FROM (SELECT idx, unnest(technologies) AS tech FROM snap.company)
ORDER BY tech_key, company_idx;

DROP TABLE company_base;
