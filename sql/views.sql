-- The views analysts query (`quarry sql`): `companies` and `contacts` with exactly the columns
-- of the drop schema (SPEC section 4), over the snapshot's tables. created_at is a UTC instant.

CREATE OR REPLACE VIEW companies AS
SELECT id, name, domain, industry, "function", city, state, country, technologies,
       employee_count, timezone('UTC', created_at) AS created_at, linkedin_url,
       generic_emails
FROM company;

CREATE OR REPLACE VIEW contacts AS
SELECT id, company_id, first_name, last_name, job_title, department, seniority, work_email,
       personal_emails, linkedin_url, is_decision_maker
FROM contact;
