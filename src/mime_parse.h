/*-------------------------------------------------------------------------
 * mime_parse.h
 *	  Raw RFC 822 bytes -> a plain C message record, with GMime.
 *
 * No PostgreSQL header is included here or in any src/mime_*.c, so the
 * parser can be fuzzed and tested on its own.  Every string in a record is valid
 * UTF-8 without NUL bytes; everything is malloc'd and released by
 * mp_message_free().
 *-------------------------------------------------------------------------
 */
#ifndef GMAIL_INGEST_MIME_PARSE_H
#define GMAIL_INGEST_MIME_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mp_header
{
	char	   *name;			/* as written, case preserved */
	char	   *value;			/* unfolded, RFC 2047 decoded, UTF-8 */
} mp_header;

typedef struct mp_address
{
	char	   *name;			/* display name, UTF-8, or NULL */
	char	   *address;		/* addr-spec as written (IDN decoded), or NULL */
} mp_address;

typedef struct mp_address_list
{
	mp_address *items;			/* group members are flattened in order */
	size_t		count;
	char	   *display;		/* the whole field decoded, for display; NULL
								 * when the header is absent */
} mp_address_list;

typedef struct mp_attachment
{
	char	   *part_id;		/* IMAP section path: "1", "2", "2.1" ... */
	char	   *filename;		/* decoded; derived from the type if absent */
	bool		filename_derived;
	char	   *mime_type;		/* lower case, no parameters */
	char	   *content_id;		/* without angle brackets, or NULL */
	bool		is_inline;
	unsigned char *data;		/* decoded content (may be NULL when size 0) */
	size_t		size;
	char		sha256_hex[65];	/* lower-case hex of SHA-256(data) */
} mp_attachment;

typedef struct mp_message
{
	mp_header  *headers;		/* top-level headers in order */
	size_t		header_count;

	char	   *subject;
	mp_address_list from;
	mp_address_list to;
	mp_address_list cc;
	mp_address_list bcc;
	mp_address_list reply_to;

	bool		has_date;		/* Date header parsed */
	int64_t		date_epoch;		/* seconds since epoch, UTC */

	char	   *message_id;		/* without angle brackets, or NULL */
	char	   *in_reply_to;
	char	   *references;		/* as written, whitespace-normalised */

	char	   *body_text;		/* UTF-8, or NULL */
	char	   *body_html;		/* UTF-8, or NULL */

	mp_attachment *attachments;
	size_t		attachment_count;

	char	   *parse_error;	/* NULL unless something could not be parsed */
} mp_message;

/* Call once per process before mp_parse (idempotent). */
extern void mp_init(void);

/*
 * Parse raw bytes into *out (zeroed first).  Never fails for malformed
 * input: what can be read is filled in and parse_error says what was
 * wrong.  Returns false only when memory ran out (out is then freed).
 */
extern bool mp_parse(const unsigned char *raw, size_t len, mp_message *out);

extern void mp_message_free(mp_message *msg);

#endif
