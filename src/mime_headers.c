/*-------------------------------------------------------------------------
 * mime_headers.c
 *	  Header fields -> the record: unfolding, RFC 2047 decoding (B words
 *	  rewritten as Q words for GMime 3.2.13), the top-level header list, the
 *	  address fields, Date, Message-Id, In-Reply-To and References.
 *-------------------------------------------------------------------------
 */
#include "mime_internal.h"

#include <stdlib.h>
#include <string.h>

/*
 * Unfold a raw header value: every line break together with the white space
 * that follows it becomes one space; leading and trailing white space goes.
 * g_malloc'd.
 */
char *
mp_header_unfold(const char *raw)
{
	size_t		len = strlen(raw);
	char	   *out = g_malloc(len + 1);
	const char *p = raw;
	size_t		o = 0;

	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		p++;
	while (*p)
	{
		if (*p == '\r' || *p == '\n')
		{
			while (*p == '\r' || *p == '\n')
				p++;
			if (*p == ' ' || *p == '\t')
			{
				while (*p == ' ' || *p == '\t')
					p++;
				out[o++] = ' ';
			}
			continue;
		}
		out[o++] = *p++;
	}
	while (o > 0 && (out[o - 1] == ' ' || out[o - 1] == '\t'))
		o--;
	out[o] = '\0';
	return out;
}

/*
 * Prepare header text for GMime's RFC 2047 decoder (g_malloc'd result):
 *
 * - GMime 3.2.13 drops every word after a padded B word when adjacent words
 *   share a charset (upstream issue #133, fixed in 3.2.14), which is most
 *   long encoded subjects, names and filenames.  So every well-formed B word
 *   is rewritten as the equivalent Q word, which decodes to the same bytes
 *   (runs of words are still joined before charset conversion).
 * - GMime decodes a B word even when its text is not base64 at all, which
 *   gives garbage.  Such words are to be left as written: their "=?" is
 *   hidden as "=\x1a" and put back by mp_unhide_words() after decoding.
 */
char *
mp_rewrite_encoded_words(const char *in, bool *hid)
{
	GString    *out = g_string_sized_new(strlen(in) + 16);
	const char *p = in;
	const char *w;

	*hid = false;
	while ((w = strstr(p, "=?")) != NULL)
	{
		const char *cs = w + 2;
		const char *cs_end = cs;
		const char *text;
		const char *end;
		const char *q;
		bool		ok = true;

		while (*cs_end && *cs_end != '?' && *cs_end != ' ' && *cs_end != '\t')
			cs_end++;
		if (*cs_end == '?' && cs_end > cs && cs_end[1] != '\0' && cs_end[2] == '?' &&
			strchr("BbQq", cs_end[1]) != NULL)
			mp_pin_word_charset(cs, (size_t) (cs_end - cs));
		if (*cs_end != '?' || cs_end == cs ||
			(cs_end[1] != 'B' && cs_end[1] != 'b') || cs_end[2] != '?')
		{
			g_string_append_len(out, p, (gssize) (cs - p));
			p = cs;
			continue;
		}
		text = cs_end + 3;
		end = strstr(text, "?=");
		if (end == NULL)
			break;
		for (q = text; q < end; q++)
			if (mp_b64_rank[(unsigned char) *q] == 0 && *q != '=')
				ok = false;
		g_string_append_len(out, p, (gssize) (w - p));
		if (ok)
		{
			b64_state	st = {0, 0, false};
			size_t		tlen = (size_t) (end - text);
			unsigned char small[256];
			unsigned char *bytes = tlen < sizeof(small) - 4 ? small : g_malloc(tlen + 4);
			size_t		n = mp_b64_step(&st, (const unsigned char *) text, tlen, bytes);
			size_t		i;

			n += mp_b64_finish(&st, bytes + n);
			if (st.bad)
				ok = false;
			else
			{
				g_string_append_len(out, w, (gssize) (cs_end - w));
				g_string_append(out, "?Q?");
				for (i = 0; i < n; i++)
				{
					static const char hex[] = "0123456789ABCDEF";

					if (g_ascii_isalnum(bytes[i]))
						g_string_append_c(out, (char) bytes[i]);
					else
					{
						g_string_append_c(out, '=');
						g_string_append_c(out, hex[bytes[i] >> 4]);
						g_string_append_c(out, hex[bytes[i] & 15]);
					}
				}
				g_string_append(out, "?=");
			}
			if (bytes != small)
				g_free(bytes);
		}
		if (!ok)
		{
			g_string_append(out, "=\x1a");
			g_string_append_len(out, w + 2, (gssize) (end + 2 - (w + 2)));
			*hid = true;
		}
		p = end + 2;
	}
	g_string_append(out, p);
	return g_string_free(out, FALSE);
}

