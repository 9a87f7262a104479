-- Who may do what: settings that redirect a token are superuser-only, the
-- client secret is invisible to others, secrets and data need grants, the
-- definer functions pin search_path, and row-level security keeps each
-- organisation to its own rows while one sync role serves both.
SELECT id AS proof FROM gmail_ingest.mailboxes WHERE provider_email = 'proof@example.com' \gset
SELECT id AS other FROM gmail_ingest.mailboxes WHERE provider_email = 'other@example.com' \gset
SELECT org_id = '00000000-0000-0000-0000-00000000000a' AS proof_in_org_a,
       (SELECT org_id FROM gmail_ingest.mailboxes WHERE id = :other) = '00000000-0000-0000-0000-00000000000b' AS other_in_org_b
  FROM gmail_ingest.mailboxes WHERE id = :proof;

CREATE ROLE regress_gi_nobody;
CREATE ROLE regress_gi_syncer;
CREATE ROLE regress_gi_tenant;
GRANT USAGE ON SCHEMA gmail_ingest TO regress_gi_nobody, regress_gi_syncer, regress_gi_tenant;

-- The client secret is never stored where every role can read it: database
-- and role settings (pg_db_role_setting) and function settings (pg_proc)
-- are refused, without echoing the value.
ALTER DATABASE contrib_regression SET gmail_ingest.client_secret = 'leaked-secret';
ALTER ROLE regress_gi_nobody SET gmail_ingest.client_secret = 'leaked-secret';
CREATE FUNCTION public.gi_leak() RETURNS int LANGUAGE sql
	SET gmail_ingest.client_secret = 'leaked-secret' AS 'SELECT 1';
SELECT count(*) AS readable_secret_settings
  FROM pg_db_role_setting s, unnest(s.setconfig) c WHERE c LIKE 'gmail\_ingest.client\_secret%';
-- One stored before 1.1 refused it still applies, and every sync warns.
SET allow_system_table_mods = on;
INSERT INTO pg_db_role_setting
VALUES (0, 'regress_gi_nobody'::regrole, '{gmail_ingest.client_secret=leaked-before-1.1}');
SELECT status FROM gmail_ingest.gmail_sync(:proof, 7);
DELETE FROM pg_db_role_setting WHERE setdatabase = 0 AND setrole = 'regress_gi_nobody'::regrole;
RESET allow_system_table_mods;
SELECT status FROM gmail_ingest.gmail_sync(:proof, 7);

-- A role without grants.
SET ROLE regress_gi_nobody;
SET gmail_ingest.api_base_url = 'https://attacker.example.com';
SET gmail_ingest.oauth_token_url = 'https://attacker.example.com/token';
SET gmail_ingest.ca_file = '/tmp/attacker-ca.pem';
SET gmail_ingest.client_id = 'x';
SET gmail_ingest.client_secret = 'x';
SHOW gmail_ingest.client_secret;
SELECT current_setting('gmail_ingest.client_secret');
SELECT current_setting('gmail_ingest.client_secret', true) AS missing_ok_still_hidden;
SELECT count(*) AS visible_secret_settings FROM pg_settings WHERE name = 'gmail_ingest.client_secret';
RESET ROLE;
-- The same from a brand-new session, before anything there touched the extension.
\! psql -X -q -d contrib_regression -c "SET ROLE regress_gi_nobody" -c "SHOW gmail_ingest.client_secret" 2>&1 | sed 's/^psql:[^ ]* //'
SET ROLE regress_gi_nobody;
SELECT * FROM gmail_ingest.mailbox_credentials;
SELECT * FROM gmail_ingest.mail_messages LIMIT 1;
SELECT gmail_ingest.gmail_sync(:proof);
SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-00000000000a', 'x@example.com', 'rt');
SELECT * FROM gmail_ingest.verify(:proof);
RESET ROLE;

