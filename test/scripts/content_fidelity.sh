#!/usr/bin/env bash
# Content fidelity: every real message Debian ships with Python's email tests
# (package libpython3.11-testsuite, read where it is installed), the crafted
# MIME cases of test/mime/cases, and two cases made here (1,000 nested
# multiparts, a 25 MB attachment) go into a mailbox of the Gmail API double
# as their exact bytes; one gmail_sync stores them; then every decoded field
# in the database is compared with Python's own reading of the same bytes
# (email package, policy default) by test/content_compare.py, which documents
# the fields and the rules.  A difference fails unless ALLOWED below names it.
# Also checked: the sync succeeds, every message is stored, verify() passes,
# every string is valid UTF-8 without NUL, parse_error is set exactly for the
# malformed messages.  About 10 s.
set -euo pipefail
. "$(dirname "$0")/../lib/script.sh"

# The interpreter whose test data this is (the Debian package's), else any.
PY=/usr/bin/python3.11
[ -x "$PY" ] || PY=python3
PYDATA=/usr/lib/python3.11/test/test_email/data
db=test_content_fidelity
email=fidelity-$(run_tag)@example.com    # unique: the double outlives a run
work=$(mktemp -d /tmp/content_fidelity.XXXXXX)
trap 'rm -rf "$work"' EXIT

# ---------------------------------------------------------------------------
# Allowed differences, by reason: "reason: TEXT" then MESSAGE FIELD[,FIELD]
# lines (attachment:PART.* = every field of that attachment).  Each is a
# documented choice of src/mime_parse.c or a reading of malformed input; an
# entry that no longer occurs fails the test too.
cat >"$work/allowed" <<'ALLOWED'
reason: old-style "addr (Comment)": the comment is the display name here (GMime, as mail readers show it); Python's policy default drops comments
msg_01.txt            from
msg_03.txt            from
msg_04.txt            from
msg_06.txt            from
msg_14.txt            from
msg_20.txt            from
msg_27.txt            from,to
msg_29.txt            from
msg_44.txt            from
quoted_names_comments.eml bcc
addr_spec_comments.eml reply_to

reason: null sender "Name <>": GMime's address parser drops the mailbox (from_address keeps the text); Python keeps the name without an address
msg_43.txt            from

reason: IDN: punycode domains are decoded to Unicode (GMime with libidn2); Python keeps the xn-- form
idn_address.eml       from,from_email,to,to_emails

