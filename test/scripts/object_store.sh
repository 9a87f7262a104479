#!/usr/bin/env bash
# Object storage (SPEC 7d, issue 14) against test/s3/s3_server.py, a local
# S3 whose SigV4 check is botocore's, not ours, and which refuses keys
# outside Supabase Storage's character set.
#
#  1. blob_store = 's3': every attachment and raw message is an object at
#     its key holding the right bytes (the server's SHA-256 of each object
#     against the rows), blobs holds no bytes, verify(deep) passes; a
#     re-run sends 0 PUT and 0 HEAD and writes 0 data tuples.  An object
#     deleted or damaged behind the database's back is named by verify
#     (HEAD: size; deep: hash).  An endpoint with a path (Supabase's) and
#     virtual-hosted addressing (s3_path_style = off) work too.
#  2. Hostile filenames (spaces, + % ? #, NFC and NFD, 255 bytes, names
#     that read alike once made safe): every key accepted, portable,
#     deterministic (a second database computes the same keys), no two
#     contents or names at one key.
#  3. Failures: a wrong secret (SignatureDoesNotMatch), a missing bucket
#     (NoSuchBucket) are recorded, name the code and never the secret, and
#     leave no rows; a 503 SlowDown storm is retried and the sync succeeds.
#  4. Cancel mid-upload: no rows; the objects it uploaded are orphans that
#     gc_objects lists (dry run), keeps while younger than an hour, and
#     deletes when older, without touching a referenced object.
#  5. migrate_blobs both ways on a populated database, killed mid-way by
#     statement_timeout and resumed; verify(deep) after each; the switch of
#     blob_store on a populated database.
#  6. Privileges: the secret is unreadable and unsettable by a non-superuser
#     and absent from the server log at debug5.
set -uo pipefail
. "$(dirname "$0")/../lib/script.sh"

DB=gi_objects
TAG=$(run_tag)
NOW_MS=$(now_ms)
E1=obj-$TAG@objects.example
E2=obj-names-$TAG@objects.example
E3=obj-fail-$TAG@objects.example
E4=obj-cancel-$TAG@objects.example
E5=obj-migrate-$TAG@objects.example
ORG=00000000-0000-0000-0000-0000000000c1
ORG2=00000000-0000-0000-0000-0000000000c2
LOG=${GI_LOG:-$GI_WORK/postgres.log}
OUT=$(mktemp -d "${TMPDIR:-/tmp}/gi_objects.XXXXXX")
S3OPT="-c gmail_ingest.blob_store=s3"

cleanup() {
	gi_s3 POST /admin/config '{"latency_ms":0,"max_keys":1000,"clear_faults":true,"create_bucket":true}' >/dev/null 2>&1
	dropdb --if-exists $DB >/dev/null 2>&1
	dropdb --if-exists ${DB}_2 >/dev/null 2>&1
	dropdb --if-exists ${DB}_3 >/dev/null 2>&1
	psql -X -q -d postgres -c "DROP ROLE IF EXISTS gi_objects_reader" >/dev/null 2>&1
	rm -rf "$OUT"
}
trap cleanup EXIT

s3q() { PGOPTIONS="${PGOPTIONS:-} $S3OPT" q "$@"; }
s3stat() { gi_s3 GET /admin/stats | python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', 0))"; }
# objects on the server under db1/PREFIX (DB=2: db2/PREFIX) as "key sha256"
# lines, sorted, the key without its db1/ (db2/), the database's s3_prefix
s3objects() {
	local p=db${2:-1}/
	gi_s3 GET "/admin/objects?prefix=$(python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$p$1")" |
		python3 -c 'import json,sys; [print(o["key"][len(sys.argv[1]):], o["sha256"]) for o in json.load(sys.stdin)]' "$p" | sort
}
# what the rows say should be there, as "key sha256" lines, sorted
rows_objects() {
	q "$1" "SELECT a.storage_path || ' ' || a.sha256 FROM gmail_ingest.mail_attachments a WHERE a.mailbox_id = $2
	        UNION
	        SELECT format('%s/%s/raw/%s.eml', x.org_id, m.mailbox_id, m.raw_sha256) || ' ' || m.raw_sha256
	          FROM gmail_ingest.mail_messages m JOIN gmail_ingest.mailboxes x ON x.id = m.mailbox_id
	         WHERE m.mailbox_id = $2 AND m.raw_sha256 IS NOT NULL ORDER BY 1" | sort
}
data_tuples_sql="SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_xact_user_tables
	WHERE schemaname = 'gmail_ingest' AND relname IN ('mail_threads', 'mail_messages', 'mail_attachments', 'blobs', 'objects')"