-- The ledger refuses changes even with every privilege and a policy that
-- shows every row.
GRANT ALL ON gmail_ingest.ledger TO regress_gi_nobody;
CREATE POLICY everything ON gmail_ingest.ledger TO regress_gi_nobody USING (true) WITH CHECK (true);
SET ROLE regress_gi_nobody;
UPDATE gmail_ingest.ledger SET event = event;
DELETE FROM gmail_ingest.ledger;
TRUNCATE gmail_ingest.ledger;
RESET ROLE;
DROP POLICY everything ON gmail_ingest.ledger;
REVOKE ALL ON gmail_ingest.ledger FROM regress_gi_nobody;

-- Every SECURITY DEFINER routine pins search_path.
SELECT p.proname, p.proconfig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'gmail_ingest' AND p.prosecdef ORDER BY 1;

-- A sync role needs EXECUTE only: no table grant, no policy.
GRANT EXECUTE ON FUNCTION gmail_ingest.gmail_sync(bigint, integer, boolean) TO regress_gi_syncer;
SET ROLE regress_gi_syncer;
SELECT mode, status FROM gmail_ingest.gmail_sync(:proof, 7);
SELECT mode, status FROM gmail_ingest.gmail_sync(:other, 7);
SELECT count(*) FROM gmail_ingest.mail_messages;
RESET ROLE;

-- A tenant role limited to organisation A by the policies the README shows.
GRANT SELECT ON gmail_ingest.mailboxes, gmail_ingest.mail_threads, gmail_ingest.mail_messages,
               gmail_ingest.mail_attachments, gmail_ingest.blobs, gmail_ingest.ledger,
               gmail_ingest.sync_runs, gmail_ingest.backfill_queue,
               gmail_ingest.mailbox_status TO regress_gi_tenant;
-- The mailbox's organisation through a function, not a subquery, so the
-- same policies hold on Citus (README).
CREATE FUNCTION public.regress_gi_tenant_mailbox(mailbox_id bigint) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET citus.allow_nested_distributed_execution = on AS $f$
	SELECT EXISTS (SELECT 1 FROM gmail_ingest.mailboxes m
	                WHERE m.id = mailbox_id AND m.org_id = current_setting('app.org_id')::uuid)
