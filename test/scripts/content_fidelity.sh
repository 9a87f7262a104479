#!/usr/bin/env bash
# Content fidelity: every real message Debian ships with Python's email tests
# (package libpython3.11-testsuite, read where it is installed), the 191
# messages of the peer corpora of mime4j, mailparser and mail (read in place
# from ../shared/corpus beside the repository, or $GI_PEER_CORPUS; skipped
# with a note when absent), the crafted MIME cases of test/mime/cases, and
# two cases made here (1,000 nested multiparts, a 25 MB attachment) go into
# a mailbox of the Gmail API double
# as their exact bytes; one gmail_sync stores them; then every decoded field
# in the database is compared with Python's own reading of the same bytes
# (email package, policy default) by test/scripts/content_compare.py, which documents
# the fields and the rules.  A difference fails unless ALLOWED below names it.
# Also checked: the sync succeeds, every message is stored, verify() passes,
# every string is valid UTF-8 without NUL, parse_error is set exactly for the
# malformed messages.  About 25 s.
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
mime4j__mimetools-german.eml from
mime4j__mimetools-not-mime.eml from
mail__multipart_report_emails-multi_address_bounce1.eml from

reason: null sender "Name <>": GMime's address parser drops the mailbox (the display column keeps the text); Python keeps the name without an address
msg_43.txt            from
mail__error_emails-encoding_madness.eml reply_to

reason: an address RFC 5322 cannot parse (a phrase run into an addr-spec, "Big Bug bb@bug.com"; a group inside angle brackets, "<Undisclosed-Recipient:@host;>"): GMime keeps no mailbox (the display column keeps the text); Python makes up an addr-spec
mail__plain_emails-mix_caps_content_type.eml from,from_email
mail__error_emails-missing_body.eml to,to_emails

reason: mailboxes separated by a blank instead of a comma ("a@x b@x"): both are read here (GMime, as mail readers do); Python keeps the first
mail__plain_emails-raw_email_multiple_from.eml from,to,to_emails,reply_to,reply_to_emails

reason: an unquoted display name holding "@" ("Mikel@Lindsaar <raasdnil@gmail.com>"): the angle-addr is the address here; Python takes the name for the addr-spec
mail__plain_emails-raw_email_with_at_display_name.eml to,to_emails

reason: the blanks between adjacent RFC 2047 words in a display name are dropped (RFC 2047 6.2); Python's address parser keeps them ("MySurvey .com & C arol")
mail__error_emails-bad_subject.eml from

reason: IDN: punycode domains are decoded to Unicode (GMime with libidn2); Python keeps the xn-- form
idn_address.eml       from,from_email,to,to_emails

