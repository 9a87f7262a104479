-- verify() really checks: break each invariant by hand and see ok = false.
SELECT id AS mb FROM gmail_ingest.mailboxes WHERE provider_email = 'proof@example.com' \gset
SELECT bool_and(ok) AS all_ok FROM gmail_ingest.verify(:mb);

BEGIN;
UPDATE gmail_ingest.mail_threads SET message_count = message_count + 1
 WHERE id = (SELECT min(id) FROM gmail_ingest.mail_threads WHERE mailbox_id = :mb);
SELECT check_name, ok FROM gmail_ingest.verify(:mb) WHERE NOT ok;
ROLLBACK;

BEGIN;
UPDATE gmail_ingest.blobs SET data = data || '\x00'::bytea
 WHERE sha256 = (SELECT min(sha256) FROM gmail_ingest.mail_attachments WHERE mailbox_id = :mb);
SELECT check_name, ok FROM gmail_ingest.verify(:mb) WHERE NOT ok;
ROLLBACK;

BEGIN;
ALTER TABLE gmail_ingest.mail_attachments DROP CONSTRAINT mail_attachments_mailbox_id_sha256_fkey;
DELETE FROM gmail_ingest.blobs WHERE sha256 = (SELECT min(sha256) FROM gmail_ingest.mail_attachments WHERE mailbox_id = :mb);
SELECT check_name, ok FROM gmail_ingest.verify(:mb) WHERE NOT ok;
ROLLBACK;

BEGIN;
ALTER TABLE gmail_ingest.mail_messages DROP CONSTRAINT mail_messages_mailbox_id_provider_message_id_key CASCADE;
INSERT INTO gmail_ingest.mail_messages (mailbox_id, provider_message_id, thread_id, provider_thread_id, internal_date)
SELECT mailbox_id, provider_message_id, thread_id, provider_thread_id, internal_date
  FROM gmail_ingest.mail_messages WHERE mailbox_id = :mb ORDER BY id LIMIT 1;
SELECT check_name, ok FROM gmail_ingest.verify(:mb) WHERE NOT ok;
ROLLBACK;

BEGIN;
ALTER TABLE gmail_ingest.mail_threads DROP CONSTRAINT mail_threads_mailbox_id_provider_thread_id_key CASCADE;
INSERT INTO gmail_ingest.mail_threads (mailbox_id, provider_thread_id)
SELECT mailbox_id, provider_thread_id FROM gmail_ingest.mail_threads WHERE mailbox_id = :mb ORDER BY id LIMIT 1;
SELECT check_name, ok FROM gmail_ingest.verify(:mb) WHERE NOT ok;
ROLLBACK;

BEGIN;
ALTER TABLE gmail_ingest.mail_attachments DROP CONSTRAINT mail_attachments_mailbox_id_message_id_part_id_key CASCADE;
INSERT INTO gmail_ingest.mail_attachments (mailbox_id, message_id, part_id, filename, mime_type, size_bytes, sha256, storage_path)
SELECT mailbox_id, message_id, part_id, filename, mime_type, size_bytes, sha256, storage_path
  FROM gmail_ingest.mail_attachments WHERE mailbox_id = :mb ORDER BY id LIMIT 1;
SELECT check_name, ok FROM gmail_ingest.verify(:mb) WHERE NOT ok;
ROLLBACK;

BEGIN;
UPDATE gmail_ingest.mail_attachments SET size_bytes = size_bytes + 1
 WHERE id = (SELECT min(id) FROM gmail_ingest.mail_attachments WHERE mailbox_id = :mb);
SELECT check_name, ok FROM gmail_ingest.verify(:mb) WHERE NOT ok;
ROLLBACK;

-- The ledger is append-only, for the owner too; verify notices a missing event.
UPDATE gmail_ingest.ledger SET event = 'sync.started' WHERE mailbox_id = :mb;
DELETE FROM gmail_ingest.ledger WHERE mailbox_id = :mb;
TRUNCATE gmail_ingest.ledger;
BEGIN;
ALTER TABLE gmail_ingest.ledger DISABLE TRIGGER ledger_no_update_delete;
DELETE FROM gmail_ingest.ledger WHERE id = (SELECT min(id) FROM gmail_ingest.ledger
                                            WHERE mailbox_id = :mb AND event = 'message.ingested');
SELECT check_name, ok FROM gmail_ingest.verify(:mb) WHERE NOT ok;
ROLLBACK;
SELECT bool_and(ok) AS all_ok_again FROM gmail_ingest.verify(:mb);
