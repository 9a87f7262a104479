/*-------------------------------------------------------------------------
 * store.h
 *	  Everything gmail_ingest writes or reads in its tables, through SPI.
 *
 * Every data write is INSERT ... ON CONFLICT (natural key) DO UPDATE ...
 * WHERE <row differs>, so a re-run can neither duplicate a row nor write a
 * tuple when nothing changed.  Callers must be connected to SPI.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_STORE_H
#define GMAIL_INGEST_STORE_H

#include "datatype/timestamp.h"
#include "utils/hsearch.h"

typedef enum StoreAction
{
	SA_UNCHANGED,
	SA_INSERTED,
	SA_UPDATED
} StoreAction;

extern const char *store_action_name(StoreAction a);

/*
 * Room for a Gmail message or thread id, NUL included, in the hash tables
 * keyed by them.  Gmail's ids are 16 hex digits; the sync refuses an answer
 * with a longer one than fits (RF_PROTOCOL) before it reaches the store.
 */
#define GMAIL_ID_SIZE 256

/*
 * A hash table in the current memory context whose entries begin with a
 * Gmail id (char[GMAIL_ID_SIZE]), their key.
 */
extern HTAB *gmail_id_hash(const char *name, Size entry_size, long n);

typedef struct MailboxInfo
{
	int64		id;
	char	   *org_id;
	char	   *email;
	bool		has_history;
	int64		history_id;
	char	   *auth_state;
	bool		has_credentials;
	char	   *refresh_token;
	char	   *access_token;	/* NULL if none cached */
	TimestampTz access_expires_at;
	int64		service_account_id; /* delegated mailbox; 0: refresh-token mailbox */
} MailboxInfo;

/* store_schema.c: refuse a schema of another version; repair restored sequences */
extern void store_check_schema_version(void);
extern void store_repair_sequences(void);

/*
 * Citus (store_placement.c): whether this node holds the mailbox's shards
 * (always, without Citus or before distribute()), and the hash ranges of
 * the shards it holds (false without a distributed schema).
 */
extern bool store_mailbox_is_local(int64 mailbox_id);
extern bool store_local_shard_ranges(Datum *lo, Datum *hi);
extern int	store_mailbox_writes_commute(void);
extern void store_mailbox_writes_done(int nest);
extern bool store_secret_in_role_settings(void);

extern bool store_load_mailbox(int64 mailbox_id, MailboxInfo *out);
extern void store_save_access_token(int64 mailbox_id, const char *token, TimestampTz expires_at);
extern void store_set_auth_state(int64 mailbox_id, const char *state);
extern void store_set_history(int64 mailbox_id, int64 history_id);

/* ---- the run record ---- */
typedef struct RunCounters
{
	int64		threads_inserted;
	int64		threads_updated;
	int64		threads_unchanged;
	int64		messages_inserted;
	int64		messages_updated;
	int64		messages_unchanged;
	int64		messages_deleted;
	int64		messages_vanished;
	int64		messages_parse_errors;
	int64		attachments_inserted;
	int64		attachments_updated;
	int64		attachments_unchanged;
	int64		blobs_inserted;
	int64		http_requests;
	int64		quota_units;
	int64		retries;
	int64		bytes_downloaded;
} RunCounters;

extern int64 store_start_run(int64 mailbox_id, const char *mode, int days,
							 bool has_history, int64 history_id);
extern void store_finish_run(int64 mailbox_id, int64 run_id, const char *mode,
							 const char *status, const char *error,
							 bool has_history_after, int64 history_after,
							 const char *fallback, const RunCounters *counters);
/* Whether the mailbox's last successful run before run_id fell back to full. */
extern bool store_previous_run_fell_back(int64 mailbox_id, int64 run_id);
/* The run's row as a composite Datum, allocated outside SPI's memory. */
extern Datum store_run_row(int64 mailbox_id, int64 run_id);

/* detail_json may be NULL; entity_id <= 0 and provider_id NULL mean none. */
extern void store_ledger(int64 run_id, int64 mailbox_id, const char *event,
						 int64 entity_id, const char *provider_id, const char *detail_json);

