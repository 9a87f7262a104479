/*-------------------------------------------------------------------------
 * mime_parse.c
 *	  Raw RFC 822 bytes -> mp_message, with GMime 3: the entry points
 *	  (mp_init, mp_parse, mp_message_free), the GMime parser's set-up and
 *	  warnings, and the text of parse_error.
 *
 * The parser is this file and the others that share mime_internal.h:
 *
 *   mime_headers.c  header fields -> the record (RFC 2047, addresses, dates)
 *   mime_parts.c    the bodies and the attachments (the walk of the tree)
 *   mime_content.c  a part's content (transfer decoding, cut subtrees)
 *   mime_charset.c  charsets -> UTF-8 (iconv, windows-1252)
 *   mime_base64.c   our base64 decoder
 *   mime_utf8.c     valid UTF-8 without NUL for every string of the record
 *
 * No PostgreSQL header is included in any of them: they are built into the
 * extension and, unchanged, into the standalone test driver of test/mime/
 * (which also runs them on mutated input under ASan and valgrind) and the
 * fuzzer of test/fuzz/.
 *
 * Design, in short:
 *
 * - The input is parsed in place: the caller's buffer is lent to a GMime
 *   memory stream (never copied, never written), and the parser keeps
 *   persistent substreams into it, so a part's content is read exactly once,
 *   when it is decoded into the record.
 *
 * - message/rfc822 (and rfc2822, global, news) parts are registered as plain
 *   leaf parts, so GMime does not parse forwarded messages at all: they
 *   become attachments whose data are the embedded message's exact bytes.
 *
 * - Bodies are chosen as a mail reader does (see find_body() in
 *   mime_parts.c); every other leaf part is an attachment, except the
 *   alternatives a reader would not show (the text/plain or text/html of a
 *   multipart/alternative that lost).
 *
 * - Text is converted to UTF-8 with iconv, with our own replacement of
 *   invalid input by U+FFFD, our own windows-1252 table for the fallback,
 *   and a final pass that guarantees valid UTF-8 without NUL bytes for every
 *   string in the record.
 *
 * - Around GMime 3.2.13 (Debian 12): B encoded words are rewritten as Q
 *   words before GMime decodes them (its decoder drops the words after a
 *   padded one, upstream #133), so headers, display names and filenames are
 *   decoded from rewritten text; base64 bodies use our own decoder (GMime's
 *   stops at the first padding, upstream #150).
 *
 * - Everything in the record is malloc'd (never g_malloc'd) and released by
 *   mp_message_free() with free().
 *-------------------------------------------------------------------------
 */
#include "mime_internal.h"

#include <stdlib.h>
#include <string.h>

/* The text of each parse_error bit, in the order they are reported. */
static const struct
{
	unsigned int bit;
	const char *text;
}			pe_texts[] =
{
	{PE_TOO_LARGE, "message too large to parse"},
	{PE_EMPTY, "empty message"},
	{PE_NO_MESSAGE, "no header block found; the whole message is kept as text"},
	{PE_HEADER_BREAK, "a line in the header block is not a header; the body starts there"},
	{PE_BAD_HEADER, "malformed header line ignored"},
	{PE_8BIT_HEADER, "header with 8-bit bytes that are not UTF-8"},
	{PE_CONTENT_TYPE, "invalid Content-Type"},
	{PE_NO_BOUNDARY, "multipart without boundary"},
	{PE_EMPTY_MULTIPART, "multipart without parts"},
	{PE_TRUNCATED, "message truncated (a multipart without its closing boundary, or an unterminated header block)"},
	{PE_NESTING, "MIME nesting deeper than 64 levels; each multipart at that depth is stored whole, as one attachment"},
	{PE_SAME_BOUNDARY, "a nested multipart reuses the boundary of a multipart that contains it"},
	{PE_EMPTY_PART, "MIME part without headers or content"},
	{PE_MALFORMED, "malformed message"},
	{PE_BAD_BASE64, "invalid base64 content"},
	{PE_UNREADABLE, "part content could not be read"},
};

static bool mp_initialized = false;

void
mp_init(void)
{
	if (mp_initialized)
		return;
	g_mime_init();

	/*
	 * Forwarded messages are leaves for us: we store their exact bytes as an
	 * attachment and never look inside for bodies, so let GMime scan them as
	 * opaque content instead of parsing them (which would also cost time and
	 * nesting depth).
	 */
	g_mime_object_register_type("message", "rfc822", GMIME_TYPE_PART);
	g_mime_object_register_type("message", "rfc2822", GMIME_TYPE_PART);
	g_mime_object_register_type("message", "global", GMIME_TYPE_PART);
	g_mime_object_register_type("message", "news", GMIME_TYPE_PART);
	mp_initialized = true;
}

