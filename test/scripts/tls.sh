#!/usr/bin/env bash
# TLS: a test CA and server certificates made with the openssl CLI now, two
# more doubles serving HTTPS (one with a certificate for localhost and
# 127.0.0.1, one with a certificate for another host name), and the
# extension pointed at them with SET in this session only:
#   - with gmail_ingest.ca_file = the test CA, a sync over https://localhost
#     and over https://127.0.0.1 works and stores every message;
#   - without it (system CAs) a sync fails cleanly, naming certificate
#     verification: a recorded failed run, no row, SQLSTATE 08006 -- at the
#     Gmail API with a cached access token, at the token endpoint without
#     one, and as an ERROR with raise_on_failure;
#   - a certificate for another host name is refused even with the CA.
set -uo pipefail
. "$(dirname "$0")/../lib/script.sh"

DB=gi_tls
TAG=$(run_tag)
NOW_MS=$(now_ms)
DIR=$(mktemp -d "${GI_WORK:-/tmp}/tls.XXXXXX")
chmod 755 "$DIR"
EMAIL=tls-$TAG@tls.example
pids=()

cleanup() {
	local p
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	dropdb --if-exists $DB >/dev/null 2>&1
	rm -rf "$DIR"
}
trap cleanup EXIT

# ---- the CA and two server certificates
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $ec -keyout "$DIR/ca.key" -out "$DIR/ca.pem" -days 2 -subj "/CN=gmail_ingest test CA $TAG" \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
server_cert() {  # server_cert NAME SAN
	openssl req $ec -keyout "$DIR/$1.key" -out "$DIR/$1.csr" -subj "/CN=${2#*:}" 2>/dev/null
	printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' "$2" >"$DIR/$1.ext"
	openssl x509 -req -in "$DIR/$1.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial \
		-out "$DIR/$1.pem" -days 2 -extfile "$DIR/$1.ext" 2>/dev/null
}
server_cert good "DNS:localhost,IP:127.0.0.1"
server_cert wrong "DNS:wrong.example.com"
chmod 644 "$DIR"/*.pem
check "openssl made the CA and the certificates" \
	"$(openssl verify -CAfile "$DIR/ca.pem" "$DIR/good.pem" "$DIR/wrong.pem" 2>&1 | grep -c ': OK')" 2

start_tls_double() {  # start_tls_double NAME: sets PORT_<NAME>
	python3 test/double/gmail_double.py --port 0 --port-file "$DIR/$1.port" --tls-cert "$DIR/$1.pem" --tls-key "$DIR/$1.key" \
		>"$DIR/$1.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 1 100); do [ -s "$DIR/$1.port" ] && break; sleep 0.1; done
	eval "PORT_$1=$(cat "$DIR/$1.port")"
}
start_tls_double good
start_tls_double wrong
GOOD=https://127.0.0.1:$PORT_good
tls_admin() { python3 test/double/double_client.py "$1" "${@:2}"; }
for base in "$GOOD" "https://127.0.0.1:$PORT_wrong"; do
	tls_admin "$base" POST /admin/mailboxes "{\"email\":\"$EMAIL\",\"refresh_token\":\"rt-$EMAIL\",\"seed\":91,\"threads\":6,\"messages\":20,\"days\":7,\"window_days\":7,\"attachments\":4,\"now_ms\":$NOW_MS}" >/dev/null
done
expected=$(DOUBLE_URL=$GOOD $DQ window-count "$EMAIL" 7)

fresh_db $DB
mb=$(q $DB "SELECT gmail_ingest.add_mailbox(gen_random_uuid(), '$EMAIL', 'rt-$EMAIL')")

# tls_sync BASE CA_FILE [MORE SETTINGS]: "status|messages stored|error" (or the ERROR text)
tls_sync() {
	psql -X -q -At -F'|' -v VERBOSITY=verbose -d $DB 2>&1 <<-SQL | grep -v "${FILTER:-^WARNING\|^DETAIL\|^HINT\|^LOCATION}"
		SET gmail_ingest.api_base_url = '$1';
		SET gmail_ingest.oauth_token_url = '$1/token';
		SET gmail_ingest.ca_file = '$2';
		SET gmail_ingest.max_retries = 0;
		${3:-}
		CREATE TEMP TABLE r AS SELECT * FROM gmail_ingest.gmail_sync($mb, 7, true);
		SELECT r.status, (SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = $mb), coalesce(r.error, '') FROM r;
	SQL
}
clear_rows() {  # forget what a successful sync stored, and the cached token
	q $DB "DELETE FROM gmail_ingest.mail_attachments; DELETE FROM gmail_ingest.mail_messages;
		DELETE FROM gmail_ingest.mail_threads; UPDATE gmail_ingest.mailboxes SET history_id = NULL" >/dev/null
}

# ---- with the CA
out=$(tls_sync "https://localhost:$PORT_good" "$DIR/ca.pem")
check "with ca_file, https://localhost: the sync succeeds and stores every message" "$(cut -d'|' -f1,2 <<<"$out")" "succeeded|$expected"
clear_rows
out=$(tls_sync "$GOOD" "$DIR/ca.pem")
check "with ca_file, https://127.0.0.1 (IP in the certificate): the sync succeeds" "$(cut -d'|' -f1,2 <<<"$out")" "succeeded|$expected"
check "verify" "$(verify_ok $DB "$mb")" t
clear_rows

# ---- without it: the Gmail API (the access token is cached from the sync above)
out=$(tls_sync "https://localhost:$PORT_good" "")
echo "# without ca_file, Gmail API: $out"
check "without ca_file: a failed run, no row stored" "$(cut -d'|' -f1,2 <<<"$out")" "failed|0"
check "without ca_file: the error names the Gmail method and certificate verification" \
	"$(grep -Eq 'users\.getProfile.*(certificate|SSL peer)' <<<"$out" && echo yes || echo "no: $out")" yes
check "without ca_file: SQLSTATE 08006 in the ledger" \
	"$(q $DB "SELECT detail->>'sqlstate' FROM gmail_ingest.ledger WHERE event = 'sync.failed' ORDER BY id DESC LIMIT 1")" 08006

# ---- without it: the token endpoint (the cached access token forgotten)
forget_token() { q $DB "UPDATE gmail_ingest.mailbox_credentials SET access_token = NULL, access_token_expires_at = NULL" >/dev/null; }
forget_token
out=$(tls_sync "https://localhost:$PORT_good" "")
echo "# without ca_file, token endpoint: $out"
check "without ca_file, token endpoint: a failed run, no row stored" "$(cut -d'|' -f1,2 <<<"$out")" "failed|0"
check "without ca_file, token endpoint: the error names it and certificate verification" \
	"$(grep -Eq 'token endpoint.*(certificate|SSL peer)' <<<"$out" && echo yes || echo "no: $out")" yes
out=$(FILTER='^LOCATION' tls_sync "https://localhost:$PORT_good" "" "SET gmail_ingest.raise_on_failure = on;" | head -2)
echo "# without ca_file, raise_on_failure: $out"
check "without ca_file, raise_on_failure: an ERROR 08006 naming certificate verification" \
	"$(grep -Eq '^ERROR:  08006: .*' <<<"$out" && grep -Eq 'certificate|SSL peer' <<<"$out" && echo yes || echo "no: $out")" yes

# ---- a certificate for another name, even with the CA
forget_token
out=$(tls_sync "https://localhost:$PORT_wrong" "$DIR/ca.pem")
echo "# certificate for wrong.example.com: $out"
check "wrong host name: a failed run, no row stored" "$(cut -d'|' -f1,2 <<<"$out")" "failed|0"
check "wrong host name: the error says the certificate does not match the host" \
	"$(grep -Eqi 'subject name|does not match|certificate' <<<"$out" && echo yes || echo "no: $out")" yes
check "wrong host name: the double never saw a request" \
	"$(python3 test/double/double_client.py "https://127.0.0.1:$PORT_wrong" GET "/admin/stats" --get token_requests)" 0
check "verify" "$(verify_ok $DB "$mb")" t
finish
