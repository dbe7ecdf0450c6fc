-- The match keys of SPEC 3.1 and 3.6, written once: the refresh folds the data with these
-- macros, and they are stored in the snapshot (quarry.duckdb), so that the server folds the
-- request values with the very same ones. Each gives NULL for a value that is empty once
-- folded. Text is compared lower-cased in Unicode NFC (SPEC 3.1).

CREATE OR REPLACE MACRO normalised_text(x) AS nullif(lower(nfc_normalize(x)), '');

-- A domain: lower-cased; a leading http:// or https://, then a leading www., removed; cut at
-- the first / ? # or :; trailing dots removed (`https://www.Acme.io/about` is `acme.io`).
CREATE OR REPLACE MACRO normalised_domain(x) AS nullif(rtrim(regexp_extract(
    lower(nfc_normalize(x)), '^(?:https?://)?(?:www\.)?([^/?#:]*)', 1), '.'), '');

-- A LinkedIn URL: lower-cased; the scheme, then a leading www. or two-letter country
-- subdomain, removed; cut at the query or fragment; trailing slashes removed
-- (`https://uk.linkedin.com/in/Ada-L/?trk=x` is `linkedin.com/in/ada-l`). The first branch
-- is the same rule for the URL almost every row has, without the regular expression, which
-- cost 5 s per 10M values.
CREATE OR REPLACE MACRO normalised_linkedin(x) AS nullif(CASE
    WHEN starts_with(x, 'https://www.linkedin.com/') AND NOT contains(x, '?')
         AND NOT contains(x, '#') AND NOT ends_with(x, '/')
        THEN 'linkedin.com/' || lower(nfc_normalize(substring(x, 26)))
    ELSE rtrim(regexp_extract(lower(nfc_normalize(x)),
                              '^(?:[a-z][a-z0-9+.-]*://)?(?:www\.|[a-z]{2}\.)?([^?#]*)', 1), '/')
    END, '');