reason: a malformed RFC 2047 word is left as written (the issue's rule); Python strips its =?...?= wrapper
rfc2047_malformed.eml subject,headers

reason: 8-bit header bytes that are not UTF-8 are read as windows-1252 and set parse_error; Python gives U+FFFD (and no defect)
header_8bit.eml       subject,headers,from,from_address
mail__error_emails-invalid_subject_characters.eml subject,headers,parse_error

reason: obsolete header syntax (blanks before the colon, RFC 5322 4.5) is read as headers here, up to the first line that is no header; Python ends the header block at the first such field, so the whole message is its body
mail__rfc2822-example13.eml headers,from,from_email,from_address,to_addresses,body_text
mime4j__testmsgs-obsolete.eml subject,headers,body_text

reason: an unquoted parameter value with characters RFC 2045 keeps out of tokens (a boundary with "=", a filename with blanks or an RFC 2047 word) is read up to its ";" here (GMime, as mail readers do); Python stops at the first such character or drops the value
mail__attachment_emails-attachment_with_base64_encoded_name.eml attachment:2.*
mail__attachment_emails-attachment_with_unquoted_name.eml attachment:2.filename,attachment:2.storage_path
mail__mime_emails-raw_email_with_illegal_boundary.eml body_text,body_html,parse_error
mail__plain_emails-raw_email_bad_time.eml body_text,body_html,parse_error
mail__mime_emails-raw_email_with_binary_encoded.eml attachments,parse_error
mime4j__mimetools-russian.eml attachment:1.*
mime4j__testmsgs-russian-headers.eml attachment:1.*

reason: RFC 2047 words inside a word of a quoted filename (not set off by blanks, against RFC 2047 5) are decoded here, as mail readers do; Python keeps them as written
mime4j__mimetools-multi-2evil.eml attachment:2.filename,attachment:2.storage_path

reason: a text part with a filename (its disposition's or its type's name), inline or not, is an attachment here; Python's get_body takes it as the body
msg_04.txt            body_text
msg_44.txt            body_text
text_attachment.eml   body_html
mime4j__mimetools-infinite.eml body_text
mime4j__mimetools-lennie.eml body_html
mime4j__mimetools-multi-badnames.eml body_text
mime4j__mimetools-x-gzip64.eml body_text

reason: two Content-Type headers: GMime reads the message by the last one (text/plain here, so the multipart is one text); Python by the first
mail__error_emails-multiple_content_types.eml body_text,body_html

reason: multipart/alternative with two HTML alternatives: body_html is the last (richest) here, get_body's is the first
alternative.eml       body_html

reason: a multipart whose boundary is missing or never occurs: its prologue is body_text here; Python shows no body
msg_17.txt            body_text
msg_25.txt            body_text
msg_31.txt            body_text
msg_41.txt            body_text
multipart_no_boundary.eml body_text
multipart_no_part_opened.eml body_text
mail__error_emails-bad_date_header2.eml body_text
mail__error_emails-missing_body.eml body_text
mime4j__mimetools-badbound.eml body_text
mime4j__testmsgs-ending-boundaries.eml body_text
mime4j__testmsgs-missing-boundary.eml body_text
mime4j__testmsgs-multipartnopart.eml body_text

reason: an empty part right before the closing boundary ("--b" then "--b--"): no part here, the preamble is the text (parse_error set); Python takes the closing line for that part's header and the epilogue for its body
mime4j__testmsgs-multipartemptypart.eml body_text

reason: a boundary parameter ending in blanks (invalid: RFC 2046 ends a boundary with bcharsnospace) keeps them here, so a line with fewer blanks is text, as mime4j's test wants; Python drops them and splits the part there
mime4j__testmsgs-weird-boundary.eml body_text,attachments,parse_error
mime4j__testmsgs-very-long-boundary.eml body_text,attachments,parse_error

reason: a boundary of 7,000 characters (RFC 2046 allows 70): GMime finds no boundary line, so the preamble is the text and parse_error is set; Python splits the parts
mime4j__testmsgs-very-very-long-boundary.eml body_text,attachments

reason: a multipart that ends without its closing boundary: its last part keeps its final line break here (no delimiter follows to claim it, RFC 2046 5.1.1); Python drops it
mail__mime_emails-raw_email4.eml attachment:3.*
mime4j__mimetools-jt-0498.eml attachment:2.*

reason: a Content-Transfer-Encoding with a trailing blank ("base64 ") is decoded here; Python's get_payload(decode=True) does not know it and gives the base64 text
mime4j__mimetools-twopart.eml attachment:2.*

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
mime4j__mimetools-2002_06_12_doublebound.eml parse_error
mime4j__mimetools-double-bound.eml parse_error

reason: charset labels are read as the supersets senders mean (gb2312 as GB18030, shift_jis as CP932, euc-kr as CP949, big5 as Big5-HKSCS, iso-8859-1 as windows-1252); Python decodes the strict charsets with U+FFFD (or C1 controls)
charset_euckr.eml     body_text
charset_gb2312.eml    body_text
charset_shift_jis.eml body_text
charset_latin1_c1.eml body_text
mail__attachment_emails-attachment_pdf_non_ascii.eml body_text
mail__attachment_emails-attachment_pdf_non_ascii_lf.eml body_text
mail__error_emails-content_transfer_encoding_7-bit.eml body_text,body_html
mail__error_emails-content_transfer_encoding_empty.eml body_html

reason: a missing, us-ascii or unknown charset decodes as UTF-8 when valid, else windows-1252; Python decodes ASCII with U+FFFD, and get_content() raises LookupError on an unknown charset
charset_missing_latin.eml body_text
charset_unknown_latin.eml body_text
charset_unknown_utf8.eml body_text
charset_evil_name.eml body_text
mail__error_emails-content_transfer_encoding_plain.eml body_text
mail__plain_emails-raw_email10.eml body_text
mail__plain_emails-raw_email5.eml body_text
mail__plain_emails-raw_email6.eml body_text
mime4j__dom-mime4j-219-new-date-time-format.eml body_text

reason: RFC 2231 sections are joined as bytes before the charset is decoded, so a character split between sections comes out whole; Python decodes each section on its own (U+FFFD for a split euc-jp character)
rfc2231_split_char.eml attachment:4.filename,attachment:4.storage_path

reason: a Date with fractional seconds (22:23:35.882) is read to the second here; Python cannot read it
date_fractional_seconds.eml sent_at
mime4j__dom-mime4j-219-new-date-time-format.eml sent_at

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
"$PY" test/scripts/content_compare.py generate "$work/gen"
files+=("$work"/gen/*.eml)
# The peer corpora (mime4j, mailparser, mail: see their SOURCES.md), read in
# place beside the repository, never copied into it.  Without them their
# allow-list entries are not stale.
PEERS=${GI_PEER_CORPUS:-$GI_ROOT/../shared/corpus}
peer_sources="mime4j mailparser mail"
absent=
if [ -d "$PEERS" ]; then
	for src in $peer_sources; do
		for f in "$PEERS/$src"/*.eml; do [ -e "$f" ] && files+=("$f"); done
	done
else
	echo "# peer corpora: $PEERS not found; skipped (mime4j, mailparser, mail)"
	absent=$(awk '$1 ~ /^(mime4j|mailparser|mail)__/ { print $1 }' "$work/allowed" | sort -u | paste -sd, -)
fi

fresh_db $db
for e in "$email" "nul-$email"; do
	gi_double POST /admin/mailboxes '{"email":"'"$e"'","refresh_token":"rt-'"$e"'","messages":0,"threads":0}' >/dev/null
done
"$PY" test/scripts/content_compare.py load "$DOUBLE_URL" "$email" "$work/manifest.json" "${files[@]}"
"$PY" test/scripts/content_compare.py load "$DOUBLE_URL" "nul-$email" "$work/manifest_nul.json" "$nul_case"
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
"$PY" test/scripts/content_compare.py compare "$work/manifest.json" "$work/export.json" "$work/allowed" "$absent" \
	>"$work/compare.out" 2>&1 || rc=$?
grep -v '^allowed  ' "$work/compare.out" | sed 's/^/# /'
echo "# compared in $((SECONDS - t0)) s; the whole test took $((SECONDS - start)) s"
check "every field matches Python's reading, or is an allowed difference" "$rc" 0
check "the comparison ran over the whole corpus" \
	"$(sed -n 's/^corpus: \([0-9]*\) messages.*/\1/p' "$work/compare.out")" "$(( ${#files[@]} + 1 ))"

dropdb $db
finish