gi_s3 POST /admin/stats/reset >/dev/null
fresh_db $DB
fresh_db ${DB}_2
# each database keeps its objects under a prefix of its own in the shared bucket
q $DB "ALTER DATABASE $DB SET gmail_ingest.s3_prefix = 'db1/'"
q ${DB}_2 "ALTER DATABASE ${DB}_2 SET gmail_ingest.s3_prefix = 'db2/'"

# ---- 1. a mailbox synced into the object store
new_mailbox "$E1" "\"seed\":141,\"threads\":20,\"messages\":60,\"days\":7,\"window_days\":7,\"attachments\":40,\"now_ms\":$NOW_MS"
mb1=$(q $DB "SELECT gmail_ingest.add_mailbox('$ORG', '$E1', 'rt-$E1')")
IFS='|' read -r status err <<<"$(s3q $DB "SELECT status, coalesce(error, '') FROM gmail_ingest.gmail_sync($mb1, 7)")"
check "s3: the sync succeeded" "$status$err" succeeded
expected=$(rows_objects $DB "$mb1")
nexp=$(echo "$expected" | grep -c .)
puts=$(s3stat PUT)
echo "# s3 sync: $nexp objects expected, $puts PUTs, $(s3stat HEAD) HEADs, $(s3stat rejected) rejected"
check "s3: attachments and raw messages to store" "$([ "$nexp" -gt 60 ] && echo yes)" yes
check "s3: every object at its key with the right bytes (server-side SHA-256)" \
	"$(s3objects "$ORG/$mb1/" | md5sum)" "$(echo "$expected" | md5sum)"
check "s3: one PUT per object" "$puts" "$nexp"
check "s3: no request refused by the signature check" "$(s3stat rejected)" 0
check "s3: the objects table records each key" "$(q $DB "SELECT count(*) FROM gmail_ingest.objects WHERE mailbox_id = $mb1")" "$nexp"
check "s3: blobs holds no bytes" "$(q $DB "SELECT count(*) FILTER (WHERE data IS NOT NULL) || '/' || count(*) FROM gmail_ingest.blobs")" \
	"0/$(q $DB "SELECT count(*) FROM gmail_ingest.blobs")"
check "s3: attachments carry sha256 and storage_path" \
	"$(q $DB "SELECT count(*) FROM gmail_ingest.mail_attachments WHERE mailbox_id = $mb1 AND storage_path <> format('%s/%s/%s/', '$ORG', $mb1, sha256) || split_part(storage_path, '/', 4)")" 0
