#!/usr/bin/env bash
# Service accounts with domain-wide delegation (SPEC 7a, issue 12), against
# the double's JWT bearer grant (test/double/double_jwt.py checks each
# assertion's RS256 signature in pure Python, iss, kid, aud, scope against
# the administrator's grant, sub's domain and existence, and the time
# window).  Keys are made here with openssl.
#   - registration: the JSON key from a server-side file; refusals (22023,
#     never echoing the key) of bad JSON, another kind of credentials file,
#     a missing field, an encrypted key, an EC key, a PEM that is no key;
#   - a delegated mailbox syncs row by row like a refresh-token mailbox of
#     the same Gmail data in the same organisation; one token for two syncs;
#     a forced re-run writes zero tuples; the iat clock margin;
#   - every refusal: delegation not granted, a consumer account, an unknown
#     user, a key of another account (bad signature), a clock far off; each
#     a failed run that leaves no data row, the auth_state it parks the
#     mailbox in, and the error a user sees; un-parking by registering again;
#   - check_service_account for a granted and an ungranted account;
#   - a new key drops the cached tokens;
#   - privileges: a role allowed to sync reads no key, calls none of the
#     key functions and cannot move the token URL;
#   - the server log at debug5 with log_statement = 'all' holds no key
#     material when the key is loaded from a file (and does when it is a
#     literal: why the README says to use the file).
set -uo pipefail
. "$(dirname "$0")/../lib/script.sh"

DB=gi_service_accounts
TAG=$(run_tag)
NOW_MS=$(now_ms)
DOMAIN=dwd-$TAG.example
SCOPE=https://www.googleapis.com/auth/gmail.readonly
ORG=$(python3 -c 'import uuid; print(uuid.uuid4())')
LOG=${GI_LOG:-$GI_WORK/postgres.log}
DIR=$(mktemp -d "${TMPDIR:-/tmp}/gi_service_accounts.XXXXXX")
chmod 755 "$DIR"
ROLE=gi_sa_syncer_$TAG
restore=""
emails=()

cleanup() {
	if [ -n "$restore" ]; then
		psql -X -q -d postgres -c "ALTER SYSTEM RESET log_statement" -c "$restore" -c "SELECT pg_reload_conf()" >/dev/null
	fi
	for e in ${emails[@]+"${emails[@]}"}; do dclear "$e" 2>/dev/null; done
	dropdb --if-exists $DB >/dev/null 2>&1
	psql -X -q -d postgres -c "DROP ROLE IF EXISTS $ROLE" >/dev/null 2>&1
	rm -rf "$DIR"
}
trap cleanup EXIT

# --- keys and key files
for k in a b c d; do
	openssl genrsa -out "$DIR/$k.pem" 2048 2>/dev/null
	openssl pkey -in "$DIR/$k.pem" -pubout -out "$DIR/$k.pub"
done
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -aes-256-cbc -pass pass:hunter2 -out "$DIR/enc.pem" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$DIR/ec.pem" 2>/dev/null
check "an encrypted key was made" "$(grep -c 'BEGIN ENCRYPTED PRIVATE KEY' "$DIR/enc.pem")" 1
check "an EC key was made" "$(openssl pkey -in "$DIR/ec.pem" -noout -text 2>/dev/null | grep -c 'ASN1 OID: prime256v1')" 1