/* ---- threads ---- */
typedef struct ThreadState
{
	char		key[GMAIL_ID_SIZE];	/* provider_thread_id (hash key) */
	int64		id;
	bool		has_history;
	int64		history_id;
	bool		has_synced_since;
	TimestampTz synced_since;
} ThreadState;

/* Stored state of the given threads, as a hash keyed by provider id. */
extern HTAB *store_thread_states(int64 mailbox_id, char **provider_ids, int n);

/* Insert rows for threads not stored yet; fills ids[i]. */
extern void store_ensure_threads(int64 mailbox_id, char **provider_ids, char **snippets,
								 int n, int64 *ids);

typedef struct ThreadFinal
{
	int64		id;
	char	   *provider_id;
	char	   *snippet;		/* NULL: that of the newest listable stored message */
	bool		has_history;	/* false: history_id becomes NULL (thread not fully read) */
	int64		history_id;
	TimestampTz synced_since;	/* 0: keep the stored one */
	bool		was_new;		/* inserted earlier in this run */
} ThreadFinal;

/*
 * Upsert the threads' snippet, history id and counts/dates over their
 * stored messages; calls report(thread, action) for each one written.
 */
typedef void (*ThreadReport) (void *arg, const ThreadFinal *t, StoreAction action);
extern void store_finalize_threads(int64 mailbox_id, ThreadFinal *threads, int n,
								   ThreadReport report, void *arg);

/* ---- messages ---- */
typedef struct MessageState
{
	char		key[GMAIL_ID_SIZE];	/* provider_message_id (hash key) */
	int64		id;
	int64		thread_id;
	bool		deleted;
} MessageState;

extern HTAB *store_message_states(int64 mailbox_id, char **provider_ids, int n);

typedef struct StoredMessageRef
{
	char	   *provider_id;
	char	   *provider_thread_id;
	int64		thread_id;
	TimestampTz internal_date;
} StoredMessageRef;

/* Non-deleted stored messages of the threads with internal_date >= since, grouped by thread. */
extern StoredMessageRef *store_messages_of_threads(int64 mailbox_id, char **thread_ids, int n,
												   TimestampTz since, int *count);

typedef struct MessageRow
{
	int64		mailbox_id;
	const char *provider_message_id;
	int64		thread_id;
	const char *provider_thread_id;
	int64		history_id;
	TimestampTz internal_date;
	char	  **labels;
	int			label_count;
	const char *subject;
	const char *from_address;
	const char *to_addresses;
	const char *cc_addresses;
	const char *bcc_addresses;
	const char *reply_to;
	const char *from_email;
	char	  **to_emails;
	int			to_count;
	char	  **cc_emails;
	int			cc_count;
	char	  **bcc_emails;
	int			bcc_count;
	char	  **reply_to_emails;
	int			reply_to_count;
	const char *addresses_json;
	bool		has_sent_at;
	TimestampTz sent_at;
	const char *rfc822_message_id;
	const char *in_reply_to;
	const char *references;
	const char *snippet;
	const char *body_text;
	const char *body_html;
	int			size_estimate;
	const char *headers_json;
	const char *raw_sha256;
	const char *parse_error;
} MessageRow;


/* Labels (sorted) of a stored message; writes only when they differ. */
extern StoreAction store_update_labels(int64 mailbox_id, const char *provider_message_id,
									   int64 thread_id, const char *provider_thread_id,
									   TimestampTz internal_date, char **labels, int label_count,
									   int64 history_id, int64 *id);

/* Mark a stored message deleted; writes only the first time. */
extern StoreAction store_mark_deleted(int64 mailbox_id, const char *provider_message_id,
									  int64 thread_id, const char *provider_thread_id,
									  TimestampTz internal_date, int64 *id);

/* ---- blobs and attachments ---- */

typedef struct AttachmentRow
{
	int64		mailbox_id;
	int64		message_id;
	const char *part_id;
	const char *filename;
	bool		filename_derived;
	const char *mime_type;
	int64		size_bytes;
	const char *content_id;
	bool		is_inline;
	const char *sha256_hex;
	const char *storage_path;
} AttachmentRow;