check "s3: verify(deep => true)" "$(q $DB "SELECT coalesce(string_agg(check_name || ': ' || detail, '; '), 't') FROM gmail_ingest.verify($mb1, deep => true) WHERE NOT ok")" t
check "s3: verify ran the object checks" "$(q $DB "SELECT count(*) FROM gmail_ingest.verify($mb1, true) WHERE check_name IN ('objects present', 'object hashes match')")" 2
# objects lost or damaged behind the database's back: verify names each key
k1=$(q $DB "SELECT object_key FROM gmail_ingest.objects WHERE mailbox_id = $mb1 ORDER BY object_key LIMIT 1")
k2=$(q $DB "SELECT object_key FROM gmail_ingest.objects WHERE mailbox_id = $mb1 ORDER BY object_key LIMIT 1 OFFSET 1")
hexof() { gi_s3 GET "/admin/object?key=$(python3 -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "db1/$1")" | od -An -v -tx1 | tr -d ' \n'; }
h1=$(hexof "$k1")
h2=$(hexof "$k2")
gi_s3 POST /admin/delete "{\"key\":\"db1/$k1\"}" >/dev/null
gi_s3 POST /admin/put "{\"key\":\"db1/$k2\",\"data_hex\":\"${h2}00\"}" >/dev/null
check "verify: the missing object named" "$(q $DB "SELECT string_agg(check_name || '=' || detail, ';') FROM gmail_ingest.verify($mb1) WHERE check_name = 'object missing'")" "object missing=$k1: missing"
check "verify: the object of the wrong size named" "$(q $DB "SELECT string_agg(detail, ';') FROM gmail_ingest.verify($mb1) WHERE check_name = 'object damaged'")" "$k2: wrong size"
check "verify: the summary fails" "$(q $DB "SELECT string_agg(check_name || '=' || ok, ',' ORDER BY check_name) FROM gmail_ingest.verify($mb1) WHERE check_name LIKE 'objects present' OR check_name LIKE 'object sizes match'")" "object sizes match=false,objects present=false"
first=${h2:0:2}
[ "$first" = ff ] && other=00 || other=ff
gi_s3 POST /admin/put "{\"key\":\"db1/$k2\",\"data_hex\":\"$other${h2:2}\"}" >/dev/null
check "verify(deep): same size, other bytes named" "$(q $DB "SELECT string_agg(detail, ';') FROM gmail_ingest.verify($mb1, true) WHERE check_name = 'object damaged'")" "$k2: bytes do not hash to its sha256"
gi_s3 POST /admin/put "{\"key\":\"db1/$k1\",\"data_hex\":\"$h1\"}" >/dev/null
gi_s3 POST /admin/put "{\"key\":\"db1/$k2\",\"data_hex\":\"$h2\"}" >/dev/null
check "verify(deep) after the repair" "$(q $DB "SELECT coalesce(string_agg(check_name || ': ' || detail, '; '), 't') FROM gmail_ingest.verify($mb1, true) WHERE NOT ok")" t

gi_s3 POST /admin/stats/reset >/dev/null
IFS='|' read -r status tuples <<<"$(PGOPTIONS="$S3OPT" psql -X -At -F'|' -d $DB -c "BEGIN" \
	-c "SELECT status FROM gmail_ingest.gmail_sync($mb1, 7, true)" -c "$data_tuples_sql" -c "COMMIT" | sed -n '2p;3p' | paste -sd'|')"
check "s3 re-run (full): succeeded" "$status" succeeded
check "s3 re-run: 0 PUT" "$(s3stat PUT)" 0
check "s3 re-run: 0 HEAD" "$(s3stat HEAD)" 0
check "s3 re-run: 0 data tuples written" "$tuples" 0

# an endpoint with a path (Supabase Storage: https://<ref>.supabase.co/storage/v1/s3)
new_mailbox "path-$E1" "\"seed\":147,\"threads\":2,\"messages\":3,\"days\":7,\"window_days\":7,\"attachments\":2,\"now_ms\":$NOW_MS"
mbp=$(q $DB "SELECT gmail_ingest.add_mailbox('$ORG', 'path-$E1', 'rt-path-$E1')")
IFS='|' read -r status err <<<"$(PGOPTIONS="$S3OPT -c gmail_ingest.s3_endpoint=$S3_URL/storage/v1/s3/" q $DB "SELECT status, coalesce(error, '') FROM gmail_ingest.gmail_sync($mbp, 7)")"
check "endpoint with a path: the sync succeeded" "$status$err" succeeded
check "endpoint with a path: every object in place" "$(s3objects "$ORG/$mbp/" | md5sum)" "$(rows_objects $DB "$mbp" | md5sum)"

