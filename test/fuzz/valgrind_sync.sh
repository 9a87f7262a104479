#!/usr/bin/env bash
# A sync of the content-fidelity corpus under valgrind (memcheck), in a
# single-user backend: `postgres --single` runs CREATE EXTENSION, add_mailbox
# and gmail_sync (the libcurl fetches, the GMime parse of every message, the
# SPI writes) in one process that valgrind watches from start to exit.
#
#   bash test/fuzz/valgrind_sync.sh        (as root)
#
# About 75 s on 2 cores (60 s of it under valgrind), plus the build and
# install (skipped with VALGRIND_SYNC_NO_BUILD=1).
#
# The corpus is the one of test/scripts/content_fidelity.sh: Python's email
# test messages (libpython3.11-testsuite), test/mime/cases/*.eml, and the
# 1,000-level nesting and 25 MB attachment made by test/scripts/content_compare.py;
# the message with NUL bytes goes to a second mailbox (its sync fails, a
# known bug outside the parser: that error path is run too).
#
# Passes when valgrind reports no error at all (invalid reads or writes,
# uninitialised values, bad frees) and no definite or possible leak whose
# stack goes through gmail_ingest.so, other than the suppressions below
# (PostgreSQL's own allocations and known false positives, GMime's
# once-per-process type buckets).  Not run by test/run_tests.sh: too slow.
# Work files in test/out/valgrind_sync/ (valgrind.log, backend output).
set -uo pipefail
. "$(cd "$(dirname "$0")" && pwd)/../lib/env.sh"
cd "$GI_ROOT"

OUT=$GI_ROOT/test/out/valgrind_sync
PY=/usr/bin/python3.11
[ -x "$PY" ] || PY=python3
PYDATA=/usr/lib/python3.11/test/test_email/data
rm -rf "$OUT"
mkdir -p "$OUT"
started=$SECONDS

gi_ensure_packages || exit 1
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
if [ -z "${VALGRIND_SYNC_NO_BUILD:-}" ]; then
	gi_build_install || exit 1
fi

GI_WORK=$(mktemp -d /tmp/gmail_ingest_vg.XXXXXX)
export GI_WORK
trap gi_stop_all EXIT
gi_start_double

