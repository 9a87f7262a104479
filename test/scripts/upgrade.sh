#!/usr/bin/env bash
# From the released 1.0 to this version, as a user does it: the 1.0 library
# (built from the commit that shipped it) serves a populated database; the
# new library is installed, the server restarted, and
#   - a sync of the 1.0 database is refused with SQLSTATE 55000 and a hint
#     naming ALTER EXTENSION gmail_ingest UPDATE (nothing written);
#   - ALTER EXTENSION gmail_ingest UPDATE keeps every row (digests of every
#     data table, the mailboxes and the ledger equal before and after);
#   - verify() holds, a forced full re-run writes 0 tuples, an incremental
#     sync picks up new mail, a backfill staged under 1.0 completes, and a
#     new mailbox can be added (the identity sequences go on);
#   - the updated schema equals a fresh install's, compared through the
#     catalogs (test/lib/schema_catalog.sql), and differs from 1.0's (the
#     comparison can fail);
#   - a pg_dump of the 1.0 database restored under the new library into a
#     database where CREATE EXTENSION gmail_ingest VERSION '1.0' ran first
#     (pg_dump names no version; 1.1's blobs need a mailbox_id that 1.0 rows
#     do not have, so they are loaded into 1.0's schema), then updated: rows
#     kept, verify() holds, syncs and add_mailbox write again.
set -uo pipefail
. "$(dirname "$0")/../lib/script.sh"

RELEASE_1_0=d7dd32d			# the commit that shipped 1.0
tag=$(run_tag)
A=up-a-$tag@example.com		# synced, then new mail, under 1.0
B=up-b-$tag@example.com		# a backfill staged under 1.0
N=up-n-$tag@example.com		# added after the update
S=up-s-$tag@example.com		# A's mail: 1.0 shares its blobs with A

if ! git -C "$GI_ROOT" cat-file -e "$RELEASE_1_0^{commit}" 2>/dev/null; then
	echo "not ok - the 1.0 release ($RELEASE_1_0) is not in this clone's history"
	finish
	exit 1
fi

