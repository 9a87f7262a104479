#!/usr/bin/env bash
# Soak: SOAK_MAILBOXES mailboxes (10) in one database, SOAK_ROUNDS rounds
# (default 4, about 35 s; the full soak is SOAK_ROUNDS=20, about 90 s),
# SOAK_PARALLEL syncs at a time (4).  Every Gmail request of theirs takes
# 15 ms longer and fails with about 10% probability (5xx, 429, 403 rate
# limits, truncated and invalid JSON, resets, hangs, 400s), their token
# requests with 10%, and a quarter of the syncs are cancelled at a random
# moment (statement_timeout, or pg_cancel_backend from another session).
# SOAK_SEED replays the choice of cancels (the double's fault draws are
# its own).
#
# The first half of the rounds are full syncs of unchanged mailboxes; then a
# clean sync of each must give exactly the rows of a reference mailbox of the
# same content synced cleanly in another database.  In the second half each
# round first changes every mailbox (a reply, a new thread, a label change
# and a deletion, made identically in its reference, which is then synced
# cleanly), then syncs it incrementally under faults and cancels.  Every
# sync must end as succeeded, failed (recorded) or cancelled -- never a
# deadlock, a crash or another error -- with verify() holding; and after a
# final clean sync every mailbox must hold exactly its reference's rows,
# with no duplicate and no run left 'running'.
set -uo pipefail
. "$(dirname "$0")/../lib/script.sh"

NMB=${SOAK_MAILBOXES:-10}
ROUNDS=${SOAK_ROUNDS:-4}
PAR=${SOAK_PARALLEL:-4}
SEED=${SOAK_SEED:-$RANDOM}
RANDOM=$SEED
DB=gi_soak
REF=gi_soak_ref
TAG=$(run_tag)
NOW_MS=$(now_ms)
export PGOPTIONS="${PGOPTIONS:-} -c gmail_ingest.request_timeout_ms=1500 -c gmail_ingest.max_retries=2"
OUT=$(mktemp -d "${TMPDIR:-/tmp}/gi_soak.XXXXXX")
started=$SECONDS
echo "# $NMB mailboxes, $ROUNDS rounds, $PAR in parallel, seed $SEED (SOAK_SEED)"

email() { echo "soak$1-$TAG@soak.example"; }
ref_email() { echo "soakref$1-$TAG@soak.example"; }

cleanup() {
	local j
	for j in $(jobs -p); do kill "$j" 2>/dev/null; done
	wait 2>/dev/null
	for i in $(seq 1 "$NMB"); do dclear "$(email "$i")" 2>/dev/null; done
	dropdb --if-exists $DB >/dev/null 2>&1
	dropdb --if-exists $REF >/dev/null 2>&1
	rm -rf "$OUT"
}
trap cleanup EXIT

fresh_db $DB
fresh_db $REF
install_digests $DB
install_digests $REF
declare -a MB RMB
for i in $(seq 1 "$NMB"); do
	params="\"seed\":$((100 + i)),\"threads\":12,\"messages\":30,\"days\":7,\"window_days\":7,\"attachments\":8,\"now_ms\":$NOW_MS,\"content_email\":\"soak-content$i@example.com\""
	new_mailbox "$(email "$i")" "$params"
	new_mailbox "$(ref_email "$i")" "$params"
	dbl POST "/admin/mailboxes/$(email "$i")/config" '{"latency_ms":15}' >/dev/null   # time for cancels to land
	MB[i]=$(q $DB "SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-00000000a$(printf %03d "$i")', '$(email "$i")', 'rt-$(email "$i")')")
	RMB[i]=$(q $REF "SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-00000000b$(printf %03d "$i")', '$(ref_email "$i")', 'rt-$(ref_email "$i")')")
done

