-- The fleet's schedule of each mailbox: defaults, set_schedule,
-- pause_mailbox and resume_mailbox, and the errors for bad input.
SELECT id AS proof FROM gmail_ingest.mailboxes WHERE provider_email = 'proof@example.com' \gset
SELECT sync_interval, window_days, paused, consecutive_failures, backoff_until IS NULL AS no_backoff,
       next_sync_at <= now() AS due
  FROM gmail_ingest.mailboxes WHERE id = :proof;

-- A synced mailbox is due one interval after its last sync.
SELECT gmail_ingest.set_schedule(:proof, '1 hour', 30)
       = (SELECT last_synced_at + interval '1 hour' FROM gmail_ingest.mailboxes WHERE id = :proof) AS next_is_last_plus_interval;
SELECT sync_interval, window_days FROM gmail_ingest.mailboxes WHERE id = :proof;
SELECT gmail_ingest.set_schedule(:proof, '1 minute') IS NOT NULL AS shortest_interval_accepted;
SELECT window_days AS default_window FROM gmail_ingest.mailboxes WHERE id = :proof;

SELECT gmail_ingest.pause_mailbox(:proof);
SELECT paused FROM gmail_ingest.mailbox_status WHERE mailbox_id = :proof;
SELECT gmail_ingest.pause_mailbox(:proof);		-- pausing twice is harmless
SELECT gmail_ingest.resume_mailbox(:proof);
SELECT paused, sync_interval, window_days, consecutive_failures
  FROM gmail_ingest.mailbox_status WHERE mailbox_id = :proof;

-- Bad input: 22004 for NULLs, 22023 for values out of range, P0002 for an
-- unknown mailbox.  Nothing changes.
\set VERBOSITY sqlstate
SELECT gmail_ingest.set_schedule(NULL, '1 hour');
SELECT gmail_ingest.set_schedule(:proof, NULL);
SELECT gmail_ingest.set_schedule(:proof, '1 hour', NULL);
SELECT gmail_ingest.set_schedule(:proof, '59 seconds');
SELECT gmail_ingest.set_schedule(:proof, '7 days 1 second');
SELECT gmail_ingest.set_schedule(:proof, '-1 hour');
SELECT gmail_ingest.set_schedule(:proof, '1 hour', 0);
SELECT gmail_ingest.set_schedule(:proof, '1 hour', 3651);
SELECT gmail_ingest.set_schedule(424242, '1 hour');
SELECT gmail_ingest.pause_mailbox(NULL);
SELECT gmail_ingest.pause_mailbox(424242);
SELECT gmail_ingest.resume_mailbox(NULL);
SELECT gmail_ingest.resume_mailbox(424242);
\set VERBOSITY default
SELECT gmail_ingest.set_schedule(:proof, '59 seconds');
SELECT gmail_ingest.set_schedule(424242, '1 hour');
SELECT sync_interval, window_days, paused FROM gmail_ingest.mailboxes WHERE id = :proof;
-- The table refuses what set_schedule refuses.
\set VERBOSITY terse
UPDATE gmail_ingest.mailboxes SET sync_interval = '30 seconds' WHERE id = :proof;
UPDATE gmail_ingest.mailboxes SET window_days = 0 WHERE id = :proof;
UPDATE gmail_ingest.mailboxes SET consecutive_failures = -1 WHERE id = :proof;
\set VERBOSITY default

-- Back to the defaults for the tests that follow.
SELECT gmail_ingest.set_schedule(:proof, '15 minutes') IS NOT NULL AS reset;

-- The fleet worker and its pg_cron jobs refuse bad input before any work.
\set VERBOSITY terse
CALL gmail_ingest.run_due(NULL);
CALL gmail_ingest.run_due('-1 second');
CALL gmail_ingest.run_due('2 days');
CALL gmail_ingest.run_due('1 second', 0);
SELECT gmail_ingest._run_turn(NULL);
SELECT gmail_ingest.start_workers(NULL);
SELECT gmail_ingest.start_workers(-1);
SELECT gmail_ingest.start_workers(65);
\set VERBOSITY default
-- Inside a transaction block it cannot commit its turns.
BEGIN;
CALL gmail_ingest.run_due('0 seconds');
CALL gmail_ingest.run_due('1 second', 1);
ROLLBACK;
-- With nothing due (every mailbox paused), a worker idles until its time is up.
UPDATE gmail_ingest.mailboxes SET paused = true;
SELECT clock_timestamp() AS t0 \gset
CALL gmail_ingest.run_due('1.2 seconds');
SELECT clock_timestamp() - :'t0'::timestamptz BETWEEN interval '1.2 seconds' AND interval '3 seconds' AS idled_its_time;
UPDATE gmail_ingest.mailboxes SET paused = false;
-- fleet_status: one row whose counts agree with the table.
SELECT f.mailboxes = (SELECT count(*) FROM gmail_ingest.mailboxes) AS total_ok,
       f.active + f.paused <= f.mailboxes AS states_ok,
       f.running = 0 AS none_running,
       f.lag_p50 <= f.lag_p95 AND f.lag_p95 <= f.lag_max AS lags_ordered,
       f.project_units_per_minute = current_setting('gmail_ingest.project_quota_units_per_minute')::int AS limit_ok
  FROM gmail_ingest.fleet_status f;