/* Undo the hiding of mp_rewrite_encoded_words(), in place. */
void
mp_unhide_words(char *s)
{
	while (s != NULL && (s = strstr(s, "=\x1a")) != NULL)
		s[1] = '?';
}

/* Unfold + RFC 2047 decode a raw header value into clean UTF-8. */
static char *
header_decode(parse_ctx *ctx, const char *raw)
{
	char	   *unfolded;
	char	   *text;
	char	   *decoded;
	char	   *res;
	bool		hid;

	if (raw == NULL)
		return NULL;
	unfolded = mp_header_unfold(raw);
	text = mp_rewrite_encoded_words(unfolded, &hid);
	g_free(unfolded);
	decoded = g_mime_utils_header_decode_text(ctx->opts, text);
	if (decoded == NULL)
	{
		decoded = text;
		text = NULL;
	}
	if (hid)
		mp_unhide_words(decoded);
	res = mp_utf8_dup(ctx, decoded);
	g_free(decoded);
	g_free(text);
	return res;
}

/*
 * A Date value made fit for GMime 3.2.13's date parser, which reads a time
 * token it does not understand as 00:00:00 (so the date lands on midnight):
 *
 * - a zone glued to the time ("00:01+0000", "00:01:30GMT"; RFC 5322 makes
 *   the CFWS between them optional) gets a blank before it;
 * - fractional seconds ("22:23:35.882", seen from some mailers) are
 *   dropped.
 *
 * *has_time says whether a time (HH:MM[:SS]) was found at all: without one
 * the value is no date (GMime would make it midnight).  g_malloc'd.
 */
static char *
date_prepare(const char *s, bool *has_time)
{
	GString    *out = g_string_sized_new(strlen(s) + 2);
	const char *p = s;

	*has_time = false;
	while (*p)
	{
		const char *t = p;
		int			groups = 0;

		/* a time: 1*2DIGIT ":" 2DIGIT [":" 2DIGIT], at a token start */
		if (g_ascii_isdigit(*t) && (t == s || !g_ascii_isalnum(t[-1])))
		{
			while (g_ascii_isdigit(*t) && t - p < 2)
				t++;
			while (groups < 2 && t[0] == ':' && g_ascii_isdigit(t[1]) &&
				   g_ascii_isdigit(t[2]))
			{
				t += 3;
				groups++;
			}
			if (groups > 0 && !g_ascii_isdigit(*t) && *t != ':')
			{
				*has_time = true;
				g_string_append_len(out, p, (gssize) (t - p));
				if (groups == 2 && t[0] == '.' && g_ascii_isdigit(t[1]))
				{
					for (t++; g_ascii_isdigit(*t); t++)
						;
				}
				if (*t == '+' || *t == '-' || g_ascii_isalpha(*t))
					g_string_append_c(out, ' ');
				p = t;
				continue;
			}
		}
		g_string_append_c(out, *p);
		p++;
	}
	return g_string_free(out, FALSE);
}

/* The first top-level header named name (case-insensitive), or NULL. */
GMimeHeader *
mp_first_header(GMimeHeaderList *list, const char *name)
{
	int			n = list ? g_mime_header_list_get_count(list) : 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		GMimeHeader *h = g_mime_header_list_get_header_at(list, i);

		if (g_ascii_strcasecmp(g_mime_header_get_name(h), name) == 0)
			return h;
	}
	return NULL;
}