static void
warning_cb(gint64 offset, GMimeParserWarning code, const gchar *item, gpointer user_data)
{
	parse_ctx  *ctx = (parse_ctx *) user_data;

	switch (code)
	{
		case GMIME_CRIT_INVALID_HEADER_NAME:
			/* tolerate an mbox "From " separator on the first line */
			if (offset == 0 && item != NULL && strncmp(item, "From ", 5) == 0)
				break;
			ctx->errors |= PE_BAD_HEADER;
			break;
		case GMIME_WARN_UNENCODED_8BIT_HEADER:
			/* raw UTF-8 (RFC 6532) is fine; only other 8-bit bytes count */
			ctx->errors |= PE_8BIT_HEADER;
			break;
		case GMIME_WARN_INVALID_CONTENT_TYPE:
			ctx->errors |= PE_CONTENT_TYPE;
			break;
		case GMIME_CRIT_MULTIPART_WITHOUT_BOUNDARY:
			ctx->errors |= PE_NO_BOUNDARY;
			break;
		case GMIME_WARN_MALFORMED_MULTIPART:
			ctx->errors |= PE_EMPTY_MULTIPART;
			break;
		case GMIME_WARN_TRUNCATED_MESSAGE:
			ctx->errors |= PE_TRUNCATED;
			break;
		case GMIME_CRIT_NESTING_OVERFLOW:
			ctx->errors |= PE_NESTING;
			break;
		case GMIME_CRIT_PART_WITHOUT_HEADERS_OR_CONTENT:
			ctx->errors |= PE_EMPTY_PART;
			break;
		case GMIME_WARN_MALFORMED_MESSAGE:
			ctx->errors |= PE_MALFORMED;
			break;
		default:
			/* duplicates, conflicts, bad parameters, bad RFC 2047 words and
			 * unparsable address lists are recovered from silently */
			break;
	}
}

/*
 * Offset of the first line of the top-level header block that is neither a
 * header field (by GMime's rule: a name without control characters, blanks
 * only before the colon), a continuation line, nor the blank line that ends
 * the block; 0 when there is none, or when it is the first line (GMime then
 * finds no message at all).  GMime drops such a line and reads on; mail
 * readers (and Python's email package) end the header block there.
 */
static size_t
header_block_break(const unsigned char *raw, size_t len)
{
	size_t		pos = 0;
	bool		first = true;

	while (pos < len)
	{
		const unsigned char *nl = memchr(raw + pos, '\n', len - pos);
		size_t		eol = nl ? (size_t) (nl - raw) : len;

		if (eol == pos || (eol == pos + 1 && raw[pos] == '\r'))
			return 0;			/* the end of the header block */
		if (first && len - pos >= 5 && memcmp(raw + pos, "From ", 5) == 0)
		{
			/* an mbox separator, which GMime skips */
		}
		else if (raw[pos] == ' ' || raw[pos] == '\t')
		{
			if (first)
				return 0;
		}
		else
		{
			bool		valid = false;
			bool		blank = false;
			size_t		i;

			for (i = pos; i < eol; i++)
			{
				unsigned char c = raw[i];

				if (c == ':')
				{
					valid = i > pos;
					break;
				}
				if (c == ' ' || c == '\t')
					blank = true;
				else if (blank || c < 0x20 || c == 0x7F)
					break;
			}
			if (!valid)
				return first ? 0 : pos;
		}
		first = false;
		pos = eol + 1;
	}
	return 0;
}

static bool
set_parse_error(parse_ctx *ctx)
{
	GString    *s;
	size_t		i;

	if (ctx->errors == 0)
		return true;
	s = g_string_new(NULL);
	for (i = 0; i < sizeof(pe_texts) / sizeof(pe_texts[0]); i++)
	{
		if (ctx->errors & pe_texts[i].bit)
		{
			if (s->len)
				g_string_append(s, "; ");
			g_string_append(s, pe_texts[i].text);
		}
	}
	ctx->out->parse_error = mp_utf8_dup_len(ctx, s->str, s->len);
	g_string_free(s, TRUE);
	return !ctx->oom;
}

/* Everything once GMime built the message. */
static bool
fill_message(parse_ctx *ctx, GMimeMessage *message)
{
	return mp_fill_header_fields(ctx, message) && mp_fill_parts(ctx, message);
}

