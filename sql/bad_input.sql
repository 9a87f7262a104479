-- Bad input gets a clear ERROR with a proper SQLSTATE, never a crash or a NULL.
\set VERBOSITY sqlstate
SELECT gmail_ingest.gmail_sync(NULL);
\set VERBOSITY default
SELECT gmail_ingest.gmail_sync(NULL);
SELECT gmail_ingest.gmail_sync(1, NULL);
SELECT gmail_ingest.gmail_sync(1, 7, NULL);
SELECT gmail_ingest.gmail_sync(999999);
SELECT gmail_ingest.gmail_sync(1, 0);
SELECT gmail_ingest.gmail_sync(1, 3651);
SELECT gmail_ingest.gmail_sync(1, -5);
-- The backfill step names itself, and a NULL batch is not a plain sync.
SELECT gmail_ingest._backfill_step(1, 7, NULL);
SELECT gmail_ingest._backfill_step(NULL, 7, 500);
SELECT gmail_ingest._backfill_step(1, 7, 0);
SELECT gmail_ingest.verify(NULL);
SELECT gmail_ingest.verify(424242);
SELECT gmail_ingest.add_mailbox(NULL, 'a@b.c', 'x');
SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-00000000000a', NULL, 'x');
SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-00000000000a', 'a@b.c', NULL);
SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-00000000000a', 'not-an-address', 'x');
SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-00000000000a', 'a@b.c', '   ');

-- A mailbox without credentials.
INSERT INTO gmail_ingest.mailboxes (org_id, provider_email)
VALUES ('00000000-0000-0000-0000-00000000000b', 'nocreds@example.com');
SELECT gmail_ingest.gmail_sync(id) FROM gmail_ingest.mailboxes WHERE provider_email = 'nocreds@example.com';

-- Missing client id or secret.
BEGIN;
SET LOCAL gmail_ingest.client_id = '';
SELECT gmail_ingest.gmail_sync(1);
ROLLBACK;
BEGIN;
SET LOCAL gmail_ingest.client_secret = '';
SELECT gmail_ingest.gmail_sync(1);
ROLLBACK;

-- Settings that could redirect a token are checked.
SET gmail_ingest.api_base_url = 'http://gmail.example.com';
SET gmail_ingest.oauth_token_url = 'ftp://127.0.0.1/token';
SET gmail_ingest.quota_costs = 'messages.get=abc';
SET gmail_ingest.quota_costs = 'bogus.method=5';
SET gmail_ingest.max_concurrency = 0;
SET gmail_ingest.no_such_setting = 1;

-- None of this left a run behind.
SELECT count(*) AS runs FROM gmail_ingest.sync_runs;
