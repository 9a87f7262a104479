-- Changes on Gmail's side between two full syncs: exactly those land.
SELECT id AS mb FROM gmail_ingest.mailboxes WHERE provider_email = 'proof@example.com' \gset

-- Two new messages: one in a new thread, one replying in an existing thread.
SELECT provider_thread_id AS some_thread FROM gmail_ingest.mail_threads
 WHERE mailbox_id = :mb ORDER BY last_message_at DESC, id LIMIT 1 \gset
\set new1 `$DQ add proof@example.com`
\set new2 `$DQ add proof@example.com :some_thread`
\! $DQ reset-stats
CREATE TEMP TABLE before2 AS
SELECT (SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = :mb) AS messages,
       (SELECT count(*) FROM gmail_ingest.mail_threads WHERE mailbox_id = :mb) AS threads,
       (SELECT max(id) FROM gmail_ingest.ledger WHERE mailbox_id = :mb) AS last_event;

BEGIN;
CREATE TEMP TABLE xact0 AS
SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_xact_user_tables WHERE schemaname = 'gmail_ingest';
SELECT status, messages_inserted, messages_updated, messages_deleted, threads_inserted, threads_updated
  FROM gmail_ingest.gmail_sync(:mb, 7, force_full => true);
SELECT s.relname, s.n_tup_ins - x.n_tup_ins AS inserted, s.n_tup_upd - x.n_tup_upd AS updated,
       s.n_tup_del - x.n_tup_del AS deleted
  FROM pg_stat_xact_user_tables s JOIN xact0 x USING (relname)
 WHERE s.schemaname = 'gmail_ingest' AND s.relname IN ('mail_threads', 'mail_messages')
 ORDER BY 1;
DROP TABLE xact0;
COMMIT;
SELECT (SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = :mb) - messages AS new_messages,
       (SELECT count(*) FROM gmail_ingest.mail_threads WHERE mailbox_id = :mb) - threads AS new_threads
  FROM before2;
SELECT count(*) AS new_ones_stored, count(DISTINCT thread_id) AS in_threads,
       bool_or(provider_thread_id = :'some_thread') AS reply_joined_its_thread
  FROM gmail_ingest.mail_messages WHERE mailbox_id = :mb AND provider_message_id IN (:'new1', :'new2');
-- Only the new messages were downloaded; the thread that got a reply had its
-- stored messages' labels checked with one threads.get.
\set gets `$DQ requests proof@example.com messages.get`
\set tgets `$DQ requests proof@example.com threads.get`
SELECT :gets AS messages_get, :tgets AS threads_get;
SELECT l.event, l.detail->>'action' AS action, count(*)
  FROM gmail_ingest.ledger l, before2 b
 WHERE l.mailbox_id = :mb AND l.id > b.last_event
 GROUP BY 1, 2 ORDER BY 1, 2;

-- Labels changed on the double: exactly those messages are updated, one event each.
\set m1 `$DQ nth-id proof@example.com 7 3`
\set m2 `$DQ nth-id proof@example.com 7 5`
\! $DQ labels proof@example.com $($DQ nth-id proof@example.com 7 3) STARRED,Label_test_a - > /dev/null
\! $DQ labels proof@example.com $($DQ nth-id proof@example.com 7 5) Label_test_b - > /dev/null
TRUNCATE before2;
INSERT INTO before2 SELECT 0, 0, (SELECT max(id) FROM gmail_ingest.ledger WHERE mailbox_id = :mb);
SELECT status, messages_inserted, messages_updated
  FROM gmail_ingest.gmail_sync(:mb, 7, force_full => true);
SELECT provider_message_id = :'m1' AS is_m1, label_ids @> ARRAY['STARRED', 'Label_test_a'] AS a_added,
       label_ids @> ARRAY['Label_test_b'] AS b_added
  FROM gmail_ingest.mail_messages WHERE mailbox_id = :mb AND provider_message_id IN (:'m1', :'m2')
 ORDER BY 1;
SELECT l.event, l.detail->>'action' AS action, count(*)
  FROM gmail_ingest.ledger l, before2 b
 WHERE l.mailbox_id = :mb AND l.id > b.last_event AND l.event = 'message.ingested'
 GROUP BY 1, 2 ORDER BY 1, 2;
SELECT * FROM gmail_ingest.verify(:mb);
