/*
 * fuzz_mime.c: libFuzzer harness for the MIME parser (src/mime_*.c).
 *
 * Each input is handed to mp_parse() as the raw RFC 822 bytes of a message;
 * the record must then hold the invariants mime_parse.h promises, else the
 * harness aborts (a crash for libFuzzer):
 *
 * - mp_parse() returns true (it fails only when memory runs out);
 * - every string is valid UTF-8 (RFC 3629), with no NUL inside (strings are
 *   C strings, so a NUL would silently cut them: checked where the length is
 *   known) and headers have a name and a value;
 * - address items come with their header's display text;
 * - each attachment has a part id made of dot-separated positive numbers, a
 *   non-empty filename without '/', '\' or control characters, no "." or
 *   "..", at most 255 bytes, derived names of the form attachment-<part>.ext
 *   or message-<part>.eml; a lower-case mime type "type/subtype" without
 *   parameters, blanks or control characters; data NULL exactly when size is 0; a SHA-256 that
 *   matches the data; a content id without angle brackets at both ends;
 * - parse_error is NULL or non-empty;
 * - a second parse of the same bytes gives the same record (no hidden state).
 *
 * Built with -fsanitize=fuzzer,address,undefined by test/fuzz/Makefile; no
 * PostgreSQL needed.
 */
#include "mime_parse.h"
#include "sha256_hex.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_LSAN 1
#endif
#endif
#if !defined(HAVE_LSAN) && defined(__SANITIZE_ADDRESS__)
#define HAVE_LSAN 1
#endif
#ifdef HAVE_LSAN
#include <sanitizer/lsan_interface.h>
#endif

static void
fail(const char *what, const char *detail)
{
	fprintf(stderr, "INVARIANT VIOLATED: %s%s%s\n", what, detail ? ": " : "",
			detail ? detail : "");
	abort();
}

/* strict UTF-8 (RFC 3629) over s[0..len), NUL refused */
static int
valid_utf8_len(const unsigned char *s, size_t len)
{
	size_t		i = 0;

	while (i < len)
	{
		unsigned char c = s[i];
		int			n,
					k;
		unsigned char lo = 0x80,
					hi = 0xBF;

		if (c == 0)
			return 0;
		if (c < 0x80)
		{
			i++;
			continue;
		}
		if (c < 0xC2 || c > 0xF4)
			return 0;
		n = c < 0xE0 ? 1 : c < 0xF0 ? 2 : 3;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
		else if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
		for (k = 1; k <= n; k++)
		{
			if (i + k >= len || s[i + k] < lo || s[i + k] > hi)
				return 0;
			lo = 0x80;
			hi = 0xBF;
		}
		i += n + 1;
	}
	return 1;
}

static void
check_str(const char *what, const char *s)
{
	if (s != NULL && !valid_utf8_len((const unsigned char *) s, strlen(s)))
		fail("invalid UTF-8", what);
}

static void
check_list(const char *what, const mp_address_list *l)
{
	size_t		i;

	check_str(what, l->display);
	if (l->count > 0 && (l->items == NULL || l->display == NULL))
		fail("address items without display text", what);
	for (i = 0; i < l->count; i++)
	{
		check_str(what, l->items[i].name);
		check_str(what, l->items[i].address);
		if (l->items[i].name != NULL && l->items[i].name[0] == '\0')
			fail("empty display name instead of NULL", what);
		if (l->items[i].address != NULL && l->items[i].address[0] == '\0')
			fail("empty address instead of NULL", what);
	}
}

static int
is_part_id(const char *p)
{
	int			digits = 0;

	if (p == NULL || *p == '\0')
		return 0;
	for (; *p; p++)
	{
		if (*p >= '0' && *p <= '9')
		{
			if (digits == 0 && *p == '0')
				return 0;
			digits++;
		}
		else if (*p == '.' && digits > 0)
			digits = 0;
		else
			return 0;
	}
	return digits > 0;
}

static int
is_mime_type(const char *t)
{
	const char *slash;
	const char *p;

	if (t == NULL || (slash = strchr(t, '/')) == NULL || slash == t || slash[1] == '\0')
		return 0;
	for (p = t; *p; p++)
	{
		unsigned char c = (unsigned char) *p;

		/* non-ASCII bytes are possible (U+FFFD for 8-bit garbage) */
		if (c <= 0x20 || c == 0x7F || (c >= 'A' && c <= 'Z') || c == ';')
			return 0;
	}
	return 1;
}

