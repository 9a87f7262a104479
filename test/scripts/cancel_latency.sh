#!/usr/bin/env bash
# Cancel latency: statement_timeout, pg_cancel_backend and
# pg_terminate_backend stop a sync within 1 s, with PostgreSQL's own
# message, while it waits
#   - on a hung request (the double never answers),
#   - on a slow body (headers and half the body, then nothing),
#   - in a backoff sleep (a 503 with Retry-After: 30),
#   - in a TCP connect that never completes (a listener with a full backlog),
#   - in a DNS lookup: only where GI_SLOW_DNS_HOST names a host whose lookup
#     hangs (this machine's resolver answers at once, so it is skipped and
#     says so; the connect case covers the wait before the first byte).
# Afterwards the double must see no request of ours still open (the
# handles were freed, the sockets closed).  Latencies are printed: for
# statement_timeout, psql's timing of the statement minus the timeout; for
# the others, from sending the cancel (in an open session) to the victim's
# psql exiting.
set -uo pipefail
. "$(dirname "$0")/../lib/script.sh"

DB=gi_cancel
TAG=$(run_tag)
NOW_MS=$(now_ms)
LIMIT_MS=1000
OUT=$(mktemp -d "${TMPDIR:-/tmp}/gi_cancel.XXXXXX")
PARAMS="\"seed\":81,\"threads\":5,\"messages\":10,\"days\":7,\"window_days\":7,\"attachments\":2,\"now_ms\":$NOW_MS"
emails=()
helper=""

cleanup() {
	local e
	[ -n "$helper" ] && kill "$helper" 2>/dev/null
	[ -n "${CANC_PID:-}" ] && kill "$CANC_PID" 2>/dev/null
	for e in "${emails[@]}"; do dclear "$e" 2>/dev/null; done
	wait 2>/dev/null
	dropdb --if-exists $DB >/dev/null 2>&1
	rm -rf "$OUT"
}
trap cleanup EXIT

fresh_db $DB
declare -A MB
for s in hang slow backoff connect dns; do
	e="cancel-$s-$TAG@cancel.example"
	emails+=("$e")
	new_mailbox "$e" "$PARAMS"
	MB[$s]=$(q $DB "SELECT gmail_ingest.add_mailbox(gen_random_uuid(), '$e', 'rt-$e')")
done
dbl POST /admin/faults "[{\"email\":\"cancel-hang-$TAG@cancel.example\",\"endpoint\":\"profile\",\"kind\":\"hang\",\"count\":-1},
	{\"email\":\"cancel-slow-$TAG@cancel.example\",\"endpoint\":\"profile\",\"kind\":\"slow_body\",\"ms\":120000,\"count\":-1}]" >/dev/null

# A listener whose backlog is full: a connect to it never completes.
python3 -c '
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(0)
fill = []
for _ in range(4):
    c = socket.socket(); c.setblocking(False)
    try: c.connect(s.getsockname())
    except BlockingIOError: pass
    fill.append(c)
print(s.getsockname()[1], flush=True)
time.sleep(900)
' >"$OUT/blackhole.port" &
helper=$!
for _ in $(seq 1 50); do [ -s "$OUT/blackhole.port" ] && break; sleep 0.1; done
BLACKHOLE="http://127.0.0.1:$(cat "$OUT/blackhole.port")"

# DNS: only if a lookup really hangs here.
DNS_HOST=${GI_SLOW_DNS_HOST:-gmail-ingest-dns-probe.example.com}
dns_ms=$(python3 -c '
import socket, sys, time, threading
t = time.monotonic()
def look():
    try: socket.getaddrinfo(sys.argv[1], 443)
    except OSError: pass
th = threading.Thread(target=look, daemon=True); th.start(); th.join(3)
print(int((time.monotonic() - t) * 1000))' "$DNS_HOST")

# An open session that sends the cancels, so no connection time is measured.
coproc CANC { psql -X -At -d $DB 2>&1; }
CANC_PID=$CANC_PID
canc() { echo "$1" >&"${CANC[1]}"; read -r -t 10 reply <&"${CANC[0]}"; echo "$reply"; }

# in_state SCENARIO: wait (bounded) until the victim waits where it should.
in_state() {
	local e="cancel-$1-$TAG@cancel.example" i st
	for i in $(seq 1 100); do
		st=$(dstats "$e")
		case $1 in
			hang|slow) [ "$(in_flight "$1")" -ge 1 ] && break ;;
			backoff) [ "$(stat_of e503 "$st")" -ge "$2" ] && break ;;
			connect|dns) [ "$(stat_of token "$st")" -ge "$2" ] && break ;;
		esac
		sleep 0.05
	done
	sleep 0.3   # well inside the wait
}

