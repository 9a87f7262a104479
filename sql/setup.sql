-- Two demo mailboxes on the Gmail API double, registered with add_mailbox.
CREATE EXTENSION gmail_ingest;
\! python3 test/double/double_client.py "$DOUBLE_URL" POST /admin/reset '{}' > /dev/null
\! python3 test/double/double_client.py "$DOUBLE_URL" POST /admin/mailboxes '{"email":"proof@example.com","refresh_token":"rt-proof","seed":7,"threads":90,"messages":420,"days":9,"window_days":7,"attachments":260}' > /dev/null
\! python3 test/double/double_client.py "$DOUBLE_URL" POST /admin/mailboxes '{"email":"other@example.com","refresh_token":"rt-other","seed":8,"threads":10,"messages":30,"days":10,"window_days":7,"attachments":8}' > /dev/null

SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-00000000000a', 'proof@example.com', 'rt-proof') AS proof_id;
SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-00000000000b', 'Other@Example.com', 'rt-other') AS other_id;
-- Re-adding is an upsert: same id, the token is replaced.
SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-00000000000a', 'proof@example.com', 'rt-proof') AS proof_again;
SELECT id, provider_email, history_id, auth_state FROM gmail_ingest.mailboxes ORDER BY id;
SELECT mailbox_id, refresh_token IS NOT NULL AS has_refresh, access_token IS NULL AS no_access_yet
  FROM gmail_ingest.mailbox_credentials ORDER BY mailbox_id;

-- Nothing is granted to PUBLIC.
SELECT count(*) AS public_grants
  FROM information_schema.role_table_grants
 WHERE table_schema = 'gmail_ingest' AND grantee = 'PUBLIC';
SELECT count(*) AS public_function_grants
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'gmail_ingest' AND has_function_privilege('public', p.oid, 'EXECUTE')
   AND p.proname NOT LIKE '\_%';
-- Every table holding user data is kept by pg_dump.
SELECT c.relname FROM pg_extension e, unnest(e.extconfig) AS cfg(oid) JOIN pg_class c ON c.oid = cfg.oid
 WHERE e.extname = 'gmail_ingest' ORDER BY 1;
-- Every object of the extension has a COMMENT.
SELECT pg_describe_object(d.classid, d.objid, 0) AS uncommented
  FROM pg_depend d JOIN pg_extension e ON d.refobjid = e.oid AND d.refclassid = 'pg_extension'::regclass
 WHERE e.extname = 'gmail_ingest' AND d.deptype = 'e'
   AND obj_description(d.objid, (SELECT relname FROM pg_class WHERE oid = d.classid)) IS NULL
 ORDER BY 1;