# key_json FILE PEM CLIENT_EMAIL CLIENT_ID KEY_ID [TYPE]: a key file shaped like Google's download.
key_json() {
	python3 - "$@" <<'PY'
import json, sys
out, pem, email, cid, kid = sys.argv[1:6]
kind = sys.argv[6] if len(sys.argv) > 6 else "service_account"
with open(pem) as f:
    key = f.read()
doc = {"type": kind, "project_id": "gi-test", "private_key_id": kid, "private_key": key,
       "client_email": email, "client_id": cid,
       "auth_uri": "https://accounts.google.com/o/oauth2/auth",
       "token_uri": "https://oauth2.googleapis.com/token",
       "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
       "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/x",
       "universe_domain": "googleapis.com"}
with open(out, "w") as f:
    json.dump(doc, f, indent=2)
PY
	chmod 644 "$1"
}
# register_double CLIENT_EMAIL CLIENT_ID KEY_ID PUBFILE 'SCOPES JSON' [CLOCK_SKEW_S]
register_double() {
	python3 - "$@" <<'PY' >"$DIR/reg.json"
import json, sys
email, cid, kid, pub, scopes = sys.argv[1:6]
skew = int(sys.argv[6]) if len(sys.argv) > 6 else 0
print(json.dumps({"client_email": email, "client_id": cid, "key_id": kid,
                  "public_key": open(pub).read(), "scopes": json.loads(scopes),
                  "domain": sys.argv[7] if len(sys.argv) > 7 else None, "clock_skew_s": skew}))
PY
	gi_double POST /admin/service_accounts "$(cat "$DIR/reg.json")" >/dev/null
}

SA1=sync-$TAG@gi-test.iam.gserviceaccount.com; CID1=1001$TAG
SA2=ungranted-$TAG@gi-test.iam.gserviceaccount.com; CID2=1002$TAG
SA3=rotated-$TAG@gi-test.iam.gserviceaccount.com; CID3=1003$TAG
SA4=clock-$TAG@gi-test.iam.gserviceaccount.com; CID4=1004$TAG
register_double "$SA1" "$CID1" kid-a "$DIR/a.pub" "[\"$SCOPE\"]" 0 "$DOMAIN"
register_double "$SA2" "$CID2" kid-b "$DIR/b.pub" "[]" 0 "$DOMAIN"
register_double "$SA3" "$CID3" kid-a3 "$DIR/a.pub" "[\"$SCOPE\"]" 0 "$DOMAIN"
# The double's clock 330 s behind ours: an assertion with iat = now is
# "issued in the future" beyond the double's 300 s leeway; the extension's
# 60 s margin on iat brings it back inside.
register_double "$SA4" "$CID4" kid-a4 "$DIR/a.pub" "[\"$SCOPE\"]" -330 "$DOMAIN"
key_json "$DIR/sa1.json" "$DIR/a.pem" "$SA1" "$CID1" kid-a
key_json "$DIR/sa2.json" "$DIR/b.pem" "$SA2" "$CID2" kid-b
key_json "$DIR/sa3.json" "$DIR/b.pem" "$SA3" "$CID3" kid-a3      # the key of another account
key_json "$DIR/sa4.json" "$DIR/a.pem" "$SA4" "$CID4" kid-a4

ALICE=alice@$DOMAIN
ALICE_RT=alice-rt-$TAG@rt.example
CONTENT=content-$TAG@source.example
emails=("$ALICE" "$ALICE_RT")
gi_double POST /admin/mailboxes "{\"email\":\"$ALICE\",\"content_email\":\"$CONTENT\",\"seed\":12,\"threads\":8,\"messages\":24,\"days\":10,\"window_days\":7,\"attachments\":6,\"now_ms\":$NOW_MS}" >/dev/null
gi_double POST /admin/mailboxes "{\"email\":\"$ALICE_RT\",\"refresh_token\":\"rt-$ALICE_RT\",\"content_email\":\"$CONTENT\",\"seed\":12,\"threads\":8,\"messages\":24,\"days\":10,\"window_days\":7,\"attachments\":6,\"now_ms\":$NOW_MS}" >/dev/null
for u in carol dave erin frank; do
	gi_double POST /admin/mailboxes "{\"email\":\"$u@$DOMAIN\",\"seed\":13,\"threads\":2,\"messages\":4,\"days\":7,\"window_days\":7,\"attachments\":1,\"now_ms\":$NOW_MS}" >/dev/null
	emails+=("$u@$DOMAIN")
