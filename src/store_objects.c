/*-------------------------------------------------------------------------
 * store_objects.c
 *	  What the database knows about bytes kept in the object store: the
 *	  object keys, the objects table (which key holds which content), and
 *	  blob rows without bytes.
 *
 * In s3 mode a blob row still exists for every content (the foreign keys
 * of mail_attachments and mail_messages point at it, and it carries the
 * size), but its data is NULL; the objects table says at which keys the
 * bytes live.  A key is recorded in the same transaction that uploads it,
 * before the upload completes and before that transaction commits, so a
 * recorded key is uploaded exactly once and a rolled-back run leaves only
 * unrecorded objects, which gc_objects removes.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#include "sha256_hex.h"
#include "store.h"
#include "store_spi.h"

/* Longest filename part of a key, in bytes (S3 keys may be 1024). */
#define KEY_NAME_MAX 200

/*
 * Bytes kept in a key's filename part: the set Supabase Storage accepts
 * (it refuses anything outside [A-Za-z0-9_/!.*'() &$=@;:+,?-]) minus '/',
 * which would add a path segment.  AWS S3, R2 and MinIO take them all.
 */
static bool
portable_byte(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		(c != '\0' && strchr("_!.*'() &$=@;:+,?-", c) != NULL);
}

/*
 * The filename part of an attachment's key.  A name made only of portable
 * bytes (and short enough) is kept as it is.  Any other byte becomes '_',
 * and '-' and the first 8 hex digits of the SHA-256 of the original name go before
 * the extension, so two names that read alike once made safe (NFC and NFD
 * spellings, "a#b" and "a%b") still get keys of their own; the same name
 * always gives the same key.  The original stays in mail_attachments.
 */
char *
store_safe_filename(const char *filename)
{
	StringInfoData out;
	size_t		n = filename ? strlen(filename) : 0;
	bool		changed = false;
	char		hash[65];
	const char *dot;
	size_t		base_len;
	size_t		ext_len;
	char	   *safe;

	if (n == 0)
		return pstrdup("attachment");
	safe = palloc(n + 1);
	for (size_t i = 0; i < n; i++)
	{
		unsigned char c = (unsigned char) filename[i];

		safe[i] = portable_byte(c) ? (char) c : '_';
		if (safe[i] != (char) c)
			changed = true;
	}
	safe[n] = '\0';
	/* "." and ".." are path segments to some tools */
	if (strcmp(safe, ".") == 0 || strcmp(safe, "..") == 0)
		changed = true;
	if (!changed && n <= KEY_NAME_MAX)
		return safe;

	if (!sha256_hex(filename, n, hash))
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	dot = strrchr(safe, '.');
	ext_len = (dot && dot != safe && strlen(dot) <= 16) ? strlen(dot) : 0;
	base_len = n - ext_len;
	if (base_len > KEY_NAME_MAX - ext_len - 9)
		base_len = KEY_NAME_MAX - ext_len - 9;
	initStringInfo(&out);
	appendBinaryStringInfo(&out, safe, base_len);
	appendStringInfo(&out, "-%.8s", hash);
	appendBinaryStringInfo(&out, safe + n - ext_len, ext_len);
	pfree(safe);
	return out.data;
}

char *
store_attachment_key(const char *org_id, int64 mailbox_id, const char *sha256_hex,
					 const char *filename)
{
	char	   *name = store_safe_filename(filename);
	char	   *key = psprintf("%s/" INT64_FORMAT "/%s/%s", org_id, mailbox_id, sha256_hex, name);

	pfree(name);
	return key;
}

char *
store_raw_key(const char *org_id, int64 mailbox_id, const char *sha256_hex)
{
	return psprintf("%s/" INT64_FORMAT "/raw/%s.eml", org_id, mailbox_id, sha256_hex);
}

