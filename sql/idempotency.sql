-- The proof of the two acceptance criteria: a re-run over the same window
-- creates no row and writes no tuple, and every invariant holds.
SELECT id AS mb FROM gmail_ingest.mailboxes WHERE provider_email = 'proof@example.com' \gset
\set expected_messages `$DQ window-count proof@example.com 7`
\set expected_attachments `$DQ window-attachments proof@example.com 7`
\! $DQ reset-stats

-- First sync.
SELECT mode, status, error, messages_inserted = :expected_messages AS all_messages,
       messages_inserted >= 200 AS at_least_200, attachments_inserted = :expected_attachments AS all_attachments,
       attachments_inserted >= 40 AS at_least_40, messages_vanished, messages_parse_errors,
       blobs_inserted > 0 AS blobs_written, http_requests > 0 AS counted_requests
  FROM gmail_ingest.gmail_sync(:mb, 7);
\set units `$DQ units proof@example.com`
\set gets `$DQ requests proof@example.com messages.get`
SELECT :units = quota_units AS units_match_double,
       :gets = messages_inserted AS one_get_per_message,
       quota_units::numeric / messages_inserted < 20.2 AS under_20_2_units_per_message
  FROM gmail_ingest.sync_runs WHERE mailbox_id = :mb ORDER BY id DESC LIMIT 1;
SELECT history_id IS NOT NULL AS has_history, last_synced_at IS NOT NULL AS synced,
       auth_state FROM gmail_ingest.mailboxes WHERE id = :mb;
SELECT access_token IS NOT NULL AS token_cached, access_token_expires_at > now() AS not_expired
  FROM gmail_ingest.mailbox_credentials WHERE mailbox_id = :mb;
SELECT * FROM gmail_ingest.verify(:mb);

-- Counts before the re-run.
CREATE TEMP TABLE before AS
SELECT (SELECT count(*) FROM gmail_ingest.mail_threads WHERE mailbox_id = :mb) AS threads,
       (SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = :mb) AS messages,
       (SELECT count(*) FROM gmail_ingest.mail_attachments WHERE mailbox_id = :mb) AS attachments,
       (SELECT count(*) FROM gmail_ingest.blobs) AS blobs,
       (SELECT count(*) FROM gmail_ingest.ledger WHERE mailbox_id = :mb) AS ledger;
\! $DQ reset-stats

-- The re-run, forced full, inside one transaction so its own writes can be counted.
BEGIN;
-- PostgreSQL 15 flushes table statistics at most once a second, so the
-- transaction's own writes are the difference from a snapshot taken in it.
CREATE TEMP TABLE xact0 AS
SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_xact_user_tables WHERE schemaname = 'gmail_ingest';
SELECT mode, status, messages_inserted, messages_updated, threads_inserted, threads_updated,
       attachments_inserted, blobs_inserted
  FROM gmail_ingest.gmail_sync(:mb, 7, force_full => true);
SELECT s.relname, s.n_tup_ins - x.n_tup_ins AS inserted, s.n_tup_upd - x.n_tup_upd AS updated,
       s.n_tup_del - x.n_tup_del AS deleted
  FROM pg_stat_xact_user_tables s JOIN xact0 x USING (relname)
 WHERE s.schemaname = 'gmail_ingest' AND s.relname IN ('mail_threads', 'mail_messages', 'mail_attachments', 'blobs')
 ORDER BY 1;
DROP TABLE xact0;
COMMIT;

SELECT (SELECT count(*) FROM gmail_ingest.mail_threads WHERE mailbox_id = :mb) - threads AS new_threads,
       (SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = :mb) - messages AS new_messages,
       (SELECT count(*) FROM gmail_ingest.mail_attachments WHERE mailbox_id = :mb) - attachments AS new_attachments,
       (SELECT count(*) FROM gmail_ingest.blobs) - blobs AS new_blobs,
       (SELECT count(*) FROM gmail_ingest.ledger WHERE mailbox_id = :mb) - ledger AS new_ledger_rows
  FROM before;
SELECT event FROM gmail_ingest.ledger
 WHERE mailbox_id = :mb AND sync_run_id = (SELECT max(id) FROM gmail_ingest.sync_runs WHERE mailbox_id = :mb)
 ORDER BY id;
-- The double saw no message download on the re-run: the profile and the thread list.
\set gets `$DQ requests proof@example.com messages.get`
\set lists `$DQ requests proof@example.com messages.list`
\set threadlists `$DQ requests proof@example.com threads.list`
\set profiles `$DQ requests proof@example.com profile`
SELECT :gets AS messages_get, :lists AS messages_list, :threadlists AS threads_list, :profiles AS profile;
SELECT * FROM gmail_ingest.verify(:mb);

-- Shared content: the same bytes in two messages are two attachment rows and one blob.
SELECT count(*) > count(DISTINCT sha256) AS some_content_shared,
       (SELECT count(*) FROM gmail_ingest.blobs b
         WHERE b.sha256 IN (SELECT sha256 FROM gmail_ingest.mail_attachments WHERE mailbox_id = :mb))
       = count(DISTINCT sha256) AS one_blob_per_content
  FROM gmail_ingest.mail_attachments WHERE mailbox_id = :mb;
-- Same file name, different content: different blobs.
SELECT count(*) > 0 AS same_name_different_content FROM (
  SELECT filename FROM gmail_ingest.mail_attachments WHERE mailbox_id = :mb
   GROUP BY filename HAVING count(DISTINCT sha256) > 1) s;
-- Raw bytes are kept, and storage paths follow {org}/{mailbox}/{sha256}/{filename}.
SELECT count(*) FILTER (WHERE raw_sha256 IS NULL) AS messages_without_raw FROM gmail_ingest.mail_messages WHERE mailbox_id = :mb;
SELECT count(*) FILTER (WHERE storage_path <> format('%s/%s/%s/%s', m.org_id, a.mailbox_id, a.sha256, a.filename)) AS bad_paths
  FROM gmail_ingest.mail_attachments a JOIN gmail_ingest.mailboxes m ON m.id = a.mailbox_id WHERE a.mailbox_id = :mb;
-- Threads include messages outside the window only as far as they are stored.
SELECT count(*) FILTER (WHERE message_count <> (SELECT count(*) FROM gmail_ingest.mail_messages m
        WHERE m.mailbox_id = t.mailbox_id AND m.thread_id = t.id)) AS bad_counts
  FROM gmail_ingest.mail_threads t WHERE mailbox_id = :mb;
-- No draft, spam or trash message was ingested by a full sync.
SELECT count(*) AS excluded_labels FROM gmail_ingest.mail_messages
 WHERE mailbox_id = :mb AND label_ids && ARRAY['DRAFT', 'SPAM', 'TRASH'];
