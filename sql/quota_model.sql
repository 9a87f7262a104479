-- Gmail's quota models (issue 11 item 7) and the project's budget (item 6).
-- The defaults as the library defines them (the suite's postgresql.conf
-- turns the per-mailbox budget off, so boot_val, not SHOW, for that one).
SELECT name, boot_val, context FROM pg_settings
 WHERE name IN ('gmail_ingest.quota_model', 'gmail_ingest.quota_units_per_minute',
                'gmail_ingest.quota_costs', 'gmail_ingest.project_quota_units_per_minute')
 ORDER BY name;
SELECT enumvals FROM pg_settings WHERE name = 'gmail_ingest.quota_model';
SHOW gmail_ingest.quota_model;
SHOW gmail_ingest.project_quota_units_per_minute;

-- Values and errors.
SET gmail_ingest.quota_model = 'legacy';
SHOW gmail_ingest.quota_model;
SET gmail_ingest.quota_model = '2025';
SET gmail_ingest.quota_model = '';
RESET gmail_ingest.quota_model;
SET gmail_ingest.quota_units_per_minute = -2;
SET gmail_ingest.quota_costs = 'watch=100,stop=50,messages.attachments.get=20,attachments.get=20';
SET gmail_ingest.quota_costs = 'watch=-1';
RESET gmail_ingest.quota_costs;
-- The project's limit is the same for every backend: set in the
-- configuration (ALTER SYSTEM) and reloaded, never per session.
SET gmail_ingest.project_quota_units_per_minute = 1000;

-- What a model charges: two mailboxes of identical content, one synced in
-- each model, with the double charging the same model.  Every message is
-- one messages.get: 5 units in the legacy table, 20 in the 2026 one.
\! python3 test/double/double_client.py "$DOUBLE_URL" POST /admin/mailboxes '{"email":"qm-legacy@example.com","refresh_token":"rt-qm-legacy","seed":31,"threads":6,"messages":20,"days":5,"window_days":7,"content_email":"qm@example.com"}' > /dev/null
\! python3 test/double/double_client.py "$DOUBLE_URL" POST /admin/mailboxes '{"email":"qm-2026@example.com","refresh_token":"rt-qm-2026","seed":31,"threads":6,"messages":20,"days":5,"window_days":7,"content_email":"qm@example.com"}' > /dev/null
SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-00000000000a', 'qm-legacy@example.com', 'rt-qm-legacy') AS legacy_mb \gset
SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-00000000000a', 'qm-2026@example.com', 'rt-qm-2026') AS new_mb \gset
\set listed `$DQ window-count qm-legacy@example.com 7`

\! python3 test/double/double_client.py "$DOUBLE_URL" POST /admin/config '{"quota_model":"legacy"}' > /dev/null
SET gmail_ingest.quota_model = 'legacy';
SELECT status, messages_inserted = :listed AS all_listed, quota_units AS legacy_units
  FROM gmail_ingest.gmail_sync(:legacy_mb, 7) \gset
\set legacy_double `$DQ units qm-legacy@example.com`
\set legacy_gets `$DQ requests qm-legacy@example.com messages.get`

\! python3 test/double/double_client.py "$DOUBLE_URL" POST /admin/config '{"quota_model":"2026"}' > /dev/null
RESET gmail_ingest.quota_model;
SELECT status AS status_2026, messages_inserted = :listed AS all_listed_2026, quota_units AS new_units
  FROM gmail_ingest.gmail_sync(:new_mb, 7) \gset
\set new_double `$DQ units qm-2026@example.com`
\set new_gets `$DQ requests qm-2026@example.com messages.get`

SELECT :'status' AS legacy_status, :'all_listed' AS legacy_all_listed,
       :'status_2026' AS status_2026, :'all_listed_2026' AS all_listed_2026,
       :legacy_units = :legacy_double AS legacy_units_match_double,
       :new_units = :new_double AS units_2026_match_double,
       :legacy_gets = :new_gets AND :new_gets = :listed AS one_get_per_message,
       :new_units - :legacy_units = 15 * :new_gets AS fifteen_more_units_per_get;

-- quota_costs puts single values over the model's table.
SET gmail_ingest.quota_costs = 'messages.get=7';
\! python3 test/double/double_client.py "$DOUBLE_URL" POST /admin/mailboxes '{"email":"qm-7@example.com","refresh_token":"rt-qm-7","seed":31,"threads":6,"messages":20,"days":5,"window_days":7,"content_email":"qm@example.com"}' > /dev/null
\! python3 test/double/double_client.py "$DOUBLE_URL" POST /admin/config '{"costs":{"messages.get":7}}' > /dev/null
SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-00000000000a', 'qm-7@example.com', 'rt-qm-7') AS mb7 \gset
SELECT quota_units AS units7 FROM gmail_ingest.gmail_sync(:mb7, 7) \gset
\set double7 `$DQ units qm-7@example.com`
\! python3 test/double/double_client.py "$DOUBLE_URL" POST /admin/config '{"quota_model":"2026"}' > /dev/null
RESET gmail_ingest.quota_costs;
SELECT :units7 = :double7 AS override_matches_double,
       :new_units - :units7 = 13 * :new_gets AS only_messages_get_changed;

-- project_quota_usage(): its shape, and nothing for a role without a grant.
SELECT pg_get_function_arguments('gmail_ingest.project_quota_usage()'::regprocedure);
SELECT units_last_minute >= :new_units + :units7 AS counts_this_minute,
       units_per_minute = current_setting('gmail_ingest.project_quota_units_per_minute')::int AS limit_shown
  FROM gmail_ingest.project_quota_usage();
CREATE ROLE regress_gi_quota;
GRANT USAGE ON SCHEMA gmail_ingest TO regress_gi_quota;
SELECT has_function_privilege('regress_gi_quota', 'gmail_ingest.project_quota_usage()', 'EXECUTE') AS can_execute;
SET ROLE regress_gi_quota;
SELECT * FROM gmail_ingest.project_quota_usage();
RESET ROLE;
REVOKE USAGE ON SCHEMA gmail_ingest FROM regress_gi_quota;
DROP ROLE regress_gi_quota;