/* A blob row without bytes (they are in the object store); true if new. */
bool
store_put_blob_ref(int64 mailbox_id, const char *sha256_hex, size_t len)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {TEXTOID, INT8OID, INT8OID};
	Datum		v[3];
	bool		inserted;

	plan_once(&plan,
			  "INSERT INTO " SCHEMA "blobs (sha256, size_bytes, data, mailbox_id) VALUES ($1, $2, NULL, $3) "
			  "ON CONFLICT (mailbox_id, sha256) DO NOTHING RETURNING true",
			  3, types);
	v[0] = CStringGetTextDatum(sha256_hex);
	v[1] = Int64GetDatum((int64) len);
	v[2] = Int64GetDatum(mailbox_id);
	run_plan(plan, v, NULL, SPI_OK_INSERT_RETURNING);
	inserted = SPI_processed == 1;
	SPI_freetuptable(SPI_tuptable);
	return inserted;
}

/*
 * Record that key holds sha256's bytes; false when it was recorded already
 * (then it is not uploaded again).
 */
bool
store_record_object(int64 mailbox_id, const char *key, const char *sha256_hex, size_t len)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, TEXTOID, TEXTOID, INT8OID};
	Datum		v[4];
	bool		inserted;

	plan_once(&plan,
			  "INSERT INTO " SCHEMA "objects (mailbox_id, object_key, sha256, size_bytes) "
			  "VALUES ($1, $2, $3, $4) ON CONFLICT (mailbox_id, object_key) DO NOTHING RETURNING true",
			  4, types);
	v[0] = Int64GetDatum(mailbox_id);
	v[1] = CStringGetTextDatum(key);
	v[2] = CStringGetTextDatum(sha256_hex);
	v[3] = Int64GetDatum((int64) len);
	run_plan(plan, v, NULL, SPI_OK_INSERT_RETURNING);
	inserted = SPI_processed == 1;
	SPI_freetuptable(SPI_tuptable);
	return inserted;
}

/* Whether any row refers to the object at key (gc_objects). */
bool
store_object_referenced(const char *key)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {TEXTOID};
	Datum		v[1];
	bool		found;

	plan_once(&plan,
			  "SELECT 1 FROM " SCHEMA "objects WHERE object_key = $1",
			  1, types);
	v[0] = CStringGetTextDatum(key);
	run_plan(plan, v, NULL, SPI_OK_SELECT);
	found = SPI_processed > 0;
	SPI_freetuptable(SPI_tuptable);
	return found;
}

/* The objects recorded for a mailbox, sorted by key (verify). */
StoredObject *
store_objects_of_mailbox(int64 mailbox_id, int *count)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID};
	Datum		v[1];
	StoredObject *out;

	plan_once(&plan,
			  "SELECT object_key, sha256, size_bytes FROM " SCHEMA "objects "
			  " WHERE mailbox_id = $1 ORDER BY object_key",
			  1, types);
	v[0] = Int64GetDatum(mailbox_id);
	run_plan(plan, v, NULL, SPI_OK_SELECT);
	*count = (int) SPI_processed;
	out = palloc0(sizeof(StoredObject) * Max(1, SPI_processed));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		out[i].key = col_text((int) i, 1);
		out[i].sha256 = col_text((int) i, 2);
		out[i].size_bytes = DatumGetInt64(col_datum((int) i, 3, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
	return out;
}

/* ---------------------------------------------------- migrate_blobs */

/*
 * Up to limit blobs (mailbox, content) whose bytes are in the table and that
 * a row of their mailbox refers to.
 */
int
store_blobs_with_bytes(int limit, int64 **mailbox_ids, char ***shas)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT4OID};
	Datum		v[1];
	int			n;

	plan_once(&plan,
			  "SELECT b.mailbox_id, b.sha256 FROM " SCHEMA "blobs b WHERE b.data IS NOT NULL AND ("
			  "  EXISTS (SELECT 1 FROM " SCHEMA "mail_attachments a "
			  "           WHERE a.mailbox_id = b.mailbox_id AND a.sha256 = b.sha256) OR "
			  "  EXISTS (SELECT 1 FROM " SCHEMA "mail_messages m "
			  "           WHERE m.mailbox_id = b.mailbox_id AND m.raw_sha256 = b.sha256)) "
			  "ORDER BY b.mailbox_id, b.sha256 LIMIT $1",
			  1, types);
	v[0] = Int32GetDatum(limit);
	run_plan(plan, v, NULL, SPI_OK_SELECT);
	n = (int) SPI_processed;
	*mailbox_ids = palloc(sizeof(int64) * Max(1, n));
	*shas = palloc(sizeof(char *) * Max(1, n));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		(*mailbox_ids)[i] = DatumGetInt64(col_datum(i, 1, &isnull));
		(*shas)[i] = col_text(i, 2);
	}
	SPI_freetuptable(SPI_tuptable);
	return n;
}