# virtual-hosted addressing (s3_path_style = off): the bucket in the host name
new_mailbox "vhost-$E1" "\"seed\":148,\"threads\":2,\"messages\":3,\"days\":7,\"window_days\":7,\"attachments\":2,\"now_ms\":$NOW_MS"
mbv=$(q $DB "SELECT gmail_ingest.add_mailbox('$ORG', 'vhost-$E1', 'rt-vhost-$E1')")
gi_s3 POST /admin/stats/reset >/dev/null
IFS='|' read -r status err <<<"$(PGOPTIONS="$S3OPT -c gmail_ingest.s3_path_style=off -c gmail_ingest.s3_endpoint=${S3_URL/127.0.0.1/localhost}" q $DB "SELECT status, coalesce(error, '') FROM gmail_ingest.gmail_sync($mbv, 7)")"
check "virtual-hosted: the sync succeeded" "$status$err" succeeded
check "virtual-hosted: every object in place" "$(s3objects "$ORG/$mbv/" | md5sum)" "$(rows_objects $DB "$mbv" | md5sum)"
check "virtual-hosted: no request refused" "$(s3stat rejected)" 0
check "virtual-hosted: every PUT addressed by host name" "$(s3stat virtual_hosted)" "$(s3stat PUT)"
check "virtual-hosted: verify(deep) through the bucket's host name" \
	"$(PGOPTIONS="-c gmail_ingest.s3_path_style=off -c gmail_ingest.s3_endpoint=${S3_URL/127.0.0.1/localhost}" q $DB "SELECT coalesce(string_agg(check_name || ': ' || detail, '; '), 't') FROM gmail_ingest.verify($mbv, true) WHERE NOT ok")" t

# ---- 2. hostile filenames
new_mailbox "$E2" "\"seed\":142,\"threads\":1,\"messages\":1,\"days\":7,\"window_days\":7,\"attachments\":0,\"now_ms\":$NOW_MS"
python3 - "$E2" "$OUT/names.json" <<'PY'
import base64, json, sys, unicodedata, urllib.parse
email, out = sys.argv[1], sys.argv[2]
e = "\u00e9t\u00e9 r\u00e9sum\u00e9.pdf"
names = ["a b.pdf", "a+b.pdf", "100%.pdf", "what?.txt", "c#1.txt", "a#b.txt", "a%b.txt",
         unicodedata.normalize("NFC", e), unicodedata.normalize("NFD", e),
         "\u65e5\u672c\u8a9e.txt", "tab\there.txt", "x" * 251 + ".bin", "../up.txt"]
parts = []
for i, n in enumerate(names):
    # a#b and a%b: the same bytes, names alike once made safe
    data = b"same bytes for a#b and a%b\n" if n in ("a#b.txt", "a%b.txt") else ("content %d of %s\n" % (i, n)).encode()
    enc = urllib.parse.quote(n.encode(), safe="")
    parts.append("--BOUND\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment;\r\n"
                 " filename*=UTF-8''%s\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n"
                 % (enc, base64.b64encode(data).decode()))
raw = ("From: a@example.com\r\nTo: b@example.com\r\nSubject: names\r\nMessage-ID: <names@example.com>\r\n"
       "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=BOUND\r\n\r\n--BOUND\r\n"
       "Content-Type: text/plain\r\n\r\nhostile names\r\n" + "".join(parts) + "--BOUND--\r\n").encode()
json.dump({"raw_b64": base64.urlsafe_b64encode(raw).decode()}, open(out, "w"))
print(len(names))
PY
gi_double POST "/admin/mailboxes/$E2/messages" "$(cat "$OUT/names.json")" >/dev/null
mb2=$(q $DB "SELECT gmail_ingest.add_mailbox('$ORG', '$E2', 'rt-$E2')")
mb2b=$(q ${DB}_2 "SELECT gmail_ingest.add_mailbox('$ORG2', '$E2', 'rt-$E2')")
gi_s3 POST /admin/stats/reset >/dev/null
IFS='|' read -r status err <<<"$(s3q $DB "SELECT status, coalesce(error, '') FROM gmail_ingest.gmail_sync($mb2, 7)")"
check "names: the sync succeeded" "$status$err" succeeded
check "names: no key refused by the server" "$(s3stat rejected)" 0
check "names: 13 hostile attachments stored" "$(q $DB "SELECT count(*) FROM gmail_ingest.mail_attachments WHERE mailbox_id = $mb2")" 13
check "names: every key portable (Supabase's set) and at most 1024 bytes" \
	"$(q $DB "SELECT count(*) FROM gmail_ingest.mail_attachments WHERE mailbox_id = $mb2 AND (storage_path !~ '^[A-Za-z0-9_/!.*''() &\$=@;:+,?-]+\$' OR octet_length(storage_path) > 1024)")" 0
