-- Push (SPEC 7c): the errors for bad input of watch_mailbox,
-- unwatch_mailbox and run_push, and the checks of the pubsub settings.
-- Nothing here reaches the network: every case is refused before.
SELECT id AS proof FROM gmail_ingest.mailboxes WHERE provider_email = 'proof@example.com' \gset
SELECT watch_topic, watch_expires_at, watch_error, push_history_id
  FROM gmail_ingest.mailboxes WHERE id = :proof;
SELECT watch_topic, watch_expires_at, watch_error
  FROM gmail_ingest.mailbox_status WHERE mailbox_id = :proof;

-- 22004 for NULLs, 22023 for a topic that is not projects/P/topics/T,
-- P0002 for an unknown mailbox.
\set VERBOSITY terse
SELECT gmail_ingest.watch_mailbox(NULL, 'projects/p/topics/t');
SELECT gmail_ingest.watch_mailbox(:proof, NULL);
SELECT gmail_ingest.watch_mailbox(:proof, 'gmail');
SELECT gmail_ingest.watch_mailbox(:proof, 'projects/p/subscriptions/s');
SELECT gmail_ingest.watch_mailbox(:proof, 'projects//topics/t');
SELECT gmail_ingest.watch_mailbox(:proof, 'projects/p/topics/');
SELECT gmail_ingest.watch_mailbox(:proof, 'projects/p/topics/a b');
SELECT gmail_ingest.watch_mailbox(:proof, 'projects/p/topics/t/extra');
SELECT gmail_ingest.watch_mailbox(:proof, 'projects/p/topics/"},"labelIds":["x');
SELECT gmail_ingest.watch_mailbox(:proof, 'projects/p/topics/' || repeat('t', 256));
SELECT gmail_ingest.watch_mailbox(-1, 'projects/p/topics/t');
SELECT gmail_ingest.unwatch_mailbox(NULL);
SELECT gmail_ingest.unwatch_mailbox(-1);
SELECT watch_topic IS NULL AS still_unwatched FROM gmail_ingest.mailboxes WHERE id = :proof;

-- run_push: its runtime, and the settings it needs (as a fresh cluster has them).
SET gmail_ingest.pubsub_subscription = '';
SET gmail_ingest.pubsub_service_account = '';
CALL gmail_ingest.run_push(NULL);
CALL gmail_ingest.run_push('-1 second');
CALL gmail_ingest.run_push('1 day 1 second');
CALL gmail_ingest.run_push('1 second');
SET gmail_ingest.pubsub_subscription = 'projects/p/subscriptions/s';
CALL gmail_ingest.run_push('1 second');
SELECT gmail_ingest._push_ack(NULL, '{}');
SELECT gmail_ingest._push_ack(NULL, NULL);
SELECT gmail_ingest._push_ack(NULL, ARRAY[NULL]::text[]);
SELECT count(*) AS batches FROM gmail_ingest.push_batches;

-- The settings refuse what cannot work, and what would send a token in clear.
RESET gmail_ingest.pubsub_service_account;
SET gmail_ingest.pubsub_subscription = 'my-subscription';
SET gmail_ingest.pubsub_subscription = 'projects/p/topics/t';
SET gmail_ingest.pubsub_subscription = 'projects/p/subscriptions/s?x=1';
SET gmail_ingest.pubsub_base_url = 'http://pubsub.example.com';
SET gmail_ingest.pubsub_base_url = 'ftp://127.0.0.1';
SET gmail_ingest.pubsub_base_url = '';
SET gmail_ingest.pubsub_max_messages = 0;
SET gmail_ingest.pubsub_max_messages = 1001;
SET gmail_ingest.pubsub_subscription = 'projects/my-project/subscriptions/gmail-pull.1';
SET gmail_ingest.pubsub_base_url = 'http://127.0.0.1:1';
SHOW gmail_ingest.pubsub_subscription;
RESET gmail_ingest.pubsub_subscription;
RESET gmail_ingest.pubsub_base_url;
SHOW gmail_ingest.pubsub_max_messages;
\set VERBOSITY default