/*
 * Every place a mailbox's blob is referred to, each with the key its bytes
 * belong at (attachments: their key; raw messages: the raw key), and its
 * bytes.
 */
BlobRef *
store_blob_refs(int64 mailbox_id, const char *sha256_hex, int *count, bytea **data)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr bytes_plan = NULL;
	static const Oid types[] = {TEXTOID, INT8OID};
	Datum		v[2];
	BlobRef    *out;
	bool		isnull;
	Datum		d;

	v[0] = CStringGetTextDatum(sha256_hex);
	v[1] = Int64GetDatum(mailbox_id);
	plan_once(&bytes_plan, "SELECT data FROM " SCHEMA "blobs WHERE mailbox_id = $2 AND sha256 = $1",
			  2, types);
	run_plan(bytes_plan, v, NULL, SPI_OK_SELECT);
	*data = NULL;
	if (SPI_processed == 1)
	{
		d = col_datum(0, 1, &isnull);
		if (!isnull)
			*data = DatumGetByteaPCopy(d);
	}
	SPI_freetuptable(SPI_tuptable);

	plan_once(&plan,
			  "SELECT a.id, a.mailbox_id, mb.org_id::text, a.filename, a.storage_path "
			  "  FROM " SCHEMA "mail_attachments a JOIN " SCHEMA "mailboxes mb ON mb.id = a.mailbox_id "
			  " WHERE a.mailbox_id = $2 AND a.sha256 = $1 "
			  "UNION ALL "
			  "SELECT DISTINCT 0::bigint, m.mailbox_id, mb.org_id::text, NULL, NULL "
			  "  FROM " SCHEMA "mail_messages m JOIN " SCHEMA "mailboxes mb ON mb.id = m.mailbox_id "
			  " WHERE m.mailbox_id = $2 AND m.raw_sha256 = $1",
			  2, types);
	run_plan(plan, v, NULL, SPI_OK_SELECT);
	*count = (int) SPI_processed;
	out = palloc0(sizeof(BlobRef) * Max(1, SPI_processed));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *org = col_text((int) i, 3);
		char	   *filename = col_text((int) i, 4);

		out[i].attachment_id = DatumGetInt64(col_datum((int) i, 1, &isnull));
		out[i].mailbox_id = DatumGetInt64(col_datum((int) i, 2, &isnull));
		out[i].storage_path = col_text((int) i, 5);
		out[i].key = out[i].attachment_id != 0
			? store_attachment_key(org, out[i].mailbox_id, sha256_hex, filename)
			: store_raw_key(org, out[i].mailbox_id, sha256_hex);
	}
	SPI_freetuptable(SPI_tuptable);
	return out;
}

void
store_set_storage_path(int64 mailbox_id, int64 attachment_id, const char *path)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT8OID, INT8OID, TEXTOID};
	Datum		v[3];

	plan_once(&plan,
			  "UPDATE " SCHEMA "mail_attachments SET storage_path = $3, updated_at = now() "
			  " WHERE mailbox_id = $1 AND id = $2 AND storage_path IS DISTINCT FROM $3",
			  3, types);
	v[0] = Int64GetDatum(mailbox_id);
	v[1] = Int64GetDatum(attachment_id);
	v[2] = CStringGetTextDatum(path);
	run_plan(plan, v, NULL, SPI_OK_UPDATE);
}