$f$;
REVOKE ALL ON FUNCTION public.regress_gi_tenant_mailbox(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.regress_gi_tenant_mailbox(bigint) TO regress_gi_tenant;
CREATE POLICY org_mailboxes ON gmail_ingest.mailboxes FOR SELECT TO regress_gi_tenant
	USING (org_id = current_setting('app.org_id')::uuid);
CREATE POLICY org_threads ON gmail_ingest.mail_threads FOR SELECT TO regress_gi_tenant
	USING (public.regress_gi_tenant_mailbox(mailbox_id));
CREATE POLICY org_messages ON gmail_ingest.mail_messages FOR SELECT TO regress_gi_tenant
	USING (public.regress_gi_tenant_mailbox(mailbox_id));
CREATE POLICY org_attachments ON gmail_ingest.mail_attachments FOR SELECT TO regress_gi_tenant
	USING (public.regress_gi_tenant_mailbox(mailbox_id));
CREATE POLICY org_runs ON gmail_ingest.sync_runs FOR SELECT TO regress_gi_tenant
	USING (public.regress_gi_tenant_mailbox(mailbox_id));
CREATE POLICY org_ledger ON gmail_ingest.ledger FOR SELECT TO regress_gi_tenant
	USING (public.regress_gi_tenant_mailbox(mailbox_id));
CREATE POLICY org_backfill ON gmail_ingest.backfill_queue FOR SELECT TO regress_gi_tenant
	USING (public.regress_gi_tenant_mailbox(mailbox_id));
CREATE POLICY org_blobs ON gmail_ingest.blobs FOR SELECT TO regress_gi_tenant
	USING (public.regress_gi_tenant_mailbox(mailbox_id));

SET ROLE regress_gi_tenant;
SET app.org_id = '00000000-0000-0000-0000-00000000000a';
SELECT (SELECT count(*) FROM gmail_ingest.mailboxes WHERE id = :other) AS b_mailboxes,
       (SELECT count(*) FROM gmail_ingest.mail_threads WHERE mailbox_id = :other) AS b_threads,
       (SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = :other) AS b_messages,
       (SELECT count(*) FROM gmail_ingest.mail_attachments WHERE mailbox_id = :other) AS b_attachments,
       (SELECT count(*) FROM gmail_ingest.ledger WHERE mailbox_id = :other) AS b_ledger,
       (SELECT count(*) FROM gmail_ingest.sync_runs WHERE mailbox_id = :other) AS b_runs,
       (SELECT count(*) FROM gmail_ingest.mailbox_status WHERE mailbox_id = :other) AS b_status;
SELECT (SELECT count(*) > 0 FROM gmail_ingest.mail_messages WHERE mailbox_id = :proof) AS sees_own_messages,
       (SELECT count(*) > 0 FROM gmail_ingest.mail_attachments WHERE mailbox_id = :proof) AS sees_own_attachments,
       (SELECT count(*) > 0 FROM gmail_ingest.ledger WHERE mailbox_id = :proof) AS sees_own_ledger;
-- Every column of mailbox_status, over the tenant's own rows.
SELECT mailbox_id = :proof AS own_mailbox, provider_email, auth_state, last_run_status,
       backfill_in_progress, backfill_queued, messages > 0 AS has_messages
  FROM gmail_ingest.mailbox_status;
RESET ROLE;
-- Blobs: content only organisation B's rows reference stays hidden from A.
CREATE TEMP TABLE b_only_blobs AS
SELECT b.sha256 FROM gmail_ingest.blobs b
 WHERE (b.sha256 IN (SELECT sha256 FROM gmail_ingest.mail_attachments WHERE mailbox_id = :other)
        OR b.sha256 IN (SELECT raw_sha256 FROM gmail_ingest.mail_messages WHERE mailbox_id = :other))
   AND b.sha256 NOT IN (SELECT sha256 FROM gmail_ingest.mail_attachments WHERE mailbox_id <> :other)
   AND b.sha256 NOT IN (SELECT raw_sha256 FROM gmail_ingest.mail_messages WHERE mailbox_id <> :other);
SELECT count(*) > 0 AS b_has_private_blobs FROM b_only_blobs;
GRANT SELECT ON b_only_blobs TO regress_gi_tenant;
SET ROLE regress_gi_tenant;
SET app.org_id = '00000000-0000-0000-0000-00000000000a';
SELECT count(*) AS b_private_blobs_visible FROM gmail_ingest.blobs WHERE sha256 IN (SELECT sha256 FROM b_only_blobs);
SELECT count(*) > 0 AS sees_own_blobs FROM gmail_ingest.blobs;
RESET ROLE;
DROP TABLE b_only_blobs;

-- Syncs of both organisations still work with the policies in place.
SET ROLE regress_gi_syncer;
SELECT status FROM gmail_ingest.gmail_sync(:proof, 7, true);
SELECT status FROM gmail_ingest.gmail_sync(:other, 7, true);
RESET ROLE;

DROP POLICY org_mailboxes ON gmail_ingest.mailboxes;
DROP POLICY org_threads ON gmail_ingest.mail_threads;
DROP POLICY org_messages ON gmail_ingest.mail_messages;
DROP POLICY org_attachments ON gmail_ingest.mail_attachments;
DROP POLICY org_runs ON gmail_ingest.sync_runs;
DROP POLICY org_ledger ON gmail_ingest.ledger;
DROP POLICY org_blobs ON gmail_ingest.blobs;
DROP POLICY org_backfill ON gmail_ingest.backfill_queue;
DROP FUNCTION public.regress_gi_tenant_mailbox(bigint);
REVOKE ALL ON ALL TABLES IN SCHEMA gmail_ingest FROM regress_gi_tenant;
REVOKE ALL ON FUNCTION gmail_ingest.gmail_sync(bigint, integer, boolean) FROM regress_gi_syncer;
REVOKE USAGE ON SCHEMA gmail_ingest FROM regress_gi_nobody, regress_gi_syncer, regress_gi_tenant;
DROP ROLE regress_gi_nobody, regress_gi_syncer, regress_gi_tenant;