static bool
fill_headers(parse_ctx *ctx, GMimeMessage *message)
{
	GMimeHeaderList *a = g_mime_object_get_header_list((GMimeObject *) message);
	GMimeHeaderList *b = message->mime_part ?
		g_mime_object_get_header_list(message->mime_part) : NULL;
	int			na = a ? g_mime_header_list_get_count(a) : 0;
	int			nb = b ? g_mime_header_list_get_count(b) : 0;
	int			ia = 0,
				ib = 0;
	mp_message *out = ctx->out;

	if (na + nb == 0)
		return true;
	out->headers = calloc((size_t) (na + nb), sizeof(mp_header));
	if (out->headers == NULL)
	{
		ctx->oom = true;
		return false;
	}
	/* the parser split them: Content-* went to the top part; merge by offset */
	while (ia < na || ib < nb)
	{
		GMimeHeader *h;
		mp_header  *dst = &out->headers[out->header_count];

		if (ib >= nb ||
			(ia < na &&
			 g_mime_header_get_offset(g_mime_header_list_get_header_at(a, ia)) <=
			 g_mime_header_get_offset(g_mime_header_list_get_header_at(b, ib))))
			h = g_mime_header_list_get_header_at(a, ia++);
		else
			h = g_mime_header_list_get_header_at(b, ib++);

		dst->name = mp_utf8_dup(ctx, g_mime_header_get_name(h));
		dst->value = header_decode(ctx, g_mime_header_get_raw_value(h));
		if (dst->value == NULL && !ctx->oom)
			dst->value = mp_utf8_dup(ctx, "");
		out->header_count++;
		if (ctx->oom)
			return false;
	}
	return true;
}

/* Append one mailbox to an address list. */
static bool
addr_push(parse_ctx *ctx, mp_address_list *dst, size_t *cap,
		  InternetAddress *ia)
{
	const char *name = internet_address_get_name(ia);
	const char *addr = internet_address_mailbox_get_addr((InternetAddressMailbox *) ia);
	mp_address *it;

	if (dst->count == *cap)
	{
		size_t		ncap = *cap ? *cap * 2 : 4;
		mp_address *n = realloc(dst->items, ncap * sizeof(mp_address));

		if (n == NULL)
		{
			ctx->oom = true;
			return false;
		}
		dst->items = n;
		*cap = ncap;
	}
	it = &dst->items[dst->count++];
	it->name = (name && *name) ? mp_utf8_dup(ctx, name) : NULL;
	it->address = (addr && *addr) ? mp_utf8_dup(ctx, addr) : NULL;
	mp_unhide_words(it->name);
	mp_unhide_words(it->address);
	return !ctx->oom;
}

static bool
addr_flatten(parse_ctx *ctx, mp_address_list *dst, size_t *cap,
			 InternetAddressList *list, int depth)
{
	int			n = list ? internet_address_list_length(list) : 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		InternetAddress *ia = internet_address_list_get_address(list, i);

		if (INTERNET_ADDRESS_IS_MAILBOX(ia))
		{
			if (!addr_push(ctx, dst, cap, ia))
				return false;
		}
		else if (INTERNET_ADDRESS_IS_GROUP(ia) && depth < 8)
		{
			if (!addr_flatten(ctx, dst, cap,
							  internet_address_group_get_members((InternetAddressGroup *) ia),
							  depth + 1))
				return false;
		}
	}
	return true;
}

/*
 * An address field: every occurrence of it, parsed and flattened, and all
 * of them decoded and joined by ", " for display.
 */
static bool
fill_addresses(parse_ctx *ctx, GMimeMessage *message, const char *hname,
			   mp_address_list *dst)
{
	GMimeHeaderList *list = g_mime_object_get_header_list((GMimeObject *) message);
	int			n = list ? g_mime_header_list_get_count(list) : 0;
	int			i;
	size_t		j;
	size_t		cap = 0;
	GString    *disp = NULL;
	bool		ok = true;

	for (i = 0; i < n && ok; i++)
	{
		GMimeHeader *h = g_mime_header_list_get_header_at(list, i);
		const char *raw = g_mime_header_get_raw_value(h);
		char	   *unfolded;
		char	   *text;
		bool		hid;
		InternetAddressList *al;

		if (raw == NULL || g_ascii_strcasecmp(g_mime_header_get_name(h), hname) != 0)
			continue;
		unfolded = mp_header_unfold(raw);
		text = mp_rewrite_encoded_words(unfolded, &hid);
		al = internet_address_list_parse(ctx->opts, text);
		if (al != NULL)
		{
			ok = addr_flatten(ctx, dst, &cap, al, 0);
			g_object_unref(al);
		}
		g_free(text);
		g_free(unfolded);
	}
	if (!ok)
		return false;

	/* the display text: the decoded values, already in out->headers */
	for (j = 0; j < ctx->out->header_count; j++)
	{
		const mp_header *mh = &ctx->out->headers[j];

		if (g_ascii_strcasecmp(mh->name, hname) != 0)
			continue;
		if (disp == NULL)
			disp = g_string_new(mh->value);
		else if (*mh->value)
		{
			if (disp->len > 0)
				g_string_append(disp, ", ");
			g_string_append(disp, mh->value);
		}
	}
	if (disp != NULL)
	{
		dst->display = mp_utf8_dup_len(ctx, disp->str, disp->len);
		g_string_free(disp, TRUE);
	}
	return !ctx->oom;
}