/* The bytes are in the object store now (verified): drop the table's copy. */
void
store_blob_drop_bytes(int64 mailbox_id, const char *sha256_hex)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {TEXTOID, INT8OID};
	Datum		v[2];

	plan_once(&plan, "UPDATE " SCHEMA "blobs SET data = NULL WHERE mailbox_id = $2 AND sha256 = $1",
			  2, types);
	v[0] = CStringGetTextDatum(sha256_hex);
	v[1] = Int64GetDatum(mailbox_id);
	run_plan(plan, v, NULL, SPI_OK_UPDATE);
}

/*
 * Up to limit blobs whose bytes are only in the object store, with one key
 * that holds them and their size.
 */
int
store_blobs_in_objects(int limit, int64 **mailbox_ids, char ***shas, char ***keys, int64 **sizes)
{
	static SPIPlanPtr plan = NULL;
	static const Oid types[] = {INT4OID};
	Datum		v[1];
	int			n;

	plan_once(&plan,
			  "SELECT b.sha256, (SELECT o.object_key FROM " SCHEMA "objects o "
			  "                   WHERE o.mailbox_id = b.mailbox_id AND o.sha256 = b.sha256 "
			  "                   ORDER BY o.object_key LIMIT 1), b.size_bytes, b.mailbox_id "
			  "  FROM " SCHEMA "blobs b "
			  " WHERE b.data IS NULL AND EXISTS (SELECT 1 FROM " SCHEMA "objects o "
			  "                                   WHERE o.mailbox_id = b.mailbox_id AND o.sha256 = b.sha256) "
			  " ORDER BY b.mailbox_id, b.sha256 LIMIT $1",
			  1, types);
	v[0] = Int32GetDatum(limit);
	run_plan(plan, v, NULL, SPI_OK_SELECT);
	n = (int) SPI_processed;
	*mailbox_ids = palloc(sizeof(int64) * Max(1, n));
	*shas = palloc(sizeof(char *) * Max(1, n));
	*keys = palloc(sizeof(char *) * Max(1, n));
	*sizes = palloc(sizeof(int64) * Max(1, n));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		(*shas)[i] = col_text(i, 1);
		(*keys)[i] = col_text(i, 2);
		(*sizes)[i] = DatumGetInt64(col_datum(i, 3, &isnull));
		(*mailbox_ids)[i] = DatumGetInt64(col_datum(i, 4, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
	return n;
}

/*
 * The bytes are back in the table (verified against sha256): the objects
 * rows go, so the store's copies become unreferenced for gc_objects.
 */
void
store_blob_restore_bytes(int64 mailbox_id, const char *sha256_hex, const unsigned char *data,
						 size_t len)
{
	static SPIPlanPtr plan = NULL;
	static SPIPlanPtr forget = NULL;
	static const Oid types[] = {TEXTOID, BYTEAOID, INT8OID};
	static const Oid ftypes[] = {TEXTOID, INT8OID};
	Datum		v[3];
	Datum		fv[2];
	bytea	   *b = palloc(len + VARHDRSZ);

	SET_VARSIZE(b, len + VARHDRSZ);
	if (len > 0)
		memcpy(VARDATA(b), data, len);
	plan_once(&plan, "UPDATE " SCHEMA "blobs SET data = $2 WHERE mailbox_id = $3 AND sha256 = $1",
			  3, types);
	v[0] = CStringGetTextDatum(sha256_hex);
	v[1] = PointerGetDatum(b);
	v[2] = Int64GetDatum(mailbox_id);
	run_plan(plan, v, NULL, SPI_OK_UPDATE);
	pfree(b);
	plan_once(&forget, "DELETE FROM " SCHEMA "objects WHERE mailbox_id = $2 AND sha256 = $1",
			  2, ftypes);
	fv[0] = v[0];
	fv[1] = v[2];
	run_plan(forget, fv, NULL, SPI_OK_DELETE);
}