check "names: the original filename kept" "$(q $DB "SELECT count(*) FROM gmail_ingest.mail_attachments WHERE mailbox_id = $mb2 AND filename IN ('a#b.txt', '100%.pdf', '日本語.txt')")" 3
check "names: NFC and NFD names at different keys" "$(q $DB "SELECT count(DISTINCT storage_path) FROM gmail_ingest.mail_attachments WHERE mailbox_id = $mb2 AND filename LIKE '%sum%'")" 2
check "names: a#b and a%b (same bytes) at different keys" "$(q $DB "SELECT count(DISTINCT storage_path) FROM gmail_ingest.mail_attachments WHERE mailbox_id = $mb2 AND filename IN ('a#b.txt', 'a%b.txt')")" 2
check "names: one key per attachment" "$(q $DB "SELECT count(*) - count(DISTINCT storage_path) FROM gmail_ingest.mail_attachments WHERE mailbox_id = $mb2")" 0
check "names: every object with the right bytes" "$(s3objects "$ORG/$mb2/" | md5sum)" "$(rows_objects $DB "$mb2" | md5sum)"
s3q ${DB}_2 "SELECT status FROM gmail_ingest.gmail_sync($mb2b, 7)" >/dev/null
check "names: deterministic (another database computes the same keys)" \
	"$(q ${DB}_2 "SELECT string_agg(split_part(storage_path, '/', 3) || '/' || split_part(storage_path, '/', 4), ',' ORDER BY part_id) FROM gmail_ingest.mail_attachments WHERE mailbox_id = $mb2b" | md5sum)" \
	"$(q $DB "SELECT string_agg(split_part(storage_path, '/', 3) || '/' || split_part(storage_path, '/', 4), ',' ORDER BY part_id) FROM gmail_ingest.mail_attachments WHERE mailbox_id = $mb2" | md5sum)"
check "names: verify(deep)" "$(q $DB "SELECT coalesce(string_agg(check_name || ': ' || detail, '; '), 't') FROM gmail_ingest.verify($mb2, true) WHERE NOT ok")" t

# ---- 3. failures
new_mailbox "$E3" "\"seed\":143,\"threads\":4,\"messages\":8,\"days\":7,\"window_days\":7,\"attachments\":4,\"now_ms\":$NOW_MS"
mb3=$(q $DB "SELECT gmail_ingest.add_mailbox('$ORG', '$E3', 'rt-$E3')")
WRONG=wrong-secret-$TAG
IFS='|' read -r status err <<<"$(PGOPTIONS="$S3OPT -c gmail_ingest.s3_secret_access_key=$WRONG" q $DB "SELECT status, error FROM gmail_ingest.gmail_sync($mb3, 7)" 2>/dev/null)"
check "wrong secret: recorded failure" "$status" failed
check "wrong secret: the error names SignatureDoesNotMatch" "$([[ $err == *SignatureDoesNotMatch* ]] && echo yes || echo "no: $err")" yes
check "wrong secret: the error names the key" "$([[ $err == *"$ORG/$mb3/"* ]] && echo yes || echo "no: $err")" yes
check "wrong secret: the secret is in no error" "$([[ $err == *"$WRONG"* || $err == *"$S3_SECRET_KEY"* ]] && echo leaked || echo no)" no
check "wrong secret: SQLSTATE 28000, kind config" "$(q $DB "SELECT detail->>'sqlstate' || '/' || (detail->>'kind') FROM gmail_ingest.ledger WHERE mailbox_id = $mb3 AND event = 'sync.failed' ORDER BY id DESC LIMIT 1")" 28000/config
check "wrong secret: no rows" "$(q $DB "SELECT (SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = $mb3) + (SELECT count(*) FROM gmail_ingest.objects WHERE mailbox_id = $mb3)")" 0
gi_s3 POST /admin/config '{"drop_bucket":true}' >/dev/null
IFS='|' read -r status err <<<"$(s3q $DB "SELECT status, error FROM gmail_ingest.gmail_sync($mb3, 7)" 2>/dev/null)"
gi_s3 POST /admin/config '{"create_bucket":true}' >/dev/null
check "bucket missing: recorded failure naming NoSuchBucket" "$status/$([[ $err == *NoSuchBucket* ]] && echo named || echo "$err")" failed/named
check "bucket missing: no rows" "$(q $DB "SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = $mb3")" 0
gi_s3 POST /admin/faults '{"ops":["PUT"],"status":503,"code":"SlowDown","count":6}' >/dev/null
gi_s3 POST /admin/stats/reset >/dev/null
IFS='|' read -r status err retries <<<"$(s3q $DB "SELECT status, coalesce(error, ''), retries FROM gmail_ingest.gmail_sync($mb3, 7)")"
echo "# 503 storm: $(s3stat faults) SlowDown answers, $retries retries"
check "503 storm: the sync succeeded" "$status$err" succeeded
check "503 storm: every SlowDown retried" "$(s3stat faults)/$([ "$retries" -ge 6 ] && echo ge6 || echo "$retries")" 6/ge6
check "503 storm: every object in place" "$(s3objects "$ORG/$mb3/" | md5sum)" "$(rows_objects $DB "$mb3" | md5sum)"
check "503 storm: verify(deep)" "$(q $DB "SELECT coalesce(string_agg(check_name || ': ' || detail, '; '), 't') FROM gmail_ingest.verify($mb3, true) WHERE NOT ok")" t

