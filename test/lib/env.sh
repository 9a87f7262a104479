# test/lib/env.sh: shared by the test runner, the demo and the benchmarks.
# Installs what is missing from Debian's packages, builds and installs the
# extension, and starts a throw-away PostgreSQL cluster plus the Gmail API
# double on loopback.  Everything lives under $GI_WORK and is stopped by
# gi_stop_all (registered as an EXIT trap by gi_start_all).

GI_ROOT=${GI_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
# PG_CONFIG picks the PostgreSQL installation (default: the one on PATH);
# the binaries, the build and the install all follow it.
export PG_CONFIG=${PG_CONFIG:-pg_config}
GI_PGBIN=$("$PG_CONFIG" --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
GI_PACKAGES="postgresql-15 postgresql-server-dev-15 postgresql-15-cron libcurl4-openssl-dev libssl-dev
 libgmime-3.0-dev pkg-config make gcc python3 openssl ca-certificates libpython3.11-testsuite
 valgrind libasan8 libubsan1 curl python3-psycopg python3-botocore libdeflate-dev"

gi_log() { printf '== %s\n' "$*" >&2; }

gi_ensure_packages() {
	local missing=()
	for p in $GI_PACKAGES; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		gi_log "installing Debian packages: ${missing[*]}"
		if [ "$(id -u)" != 0 ]; then
			echo "run as root (or install: ${missing[*]})" >&2
			return 1
		fi
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
}

gi_build_install() {
	gi_log "building and installing the extension"
	GI_PGBIN=$("$PG_CONFIG" --bindir)
	make -C "$GI_ROOT" -s clean PG_CONFIG="$PG_CONFIG" >/dev/null
	make -C "$GI_ROOT" -s all PG_CONFIG="$PG_CONFIG" WERROR=1
	make -C "$GI_ROOT" -s install PG_CONFIG="$PG_CONFIG" >/dev/null
}

gi_free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Start the double; sets DOUBLE_URL.  Extra arguments go to the double.
gi_start_double() {
	local portfile="$GI_WORK/double.port"
	rm -f "$portfile"
	python3 "$GI_ROOT/test/double/gmail_double.py" --port 0 --port-file "$portfile" "$@" \
		>"$GI_WORK/double.log" 2>&1 &
	echo $! >"$GI_WORK/double.pid"
	for _ in $(seq 1 100); do
		[ -s "$portfile" ] && break
		sleep 0.1
	done
	[ -s "$portfile" ] || { cat "$GI_WORK/double.log" >&2; return 1; }
	export DOUBLE_URL="http://127.0.0.1:$(cat "$portfile")"
	gi_log "Gmail API double at $DOUBLE_URL"
}

# Start the S3 test server (test/s3/s3_server.py: SigV4 checked by botocore);
# sets S3_URL, S3_BUCKET, S3_ACCESS_KEY, S3_SECRET_KEY.
gi_start_s3() {
	local portfile="$GI_WORK/s3.port"
	export S3_BUCKET=gmail-test S3_ACCESS_KEY=TESTACCESSKEY S3_SECRET_KEY=test-s3-secret-key-$$
	rm -f "$portfile"
	python3 "$GI_ROOT/test/s3/s3_server.py" --port 0 --port-file "$portfile" --bucket "$S3_BUCKET" \
		--access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" >"$GI_WORK/s3.log" 2>&1 &
	echo $! >"$GI_WORK/s3.pid"
	for _ in $(seq 1 100); do
		[ -s "$portfile" ] && break
		sleep 0.1
	done
	[ -s "$portfile" ] || { cat "$GI_WORK/s3.log" >&2; return 1; }
	export S3_URL="http://127.0.0.1:$(cat "$portfile")"
	gi_log "S3 test server at $S3_URL"
}

# gi_s3 METHOD PATH [JSON]: the S3 test server's admin API (/admin/...).
gi_s3() {
	python3 - "$S3_URL" "$@" <<'PY'
import sys, urllib.request
url, method, path = sys.argv[1], sys.argv[2], sys.argv[3]
data = sys.argv[4].encode() if len(sys.argv) > 4 else (b"{}" if method == "POST" else None)
req = urllib.request.Request(url + path, data=data, method=method)
sys.stdout.buffer.write(urllib.request.urlopen(req, timeout=30).read())
PY
}

# gi_init_cluster BINDIR DATA PORT PRELOAD: initdb as the postgres OS user,
# with the socket in $GI_WORK and the extension pointed at the double.
gi_init_cluster() {
	local bindir=$1 data=$2 port=$3 preload=$4
	mkdir -p "$data"
	chown -R postgres:postgres "$GI_WORK"
	chmod 755 "$GI_WORK"
	su postgres -c "'$bindir/initdb' -D '$data' --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null"
	cat >>"$data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$GI_WORK'
port = $port
shared_preload_libraries = '$preload'
fsync = off
log_line_prefix = '%m [%p] '
gmail_ingest.api_base_url = '$DOUBLE_URL'
gmail_ingest.oauth_token_url = '$DOUBLE_URL/token'
gmail_ingest.client_id = 'test-client-id'
gmail_ingest.client_secret = 'test-client-secret'
# The per-mailbox budget paces a 2026 project's mailbox at 300 messages a
# minute; the double enforces no quota unless a test asks, so only the
# tests about quota (quota.sh, project_quota.sh) turn the budget on.
gmail_ingest.quota_units_per_minute = 0
CONF
}

# gi_s3_settings CONF: point a server at the suite's object store, if one
# runs (blob_store stays 'database' unless a test sets it).
gi_s3_settings() {
	[ -n "${S3_URL:-}" ] || return 0
	cat >>"$1" <<CONF
gmail_ingest.s3_endpoint = '$S3_URL'
gmail_ingest.s3_bucket = '$S3_BUCKET'
gmail_ingest.s3_access_key_id = '$S3_ACCESS_KEY'
gmail_ingest.s3_secret_access_key = '$S3_SECRET_KEY'
CONF
}

# Start the suite's cluster, with pg_cron; sets PGHOST/PGPORT/PGUSER.
gi_start_cluster() {
	local data="$GI_WORK/data"
	export PGPORT=${PGPORT_OVERRIDE:-$(gi_free_port)}
	export PGHOST="$GI_WORK"
	export PGUSER=postgres
	export PGDATABASE=postgres
	gi_init_cluster "$GI_PGBIN" "$data" "$PGPORT" pg_cron,gmail_ingest
	cat >>"$data/postgresql.conf" <<CONF
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 32
CONF
	gi_s3_settings "$data/postgresql.conf"
	su postgres -c "$GI_PGBIN/pg_ctl -D '$data' -l '$GI_WORK/postgres.log' -w start >/dev/null"
	gi_log "PostgreSQL on socket $PGHOST port $PGPORT"
}

gi_stop_all() {
	if [ -n "${GI_WORK:-}" ] && [ -d "$GI_WORK/data" ]; then
		su postgres -c "$GI_PGBIN/pg_ctl -D '$GI_WORK/data' -m immediate stop >/dev/null 2>&1" || true
	fi
	if [ -n "${GI_WORK:-}" ] && [ -f "$GI_WORK/double.pid" ]; then
		kill "$(cat "$GI_WORK/double.pid")" 2>/dev/null || true
	fi
	if [ -n "${GI_WORK:-}" ] && [ -f "$GI_WORK/s3.pid" ]; then
		kill "$(cat "$GI_WORK/s3.pid")" 2>/dev/null || true
	fi
	if [ -n "${GI_WORK:-}" ] && [ -z "${GI_KEEP:-}" ]; then
		rm -rf "$GI_WORK"
	fi
}

gi_start_all() {
	GI_WORK=$(mktemp -d "${TMPDIR:-/tmp}/gmail_ingest.XXXXXX")
	export GI_WORK
	trap gi_stop_all EXIT
	gi_start_double "$@"
	gi_start_s3
	gi_start_cluster
}

# One-line answers from the double, for scripts and pg_regress inputs
# (psql backticks run through the shell, so they see it too).
export DQ="python3 $GI_ROOT/test/double/dq.py"

# The double's admin API.
gi_double() { python3 "$GI_ROOT/test/double/double_client.py" "$DOUBLE_URL" "$@"; }