faults_on() {  # about 10% of every mailbox's Gmail requests fail, and 10% of its token requests
	local i e
	for i in $(seq 1 "$NMB"); do
		e=$(email "$i")
		dbl POST /admin/faults "[
			{\"email\":\"$e\",\"endpoint\":\"*\",\"kind\":\"status\",\"status\":503,\"count\":-1,\"probability\":0.025},
			{\"email\":\"$e\",\"endpoint\":\"*\",\"kind\":\"status\",\"status\":429,\"count\":-1,\"probability\":0.015},
			{\"email\":\"$e\",\"endpoint\":\"*\",\"kind\":\"status\",\"status\":403,\"reason\":\"userRateLimitExceeded\",\"count\":-1,\"probability\":0.01},
			{\"email\":\"$e\",\"endpoint\":\"*\",\"kind\":\"truncate\",\"count\":-1,\"probability\":0.01},
			{\"email\":\"$e\",\"endpoint\":\"*\",\"kind\":\"invalid_json\",\"count\":-1,\"probability\":0.01},
			{\"email\":\"$e\",\"endpoint\":\"*\",\"kind\":\"reset\",\"count\":-1,\"probability\":0.01},
			{\"email\":\"$e\",\"endpoint\":\"*\",\"kind\":\"status\",\"status\":400,\"count\":-1,\"probability\":0.007},
			{\"email\":\"$e\",\"endpoint\":\"*\",\"kind\":\"hang\",\"count\":-1,\"probability\":0.005},
			{\"email\":\"$e\",\"endpoint\":\"token\",\"kind\":\"status\",\"status\":500,\"count\":-1,\"probability\":0.1}]" >/dev/null
	done
}
FIRED=0
faults_off() {
	local i f
	for i in $(seq 1 "$NMB"); do
		for f in $(dfired "$(email "$i")" | tr , ' '); do FIRED=$((FIRED + f)); done
		dclear "$(email "$i")"
	done
}

# soak_sync I ROUND FORCE DICE MS: one sync under faults; DICE 0 cancels it by
# statement_timeout = MS, 1 by pg_cancel_backend after MS; writes the outcome
# and verify() to $OUT/I.ROUND.
soak_sync() {
	local i=$1 r=$2 force=$3 dice=$4 ms=$5 app="gi_soak_${1}_$2" how="" timeout_sql="" canceller="" out err outcome verified
	if [ "$dice" -eq 0 ]; then
		how="statement_timeout"
		timeout_sql="SET statement_timeout = $ms;"
	elif [ "$dice" -eq 1 ]; then
		how="pg_cancel_backend"
		( sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
		  psql -X -At -d $DB -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = '$app'" >/dev/null 2>&1 ) &
		canceller=$!
	fi
	out=$(PGAPPNAME=$app timeout 120 psql -X -q -At -F'|' -d $DB 2>"$OUT/$i.$r.err" <<-SQL
		$timeout_sql
		SELECT status FROM gmail_ingest.gmail_sync(${MB[i]}, 7, $force);
	SQL
	)
	[ -n "$canceller" ] && wait "$canceller"
	# verify() once the canceller is done, in a session of its own: a cancel
	# timed for a sync that ended sooner must not land on verify() instead.
	verified=$(q $DB "SELECT bool_and(ok) FROM gmail_ingest.verify(${MB[i]})")
	err=$(grep -E '^(ERROR|FATAL|PANIC|psql)' "$OUT/$i.$r.err" | grep -v 'WARNING' | head -3 | tr '\n' ' ')
	case "$out|$err" in
		succeeded*) outcome=succeeded ;;
		failed*) outcome=failed ;;
		*"canceling statement due to statement timeout"*|*"canceling statement due to user request"*) outcome=cancelled ;;
		*) outcome="unexpected: $out $err" ;;
	esac
	echo "$outcome|${how:-none}|$verified" >"$OUT/$i.$r"
}

round() {  # round R FORCE MAX_CANCEL_MS: cancels land within the syncs' usual length
	local i
	for i in $(seq 1 "$NMB"); do
		wait_jobs "$PAR"
		soak_sync "$i" "$1" "$2" $((RANDOM % 8)) $((10 + RANDOM % $3)) &
	done
	wait
}

# ---- phase 1: full syncs of unchanged mailboxes, under faults and cancels
half=$(( (ROUNDS + 1) / 2 ))
faults_on
for r in $(seq 1 $half); do round "$r" true 1500; done
faults_off
for i in $(seq 1 "$NMB"); do
	q $REF "SELECT status FROM gmail_ingest.gmail_sync(${RMB[i]}, 7)" >/dev/null
	q $DB "SELECT status FROM gmail_ingest.gmail_sync(${MB[i]}, 7)" >/dev/null
done
bad=0
for i in $(seq 1 "$NMB"); do
	[ "$(q $DB "SELECT gi_test_digest(${MB[i]})")" = "$(q $REF "SELECT gi_test_digest(${RMB[i]})")" ] || bad=$((bad + 1))
done
check "after the full-sync rounds and a clean sync: every mailbox holds its reference's rows" "$bad mailboxes differ" "0 mailboxes differ"

# ---- phase 2: changes, then incremental syncs under faults and cancels
# Each mailbox's own messages, oldest first (the same ids as its reference's).
declare -A ORIG THREADS
for i in $(seq 1 "$NMB"); do
	ORIG[$i]=$(q $REF "SELECT string_agg(provider_message_id, ' ' ORDER BY internal_date, provider_message_id) FROM gmail_ingest.mail_messages WHERE mailbox_id = ${RMB[i]}")
	THREADS[$i]=$(q $REF "SELECT string_agg(provider_thread_id, ' ' ORDER BY provider_thread_id) FROM gmail_ingest.mail_threads WHERE mailbox_id = ${RMB[i]}")
done
change() {  # change EMAIL I R: the same changes in a mailbox and in its reference
	local e=$1 i=$2 r=$3 msgs threads n
	read -ra msgs <<<"${ORIG[$i]}"
	read -ra threads <<<"${THREADS[$i]}"
	n=${#msgs[@]}
	dbl POST "/admin/mailboxes/$e/messages" "{\"thread_id\":\"${threads[$((r % ${#threads[@]}))]}\",\"internal_date_ms\":$((NOW_MS - 3600000 + r * 1000))}" >/dev/null
	dbl POST "/admin/mailboxes/$e/messages" "{\"internal_date_ms\":$((NOW_MS - 3600000 + r * 1000 + 500))}" >/dev/null
	dbl POST "/admin/mailboxes/$e/messages/${msgs[$((r % (n / 2)))]}/labels" "{\"add\":[\"Label_$((r % 3 + 1))\"],\"remove\":[\"UNREAD\"]}" >/dev/null
	dbl DELETE "/admin/mailboxes/$e/messages/${msgs[$((n - 1 - r % (n / 2)))]}" >/dev/null
}
faults_on
for r in $(seq $((half + 1)) "$ROUNDS"); do
	for i in $(seq 1 "$NMB"); do
		change "$(email "$i")" "$i" $((r - half))
		change "$(ref_email "$i")" "$i" $((r - half))
		q $REF "SELECT status FROM gmail_ingest.gmail_sync(${RMB[i]}, 7)" >/dev/null
	done
	round "$r" false 300
done
faults_off

# ---- the outcomes
declare -A count
unexpected=0 verify_bad=0
for f in "$OUT"/*.*; do
	case $f in *.err) continue ;; esac
	IFS='|' read -r outcome how verified <"$f"
	case $outcome in
		unexpected*) unexpected=$((unexpected + 1)); echo "# unexpected outcome ($how) in $(basename "$f"): $outcome" ;;
		*) count[$outcome/$how]=$(( ${count[$outcome/$how]:-0} + 1 )) ;;
	esac
	[ "$verified" = t ] || { verify_bad=$((verify_bad + 1)); echo "# verify() failed after $(basename "$f") ($outcome)"; }
done
total=$(ls "$OUT" | grep -vc '\.err$')
echo "# $total syncs, $FIRED faults injected:"
for k in $(printf '%s\n' "${!count[@]}" | sort); do echo "#   ${count[$k]} ${k%/*} (cancel: ${k#*/})"; done
check "every sync succeeded, failed (recorded) or was cancelled: no deadlock, crash or other error" "$unexpected" 0
check "verify() held after every sync" "$verify_bad" 0
check "some syncs were hit" "$([ "$FIRED" -gt 0 ] && [ "$(( ${count[cancelled/statement_timeout]:-0} + ${count[cancelled/pg_cancel_backend]:-0} + ${count[failed/none]:-0} ))" -gt 0 ] && echo yes)" yes

# ---- a final clean sync, then every mailbox equals its reference
for i in $(seq 1 "$NMB"); do
	wait_jobs "$PAR"
	q $DB "SELECT status FROM gmail_ingest.gmail_sync(${MB[i]}, 7)" >"$OUT/final.$i" 2>&1 &
done
wait
bad=0 differ=""
for i in $(seq 1 "$NMB"); do
	got=$(q $DB "SELECT gi_test_digest(${MB[i]})")
	want=$(q $REF "SELECT gi_test_digest(${RMB[i]})")
	if [ "$(cat "$OUT/final.$i")" != succeeded ] || [ "$got" != "$want" ]; then
		bad=$((bad + 1))
		differ="$differ mailbox $i: $(cat "$OUT/final.$i") $got vs $want;"
		# which rows: threads and messages as the digest sees them, side by side
		for t in mail_threads mail_messages; do
			rows="SELECT (to_jsonb(x) - '{id,mailbox_id,org_id,thread_id,created_at,updated_at,synced_since,deleted_at}'::text[] || jsonb_build_object('deleted', to_jsonb(x)->'deleted_at' <> 'null'))::text FROM gmail_ingest.$t x WHERE mailbox_id = %s ORDER BY 1"
			diff <(q $DB "$(printf "$rows" "${MB[i]}")") <(q $REF "$(printf "$rows" "${RMB[i]}")") | sed -n 's/^[<>] /# mailbox '"$i $t"' &/p' | head -20
		done
	fi
done
check "after a final clean sync every mailbox holds exactly its reference's rows" "$bad mailboxes differ$differ" "0 mailboxes differ"
check "verify() holds for every mailbox" "$(q $DB "SELECT count(*) FROM gmail_ingest.mailboxes m, gmail_ingest.verify(m.id) v WHERE NOT v.ok")" 0
check "no duplicate natural key" "$(q $DB "SELECT sum(gi_test_duplicates(id)) FROM gmail_ingest.mailboxes")" 0
check "no run left 'running'" "$(q $DB "SELECT count(*) FROM gmail_ingest.sync_runs WHERE status = 'running'")" 0
check "references verified too" "$(q $REF "SELECT count(*) FROM gmail_ingest.mailboxes m, gmail_ingest.verify(m.id) v WHERE NOT v.ok")" 0
echo "# $((SECONDS - started)) s"
finish