# ---- the corpus in the double ------------------------------------------------
files=()
for f in "$PYDATA"/msg_*.txt test/mime/cases/*.eml; do
	[ -s "$f" ] && [ "$(basename "$f")" != nul_byte.eml ] && files+=("$f")
done
"$PY" test/scripts/content_compare.py generate "$OUT/gen" || exit 1
files+=("$OUT"/gen/*.eml)
email=vg-$$@example.com
for e in "$email" "nul-$email"; do
	gi_double POST /admin/mailboxes '{"email":"'"$e"'","refresh_token":"rt-'"$e"'","messages":0,"threads":0}' >/dev/null || exit 1
done
"$PY" test/scripts/content_compare.py load "$DOUBLE_URL" "$email" "$OUT/manifest.json" "${files[@]}" || exit 1
"$PY" test/scripts/content_compare.py load "$DOUBLE_URL" "nul-$email" "$OUT/manifest_nul.json" test/mime/cases/nul_byte.eml || exit 1
# Two syncs that fail, so the failure paths run under valgrind too: Gmail
# answering 503 mid-transfer (retries off), and a revoked grant.
for e in "fail-$email" "revoked-$email"; do
	gi_double POST /admin/mailboxes '{"email":"'"$e"'","refresh_token":"rt-'"$e"'","seed":5,"threads":5,"messages":20,"days":7,"window_days":7,"attachments":3}' >/dev/null || exit 1
done
$DQ faults '[{"endpoint": "messages.get", "kind": "status", "status": 503, "reason": "backendError", "count": -1, "after": 3, "email": "fail-'"$email"'"}]' || exit 1
gi_double POST "/admin/mailboxes/revoked-$email/revoke" '{}' >/dev/null || exit 1
gi_log "corpus: ${#files[@]} + 1 messages in the double"

# ---- a cluster that is never started: single-user mode only ------------------
data=$GI_WORK/data
mkdir -p "$data"
chown -R postgres:postgres "$GI_WORK" "$OUT"
su postgres -c "$GI_PGBIN/initdb -D '$data' --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null" || exit 1
cat >>"$data/postgresql.conf" <<CONF
shared_preload_libraries = 'gmail_ingest'
fsync = off
gmail_ingest.api_base_url = '$DOUBLE_URL'
gmail_ingest.oauth_token_url = '$DOUBLE_URL/token'
gmail_ingest.client_id = 'test-client-id'
gmail_ingest.client_secret = 'test-client-secret'
gmail_ingest.max_retries = 0
CONF

# PostgreSQL's own false positives and allocations (Debian's build has no
# USE_VALGRIND, so none of its client requests): padding bytes of WAL records
# (with --track-origins their origins are stack or memory-context blocks of
# heap_multi_insert, CacheInvalidateHeapTuple and the executor, never the
# extension), the regex cache's overlapping memmove that _FORTIFY_SOURCE
# turned into __memcpy_chk, GUC strings and the ps display saved at startup.
# The pwrite ones require a postgres frame right above pwrite() and an XLog
# function, so they cannot hide a write by libcurl or the extension.
cat >"$OUT/pg.supp" <<'SUPP'
{
   pg-wal-page-padding-insert
   Memcheck:Param
   pwrite64(buf)
   fun:pwrite
   obj:/usr/lib/postgresql/15/bin/postgres
   ...
   fun:XLogInsertRecord
}
{
   pg-wal-page-padding-flush
   Memcheck:Param
   pwrite64(buf)
   fun:pwrite
   obj:/usr/lib/postgresql/15/bin/postgres
   fun:XLogFlush
}
{
   pg-regex-cache-memmove-fortified-as-memcpy
   Memcheck:Overlap
   fun:__memcpy_chk
   fun:RE_compile_and_cache
}
{
   pg-guc-strdup-at-startup
   Memcheck:Leak
   match-leak-kinds: definite,possible
   fun:malloc
   fun:strdup
   obj:/usr/lib/postgresql/15/bin/postgres
   ...
   fun:ProcessConfigFile
}
{
   pg-ps-display-args
   Memcheck:Leak
   match-leak-kinds: definite,possible
   fun:malloc
   fun:save_ps_display_args
}
SUPP
supp="--suppressions=$OUT/pg.supp --suppressions=$GI_ROOT/test/mime/valgrind.supp"
[ -f /usr/share/glib-2.0/valgrind/glib.supp ] && supp="$supp --suppressions=/usr/share/glib-2.0/valgrind/glib.supp"

cat >"$OUT/input.sql" <<SQL
CREATE EXTENSION gmail_ingest;
SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000f1', '$email', 'rt-$email');
SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000f1', 'nul-$email', 'rt-nul-$email');
SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000f1', 'fail-$email', 'rt-fail-$email');
SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000f1', 'revoked-$email', 'rt-revoked-$email');
SELECT format('RUN1 %s inserted=%s parse_errors=%s attachments=%s %s', status, messages_inserted,
	messages_parse_errors, attachments_inserted, error) AS r FROM gmail_ingest.gmail_sync(1, 7);
SELECT format('RUN2 %s inserted=%s %s', status, messages_inserted, error) AS r FROM gmail_ingest.gmail_sync(2, 7);
SELECT format('RUN3 %s inserted=%s unchanged=%s', status, messages_inserted, messages_unchanged) AS r
	FROM gmail_ingest.gmail_sync(1, 7, true);
SET gmail_ingest.max_retries = 0;
SELECT format('RUN4 %s stored=%s', status, (SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = 3)) AS r
	FROM gmail_ingest.gmail_sync(3, 7);
SELECT format('RUN5 %s stored=%s', status, (SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = 4)) AS r
	FROM gmail_ingest.gmail_sync(4, 7);
SELECT format('STORED %s parse_errors=%s', count(*), count(parse_error)) AS r
	FROM gmail_ingest.mail_messages WHERE mailbox_id = 1;
SELECT format('VERIFY %s', bool_and(ok)) AS r FROM gmail_ingest.verify(1);
SQL

gi_log "gmail_sync under valgrind (single-user backend)"
t0=$SECONDS
# G_SLICE/G_DEBUG: glib allocates with malloc so that valgrind sees it all
su postgres -c "cd '$OUT' && G_SLICE=always-malloc G_DEBUG=gc-friendly valgrind --tool=memcheck \
	-s --leak-check=full --show-leak-kinds=definite,possible --errors-for-leak-kinds=definite,possible \
	--num-callers=40 --error-limit=no --track-origins=yes --read-var-info=no \
	--log-file='$OUT/valgrind.log' $supp --gen-suppressions=all \
	$GI_PGBIN/postgres --single -D '$data' -j postgres <'$OUT/input.sql' >'$OUT/backend.out' 2>&1"
rc=$?
vg_secs=$((SECONDS - t0))

fail=0
say() { echo "$1"; }
grep -o '"\(RUN[12345]\|STORED\|VERIFY\) [^"]*"' "$OUT/backend.out" | tr -d '"' | sed 's/^/# /'
run1=$(grep -c '"RUN1 succeeded' "$OUT/backend.out")
stored=$(grep -o '"STORED [0-9]*' "$OUT/backend.out" | grep -o '[0-9]*$')
[ "$rc" = 0 ] || { say "not ok - the backend exited with $rc (see $OUT/backend.out)"; fail=1; }
[ "$run1" -ge 1 ] || { say "not ok - the corpus sync did not succeed (see $OUT/backend.out)"; fail=1; }
[ "$(grep -c -e '"RUN4 failed stored=0' -e '"RUN5 failed stored=0' "$OUT/backend.out")" = 2 ] ||
	{ say "not ok - the two failing syncs did not fail cleanly (see $OUT/backend.out)"; fail=1; }
errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$OUT/valgrind.log" | tail -1)
definite=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$OUT/valgrind.log" | tail -1)
possible=$(sed -n 's/.*possibly lost: \([0-9,]*\) bytes.*/\1/p' "$OUT/valgrind.log" | tail -1)
ours=$(awk '/^==[0-9]+== [^ ]/ {blk = blk $0 "\n"} /^==[0-9]+== $/ {if (blk ~ /gmail_ingest\.so|mime_[a-z0-9]+\.c|sha256_hex/ && blk !~ /ERROR SUMMARY|HEAP SUMMARY|LEAK SUMMARY/) n++; blk = ""} END {print n + 0}' "$OUT/valgrind.log")
echo "# valgrind: ${errors:-?} errors after suppressions; leaks not suppressed: definite ${definite:-0} bytes, possible ${possible:-0} bytes; reports through the extension: $ours"
echo "# corpus: ${#files[@]} + 1 messages, stored ${stored:-?}; valgrind run ${vg_secs} s, whole script $((SECONDS - started)) s"
[ "${errors:-1}" = 0 ] || { say "not ok - valgrind reported errors (see $OUT/valgrind.log)"; fail=1; }
[ "$ours" = 0 ] || { say "not ok - $ours valgrind reports go through the extension"; fail=1; }
[ "${stored:-0}" = "${#files[@]}" ] || { say "not ok - stored ${stored:-?} of ${#files[@]} messages"; fail=1; }
if [ $fail = 0 ]; then
	echo "ok - no invalid access, no uninitialised use, no leak attributable to the extension, failures included"
fi
exit $fail