done

fresh_db $DB
install_digests $DB

# sql_error SQL: "SQLSTATE|message|detail|hint" of the error SQL raises (or "no error").
sql_error() {
	psql -X -q -At -d $DB -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -c "\\set VERBOSITY verbose" -c "$1" >/dev/null 2>"$DIR/err.txt" &&
		{ echo "no error"; return; }
	sed -n 's/^ERROR:  \([0-9A-Z]\{5\}\): .*/\1/p' "$DIR/err.txt" | head -1
}
# leaks FILE PEMFILE: pieces of the key found in FILE: each line of the
# PEM's body, the body joined (as one line of base64 of the DER), and the
# base64 of the whole PEM file.  The pieces are taken past the first 60
# characters, which every 2048-bit PKCS#8 RSA key shares.
leaks() {
	local n=0 line body b64 piece
	body=$(grep -v -- '-----' "$2" | tr -d '\n')
	b64=$(base64 -w0 "$2")
	while IFS= read -r line; do
		[ ${#line} -ge 16 ] && grep -qF -- "$line" "$1" && n=$((n + 1))
	done < <(grep -v -- '-----' "$2" | tail -n +2)
	for piece in "${body:60:120}" "${body:400:120}" "${b64:120:120}"; do
		[ ${#piece} -ge 16 ] && grep -qF -- "$piece" "$1" && n=$((n + 1))
	done
	echo $n
}

# --- registration refusals: 22023, and nothing of the key in what the client is told
refuse() {  # refuse NAME FILE EXPECTED_MESSAGE_PART PEMFILE
	local state
	state=$(sql_error "SELECT gmail_ingest.add_service_account_file('$ORG', '$2')")
	check "refused: $1 (22023)" "$state" 22023
	check "refused: $1: says why" "$(grep -c -- "$3" "$DIR/err.txt" | sed 's/^[1-9][0-9]*$/yes/')" yes
	check "refused: $1: the error quotes no key material" "$(leaks "$DIR/err.txt" "$4")" 0
}
{ printf 'not json: '; cat "$DIR/a.pem"; } >"$DIR/bad.json"; chmod 644 "$DIR/bad.json"
refuse "bad JSON" "$DIR/bad.json" "key_json is not a JSON object" "$DIR/a.pem"
python3 -c "import json,sys; d=json.load(open('$DIR/sa1.json')); d['private_key']=d['private_key'][:-40]; json.dump(d, open('$DIR/cut.json','w'))"; chmod 644 "$DIR/cut.json"
refuse "a truncated PEM" "$DIR/cut.json" "private_key is not a PEM private key OpenSSL can read" "$DIR/a.pem"
key_json "$DIR/user.json" "$DIR/a.pem" "$SA1" "$CID1" kid-a authorized_user
refuse "another kind of credentials file" "$DIR/user.json" "is not a service account key" "$DIR/a.pem"
python3 -c "import json; d=json.load(open('$DIR/sa1.json')); del d['private_key_id']; json.dump(d, open('$DIR/nokid.json','w'))"; chmod 644 "$DIR/nokid.json"
refuse "no private_key_id" "$DIR/nokid.json" 'has no "private_key_id"' "$DIR/a.pem"
key_json "$DIR/enc.json" "$DIR/enc.pem" "$SA1" "$CID1" kid-a
refuse "an encrypted key" "$DIR/enc.json" "the private key is encrypted" "$DIR/enc.pem"
key_json "$DIR/ec.json" "$DIR/ec.pem" "$SA1" "$CID1" kid-a
refuse "an EC key" "$DIR/ec.json" "is not an RSA key" "$DIR/ec.pem"
check "bad JSON as a literal: 22023 too" "$(sql_error "SELECT gmail_ingest.add_service_account('$ORG', '{\"type\": \"service_account\", \"private_key\": \"MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQ')")" 22023
check "... quoting nothing of it" "$(grep -c MIIEvQ "$DIR/err.txt")" 0
check "nothing was registered" "$(q $DB "SELECT count(*) FROM gmail_ingest.service_accounts")" 0

# --- registration from files; a delegated and a refresh-token mailbox of the same data, one org
sa1=$(q $DB "SELECT gmail_ingest.add_service_account_file('$ORG', '$DIR/sa1.json')")
sa2=$(q $DB "SELECT gmail_ingest.add_service_account_file('$ORG', '$DIR/sa2.json')")
sa3=$(q $DB "SELECT gmail_ingest.add_service_account_file('$ORG', '$DIR/sa3.json')")
sa4=$(q $DB "SELECT gmail_ingest.add_service_account_file('$ORG', '$DIR/sa4.json')")
check "registering again is an upsert" "$(q $DB "SELECT gmail_ingest.add_service_account_file('$ORG', '$DIR/sa1.json') = $sa1")" t
check "the key is kept apart" "$(q $DB "SELECT count(*) FROM gmail_ingest.service_account_keys") $(q $DB "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns WHERE table_schema = 'gmail_ingest' AND table_name = 'service_accounts'")" \
	"4 client_email,client_id,created_at,id,org_id,private_key_id,updated_at"
alice=$(q $DB "SELECT gmail_ingest.add_delegated_mailbox('$ORG', '$ALICE', $sa1)")
alice_rt=$(q $DB "SELECT gmail_ingest.add_mailbox('$ORG', '$ALICE_RT', 'rt-$ALICE_RT')")
check "a delegated mailbox has no refresh token" "$(q $DB "SELECT refresh_token IS NULL FROM gmail_ingest.mailbox_credentials WHERE mailbox_id = $alice")" t
check "add_delegated_mailbox again: the same mailbox" "$(q $DB "SELECT gmail_ingest.add_delegated_mailbox('$ORG', upper('$ALICE'), $sa1) = $alice")" t
check "a service account of another org is refused" "$(sql_error "SELECT gmail_ingest.add_delegated_mailbox(gen_random_uuid(), 'x@$DOMAIN', $sa1)")" 22023
check "an unknown service account is refused" "$(sql_error "SELECT gmail_ingest.add_delegated_mailbox('$ORG', 'x@$DOMAIN', -1)")" P0002

sync() { q $DB "SELECT status FROM gmail_ingest.gmail_sync($1, 7)"; }
tokens() { stat_of token "$(dstats "$1")"; }
check "the delegated mailbox syncs" "$(sync $alice)" succeeded
check "the refresh-token mailbox syncs" "$(sync $alice_rt)" succeeded
check "row by row the same data" "$(q $DB "SELECT gi_test_digest($alice) = gi_test_digest($alice_rt)")" t
echo "# $(q $DB "SELECT gi_test_digest($alice)")"
check "... and not an empty one" "$(q $DB "SELECT count(*) > 10 FROM gmail_ingest.mail_messages WHERE mailbox_id = $alice")" t
check "a second sync (incremental)" "$(q $DB "SELECT mode || ' ' || status FROM gmail_ingest.gmail_sync($alice, 7)")" "incremental succeeded"
check "one token for two syncs within its lifetime" "$(tokens "$ALICE")" 1
check "the token is cached with its expiry" "$(q $DB "SELECT access_token IS NOT NULL AND access_token_expires_at > now() + interval '50 minutes' FROM gmail_ingest.mailbox_credentials WHERE mailbox_id = $alice")" t
tuples="SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_xact_user_tables
         WHERE schemaname = 'gmail_ingest' AND relname IN ('mail_threads', 'mail_messages', 'mail_attachments', 'blobs')"
written=$(psql -X -At -q -d $DB <<SQL
BEGIN;
SELECT ($tuples) AS before \gset
SELECT status FROM gmail_ingest.gmail_sync($alice, 7, true) \gset
SELECT :'status' || ' ' || (($tuples) - :before);
COMMIT;
SQL
)
check "a forced full re-run writes zero tuples" "$written" "succeeded 0"
check "verify() holds" "$(verify_ok $DB $alice)" t
erin=$(q $DB "SELECT gmail_ingest.add_delegated_mailbox('$ORG', 'erin@$DOMAIN', $sa4)")
check "iat's clock margin: a Google clock 330 s behind still accepts" "$(sync $erin)" succeeded

# --- refusals: a failed run, no data row, the parked state, the error a user sees
# fails NAME MAILBOX STATE 'TEXT IN ERROR' KIND
fails() {
	local before after
	before=$(q $DB "SELECT gi_test_db_digest()")
	check "$1: the run fails" "$(sync $2)" failed
	after=$(q $DB "SELECT gi_test_db_digest()")
	check "$1: nothing of the run remains" "$after" "$before"
	check "$1: auth_state" "$(q $DB "SELECT auth_state FROM gmail_ingest.mailboxes WHERE id = $2")" "$3"
	q $DB "SELECT error FROM gmail_ingest.sync_runs WHERE mailbox_id = $2 ORDER BY id DESC LIMIT 1" >"$DIR/run_error.txt"
	echo "# $1: $(cat "$DIR/run_error.txt")"
	check "$1: the run's error says so" "$(grep -cF -- "$4" "$DIR/run_error.txt" | sed 's/^[1-9][0-9]*$/yes/')" yes
	check "$1: the ledger's kind" "$(q $DB "SELECT detail->>'kind' || ' ' || (detail->>'sqlstate') FROM gmail_ingest.ledger WHERE mailbox_id = $2 AND event = 'sync.failed' ORDER BY id DESC LIMIT 1")" "$5 28000"
	check "$1: no data row for the mailbox" "$(q $DB "SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = $2")" 0
}
dave=$(q $DB "SELECT gmail_ingest.add_delegated_mailbox('$ORG', 'dave@$DOMAIN', $sa2)")
fails "delegation not granted" $dave delegation_denied "client id $CID2 for scope $SCOPE" delegation_denied
consumer=$(q $DB "SELECT gmail_ingest.add_delegated_mailbox('$ORG', 'someone-$TAG@gmail.com', $sa1)")
fails "a consumer account" $consumer delegation_denied "or someone-$TAG@gmail.com is not in a Google Workspace domain" delegation_denied
nobody=$(q $DB "SELECT gmail_ingest.add_delegated_mailbox('$ORG', 'nobody@$DOMAIN', $sa1)")
fails "an unknown user" $nobody reauthorize "Invalid email or User ID" revoked
carol=$(q $DB "SELECT gmail_ingest.add_delegated_mailbox('$ORG', 'carol@$DOMAIN', $sa3)")
fails "a key of another account" $carol reauthorize "Invalid JWT Signature" revoked
gi_double POST "/admin/service_accounts/$SA4" '{"clock_skew_s": 7200}' >/dev/null
frank=$(q $DB "SELECT gmail_ingest.add_delegated_mailbox('$ORG', 'frank@$DOMAIN', $sa4)")
fails "a clock two hours off" $frank reauthorize "Token must be a short-lived token (60 minutes) and in a reasonable timeframe" revoked
check "raise_on_failure: the refusal as an ERROR 28000" \
	"$(sql_error "SET gmail_ingest.raise_on_failure = on; SELECT gmail_ingest.gmail_sync($dave, 7)")" 28000
check "... whose hint names the Admin console page" "$(grep -c "HINT:.*admin.google.com/ac/owl/domainwidedelegation?clientIdToAdd=$CID2&clientScopeToAdd=$SCOPE" "$DIR/err.txt")" 1
check "the token endpoint was asked once per refused run (never retried)" "$(tokens "dave@$DOMAIN")" 2

# --- check_service_account
check "check_service_account: granted" "$(q $DB "SELECT scope || ' ' || ok FROM gmail_ingest.check_service_account($sa1, '$ALICE')")" "$SCOPE true"
q $DB "SELECT scope || ' ' || ok || ' ' || detail FROM gmail_ingest.check_service_account($sa2, 'dave@$DOMAIN')" >"$DIR/check.txt"
echo "# $(cat "$DIR/check.txt")"
check "check_service_account: not granted" "$(cut -d' ' -f1,2 "$DIR/check.txt")" "$SCOPE false"
check "... says what to grant (client id, scope, console page)" \
	"$(grep -cF "clientIdToAdd=$CID2&clientScopeToAdd=$SCOPE" "$DIR/check.txt")" 1
check "... and stores nothing" "$(q $DB "SELECT auth_state FROM gmail_ingest.mailboxes WHERE id = $dave")" delegation_denied
t0=$(ms_now)
check "20 tokens in a row: each issued" "$(q $DB "SELECT count(*) FILTER (WHERE c.ok) FROM generate_series(1, 20) g, LATERAL gmail_ingest.check_service_account($sa1 + 0 * g, '$ALICE') c")" 20
echo "# one JWT grant (RS256 signing here, pure-Python verification in the double, loopback HTTP): $(( ($(ms_now) - t0) / 20 )) ms on average"
# Signing frees what OpenSSL allocates: 1000 more grants in one backend
# (after 100 to warm up) leave its private memory (RssAnon) where it was.
# A leaked RSA key would cost KBs each, megabytes in all.  (The argument
# names g so that each row calls the function: a LATERAL call with
# constant arguments is made once and its result rescanned.)
rss="SELECT substring(pg_read_file('/proc/' || pg_backend_pid() || '/status') FROM 'RssAnon:\\s+(\\d+)')"
grants() { echo "SELECT count(*) FROM generate_series(1, $1) g, LATERAL gmail_ingest.check_service_account($sa1 + 0 * g, '$ALICE') c WHERE c.ok;"; }
read -r warm rss0 done rss1 < <(psql -X -At -q -d $DB -c "$(grants 100)" -c "$rss" -c "$(grants 1000)" -c "$rss" | paste -sd' ')
echo "# backend RssAnon: $rss0 kB after 100 grants, $rss1 kB after 1000 more"
check "1100 grants in one backend" "$warm $done" "100 1000"
check "... and its private memory grew less than 1 MB" "$([ $((rss1 - rss0)) -lt 1024 ] && echo yes)" yes
check "check_service_account of an unknown account" "$(sql_error "SELECT * FROM gmail_ingest.check_service_account(-1, '$ALICE')")" P0002

# --- un-parking: the administrator grants, the mailbox is registered again
gi_double POST "/admin/service_accounts/$SA2" "{\"scopes\": [\"$SCOPE\"]}" >/dev/null
check "granted now: check_service_account says ok" "$(q $DB "SELECT ok FROM gmail_ingest.check_service_account($sa2, 'dave@$DOMAIN')")" t
check "the parked mailbox stays parked until registered again" "$(q $DB "SELECT auth_state FROM gmail_ingest.mailboxes WHERE id = $dave")" delegation_denied
q $DB "SELECT gmail_ingest.add_delegated_mailbox('$ORG', 'dave@$DOMAIN', $sa2)" >/dev/null
check "add_delegated_mailbox again: auth_state ok" "$(q $DB "SELECT auth_state FROM gmail_ingest.mailboxes WHERE id = $dave")" ok
check "... and it syncs" "$(sync $dave)" succeeded
check "switching kinds is an upsert: add_mailbox takes the mailbox over" \
	"$(q $DB "SELECT gmail_ingest.add_mailbox('$ORG', 'dave@$DOMAIN', 'rt-dave') = $dave")" t
check "... as a refresh-token mailbox without the old token" \
	"$(q $DB "SELECT m.service_account_id IS NULL AND c.refresh_token = 'rt-dave' AND c.access_token IS NULL FROM gmail_ingest.mailboxes m JOIN gmail_ingest.mailbox_credentials c ON c.mailbox_id = m.id WHERE m.id = $dave")" t
check "... and back" "$(q $DB "SELECT gmail_ingest.add_delegated_mailbox('$ORG', 'dave@$DOMAIN', $sa2) = $dave") $(q $DB "SELECT refresh_token IS NULL FROM gmail_ingest.mailbox_credentials WHERE mailbox_id = $dave")" "t t"

# --- privileges of a role that may sync
psql -X -q -d $DB -c "CREATE ROLE $ROLE NOLOGIN" -c "GRANT USAGE ON SCHEMA gmail_ingest TO $ROLE" \
	-c "GRANT EXECUTE ON FUNCTION gmail_ingest.gmail_sync(bigint, integer, boolean) TO $ROLE" \
	-c "GRANT SELECT ON gmail_ingest.mailboxes, gmail_ingest.mailbox_status TO $ROLE" >/dev/null
as_role() { sql_error "SET ROLE $ROLE; $1"; }
check "the role can sync" "$(psql -X -At -q -d $DB -c "SET ROLE $ROLE" -c "SELECT status FROM gmail_ingest.gmail_sync($alice, 7)")" succeeded
check "it cannot read the key table" "$(as_role "SELECT * FROM gmail_ingest.service_account_keys")" 42501
check "nor the service accounts" "$(as_role "SELECT * FROM gmail_ingest.service_accounts")" 42501
check "nor call the key check" "$(as_role "SELECT gmail_ingest._private_key_problem('x')")" 42501
check "nor check_service_account" "$(as_role "SELECT * FROM gmail_ingest.check_service_account($sa1, '$ALICE')")" 42501
check "nor register keys" "$(as_role "SELECT gmail_ingest.add_service_account_file('$ORG', '$DIR/sa1.json')")" 42501
check "nor set the token URL" "$(as_role "SET gmail_ingest.oauth_token_url = 'http://127.0.0.1:1/token'")" 42501
check "no view reads a key" "$(q $DB "SELECT count(*) FROM pg_views WHERE schemaname = 'gmail_ingest' AND (definition ILIKE '%private_key%' OR definition ILIKE '%service_account_keys%')")" 0
check "no column outside the key table holds one" "$(q $DB "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'gmail_ingest' AND column_name = 'private_key' AND table_name <> 'service_account_keys'")" 0
# (distribute() names the table among those it makes reference tables on a
# Citus cluster, SPEC 7e: it moves the table, it reads no key)
check "only add_service_account writes the key table; no SQL function reads it" \
	"$(q $DB "SELECT string_agg(proname, ',' ORDER BY proname) FROM pg_proc WHERE pronamespace = 'gmail_ingest'::regnamespace AND prosrc ILIKE '%service_account_keys%'")" add_service_account,distribute
check "distribute() names the key table only in its list of reference tables" \
	"$(q $DB "SELECT count(*) FROM regexp_matches((SELECT prosrc FROM pg_proc WHERE oid = 'gmail_ingest.distribute(integer)'::regprocedure), 'service_account_keys', 'g')") $(q $DB "SELECT prosrc ~ 'ARRAY\\[''mailboxes'', ''service_accounts'', ''service_account_keys''\\]' FROM pg_proc WHERE oid = 'gmail_ingest.distribute(integer)'::regprocedure")" "1 t"
check "the key table: RLS on, no grant to any role but its owner" \
	"$(q $DB "SELECT relrowsecurity, (SELECT count(*) FROM aclexplode(relacl) a WHERE a.grantee <> c.relowner) FROM pg_class c WHERE oid = 'gmail_ingest.service_account_keys'::regclass")" "t|0"

# --- the server log at debug5 with log_statement = 'all'
read -r old source file < <(psql -X -At -F' ' -d postgres -c "SELECT setting, source, coalesce(sourcefile, '-') FROM pg_settings WHERE name = 'log_min_messages'")
if [ "$source" = "configuration file" ] && [[ $file == *postgresql.auto.conf ]]; then
	restore="ALTER SYSTEM SET log_min_messages = '$old'"
else
	restore="ALTER SYSTEM RESET log_min_messages"
fi
offset=$(stat -c %s "$LOG")
psql -X -q -d postgres -c "ALTER SYSTEM SET log_min_messages = debug5" -c "ALTER SYSTEM SET log_statement = 'all'" -c "SELECT pg_reload_conf()" >/dev/null
for _ in $(seq 1 50); do
	[ "$(q $DB "SHOW log_min_messages") $(q $DB "SHOW log_statement")" = "debug5 all" ] && break
	sleep 0.1
done
check "log_min_messages debug5, log_statement all" "$(q $DB "SHOW log_min_messages") $(q $DB "SHOW log_statement")" "debug5 all"

# A new key for account 1: its mailbox's cached token is dropped.
tokens_before=$(tokens "$ALICE")
gi_double POST "/admin/service_accounts/$SA1" "{\"key_id\": \"kid-c\", \"public_key\": $(python3 -c "import json; print(json.dumps(open('$DIR/c.pub').read()))")}" >/dev/null
key_json "$DIR/sa1c.json" "$DIR/c.pem" "$SA1" "$CID1" kid-c
check "a new key: the same service account" "$(q $DB "SELECT gmail_ingest.add_service_account_file('$ORG', '$DIR/sa1c.json') = $sa1")" t
check "... its mailboxes' cached tokens are dropped" "$(q $DB "SELECT access_token IS NULL FROM gmail_ingest.mailbox_credentials WHERE mailbox_id = $alice")" t
check "... a sync signs with the new key (one more token)" "$(sync $alice) $(tokens "$ALICE")" "succeeded $((tokens_before + 1))"
check "the unknown user is refused again, at debug5" "$(sync $nobody)" failed
check "check_service_account at debug5" "$(q $DB "SELECT ok FROM gmail_ingest.check_service_account($sa1, '$ALICE')")" t
# The literal form, for contrast: the statement is logged with the key in it.
key_json "$DIR/sa5.json" "$DIR/d.pem" "literal-$TAG@gi-test.iam.gserviceaccount.com" 1005 kid-d
psql -X -q -d $DB -v key="$(cat "$DIR/sa5.json")" -v org="$ORG" >/dev/null <<'SQL'
SELECT gmail_ingest.add_service_account(:'org', :'key');
SQL
sleep 0.5
tail -c +$((offset + 1)) "$LOG" >"$DIR/log"
echo "# $(wc -l <"$DIR/log") log lines at debug5 with log_statement = 'all'"
check "the log is that of these statements" "$(grep -c "statement: SELECT gmail_ingest.add_service_account_file('$ORG', '$DIR/sa1c.json')" "$DIR/log") $([ "$(grep -c 'DEBUG:' "$DIR/log")" -gt 0 ] && echo debug)" "1 debug"
check "no line of the new key's PEM body in the log" "$(leaks "$DIR/log" "$DIR/c.pem")" 0
check "nor of the first key's" "$(leaks "$DIR/log" "$DIR/a.pem")" 0
check "the literal form does put its key in the log (use the file)" "$([ "$(leaks "$DIR/log" "$DIR/d.pem")" -gt 0 ] && echo yes)" yes
check "the key of account 1 is stored" "$(q $DB "SELECT private_key = pg_read_file('$DIR/sa1c.json')::jsonb->>'private_key' FROM gmail_ingest.service_account_keys WHERE service_account_id = $sa1")" t
finish