bool
mp_parse(const unsigned char *raw, size_t len, mp_message *out)
{
	parse_ctx	ctx;
	static const char *fallback[] = {"utf-8", "windows-1252", "iso-8859-1", NULL};
	GByteArray *array;
	GMimeStream *stream;
	GMimeParser *parser;
	GMimeMessage *message;
	unsigned char *patched = NULL;
	size_t		brk;
	bool		ok;

	memset(out, 0, sizeof(*out));
	memset(&ctx, 0, sizeof(ctx));
	ctx.out = out;
	mp_init();

	if (raw == NULL || len == 0)
	{
		ctx.errors |= PE_EMPTY;
		ok = set_parse_error(&ctx);
		goto done;
	}
	if (len > MP_MAX_INPUT)
	{
		ctx.errors |= PE_TOO_LARGE;
		ok = set_parse_error(&ctx);
		goto done;
	}

	/* a non-header line in the header block starts the body */
	brk = header_block_break(raw, len);
	if (brk > 0)
	{
		const char *eol = (brk >= 2 && raw[brk - 2] == '\r') ? "\r\n" : "\n";
		size_t		elen = strlen(eol);

		patched = malloc(len + elen);
		if (patched == NULL)
		{
			ctx.oom = true;
			ok = false;
			goto done;
		}
		memcpy(patched, raw, brk);
		memcpy(patched + brk, eol, elen);
		memcpy(patched + brk + elen, raw + brk, len - brk);
		raw = patched;
		len += elen;
		ctx.errors |= PE_HEADER_BREAK;
	}

	ctx.raw = raw;
	ctx.raw_len = len;
	ctx.opts = g_mime_parser_options_new();
	g_mime_parser_options_set_fallback_charsets(ctx.opts, fallback);
	g_mime_parser_options_set_allow_addresses_without_domain(ctx.opts, TRUE);
	g_mime_parser_options_set_warning_callback(ctx.opts, warning_cb, &ctx);

	/*
	 * Lend the caller's bytes to GMime without copying: the stream does not
	 * own the array, GMime only reads, and the array wrapper is released
	 * (not its data) once every substream is gone.
	 */
	array = g_byte_array_new_take((guint8 *) raw, len);
	stream = g_mime_stream_mem_new_with_byte_array(array);
	g_mime_stream_mem_set_owner(GMIME_STREAM_MEM(stream), FALSE);
	parser = g_mime_parser_new_with_stream(stream);
	g_mime_parser_set_format(parser, GMIME_FORMAT_MESSAGE);
	g_mime_parser_set_persist_stream(parser, TRUE);
	message = g_mime_parser_construct_message(parser, ctx.opts);
	g_object_unref(parser);

	if (message == NULL)
	{
		/*
		 * GMime gives up when the first line is not a header: keep the
		 * whole input as the text, as other mail parsers do.
		 */
		unsigned char *copy = malloc(len + 1);

		ctx.errors |= PE_NO_MESSAGE;
		ctx.errors &= ~PE_BAD_HEADER;	/* that line is the reason */
		if (copy == NULL)
			ctx.oom = true;
		else
		{
			memcpy(copy, raw, len);
			out->body_text = mp_text_to_utf8(&ctx, copy, len, NULL, false);
		}
		ok = !ctx.oom;
	}
	else
	{
		ok = fill_message(&ctx, message) && !ctx.oom;
		g_object_unref(message);
	}
	g_object_unref(stream);
	(void) g_byte_array_free(array, FALSE);
	g_mime_parser_options_free(ctx.opts);

	if (ok)
		ok = set_parse_error(&ctx);

done:
	free(patched);
	if (!ok || ctx.oom)
	{
		mp_message_free(out);
		return false;
	}
	return true;
}

static void
free_list(mp_address_list *l)
{
	size_t		i;

	for (i = 0; i < l->count; i++)
	{
		free(l->items[i].name);
		free(l->items[i].address);
	}
	free(l->items);
	free(l->display);
}

void
mp_message_free(mp_message *msg)
{
	size_t		i;

	if (msg == NULL)
		return;
	for (i = 0; i < msg->header_count; i++)
	{
		free(msg->headers[i].name);
		free(msg->headers[i].value);
	}
	free(msg->headers);
	free(msg->subject);
	free_list(&msg->from);
	free_list(&msg->to);
	free_list(&msg->cc);
	free_list(&msg->bcc);
	free_list(&msg->reply_to);
	free(msg->message_id);
	free(msg->in_reply_to);
	free(msg->references);
	free(msg->body_text);
	free(msg->body_html);
	for (i = 0; i < msg->attachment_count; i++)
	{
		free(msg->attachments[i].part_id);
		free(msg->attachments[i].filename);
		free(msg->attachments[i].mime_type);
		free(msg->attachments[i].content_id);
		free(msg->attachments[i].data);
	}
	free(msg->attachments);
	free(msg->parse_error);
	memset(msg, 0, sizeof(*msg));
}