reason: a malformed RFC 2047 word is left as written (the issue's rule); Python strips its =?...?= wrapper
rfc2047_malformed.eml subject,headers

reason: 8-bit header bytes that are not UTF-8 are read as windows-1252; Python gives U+FFFD
header_8bit.eml       subject,headers,from,from_address

reason: a text part with an inline disposition and a filename is an attachment here; Python's get_body takes it as the body
msg_04.txt            body_text
msg_44.txt            body_text
text_attachment.eml   body_html

reason: multipart/alternative with two HTML alternatives: body_html is the last (richest) here, get_body's is the first
alternative.eml       body_html

reason: a multipart whose boundary is missing or never occurs: its prologue is body_text here; Python shows no body
msg_17.txt            body_text
msg_25.txt            body_text
msg_31.txt            body_text
msg_41.txt            body_text
multipart_no_boundary.eml body_text
multipart_no_part_opened.eml body_text

reason: malformed MIME (a nested multipart reusing its parent's boundary; boundary lines inside a part): GMime and Python recover different trees; parse_error is set
msg_15.txt            attachments
msg_38.txt            attachments,attachment:2.*
msg_39.txt            attachments
same_boundary_nested.eml attachments

reason: an invalid Content-Type makes an application/octet-stream attachment here (parse_error set); Python reads text/plain or keeps the invalid type
invalid_content_type.eml body_text,attachments
fuzz_empty_media_type.eml attachment:2.mime_type

reason: parse_error for input Python reads without a structural defect: "Content-Type: text" without subtype (read as text/plain by both), empty parts between two delimiter lines (invalid in RFC 2046's grammar)
msg_14.txt            parse_error
content_type_text_only.eml parse_error
msg_37.txt            parse_error

reason: charset labels are read as the supersets senders mean (gb2312 as GB18030, shift_jis as CP932, euc-kr as CP949, iso-8859-1 as windows-1252); Python decodes the strict charsets with U+FFFD
charset_euckr.eml     body_text
charset_gb2312.eml    body_text
charset_shift_jis.eml body_text
charset_latin1_c1.eml body_text

reason: a missing or unknown charset decodes as UTF-8 when valid, else windows-1252; Python decodes ASCII with U+FFFD, and get_content() raises LookupError on an unknown charset
charset_missing_latin.eml body_text
charset_unknown_latin.eml body_text
charset_unknown_utf8.eml body_text
charset_evil_name.eml body_text

reason: RFC 2231 sections are joined as bytes before the charset is decoded, so a character split between sections comes out whole; Python decodes each section on its own (U+FFFD for a split euc-jp character)
rfc2231_split_char.eml attachment:4.filename,attachment:4.storage_path

reason: a Date with fractional seconds (22:23:35.882) is read to the second here; Python cannot read it
date_fractional_seconds.eml sent_at

reason: HTML without a charset parameter is decoded with its <meta> charset; Python ignores it
html_meta_charset.eml body_html

reason: a NUL byte becomes U+FFFD (never in a text column); Python keeps it
nul_byte.eml          body_text

reason: base64 padded chunk by chunk is decoded past the first padding (GMime 3.2.13 bug workaround); Python stops at the first padding
base64_chunked.eml    attachment:2.*
ALLOWED

# ---------------------------------------------------------------------------
start=$SECONDS
files=()
for f in "$PYDATA"/msg_*.txt; do [ -e "$f" ] && files+=("$f"); done
check "Python's email test messages are installed (libpython3.11-testsuite)" "$([ ${#files[@]} -ge 40 ] && echo yes)" yes
# NUL bytes in a body: the double's snippet then holds U+0000, which Gmail's
# JSON escapes as \u0000, an escape PostgreSQL's JSON parser refuses.  The
# message has a mailbox of its own, so that the check below proves a sync of
# it succeeds on its own (it once failed the whole sync, on every run).
nul_case=test/mime/cases/nul_byte.eml
for f in test/mime/cases/*.eml; do
	# 0 bytes: Gmail never holds an empty message (and the double would make one up)
	[ -s "$f" ] && [ "$f" != "$nul_case" ] && files+=("$f")
done
"$PY" test/content_compare.py generate "$work/gen"
files+=("$work"/gen/*.eml)

fresh_db $db
for e in "$email" "nul-$email"; do
	gi_double POST /admin/mailboxes '{"email":"'"$e"'","refresh_token":"rt-'"$e"'","messages":0,"threads":0}' >/dev/null
done
"$PY" test/content_compare.py load "$DOUBLE_URL" "$email" "$work/manifest.json" "${files[@]}"
"$PY" test/content_compare.py load "$DOUBLE_URL" "nul-$email" "$work/manifest_nul.json" "$nul_case"
mb=$(q $db "SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000f1', '$email', 'rt-$email')")
mb_nul=$(q $db "SELECT gmail_ingest.add_mailbox('00000000-0000-0000-0000-0000000000f1', 'nul-$email', 'rt-nul-$email')")
echo "# loaded ${#files[@]} + 1 messages in $((SECONDS - start)) s"

t0=$SECONDS
IFS='|' read -r status err inserted perrs <<<"$(q $db "SELECT status, coalesce(error, ''), messages_inserted, messages_parse_errors
	FROM gmail_ingest.gmail_sync($mb, 7)")"
echo "# gmail_sync: $status, $inserted messages, $perrs with parse_error, $((SECONDS - t0)) s"
check "the sync succeeded" "$status$err" succeeded
check "every message stored" "$inserted" "${#files[@]}"
check "parse errors counted as stored" "$perrs" \
	"$(q $db "SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = $mb AND parse_error IS NOT NULL")"
check "verify() passes (blobs match sizes and SHA-256)" "$(verify_ok $db $mb)" t
check "no sync failed" "$(q $db "SELECT count(*) FROM gmail_ingest.sync_runs WHERE mailbox_id = $mb AND status <> 'succeeded'")" 0

IFS='|' read -r status err <<<"$(PGOPTIONS='-c gmail_ingest.max_retries=0' \
	q $db "SELECT status, coalesce(error, '') FROM gmail_ingest.gmail_sync($mb_nul, 7)" 2>/dev/null)"
absent=
check "a body with NUL bytes: the sync succeeds" "$status$err" succeeded
check "a body with NUL bytes: stored" "$(q $db "SELECT count(*) FROM gmail_ingest.mail_messages WHERE mailbox_id = $mb_nul")" 1
"$PY" -c 'import json, sys; a = json.load(open(sys.argv[1])); a += json.load(open(sys.argv[2])); json.dump(a, open(sys.argv[1], "w"))' \
	"$work/manifest.json" "$work/manifest_nul.json"

# What the database holds, as JSON: every compared column of every message.
psql -X -At -q -v ON_ERROR_STOP=1 -d $db -o "$work/export.json" -c "
SELECT json_build_object('messages', coalesce(json_agg(json_build_object(
	'provider_message_id', m.provider_message_id,
	'subject', m.subject, 'headers', m.headers, 'addresses', m.addresses,
	'from_address', m.from_address, 'to_addresses', m.to_addresses, 'cc_addresses', m.cc_addresses,
	'bcc_addresses', m.bcc_addresses, 'reply_to', m.reply_to,
	'from_email', m.from_email, 'to_emails', m.to_emails, 'cc_emails', m.cc_emails,
	'bcc_emails', m.bcc_emails, 'reply_to_emails', m.reply_to_emails,
	'sent_at', extract(epoch FROM m.sent_at)::bigint,
	'body_text', m.body_text, 'body_html', m.body_html, 'parse_error', m.parse_error,
	'snippet', m.snippet, 'rfc822_message_id', m.rfc822_message_id, 'in_reply_to', m.in_reply_to,
	'references', m.\"references\",
	'attachments', (SELECT coalesce(json_agg(json_build_object(
			'part_id', a.part_id, 'filename', a.filename, 'filename_derived', a.filename_derived,
			'mime_type', a.mime_type, 'size', a.size_bytes, 'sha256', a.sha256,
			'is_inline', a.is_inline, 'content_id', a.content_id, 'storage_path', a.storage_path)
			ORDER BY a.id), '[]')
		FROM gmail_ingest.mail_attachments a WHERE a.mailbox_id = m.mailbox_id AND a.message_id = m.id)))
	, '[]'))
FROM gmail_ingest.mail_messages m WHERE m.mailbox_id IN ($mb, $mb_nul)"

t0=$SECONDS
rc=0
"$PY" test/content_compare.py compare "$work/manifest.json" "$work/export.json" "$work/allowed" "$absent" \
	>"$work/compare.out" 2>&1 || rc=$?
grep -v '^allowed  ' "$work/compare.out" | sed 's/^/# /'
echo "# compared in $((SECONDS - t0)) s; the whole test took $((SECONDS - start)) s"
check "every field matches Python's reading, or is an allowed difference" "$rc" 0
check "the comparison ran over the whole corpus" \
	"$(sed -n 's/^corpus: \([0-9]*\) messages.*/\1/p' "$work/compare.out")" "$(( ${#files[@]} + (${#absent} ? 0 : 1) ))"

dropdb $db
finish