settings() {  # settings SCENARIO: the session settings of its sync
	case $1 in
		connect) echo "SET gmail_ingest.api_base_url = '$BLACKHOLE';" ;;
		dns) echo "SET gmail_ingest.api_base_url = 'https://$DNS_HOST';" ;;
		*) echo "" ;;
	esac
}

victim() {  # victim SCENARIO APP [TIMEOUT_MS]: the sync, in the background; sets VICTIM
	local pre=""
	[ -n "${3:-}" ] && pre="SET statement_timeout = $3;"
	[ "$1" = backoff ] && dbl POST /admin/faults "{\"email\":\"cancel-backoff-$TAG@cancel.example\",\"endpoint\":\"profile\",\"kind\":\"status\",\"status\":503,\"retry_after\":30,\"count\":1}" >/dev/null
	PGAPPNAME=$2 timeout 120 psql -X -q -d $DB >"$OUT/$2.out" 2>&1 <<-SQL &
		$(settings "$1")
		$pre
		\timing on
		SELECT status FROM gmail_ingest.gmail_sync(${MB[$1]}, 7);
	SQL
	VICTIM=$!
}

in_flight() { dbl GET "/admin/stats?email=cancel-$1-$TAG@cancel.example" | grep -o '"in_flight": [0-9]*' | grep -o '[0-9]*$'; }
quiet() {  # quiet SCENARIO: until the double has closed the previous victim's request (bounded)
	local i
	for i in $(seq 1 60); do [ "$(in_flight "$1")" = 0 ] && return; sleep 0.05; done
}

summary=()
run() {  # run SCENARIO METHOD
	local s=$1 how=$2 app="gi_cancel_${1}_$2" t0 t1 lat msg before_token before_503 st
	quiet "$s"
	st=$(dstats "cancel-$s-$TAG@cancel.example")
	before_token=$(stat_of token "$st")
	before_503=$(stat_of e503 "$st")
	case $how in
		statement_timeout)
			victim "$s" "$app" 1500
			wait "$VICTIM"
			lat=$(grep -o 'Time: [0-9.]*' "$OUT/$app.out" | tail -1 | awk '{printf "%.1f", $2 - 1500}')
			msg="canceling statement due to statement timeout"
			;;
		pg_cancel_backend|pg_terminate_backend)
			victim "$s" "$app"
			case $s in
				backoff) in_state backoff $((before_503 + 1)) ;;
				connect|dns) in_state "$s" $((before_token + 1)) ;;
				*) in_state "$s" ;;
			esac
			t0=$(ms_now)
			canc "SELECT $how(pid) FROM pg_stat_activity WHERE application_name = '$app';" >/dev/null
			wait "$VICTIM"
			t1=$(ms_now)
			lat=$((t1 - t0))
			[ $how = pg_cancel_backend ] && msg="canceling statement due to user request" || msg="terminating connection due to administrator command"
			;;
	esac
	check "$s, $how: PostgreSQL's own message" "$(grep -c "$msg" "$OUT/$app.out")" 1
	local whole=${lat%.*}
	check "$s, $how: within $LIMIT_MS ms" "$([ "${whole:-99999}" -ge 0 ] && [ "${whole:-99999}" -lt $LIMIT_MS ] && echo yes || echo "no: ${lat} ms")" yes
	summary+=("$(printf '%-8s %-21s %5s ms' "$s" "$how" "$lat")")
}

scenarios="hang slow backoff connect"
if [ "$dns_ms" -ge 2000 ]; then
	scenarios="$scenarios dns"
else
	echo "# DNS wait: skipped -- looking up $DNS_HOST ends after ${dns_ms} ms here; set GI_SLOW_DNS_HOST to a name whose lookup hangs"
fi
for s in $scenarios; do
	for how in statement_timeout pg_cancel_backend pg_terminate_backend; do
		run "$s" "$how"
	done
done
sleep 0.5
open=0
for e in "${emails[@]}"; do
	open=$(( open + $(dbl GET "/admin/stats?email=$e" | grep -o '"in_flight": [0-9]*' | grep -o '[0-9]*$') ))
done
check "the double sees no request of ours still open" "$open" 0
check "no sync left a row (each was rolled back)" "$(q $DB "SELECT count(*) FROM gmail_ingest.sync_runs")" 0
echo "# cancel latencies (limit $LIMIT_MS ms):"
for l in "${summary[@]}"; do echo "#   $l"; done
finish
