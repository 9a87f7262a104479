-- statement_timeout mid-transfer: Gmail hangs on a message download; the
-- statement is cancelled with PostgreSQL's own message within a second of
-- the timeout, and no row of the run remains.
SELECT id AS mb FROM gmail_ingest.mailboxes WHERE provider_email = 'other@example.com' \gset
-- The cancels' CONTEXT line names the mailbox and run ids, which depend on
-- the files run before this one: only the message is compared.
\set SHOW_CONTEXT never
\! $DQ faults '[{"endpoint": "messages.get", "kind": "delay", "ms": 30000, "count": -1}]'
CREATE TEMP TABLE before3 AS
SELECT (SELECT count(*) FROM gmail_ingest.sync_runs WHERE mailbox_id = :mb) AS runs,
       (SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = :mb) AS messages,
       (SELECT count(*) FROM gmail_ingest.mail_threads WHERE mailbox_id = :mb) AS threads,
       (SELECT count(*) FROM gmail_ingest.ledger WHERE mailbox_id = :mb) AS ledger;
SELECT clock_timestamp() AS t0 \gset
SET statement_timeout = '1s';
SELECT status FROM gmail_ingest.gmail_sync(:mb, 7);
RESET statement_timeout;
SELECT clock_timestamp() - :'t0'::timestamptz < interval '2 s' AS cancelled_within_a_second;
SELECT (SELECT count(*) FROM gmail_ingest.sync_runs WHERE mailbox_id = :mb) - runs AS runs_left,
       (SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = :mb) - messages AS messages_left,
       (SELECT count(*) FROM gmail_ingest.mail_threads WHERE mailbox_id = :mb) - threads AS threads_left,
       (SELECT count(*) FROM gmail_ingest.ledger WHERE mailbox_id = :mb) - ledger AS ledger_left
  FROM before3;

-- pg_cancel_backend from another session mid-transfer, likewise.
SELECT pg_backend_pid() AS pid \gset
\! (sleep 1; psql -XAtqc "SELECT pg_cancel_backend($(psql -XAtc "SELECT pid FROM pg_stat_activity WHERE query LIKE '%gmail_sync(%' AND pid <> pg_backend_pid() AND state = 'active' LIMIT 1"))" >/dev/null) &
SELECT clock_timestamp() AS t0 \gset
SELECT status FROM gmail_ingest.gmail_sync(:mb, 7);
SELECT clock_timestamp() - :'t0'::timestamptz < interval '3 s' AS cancelled_promptly;
\! $DQ clear-faults

-- Afterwards the mailbox syncs normally.
SELECT status, messages_inserted > 0 AS stored FROM gmail_ingest.gmail_sync(:mb, 7);
SELECT * FROM gmail_ingest.verify(:mb);
