#!/usr/bin/env bash
# test/demo.sh: the README's first command.  A throw-away cluster with the
# extension, the bundled Gmail API double serving a demo mailbox; syncs it,
# re-runs the sync, and prints the proof: counts before and after, zero
# duplicates, zero tuples written by the re-run, quota units of each run.
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/lib/env.sh"

gi_ensure_packages
gi_build_install
gi_start_all

gi_double POST /admin/mailboxes '{"email":"demo@example.com","refresh_token":"demo-refresh-token","seed":42,"threads":300,"messages":1200,"days":30,"window_days":7,"attachments":250}' >/dev/null

psql -X -q -v ON_ERROR_STOP=1 <<'SQL'
\pset footer off
CREATE EXTENSION gmail_ingest;
SELECT gmail_ingest.add_mailbox('6f1c2a7e-0000-4000-8000-000000000042', 'demo@example.com', 'demo-refresh-token') AS mailbox \gset

CREATE TEMP TABLE proof (step text, threads bigint, messages bigint, attachments bigint, blobs bigint,
                         duplicates bigint, tuples_written bigint, quota_units int, seconds numeric);
CREATE TEMP VIEW counts AS
SELECT (SELECT count(*) FROM gmail_ingest.mail_threads WHERE mailbox_id = :mailbox) AS threads,
       (SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = :mailbox) AS messages,
       (SELECT count(*) FROM gmail_ingest.mail_attachments WHERE mailbox_id = :mailbox) AS attachments,
       (SELECT count(*) FROM gmail_ingest.blobs) AS blobs,
       (SELECT count(*) FROM gmail_ingest.verify(:mailbox) WHERE check_name LIKE 'no duplicate%' AND NOT ok) AS duplicates;
-- Tuples this transaction wrote to the data tables.  PostgreSQL 15 flushes
-- table statistics at most once a second, so take the difference from a
-- snapshot made at the start of the transaction.
CREATE TEMP VIEW xact_writes AS
SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) AS tuples
  FROM pg_stat_xact_user_tables
 WHERE schemaname = 'gmail_ingest' AND relname IN ('mail_threads', 'mail_messages', 'mail_attachments', 'blobs');

INSERT INTO proof SELECT 'before', c.*, NULL, NULL, NULL FROM counts c;

BEGIN;
SELECT tuples AS w0 FROM xact_writes \gset
SELECT quota_units AS q, extract(epoch FROM finished_at - started_at) AS secs
  FROM gmail_ingest.gmail_sync(:mailbox, 7) \gset
INSERT INTO proof SELECT 'first sync', c.*, w.tuples - :w0, :q, round(:secs, 2) FROM counts c, xact_writes w;
COMMIT;

BEGIN;
SELECT tuples AS w0 FROM xact_writes \gset
SELECT quota_units AS q, extract(epoch FROM finished_at - started_at) AS secs
  FROM gmail_ingest.gmail_sync(:mailbox, 7, force_full => true) \gset
INSERT INTO proof SELECT 're-run (full)', c.*, w.tuples - :w0, :q, round(:secs, 2) FROM counts c, xact_writes w;
COMMIT;

BEGIN;
SELECT tuples AS w0 FROM xact_writes \gset
SELECT quota_units AS q, extract(epoch FROM finished_at - started_at) AS secs
  FROM gmail_ingest.gmail_sync(:mailbox, 7) \gset
INSERT INTO proof SELECT 're-run (incremental)', c.*, w.tuples - :w0, :q, round(:secs, 2) FROM counts c, xact_writes w;
COMMIT;

\echo
\echo 'gmail_ingest demo: one 7-day window synced, then synced again (full and incremental)'
SELECT * FROM proof;
\echo 'verify():'
SELECT check_name, ok FROM gmail_ingest.verify(:mailbox);
\echo 'ledger events of both re-runs:'
SELECT event, count(*) FROM gmail_ingest.ledger
 WHERE sync_run_id > (SELECT min(id) FROM gmail_ingest.sync_runs) GROUP BY event ORDER BY event;
SQL