# ---- 4. cancel mid-upload, then gc_objects
new_mailbox "$E4" "\"seed\":144,\"threads\":10,\"messages\":40,\"days\":7,\"window_days\":7,\"attachments\":30,\"now_ms\":$NOW_MS"
mb4=$(q $DB "SELECT gmail_ingest.add_mailbox('$ORG', '$E4', 'rt-$E4')")
gi_s3 POST /admin/config '{"latency_ms":400}' >/dev/null
out=$(PGOPTIONS="$S3OPT -c statement_timeout=2000" q $DB "SELECT status FROM gmail_ingest.gmail_sync($mb4, 7)" 2>&1)
gi_s3 POST /admin/config '{"latency_ms":0}' >/dev/null
orphans=$(s3objects "$ORG/$mb4/" | grep -c .)
echo "# cancel: $orphans objects uploaded before the statement timeout"
check "cancel: the statement was cancelled" "$([[ $out == *"statement timeout"* ]] && echo yes || echo "no: $out")" yes
check "cancel: no rows" "$(q $DB "SELECT (SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = $mb4) + (SELECT count(*) FROM gmail_ingest.objects WHERE mailbox_id = $mb4)")" 0
check "cancel: some objects were uploaded (orphans)" "$([ "$orphans" -gt 0 ] && echo yes)" yes
gi_s3 POST /admin/config '{"max_keys":7}' >/dev/null	# ListObjectsV2 in pages of 7
check "gc dry run: lists exactly the orphans, kept while young" \
	"$(q $DB "SELECT count(*) FILTER (WHERE action LIKE 'kept%') || '/' || count(*) FROM gmail_ingest.gc_objects(false)")" "$orphans/$orphans"
check "gc: young orphans not deleted" "$(s3objects "$ORG/$mb4/" | grep -c .)" "$orphans"
gi_s3 POST /admin/age '{"seconds":7200}' >/dev/null
check "gc dry run (aged): would delete the orphans" "$(q $DB "SELECT string_agg(DISTINCT action, ',') || '/' || count(*) FROM gmail_ingest.gc_objects()")" "would delete/$orphans"
check "gc dry run deleted nothing" "$(s3objects "$ORG/$mb4/" | grep -c .)" "$orphans"
before=$(s3objects "" | grep -vc "^$ORG/$mb4/")
before2=$(s3objects "" 2 | grep -c .)
check "gc: deletes the orphans" "$(q $DB "SELECT count(*) FROM gmail_ingest.gc_objects(dry_run => false) WHERE action = 'deleted' AND object_key LIKE '$ORG/$mb4/%'")" "$orphans"
check "gc: the orphans are gone" "$(s3objects "$ORG/$mb4/" | grep -c .)" 0
check "gc: every referenced object kept" "$(s3objects "" | grep -vc "^$ORG/$mb4/")" "$before"
check "gc: another prefix (database) untouched" "$(s3objects "" 2 | grep -c .)" "$before2"
gi_s3 POST /admin/config '{"max_keys":1000}' >/dev/null
check "after gc: verify(deep) of mailbox 1" "$(q $DB "SELECT coalesce(string_agg(check_name || ': ' || detail, '; '), 't') FROM gmail_ingest.verify($mb1, true) WHERE NOT ok")" t