# --- a private copy of this PostgreSQL installation with the 1.0 library.
# Debian's PostgreSQL is relocatable: a copy finds its share and lib
# directories relative to its own binaries.
bindir=$("$PG_CONFIG" --bindir)
root=${bindir%/usr/lib/postgresql/*}
libroot=${bindir%/bin}
share=$("$PG_CONFIG" --sharedir)
include=$("$PG_CONFIG" --includedir)
OLD=$GI_WORK/pg-1.0
for d in "$libroot" "$share" "$include"; do
	mkdir -p "$OLD$(dirname "${d#$root}")"
	cp -a "$d" "$OLD$(dirname "${d#$root}")/"
done
rm -f "$OLD${share#$root}"/extension/gmail_ingest* "$OLD${libroot#$root}"/lib/gmail_ingest.so
OLD_PG_CONFIG=$OLD${bindir#$root}/pg_config
mkdir -p "$OLD/src"
git -C "$GI_ROOT" archive "$RELEASE_1_0" | tar -x -C "$OLD/src"
if ! make -C "$OLD/src" -s PG_CONFIG="$OLD_PG_CONFIG" install >"$GI_WORK/upgrade-build.log" 2>&1; then
	tail -20 "$GI_WORK/upgrade-build.log"
	echo "not ok - the 1.0 release builds"
	finish
	exit 1
fi
check "the 1.0 library is installed in the copy" \
	"$(cat "$("$OLD_PG_CONFIG" --sharedir)/extension/gmail_ingest.control" | grep -o "default_version = '[0-9.]*'")" \
	"default_version = '1.0'"

# --- a cluster of its own, started with a given installation's binaries.
DATA=$GI_WORK/upgrade-data
UPORT=$(gi_free_port)
gi_init_cluster "$OLD${bindir#$root}" "$DATA" "$UPORT" gmail_ingest
cluster() {	# cluster start|stop BINDIR
	su postgres -c "'$2/pg_ctl' -D '$DATA' -l '$GI_WORK/upgrade-postgres.log' -w -m fast $1 >/dev/null"
}
trap 'cluster stop "$bindir" 2>/dev/null; cluster stop "$OLD${bindir#$root}" 2>/dev/null' EXIT
cluster start "$OLD${bindir#$root}"
export PGPORT=$UPORT
db=gi_upgrade

# --- 1.0 at work.
new_mailbox "$A" '"seed":41,"threads":25,"messages":90,"days":9,"window_days":7,"attachments":30'
new_mailbox "$B" '"seed":42,"threads":20,"messages":70,"days":9,"window_days":7,"attachments":20'
new_mailbox "$S" "\"content_email\":\"$A\",\"seed\":41,\"threads\":25,\"messages\":90,\"days\":9,\"window_days\":7,\"attachments\":30"
fresh_db $db
check "1.0 installed" "$(q $db "SELECT extversion FROM pg_extension WHERE extname = 'gmail_ingest'")" 1.0
a=$(q $db "SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000a1', '$A', 'rt-$A')")
b=$(q $db "SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000a1', '$B', 'rt-$B')")
sh=$(q $db "SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000a1', '$S', 'rt-$S')")
check "1.0: first sync" "$(q $db "SELECT status FROM gmail_ingest.gmail_sync($a, 7)")" succeeded
check "1.0: first sync of a mailbox holding the same mail" \
	"$(q $db "SELECT status FROM gmail_ingest.gmail_sync($sh, 7)")" succeeded
$DQ add "$A" >/dev/null
check "1.0: incremental sync" "$(q $db "SELECT mode || ' ' || status || ' ' || messages_inserted FROM gmail_ingest.gmail_sync($a, 7)")" \
	"incremental succeeded 1"
check "1.0: forced full sync" "$(q $db "SELECT mode || ' ' || status FROM gmail_ingest.gmail_sync($a, 7, true)")" "full succeeded"
check "1.0: a backfill step staged the rest" \
	"$(q $db "SELECT status FROM gmail_ingest._backfill_step($b, 7, 10)")" succeeded
check "1.0: backfill in progress" "$(q $db "SELECT count(*) > 0 FROM gmail_ingest.backfill_queue WHERE mailbox_id = $b")" t

install_digests $db
# Every row of every data table, the mailboxes and the ledger, ids included.
ledger_digest="SELECT count(*) || ':' || md5(string_agg(to_jsonb(l)::text, E'\n' ORDER BY l.mailbox_id, l.id)) FROM gmail_ingest.ledger l"
runs_digest="SELECT count(*) || ':' || md5(string_agg(to_jsonb(r)::text, E'\n' ORDER BY r.mailbox_id, r.id)) FROM gmail_ingest.sync_runs r"
backfill_digest="SELECT (SELECT count(*) FROM gmail_ingest.backfill_queue) || ':' || (SELECT count(*) FROM gmail_ingest.backfill_threads) || ':' || (SELECT to_jsonb(m) - '{auth_state,sync_interval,window_days,paused,next_sync_at,consecutive_failures,backoff_until,service_account_id,watch_topic,watch_expires_at,watch_attempted_at,watch_error,push_history_id}'::text[] FROM gmail_ingest.mailboxes m WHERE id = $b)::text"
before_rows=$(q $db "SELECT gi_test_db_digest()")
before_contents=$(q $db "SELECT gi_test_db_digest(true)")
# 1.1 keys blobs by (mailbox_id, sha256): the update copies each 1.0 blob to
# every mailbox that refers to it, and keeps nothing else.
blob_copies_10="SELECT count(*) || ':' || md5(string_agg(r.mailbox_id || ' ' || b.sha256 || ' ' || b.size_bytes || ' ' || md5(b.data), E'\n' ORDER BY r.mailbox_id, b.sha256))
  FROM gmail_ingest.blobs b
  JOIN (SELECT mailbox_id, sha256 FROM gmail_ingest.mail_attachments
        UNION SELECT mailbox_id, raw_sha256 FROM gmail_ingest.mail_messages WHERE raw_sha256 IS NOT NULL) r
    ON r.sha256 = b.sha256"
blob_copies_11="SELECT count(*) || ':' || md5(string_agg(b.mailbox_id || ' ' || b.sha256 || ' ' || b.size_bytes || ' ' || md5(b.data), E'\n' ORDER BY b.mailbox_id, b.sha256))
  FROM gmail_ingest.blobs b"
before_copies=$(q $db "$blob_copies_10")
check "1.0: blobs shared by two mailboxes" \
	"$(q $db "SELECT count(*) > 0 FROM (SELECT sha256 FROM gmail_ingest.mail_attachments
	          WHERE mailbox_id IN ($a, $sh) GROUP BY 1 HAVING count(DISTINCT mailbox_id) = 2) x")" t
before_ledger=$(q $db "$ledger_digest")
before_runs=$(q $db "$runs_digest")
before_backfill=$(q $db "$backfill_digest")
pg_dump -Fc -d $db -f "$GI_WORK/upgrade-1.0.dump"
check "1.0 dump taken" "$([ -s "$GI_WORK/upgrade-1.0.dump" ] && echo yes)" yes
psql -X -q -d postgres -c "CREATE DATABASE gi_upgrade_fresh10" && q gi_upgrade_fresh10 "CREATE EXTENSION gmail_ingest" >/dev/null
psql -X -q -d gi_upgrade_fresh10 -f test/lib/schema_catalog.sql >"$GI_WORK/catalog-1.0.txt"

# --- the new library: installed (it is, by run_tests.sh), server restarted.
cluster stop "$OLD${bindir#$root}"
cluster start "$bindir"
out=$(psql -X -q -d $db -v VERBOSITY=verbose -c "SELECT status FROM gmail_ingest.gmail_sync($a, 7)" 2>&1)
check "a 1.0 database is refused with 55000" "$(grep -o 'ERROR:  55000' <<<"$out")" "ERROR:  55000"
check "the refusal names the update" "$(grep -c 'ALTER EXTENSION gmail_ingest UPDATE' <<<"$out")" 1
check "the refusal wrote nothing" "$(q $db "SELECT gi_test_db_digest()") $(q $db "$runs_digest")" "$before_rows $before_runs"

q $db "ALTER EXTENSION gmail_ingest UPDATE" >/dev/null
version=$(q $db "SELECT extversion FROM pg_extension WHERE extname = 'gmail_ingest'")
check "updated to the library's version" "$version" "$(sed -n 's/^EXTVERSION *= *//p' Makefile)"
check "every row kept (each content once)" "$(q $db "SELECT gi_test_db_digest(true)")" "$before_contents"
check "every blob copied to each mailbox that refers to it" "$(q $db "$blob_copies_11")" "$before_copies"
check "the copies are more rows than 1.0's" \
	"$(q $db "SELECT count(*) > (SELECT count(DISTINCT sha256) FROM gmail_ingest.blobs) FROM gmail_ingest.blobs")" t
check "ledger unchanged" "$(q $db "$ledger_digest")" "$before_ledger"
check "runs unchanged" "$(q $db "$runs_digest")" "$before_runs"
check "backfill state unchanged" "$(q $db "$backfill_digest")" "$before_backfill"
check "the new schedule columns hold their defaults" \
	"$(q $db "SELECT count(*) FILTER (WHERE sync_interval = '15 minutes' AND window_days = 7 AND NOT paused
	                                   AND consecutive_failures = 0 AND backoff_until IS NULL
	                                   AND next_sync_at IS NOT NULL) || '/' || count(*)
	          FROM gmail_ingest.mailboxes")" "3/3"
check "verify() after the update ($A)" "$(verify_ok $db $a)" t
check "verify() after the update ($S)" "$(verify_ok $db $sh)" t
check "verify() after the update ($B)" "$(verify_ok $db $b)" t

# --- the same catalogs as a fresh install, and not those of 1.0.
psql -X -q -d postgres -c "CREATE DATABASE gi_upgrade_fresh" && q gi_upgrade_fresh "CREATE EXTENSION gmail_ingest" >/dev/null
psql -X -q -d gi_upgrade_fresh -f test/lib/schema_catalog.sql >"$GI_WORK/catalog-fresh.txt"
psql -X -q -d $db -f test/lib/schema_catalog.sql | grep -v '^relation gi_test\|gi_test_' >"$GI_WORK/catalog-updated.txt"
facts=$(wc -l <"$GI_WORK/catalog-fresh.txt")
check "the catalog listing is substantial" "$([ "$facts" -gt 300 ] && echo yes)" yes
diff -u "$GI_WORK/catalog-fresh.txt" "$GI_WORK/catalog-updated.txt" >"$GI_WORK/catalog.diff"
check "updated schema = fresh install ($facts facts)" "$(wc -l <"$GI_WORK/catalog.diff")" 0
head -40 "$GI_WORK/catalog.diff"
check "the comparison sees 1.0's differences" \
	"$(diff -q "$GI_WORK/catalog-1.0.txt" "$GI_WORK/catalog-fresh.txt" >/dev/null && echo same || echo differ)" differ

# --- the updated database at work.
tuples="SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_xact_user_tables
         WHERE schemaname = 'gmail_ingest' AND relname IN ('mail_threads', 'mail_messages', 'mail_attachments', 'blobs')"
written=$(psql -X -At -q -d $db <<SQL
BEGIN;
SELECT ($tuples) AS before \gset
SELECT status FROM gmail_ingest.gmail_sync($a, 7, true) \gset
SELECT :'status' || ' ' || (($tuples) - :before);
COMMIT;
SQL
)
check "forced full re-run after the update writes 0 tuples" "$written" "succeeded 0"
$DQ add "$A" >/dev/null
check "incremental sync after the update" \
	"$(q $db "SELECT mode || ' ' || status || ' ' || messages_inserted FROM gmail_ingest.gmail_sync($a, 7)")" \
	"incremental succeeded 1"
psql -X -q -d $db -c "CALL gmail_ingest.gmail_backfill($b, 7, 25)" >/dev/null 2>&1
check "the 1.0 backfill completes" \
	"$(q $db "SELECT history_id IS NOT NULL AND backfill_history_id IS NULL FROM gmail_ingest.mailboxes WHERE id = $b")" t
check "backfill: every message of the window" \
	"$(q $db "SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = $b")" "$($DQ window-count "$B" 7)"
check "verify() after more syncs" "$(verify_ok $db $a) $(verify_ok $db $b)" "t t"
check "no duplicate" "$(q $db "SELECT gi_test_duplicates($a) + gi_test_duplicates($b)")" 0

# --- a 1.0 dump restored under the new library, then updated.
rdb=gi_upgrade_restored
psql -X -q -d postgres -c "CREATE DATABASE $rdb"
q $rdb "CREATE EXTENSION gmail_ingest VERSION '1.0'" >/dev/null
# the schema came with the extension: the dump's CREATE SCHEMA is left out
pg_restore -l "$GI_WORK/upgrade-1.0.dump" | grep -v ' SCHEMA - gmail_ingest ' >"$GI_WORK/upgrade-restore.list"
pg_restore -L "$GI_WORK/upgrade-restore.list" -d $rdb "$GI_WORK/upgrade-1.0.dump" >"$GI_WORK/upgrade-restore.log" 2>&1
check "1.0 dump restored without error" "$(grep -c 'error' "$GI_WORK/upgrade-restore.log")" 0
q $rdb "ALTER EXTENSION gmail_ingest UPDATE" >/dev/null 2>&1
check "restored at the library's version" "$(q $rdb "SELECT extversion FROM pg_extension WHERE extname = 'gmail_ingest'")" "$version"
check "restored: every row" "$(q $rdb "SELECT gi_test_db_digest(true)")" "$before_contents"
check "restored: every blob copied to each mailbox" "$(q $rdb "$blob_copies_11")" "$before_copies"
check "restored: ledger" "$(q $rdb "$ledger_digest")" "$before_ledger"
check "restored: verify()" "$(verify_ok $rdb $a) $(verify_ok $rdb $b)" "t t"
$DQ add "$A" >/dev/null
check "restored: a sync writes again" "$(q $rdb "SELECT status FROM gmail_ingest.gmail_sync($a, 7)")" succeeded
new_mailbox "$N" '"seed":43,"threads":3,"messages":6,"days":9,"window_days":7'
n=$(q $rdb "SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000a1', '$N', 'rt-$N')" 2>&1)
check "restored: a new mailbox gets a new id" \
	"$(q $rdb "SELECT count(*) FROM gmail_ingest.mailboxes WHERE id = $n AND provider_email = '$N'") $([ "$n" -gt "$b" ] && echo fresh)" "1 fresh"
check "restored: the new mailbox syncs" "$(q $rdb "SELECT status FROM gmail_ingest.gmail_sync($n, 7)")" succeeded
check "restored: verify() and no duplicate" \
	"$(verify_ok $rdb $a) $(verify_ok $rdb $n) $(q $rdb "SELECT gi_test_duplicates($a) + gi_test_duplicates($n)")" "t t 0"

finish
