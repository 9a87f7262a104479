-- Access tokens are cached with their expiry, refreshed a minute early and
-- once on a 401; invalid_grant marks the mailbox for re-authorization.
SELECT id AS mb FROM gmail_ingest.mailboxes WHERE provider_email = 'other@example.com' \gset
SELECT access_token AS first_token FROM gmail_ingest.mailbox_credentials WHERE mailbox_id = :mb \gset

-- A cached token that is still valid is reused.
\! $DQ reset-stats
SELECT status FROM gmail_ingest.gmail_sync(:mb, 7);
\set tokens `$DQ token-requests other@example.com`
SELECT :tokens AS token_requests;

-- Gmail drops the token early: one 401, exactly one refresh, and the sync succeeds.
\! python3 test/double/double_client.py "$DOUBLE_URL" POST /admin/expire_tokens '{}' > /dev/null
SELECT status, error FROM gmail_ingest.gmail_sync(:mb, 7, force_full => true);
\set tokens `$DQ token-requests other@example.com`
\set unauthorized `$DQ unauthenticated`
SELECT :tokens AS token_requests, :unauthorized AS answers_401,
       access_token <> :'first_token' AS token_replaced, access_token_expires_at > now() + interval '50 minutes' AS fresh
  FROM gmail_ingest.mailbox_credentials WHERE mailbox_id = :mb;

-- A token within a minute of its expiry is refreshed before use, without a 401.
UPDATE gmail_ingest.mailbox_credentials SET access_token_expires_at = now() + interval '30 seconds' WHERE mailbox_id = :mb;
\! $DQ reset-stats
SELECT status FROM gmail_ingest.gmail_sync(:mb, 7);
\set tokens `$DQ token-requests other@example.com`
\set unauthorized `$DQ unauthenticated`
SELECT :tokens AS token_requests, :unauthorized AS answers_401;

-- The grant is revoked: the run is recorded as failed, nothing is retried,
-- the mailbox needs re-authorization, and a WARNING says so.
\! python3 test/double/double_client.py "$DOUBLE_URL" POST /admin/mailboxes/other@example.com/revoke '{}' > /dev/null
\! $DQ reset-stats
SELECT mode, status, error, messages_inserted FROM gmail_ingest.gmail_sync(:mb, 7, force_full => true);
\set tokens `$DQ token-requests other@example.com`
SELECT :tokens AS token_requests_not_retried;
SELECT auth_state FROM gmail_ingest.mailboxes WHERE id = :mb;
SELECT event, detail FROM gmail_ingest.ledger
 WHERE sync_run_id = (SELECT max(id) FROM gmail_ingest.sync_runs WHERE mailbox_id = :mb) ORDER BY id;

-- With raise_on_failure the same failure is an ERROR with its SQLSTATE.
SET gmail_ingest.raise_on_failure = on;
\set VERBOSITY sqlstate
SELECT status FROM gmail_ingest.gmail_sync(:mb, 7);
\set VERBOSITY default
RESET gmail_ingest.raise_on_failure;

-- Re-consent: the grant works again and add_mailbox clears the state.
\! python3 test/double/double_client.py "$DOUBLE_URL" POST /admin/mailboxes/other@example.com/revoke '{"revoked": false}' > /dev/null
SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-00000000000b', 'other@example.com', 'rt-other') = :mb AS same_mailbox;
SELECT auth_state FROM gmail_ingest.mailboxes WHERE id = :mb;
SELECT status FROM gmail_ingest.gmail_sync(:mb, 7);

-- A refresh token that belongs to another account would file its mail under
-- this mailbox: refused, recorded, nothing stored.
SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-00000000000b', 'mismatch@example.com', 'rt-other') AS mismatch \gset
SELECT status, error, messages_inserted FROM gmail_ingest.gmail_sync(:mismatch, 7);
SELECT count(*) AS stored FROM gmail_ingest.mail_messages WHERE mailbox_id = :mismatch;

-- No secret appears in any run's error or the ledger.
SELECT count(*) AS runs_with_secrets
  FROM gmail_ingest.sync_runs r, gmail_ingest.mailbox_credentials c
 WHERE strpos(coalesce(r.error, ''), c.refresh_token) > 0
    OR strpos(coalesce(r.error, ''), c.access_token) > 0
    OR strpos(coalesce(r.error, ''), :'first_token') > 0
    OR strpos(coalesce(r.error, ''), 'test-client-secret') > 0;
SELECT count(*) AS ledger_rows_with_secrets
  FROM gmail_ingest.ledger l, gmail_ingest.mailbox_credentials c
 WHERE strpos(l.detail::text, c.refresh_token) > 0 OR strpos(l.detail::text, c.access_token) > 0
    OR strpos(l.detail::text, 'test-client-secret') > 0;