/* Strip surrounding white space and one pair of angle brackets. */
char *
mp_bare_id(parse_ctx *ctx, const char *s)
{
	const char *b;
	const char *e;

	if (s == NULL)
		return NULL;
	b = s;
	while (*b == ' ' || *b == '\t')
		b++;
	e = b + strlen(b);
	while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	if (e > b && *b == '<')
	{
		b++;
		if (e > b && e[-1] == '>')
			e--;
	}
	if (e == b)
		return NULL;
	return mp_utf8_dup_len(ctx, b, (size_t) (e - b));
}

/* A message id header: GMime's decoding, or the trimmed value without <>. */
static char *
message_id_value(parse_ctx *ctx, GMimeHeader *h)
{
	char	   *unfolded;
	char	   *id;
	char	   *res;

	if (h == NULL || g_mime_header_get_raw_value(h) == NULL)
		return NULL;
	unfolded = mp_header_unfold(g_mime_header_get_raw_value(h));
	id = g_mime_utils_decode_message_id(unfolded);
	if (id != NULL && *id != '\0')
		res = mp_utf8_dup(ctx, id);
	else
		res = mp_bare_id(ctx, unfolded);
	g_free(id);
	g_free(unfolded);
	return res;
}

/* References: unfolded, runs of white space collapsed, trimmed. */
static char *
references_value(parse_ctx *ctx, GMimeHeader *h)
{
	const char *raw;
	char	   *tmp;
	size_t		o = 0;
	const char *p;
	char	   *res;

	if (h == NULL || (raw = g_mime_header_get_raw_value(h)) == NULL)
		return NULL;
	tmp = malloc(strlen(raw) + 1);
	if (tmp == NULL)
	{
		ctx->oom = true;
		return NULL;
	}
	for (p = raw; *p; p++)
	{
		if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		{
			if (o > 0 && tmp[o - 1] != ' ')
				tmp[o++] = ' ';
		}
		else
			tmp[o++] = *p;
	}
	if (o > 0 && tmp[o - 1] == ' ')
		o--;
	res = (o > 0) ? mp_utf8_dup_len(ctx, tmp, o) : NULL;
	free(tmp);
	return res;
}

/*
 * The header fields of the record: every top-level header, the subject, the
 * address fields, the date, the message ids and the references.
 */
bool
mp_fill_header_fields(parse_ctx *ctx, GMimeMessage *message)
{
	mp_message *out = ctx->out;
	GMimeHeaderList *hl = g_mime_object_get_header_list((GMimeObject *) message);
	GMimeHeader *h;
	size_t		i;

	if (!fill_headers(ctx, message))
		return false;

	for (i = 0; i < out->header_count; i++)
	{
		if (g_ascii_strcasecmp(out->headers[i].name, "Subject") == 0)
		{
			if ((out->subject = mp_utf8_dup(ctx, out->headers[i].value)) == NULL)
				return false;
			break;
		}
	}
	if (!fill_addresses(ctx, message, "From", &out->from) ||
		!fill_addresses(ctx, message, "To", &out->to) ||
		!fill_addresses(ctx, message, "Cc", &out->cc) ||
		!fill_addresses(ctx, message, "Bcc", &out->bcc) ||
		!fill_addresses(ctx, message, "Reply-To", &out->reply_to))
		return false;

	if ((h = mp_first_header(hl, "Date")) != NULL && g_mime_header_get_raw_value(h) != NULL)
	{
		char	   *unfolded = mp_header_unfold(g_mime_header_get_raw_value(h));
		bool		has_time;
		char	   *spaced = date_prepare(unfolded, &has_time);
		GDateTime  *dt = has_time ? g_mime_utils_header_decode_date(spaced) : NULL;

		if (dt != NULL)
		{
			out->has_date = true;
			out->date_epoch = (int64_t) g_date_time_to_unix(dt);
			g_date_time_unref(dt);
		}
		g_free(spaced);
		g_free(unfolded);
	}

	out->message_id = message_id_value(ctx, mp_first_header(hl, "Message-Id"));
	out->in_reply_to = message_id_value(ctx, mp_first_header(hl, "In-Reply-To"));
	out->references = references_value(ctx, mp_first_header(hl, "References"));
	return !ctx->oom;
}
