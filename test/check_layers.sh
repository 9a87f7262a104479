#!/usr/bin/env bash
# test/check_layers.sh: the layering of SPEC §2a, read from the #include
# lines of src/.  Each file belongs to a layer; it may include headers of
# its own layer or of a lower one, never of a layer above it, and the two
# sides of one level (the Gmail API and the store) never include each
# other.  The MIME parser and its helpers include no PostgreSQL header, so
# they can be fuzzed and tested alone.  A file the map does not know fails
# the check: a new file must be given its place.
#
#   bash test/check_layers.sh [SRC_DIR]
set -uo pipefail
src=${1:-"$(cd "$(dirname "$0")/.." && pwd)/src"}

# layer NAME (file name without extension) -> "level group"
layer() {
	case $1 in
	gmail_ingest | settings | settings_s3 | fleet | service_account | project_quota | push | blob_admin) echo "6 entry" ;;
	sync | sync_*) echo "5 sync" ;;
	message_row) echo "4 row" ;;
	gmail_api | gmail_api_* | gmail_* | oauth | oauth_* | pubsub) echo "3 gmail" ;;
	store | store_*) echo "3 store" ;;
	http | http_* | s3_client | retry_policy | remote_error) echo "2 http" ;;
	json_tree) echo "1 util" ;;
	mime_parse | mime_* | sha256_hex) echo "1 parse" ;;
	utf8_text) echo "0 text" ;;	# plain C, shared by the JSON reader and the MIME parser
	*) echo "" ;;
	esac
}

checked=0
bad=0
for f in "$src"/*.[ch]; do
	name=$(basename "$f")
	name=${name%.*}
	me=$(layer "$name")
	if [ -z "$me" ]; then
		echo "not ok - $(basename "$f"): not in the layer map of test/check_layers.sh"
		bad=$((bad + 1))
		continue
	fi
	read -r my_level my_group <<<"$me"
	while IFS= read -r inc; do
		dep=${inc%.h}
		there=$(layer "$dep")
		[ -z "$there" ] && continue		# not one of ours (e.g. postgres.h)
		[ -e "$src/$inc" ] || continue
		read -r level group <<<"$there"
		if [ "$level" -gt "$my_level" ]; then
			echo "not ok - $(basename "$f") ($my_group) includes $inc, a layer above it ($group)"
			bad=$((bad + 1))
		elif [ "$level" -eq "$my_level" ] && [ "$group" != "$my_group" ]; then
			echo "not ok - $(basename "$f") ($my_group) includes $inc of a sibling layer ($group)"
			bad=$((bad + 1))
		fi
		checked=$((checked + 1))
	done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
	if { [ "$my_group" = parse ] || [ "$my_group" = text ]; } &&
		grep -qE '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"](postgres|postgres_fe|fmgr|c)\.h[>"]|^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"](utils|executor|access|catalog|nodes|lib|common|mb)/' "$f"; then
		echo "not ok - $(basename "$f"): the MIME parser includes a PostgreSQL header"
		bad=$((bad + 1))
	fi
done
echo "# $checked #include lines of src/ checked against the layers"
echo "$((checked - bad)) passed, $bad failed"
[ "$bad" -eq 0 ]