/*
 * store_batch.c: new messages written a batch at a time, one statement per
 * table (blobs, messages, attachments, their ledger events), each the
 * upsert the per-row write was; the run's counters are kept in *counters.
 * The batch copies what it is given.  Adding a message already in the
 * batch, or to a full one, writes the batch first; the caller writes it
 * (store_batch_flush) when store_batch_full says so and before anything
 * reads what it holds: the threads' final rows, a commit.
 */
typedef struct StoreBatch StoreBatch;
extern StoreBatch *store_batch_create(MemoryContext parent, int64 run_id, int64 mailbox_id,
									  RunCounters *counters);
extern void store_batch_add_blob(StoreBatch *b, const char *sha256_hex, const unsigned char *data,
								 size_t len);
/* Returns the message's index in the batch, for its attachments. */
extern int	store_batch_add_message(StoreBatch *b, const MessageRow *row, const char *provider_thread_id);
extern void store_batch_add_attachment(StoreBatch *b, int message, const AttachmentRow *row);
extern bool store_batch_has_message(const StoreBatch *b, const char *provider_message_id);
extern bool store_batch_full(const StoreBatch *b);
extern void store_batch_flush(StoreBatch *b);

/* ---- bytes in the object store (store_objects.c) ---- */
extern char *store_safe_filename(const char *filename);
extern char *store_attachment_key(const char *org_id, int64 mailbox_id, const char *sha256_hex,
								  const char *filename);
extern char *store_raw_key(const char *org_id, int64 mailbox_id, const char *sha256_hex);
extern bool store_put_blob_ref(int64 mailbox_id, const char *sha256_hex, size_t len);
extern bool store_record_object(int64 mailbox_id, const char *key, const char *sha256_hex, size_t len);
extern bool store_object_referenced(const char *key);

typedef struct StoredObject
{
	char	   *key;
	char	   *sha256;
	int64		size_bytes;
} StoredObject;

extern StoredObject *store_objects_of_mailbox(int64 mailbox_id, int *count);

/* A row that refers to a blob, and the key its bytes belong at. */
typedef struct BlobRef
{
	int64		attachment_id;	/* 0: a raw message */
	int64		mailbox_id;
	char	   *storage_path;	/* attachments only */
	char	   *key;
} BlobRef;

extern int	store_blobs_with_bytes(int limit, int64 **mailbox_ids, char ***shas);
extern BlobRef *store_blob_refs(int64 mailbox_id, const char *sha256_hex, int *count, bytea **data);
extern void store_set_storage_path(int64 mailbox_id, int64 attachment_id, const char *path);
extern void store_blob_drop_bytes(int64 mailbox_id, const char *sha256_hex);
extern int	store_blobs_in_objects(int limit, int64 **mailbox_ids, char ***shas, char ***keys,
								   int64 **sizes);
extern void store_blob_restore_bytes(int64 mailbox_id, const char *sha256_hex,
									 const unsigned char *data, size_t len);

/* ---- gmail_backfill's staged listing (store_backfill.c) ---- */
typedef struct BackfillState
{
	bool		active;
	int64		history_id;
	TimestampTz window_start;
	int			days;
} BackfillState;

extern void store_backfill_state(int64 mailbox_id, BackfillState *out);
extern void store_backfill_begin(int64 mailbox_id, int64 history_id, TimestampTz window_start, int days);
extern void store_backfill_stage_threads(int64 mailbox_id, const ThreadFinal *threads, int n);
extern void store_backfill_stage_messages(int64 mailbox_id, char **ids, char **thread_ids, int n);
/* Up to limit staged messages not stored yet; *remaining counts them all. */
extern int	store_backfill_next(int64 mailbox_id, int limit, char ***ids, char ***thread_ids,
								int64 *remaining);
extern void store_backfill_forget(int64 mailbox_id, char **ids, int n);
/* Every staged thread that has a row, with its staged history id and snippet. */
extern ThreadFinal *store_backfill_threads(int64 mailbox_id, TimestampTz window_start, int *count);
extern void store_backfill_clear(int64 mailbox_id);

/* A JSON array of label ids, for the ledger's "labels" (store_batch.c). */
extern char *store_labels_json(char **labels, int n);

#endif
