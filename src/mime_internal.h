/*-------------------------------------------------------------------------
 * mime_internal.h
 *	  What the files of the MIME parser (src/mime_*.c) share: the limits,
 *	  the parse_error bits, the parse context, and the functions one file
 *	  offers the others (named mp_*).  Private to the parser, and like it
 *	  free of PostgreSQL headers.
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_MIME_INTERNAL_H
#define GMAIL_INGEST_MIME_INTERNAL_H

#include "mime_parse.h"

#include <gmime/gmime.h>

/* Deepest multipart nesting we walk; a multipart there is one attachment. */
#define MP_MAX_DEPTH		64
/* Inputs larger than this are not handed to GMime (GByteArray is 32-bit). */
#define MP_MAX_INPUT		((size_t) 1 << 30)

/* parse_error bits (their texts, in report order: pe_texts of mime_parse.c) */
#define PE_TOO_LARGE		(1u << 0)
#define PE_EMPTY			(1u << 1)
#define PE_NO_MESSAGE		(1u << 2)
#define PE_BAD_HEADER		(1u << 3)
#define PE_8BIT_HEADER		(1u << 4)
#define PE_CONTENT_TYPE		(1u << 5)
#define PE_NO_BOUNDARY		(1u << 6)
#define PE_EMPTY_MULTIPART	(1u << 7)
#define PE_TRUNCATED		(1u << 8)
#define PE_NESTING			(1u << 9)
#define PE_EMPTY_PART		(1u << 10)
#define PE_MALFORMED		(1u << 11)
#define PE_BAD_BASE64		(1u << 12)
#define PE_UNREADABLE		(1u << 13)
#define PE_HEADER_BREAK		(1u << 14)
#define PE_SAME_BOUNDARY	(1u << 15)

typedef struct parse_ctx
{
	mp_message *out;
	GMimeParserOptions *opts;
	unsigned int errors;		/* PE_* bits */
	bool		oom;
	GMimeObject *text_part;		/* chosen bodies (borrowed) */
	GMimeObject *html_part;
	const unsigned char *raw;	/* the bytes GMime parses (lent to it) */
	size_t		raw_len;
	size_t		att_cap;
	const char *bounds[MP_MAX_DEPTH];	/* boundaries of the walk's ancestors */
	const char *cut_boundary;	/* boundary around the multipart cut at
								 * MP_MAX_DEPTH being stored */
} parse_ctx;

/* mime_utf8.c: clean UTF-8 (valid, no NUL); the copies are malloc'd */
extern bool mp_utf8_is_clean(const unsigned char *s, size_t len);
extern char *mp_utf8_dup_len(parse_ctx *ctx, const char *s, size_t len);
extern char *mp_utf8_dup(parse_ctx *ctx, const char *s);
extern char *mp_utf8_finish(parse_ctx *ctx, unsigned char *buf, size_t len);

/*
 * mime_base64.c: a lenient base64 decoder.  White space is skipped; other
 * characters are skipped and remembered as an error.  Padding ends a
 * quantum and decoding goes on after it ("chunked" base64, which GMime
 * 3.2.13's decoder cuts off at the first '=').
 */
typedef struct b64_state
{
	unsigned int acc;
	int			n;
	bool		bad;
} b64_state;

extern const unsigned char mp_b64_rank[256];
extern size_t mp_b64_step(b64_state *st, const unsigned char *in, size_t len,
						  unsigned char *out);
extern size_t mp_b64_finish(b64_state *st, unsigned char *out);

/*
 * mime_charset.c: a text part's decoded bytes -> clean UTF-8 (by the charset
 * given or sniffed; takes the buffer), and the converter of an encoded
 * word's charset kept open
 */
extern void mp_pin_word_charset(const char *cs, size_t len);
extern char *mp_text_to_utf8(parse_ctx *ctx, unsigned char *data, size_t len,
							 const char *charset, bool is_html);

/* mime_content.c: a part's transfer-decoded content, malloc'd */
extern unsigned char *mp_part_content(parse_ctx *ctx, GMimeObject *obj, size_t *lenp);

/* mime_headers.c: header text (unfolding, encoded words), the header fields */
extern char *mp_header_unfold(const char *raw);
extern char *mp_rewrite_encoded_words(const char *in, bool *hid);
extern void mp_unhide_words(char *s);
extern GMimeHeader *mp_first_header(GMimeHeaderList *list, const char *name);
extern char *mp_bare_id(parse_ctx *ctx, const char *s);
extern bool mp_fill_header_fields(parse_ctx *ctx, GMimeMessage *message);

/* mime_parts.c: the bodies and the attachments */
extern bool mp_fill_parts(parse_ctx *ctx, GMimeMessage *message);

#endif
