-- Companies by country and industry: the 50 largest (country, industry) groups, with their
-- company count, median head count and the group's share of all companies.
-- Run: make sql FILE=sql/analytics/companies_by_country_industry.sql
SELECT
    coalesce(country, '(unknown)') AS country,
    coalesce(industry, '(unknown)') AS industry,
    count(*) AS companies,
    median(employee_count) AS median_employees,
    round(100.0 * count(*) / sum(count(*)) OVER (), 2) AS share_pct
FROM companies
GROUP BY ALL
ORDER BY companies DESC, country, industry
LIMIT 50;