# ---- 5. migrate_blobs both ways, killed and resumed, on a database of its own
fresh_db ${DB}_3
q ${DB}_3 "ALTER DATABASE ${DB}_3 SET gmail_ingest.s3_prefix = 'db3/'"
new_mailbox "$E5" "\"seed\":145,\"threads\":20,\"messages\":60,\"days\":7,\"window_days\":7,\"attachments\":40,\"now_ms\":$NOW_MS"
mb5=$(q ${DB}_3 "SELECT gmail_ingest.add_mailbox('$ORG2', '$E5', 'rt-$E5')")
check "migrate: database-mode sync" "$(q ${DB}_3 "SELECT status FROM gmail_ingest.gmail_sync($mb5, 7)")" succeeded
total=$(q ${DB}_3 "SELECT count(*) FROM gmail_ingest.blobs WHERE data IS NOT NULL")
gi_s3 POST /admin/config '{"latency_ms":40}' >/dev/null
PGOPTIONS="-c statement_timeout=1500" psql -X -q -d ${DB}_3 -c "CALL gmail_ingest.migrate_blobs('s3', 5)" >/dev/null 2>"$OUT/m1.err"
gi_s3 POST /admin/config '{"latency_ms":0}' >/dev/null
left=$(q ${DB}_3 "SELECT count(*) FROM gmail_ingest.blobs WHERE data IS NOT NULL")
echo "# migrate to s3: killed with $left of $total blobs left in the table"
check "migrate to s3: killed mid-way" "$(grep -q 'statement timeout' "$OUT/m1.err" && [ "$left" -gt 0 ] && [ "$left" -lt "$total" ] && echo yes || echo "no: $left of $total; $(cat "$OUT/m1.err")")" yes
check "migrate to s3, killed: verify(deep)" "$(q ${DB}_3 "SELECT coalesce(string_agg(check_name || ': ' || detail, '; '), 't') FROM gmail_ingest.verify($mb5, true) WHERE NOT ok")" t
psql -X -q -d ${DB}_3 -c "CALL gmail_ingest.migrate_blobs('s3', 5)" >/dev/null 2>"$OUT/m2.err"
check "migrate to s3, resumed: no bytes left in the table" "$(q ${DB}_3 "SELECT count(*) FROM gmail_ingest.blobs WHERE data IS NOT NULL")" 0
check "migrate to s3: every object at its key with the right bytes" "$(s3objects "$ORG2/$mb5/" 3 | md5sum)" "$(rows_objects ${DB}_3 "$mb5" | md5sum)"
check "migrate to s3: verify(deep)" "$(q ${DB}_3 "SELECT coalesce(string_agg(check_name || ': ' || detail, '; '), 't') FROM gmail_ingest.verify($mb5, true) WHERE NOT ok")" t
dbl POST "/admin/mailboxes/$E5/messages" '{}' >/dev/null
check "switched to s3 on a populated database: new mail syncs" "$(s3q ${DB}_3 "SELECT status || '/' || messages_inserted FROM gmail_ingest.gmail_sync($mb5, 7)")" succeeded/1
check "switched: verify(deep)" "$(q ${DB}_3 "SELECT coalesce(string_agg(check_name || ': ' || detail, '; '), 't') FROM gmail_ingest.verify($mb5, true) WHERE NOT ok")" t
total=$(q ${DB}_3 "SELECT count(*) FROM gmail_ingest.blobs WHERE data IS NULL")
gi_s3 POST /admin/config '{"latency_ms":40}' >/dev/null
PGOPTIONS="-c statement_timeout=1500" psql -X -q -d ${DB}_3 -c "CALL gmail_ingest.migrate_blobs('database', 5)" >/dev/null 2>"$OUT/m3.err"
gi_s3 POST /admin/config '{"latency_ms":0}' >/dev/null
left=$(q ${DB}_3 "SELECT count(*) FROM gmail_ingest.blobs WHERE data IS NULL")
echo "# migrate to database: killed with $left of $total blobs left in the store"
check "migrate to database: killed mid-way" "$(grep -q 'statement timeout' "$OUT/m3.err" && [ "$left" -gt 0 ] && [ "$left" -lt "$total" ] && echo yes || echo "no: $left of $total; $(cat "$OUT/m3.err")")" yes
check "migrate to database, killed: verify(deep)" "$(q ${DB}_3 "SELECT coalesce(string_agg(check_name || ': ' || detail, '; '), 't') FROM gmail_ingest.verify($mb5, true) WHERE NOT ok")" t
psql -X -q -d ${DB}_3 -c "CALL gmail_ingest.migrate_blobs('database', 5)" >/dev/null 2>"$OUT/m4.err"
check "migrate to database, resumed: every blob has its bytes" "$(q ${DB}_3 "SELECT count(*) FROM gmail_ingest.blobs WHERE data IS NULL")" 0
check "migrate to database: no object recorded" "$(q ${DB}_3 "SELECT count(*) FROM gmail_ingest.objects")" 0
check "migrate to database: verify (hashes of the table's bytes)" "$(verify_ok ${DB}_3 "$mb5")" t

