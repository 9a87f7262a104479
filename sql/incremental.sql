-- Incremental sync through Gmail's history: an unchanged mailbox costs one
-- history.list and writes nothing; changes land exactly; an expired history
-- id falls back to a full sync, loudly when it happens twice in a row.
SELECT id AS mb FROM gmail_ingest.mailboxes WHERE provider_email = 'proof@example.com' \gset

-- Unchanged.
\! $DQ reset-stats
BEGIN;
CREATE TEMP TABLE xact0 AS
SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_xact_user_tables WHERE schemaname = 'gmail_ingest';
SELECT mode, status, quota_units, quota_units <= 3 AS at_most_3_units, messages_inserted, messages_updated
  FROM gmail_ingest.gmail_sync(:mb, 7);
SELECT sum(s.n_tup_ins - x.n_tup_ins + s.n_tup_upd - x.n_tup_upd + s.n_tup_del - x.n_tup_del) AS data_tuples_written
  FROM pg_stat_xact_user_tables s JOIN xact0 x USING (relname)
 WHERE s.schemaname = 'gmail_ingest'
   AND s.relname IN ('mail_threads', 'mail_messages', 'mail_attachments', 'blobs');
DROP TABLE xact0;
COMMIT;

-- Changes on Gmail's side: two new messages (one a reply), one deleted for
-- good, one moved to Trash, labels added to one and removed from another.
\set deleted `$DQ nth-id proof@example.com 7 10`
\set trashed `$DQ nth-id proof@example.com 7 12`
\set relabelled `$DQ nth-id proof@example.com 7 14`
\set unlabelled `$DQ nth-id proof@example.com 7 16`
SELECT provider_thread_id AS reply_thread FROM gmail_ingest.mail_messages
 WHERE mailbox_id = :mb AND provider_message_id = :'relabelled' \gset
\set new1 `$DQ add proof@example.com`
\set new2 `$DQ add proof@example.com :reply_thread`
\set ignore `$DQ delete proof@example.com :deleted`
\set ignore `$DQ labels proof@example.com :trashed TRASH INBOX`
\set ignore `$DQ labels proof@example.com :relabelled STARRED,Label_inc -`
\set ignore `$DQ labels proof@example.com :unlabelled - UNREAD,INBOX`
SELECT max(id) AS last_event FROM gmail_ingest.ledger WHERE mailbox_id = :mb \gset
\! $DQ reset-stats

SELECT mode, status, messages_inserted, messages_updated, messages_deleted, messages_vanished
  FROM gmail_ingest.gmail_sync(:mb, 7);
SELECT provider_message_id = :'new2' AS is_reply, provider_thread_id = :'reply_thread' AS in_reply_thread,
       label_ids
  FROM gmail_ingest.mail_messages WHERE mailbox_id = :mb AND provider_message_id IN (:'new1', :'new2')
 ORDER BY 1;
SELECT provider_message_id = :'deleted' AS deleted_one, provider_message_id = :'trashed' AS trashed_one,
       provider_message_id = :'relabelled' AS relabelled_one,
       deleted_at IS NOT NULL AS has_deleted_at, 'TRASH' = ANY (label_ids) AS in_trash,
       label_ids @> '{STARRED,Label_inc}' AS labels_added,
       NOT label_ids && '{UNREAD,INBOX}' AS labels_removed
  FROM gmail_ingest.mail_messages
 WHERE mailbox_id = :mb AND provider_message_id IN (:'deleted', :'trashed', :'relabelled', :'unlabelled')
 ORDER BY 1, 2, 3;
-- Exactly one ledger event per change.
SELECT event, detail->>'action' AS action, count(*) FROM gmail_ingest.ledger
 WHERE mailbox_id = :mb AND id > :last_event GROUP BY 1, 2 ORDER BY 1, 2;
-- The double saw history.list and one messages.get per new message, nothing else.
\set hist `$DQ requests proof@example.com history.list`
\set gets `$DQ requests proof@example.com messages.get`
\set tgets `$DQ requests proof@example.com threads.get`
\set lists `$DQ requests proof@example.com messages.list`
\set tlists `$DQ requests proof@example.com threads.list`
SELECT :hist >= 1 AS used_history, :gets AS messages_get, :tgets AS threads_get,
       :lists AS messages_list, :tlists AS threads_list;
SELECT * FROM gmail_ingest.verify(:mb) WHERE NOT ok;

-- Mail arrives, then Gmail forgets the history since our history id: a full
-- sync of the window, recorded as a fallback, picks the new mail up.
\set new3 `$DQ add proof@example.com`
\set ignore `$DQ expire-history proof@example.com`
SELECT mode, status, fallback, messages_inserted FROM gmail_ingest.gmail_sync(:mb, 7);
SELECT detail->>'fallback' AS fallback FROM gmail_ingest.ledger
 WHERE mailbox_id = :mb AND event = 'sync.completed' ORDER BY id DESC LIMIT 1;
-- Twice in a row: a WARNING, and mailbox_status counts it.
\set new4 `$DQ add proof@example.com`
\set ignore `$DQ expire-history proof@example.com`
SELECT mode, status, fallback, messages_inserted FROM gmail_ingest.gmail_sync(:mb, 7);
SELECT consecutive_history_fallbacks, last_run_mode FROM gmail_ingest.mailbox_status WHERE mailbox_id = :mb;
-- Then incremental again.
SELECT mode, status, fallback, quota_units FROM gmail_ingest.gmail_sync(:mb, 7);
SELECT consecutive_history_fallbacks FROM gmail_ingest.mailbox_status WHERE mailbox_id = :mb;
SELECT * FROM gmail_ingest.verify(:mb) WHERE NOT ok;