static void
check_attachment(const mp_attachment *a)
{
	char		hex[65];
	const char *p;
	size_t		flen;

	check_str("part_id", a->part_id);
	check_str("filename", a->filename);
	check_str("mime_type", a->mime_type);
	check_str("content_id", a->content_id);
	if (!is_part_id(a->part_id))
		fail("bad part_id", a->part_id ? a->part_id : "(null)");
	if (a->filename == NULL)
		fail("NULL filename", a->part_id);
	flen = strlen(a->filename);
	if (flen == 0 || flen > 255 || strcmp(a->filename, ".") == 0 ||
		strcmp(a->filename, "..") == 0)
		fail("bad filename", a->filename);
	for (p = a->filename; *p; p++)
		if (*p == '/' || *p == '\\' || (unsigned char) *p < 0x20 || *p == 0x7F)
			fail("bad filename character", a->filename);
	if (a->filename[0] == ' ' || a->filename[flen - 1] == ' ')
		fail("filename not trimmed", a->filename);
	if (a->filename_derived)
	{
		size_t		plen = strlen(a->part_id);

		if (strncmp(a->filename, "attachment-", 11) == 0)
		{
			if (strncmp(a->filename + 11, a->part_id, plen) != 0 ||
				a->filename[11 + plen] != '.')
				fail("derived filename does not name its part", a->filename);
		}
		else if (strncmp(a->filename, "message-", 8) == 0)
		{
			if (strncmp(a->filename + 8, a->part_id, plen) != 0 ||
				strcmp(a->filename + 8 + plen, ".eml") != 0)
				fail("derived filename does not name its part", a->filename);
		}
		else
			fail("derived filename of an unexpected form", a->filename);
	}
	if (!is_mime_type(a->mime_type))
		fail("bad mime_type", a->mime_type ? a->mime_type : "(null)");
	if (a->content_id != NULL &&
		(a->content_id[0] == '\0' ||
		 (a->content_id[0] == '<' && a->content_id[strlen(a->content_id) - 1] == '>')))
		fail("content_id empty or still bracketed", a->content_id);
	if ((a->size == 0) != (a->data == NULL))
		fail("size and data disagree", a->part_id);
	if (!sha256_hex(a->data, a->size, hex))
		fail("sha256_hex failed", a->part_id);
	if (strcmp(hex, a->sha256_hex) != 0)
		fail("sha256 mismatch", a->part_id);
}

static void
check_message(const mp_message *m)
{
	size_t		i;

	if (m->header_count > 0 && m->headers == NULL)
		fail("headers missing", NULL);
	for (i = 0; i < m->header_count; i++)
	{
		if (m->headers[i].name == NULL || m->headers[i].value == NULL)
			fail("NULL header name or value", NULL);
		check_str("header name", m->headers[i].name);
		check_str("header value", m->headers[i].value);
	}
	check_str("subject", m->subject);
	check_list("from", &m->from);
	check_list("to", &m->to);
	check_list("cc", &m->cc);
	check_list("bcc", &m->bcc);
	check_list("reply_to", &m->reply_to);
	check_str("message_id", m->message_id);
	check_str("in_reply_to", m->in_reply_to);
	check_str("references", m->references);
	check_str("body_text", m->body_text);
	check_str("body_html", m->body_html);
	if (m->attachment_count > 0 && m->attachments == NULL)
		fail("attachments missing", NULL);
	for (i = 0; i < m->attachment_count; i++)
		check_attachment(&m->attachments[i]);
	for (i = 0; i + 1 < m->attachment_count; i++)
	{
		size_t		j;

		for (j = i + 1; j < m->attachment_count && j < i + 64; j++)
			if (strcmp(m->attachments[i].part_id, m->attachments[j].part_id) == 0)
				fail("duplicate part_id", m->attachments[i].part_id);
	}
	if (m->parse_error != NULL)
	{
		check_str("parse_error", m->parse_error);
		if (m->parse_error[0] == '\0')
			fail("empty parse_error", NULL);
	}
}

static int
same_str(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static void
check_same(const mp_message *a, const mp_message *b)
{
	size_t		i;

	if (!same_str(a->subject, b->subject) || !same_str(a->body_text, b->body_text) ||
		!same_str(a->body_html, b->body_html) || !same_str(a->parse_error, b->parse_error) ||
		a->has_date != b->has_date || a->date_epoch != b->date_epoch ||
		a->header_count != b->header_count || a->attachment_count != b->attachment_count ||
		a->from.count != b->from.count || a->to.count != b->to.count ||
		!same_str(a->from.display, b->from.display))
		fail("a second parse of the same bytes differs", NULL);
	for (i = 0; i < a->attachment_count; i++)
		if (strcmp(a->attachments[i].sha256_hex, b->attachments[i].sha256_hex) != 0 ||
			!same_str(a->attachments[i].filename, b->attachments[i].filename))
			fail("a second parse of the same bytes differs", a->attachments[i].part_id);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void) argc;
	(void) argv;
	/* GMime drops, once per process, the type buckets mp_init() replaces */
#ifdef HAVE_LSAN
	__lsan_disable();
#endif
	mp_init();
#ifdef HAVE_LSAN
	__lsan_enable();
#endif
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	mp_message m1;
	mp_message m2;

	if (!mp_parse(data, size, &m1))
		fail("mp_parse returned false (out of memory?)", NULL);
	check_message(&m1);
	if (size < 16384)
	{
		if (!mp_parse(data, size, &m2))
			fail("mp_parse returned false (out of memory?)", NULL);
		check_same(&m1, &m2);
		mp_message_free(&m2);
	}
	mp_message_free(&m1);
	return 0;
}