# ---- 6. privileges and logs
psql -X -q -d postgres -c "DROP ROLE IF EXISTS gi_objects_reader" -c "CREATE ROLE gi_objects_reader LOGIN" >/dev/null
as_reader() { psql -X -At -U gi_objects_reader -d $DB -c "$1" 2>&1; }
check "non-superuser: SHOW the secret refused" "$(as_reader "SHOW gmail_ingest.s3_secret_access_key" | grep -c 'permission denied\|must be superuser')" 1
check "non-superuser: not in pg_settings" "$(as_reader "SELECT count(*) FROM pg_settings WHERE name LIKE 'gmail_ingest.s3_secret%' AND setting <> ''")" 0
check "non-superuser: SET the secret refused" "$(as_reader "SET gmail_ingest.s3_secret_access_key = 'x'" | grep -c 'permission denied')" 1
check "non-superuser: SET the endpoint refused" "$(as_reader "SET gmail_ingest.s3_endpoint = 'https://evil.example'" | grep -c 'permission denied')" 1
check "http:// only for loopback hosts" "$(q $DB "SET gmail_ingest.s3_endpoint = 'http://s3.example.com'" 2>&1 | grep -c 'invalid value')" 1
check "the secret refused in ALTER DATABASE" "$(q $DB "ALTER DATABASE $DB SET gmail_ingest.s3_secret_access_key = 'x'" 2>&1 | grep -c 'cannot be stored')" 1
check "s3 with an empty bucket refused" "$(psql -X -At -d $DB -c "SET gmail_ingest.s3_bucket = ''" -c "SET gmail_ingest.blob_store = 's3'" 2>&1 | grep -c 'invalid value')" 1
offset=$(stat -c %s "$LOG")
new_mailbox "log-$E1" "\"seed\":146,\"threads\":3,\"messages\":5,\"days\":7,\"window_days\":7,\"attachments\":3,\"now_ms\":$NOW_MS"
mb6=$(q $DB "SELECT gmail_ingest.add_mailbox('$ORG', 'log-$E1', 'rt-log-$E1')")
PGOPTIONS="$S3OPT -c log_min_messages=debug5 -c client_min_messages=debug5" q $DB "SELECT status FROM gmail_ingest.gmail_sync($mb6, 7)" >"$OUT/debug5.out" 2>&1
PGOPTIONS="$S3OPT -c log_min_messages=debug5 -c gmail_ingest.s3_secret_access_key=$WRONG" q $DB "SELECT status FROM gmail_ingest.gmail_sync($mb6, 7, true)" >>"$OUT/debug5.out" 2>&1
sleep 0.5
check "debug5: the sync wrote to the log" "$(tail -c +$((offset + 1)) "$LOG" | grep -c . | awk '{print ($1 > 20) ? "yes" : "no"}')" yes
check "debug5: the S3 secret in no log line or message" "$(tail -c +$((offset + 1)) "$LOG" | cat - "$OUT/debug5.out" | grep -c -e "$S3_SECRET_KEY" -e "$WRONG")" 0
finish
