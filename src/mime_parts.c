/*-------------------------------------------------------------------------
 * mime_parts.c
 *	  The MIME tree -> bodies and attachments: the parts a mail reader shows
 *	  as the text and HTML bodies, and the walk that makes every other leaf
 *	  an attachment (section path, type, RFC 2231/2047 filename, Content-Id,
 *	  disposition, content and its SHA-256).
 *-------------------------------------------------------------------------
 */
#include "mime_internal.h"
#include "sha256_hex.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest filename we keep, in bytes (an object key component). */
#define MP_MAX_FILENAME		255

/*
 * "Content-Type: text" (no subtype) is application/octet-stream to GMime;
 * RFC 2045 (and every reader) make it text/plain.
 */
static bool
mislabeled_text(GMimeObject *obj)
{
	GMimeContentType *ct = g_mime_object_get_content_type(obj);
	GMimeHeader *h;
	const char *v;

	if (ct == NULL || !g_mime_content_type_is_type(ct, "application", "octet-stream"))
		return false;
	h = mp_first_header(g_mime_object_get_header_list(obj), "Content-Type");
	if (h == NULL || (v = g_mime_header_get_raw_value(h)) == NULL)
		return false;
	while (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n')
		v++;
	if (g_ascii_strncasecmp(v, "text", 4) != 0)
		return false;
	v += 4;
	while (*v == ' ' || *v == '\t')
		v++;
	return *v == '\0' || *v == ';' || *v == '\r' || *v == '\n';
}

static bool
ct_is(GMimeObject *obj, const char *type, const char *subtype)
{
	GMimeContentType *ct = g_mime_object_get_content_type(obj);

	if (ct != NULL && g_mime_content_type_is_type(ct, type, subtype))
		return true;
	return strcmp(type, "text") == 0 && strcmp(subtype, "plain") == 0 &&
		mislabeled_text(obj);
}

static bool
is_blank_str(const char *s)
{
	if (s == NULL)
		return true;
	while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
		s++;
	return *s == '\0';
}

/* The filename parameter as GMime decoded it (disposition, else type). */
static const char *
gmime_filename(GMimeObject *obj, bool *from_type)
{
	const char *f = g_mime_object_get_content_disposition_parameter(obj, "filename");

	*from_type = false;
	if (is_blank_str(f))
	{
		f = g_mime_object_get_content_type_parameter(obj, "name");
		*from_type = true;
	}
	return is_blank_str(f) ? NULL : f;
}

static bool
is_explicit_attachment(GMimeObject *obj)
{
	const char *disp = g_mime_object_get_disposition(obj);
	bool		from_type;

	if (disp != NULL && g_ascii_strcasecmp(disp, "attachment") == 0)
		return true;
	return gmime_filename(obj, &from_type) != NULL;
}

/* Most RFC 2231 sections of one parameter we join. */
#define MP_MAX_SECTIONS		128

/*
 * The RFC 2231 value of parameter pname in a raw Content-Type or
 * Content-Disposition value: the sections pname*0, pname*1 ... (pname*N*
 * percent-encoded; pname* alone is section 0), joined in section order as
 * bytes, then converted from the charset named in section 0 (by the rules
 * of the bodies), so that a character split between two sections comes out
 * whole.  GMime 3.2.13 takes the charset from whichever section is written
 * first, and then reads "utf-8''..." of section 0 as text when the sections
 * are out of order.  malloc'd clean UTF-8, or NULL when the parameter has
 * no RFC 2231 form (or is blank).
 */
static char *
rfc2231_param(parse_ctx *ctx, const char *raw, const char *pname)
{
	char	   *text = mp_header_unfold(raw);
	size_t		plen = strlen(pname);
	char	   *sect[MP_MAX_SECTIONS];
	bool		enc[MP_MAX_SECTIONS];
	bool		any = false;
	const char *p = text;
	const char *charset = NULL;
	GString    *joined;
	unsigned char *data;
	char	   *res;
	int			i;

	memset(sect, 0, sizeof(sect));
	memset(enc, 0, sizeof(enc));
	/* skip the type or disposition itself */
	while (*p && *p != ';')
		p++;
	while (*p)
	{
		const char *a;
		const char *ae;
		GString    *val = g_string_new(NULL);
		long		n = -1;
		bool		e = false;

		while (*p == ';' || *p == ' ' || *p == '\t')
			p++;
		a = p;
		while (*p && *p != '=' && *p != ';')
			p++;
		ae = p;
		while (ae > a && (ae[-1] == ' ' || ae[-1] == '\t'))
			ae--;
		if (*p == '=')
		{
			p++;
			while (*p == ' ' || *p == '\t')
				p++;
			if (*p == '"')
			{
				for (p++; *p && *p != '"'; p++)
				{
					if (*p == '\\' && p[1] != '\0')
						p++;
					g_string_append_c(val, *p);
				}
				if (*p == '"')
					p++;
				while (*p && *p != ';')
					p++;
			}
			else
			{
				const char *v = p;
				const char *ve;

				while (*p && *p != ';')
					p++;
				ve = p;
				while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
					ve--;
				g_string_append_len(val, v, (gssize) (ve - v));
			}
			/* name*  or  name*N  or  name*N* */
			if ((size_t) (ae - a) > plen && g_ascii_strncasecmp(a, pname, plen) == 0 &&
				a[plen] == '*')
			{
				const char *q = a + plen + 1;

				if (q == ae)
				{
					n = 0;
					e = true;
				}
				else if (g_ascii_isdigit(*q))
				{
					n = 0;
					while (q < ae && g_ascii_isdigit(*q) && n < MP_MAX_SECTIONS)
						n = n * 10 + (*q++ - '0');
					if (q < ae && *q == '*')
					{
						e = true;
						q++;
					}
					if (q != ae || n >= MP_MAX_SECTIONS)
						n = -1;
				}
			}
		}
		if (n >= 0 && sect[n] == NULL)
		{
			sect[n] = g_string_free(val, FALSE);
			enc[n] = e;
			any = true;
		}
		else
			g_string_free(val, TRUE);
	}

	res = NULL;
	if (any && sect[0] != NULL)
	{
		joined = g_string_new(NULL);
		for (i = 0; i < MP_MAX_SECTIONS; i++)
		{
			const char *v = sect[i];

			if (v == NULL)
				continue;
			if (i == 0 && enc[0])
			{
				/* charset'language'value */
				const char *q1 = strchr(v, '\'');
				const char *q2 = q1 ? strchr(q1 + 1, '\'') : NULL;

				if (q2 != NULL)
				{
					sect[0][q1 - v] = '\0';
					charset = v;
					v = q2 + 1;
				}
			}
			for (; *v; v++)
			{
				if (enc[i] && v[0] == '%' && g_ascii_isxdigit(v[1]) && g_ascii_isxdigit(v[2]))
				{
					g_string_append_c(joined, (char) (g_ascii_xdigit_value(v[1]) * 16 +
													  g_ascii_xdigit_value(v[2])));
					v += 2;
				}
				else
					g_string_append_c(joined, *v);
			}
		}
		data = malloc(joined->len + 1);
		if (data == NULL)
			ctx->oom = true;
		else
		{
			memcpy(data, joined->str, joined->len);
			res = mp_text_to_utf8(ctx, data, joined->len, charset, false);
			if (res != NULL && is_blank_str(res))
			{
				free(res);
				res = NULL;
			}
		}
		g_string_free(joined, TRUE);
	}
	for (i = 0; i < MP_MAX_SECTIONS; i++)
		g_free(sect[i]);
	g_free(text);
	return res;
}

/*
 * The decoded filename (RFC 2231 or RFC 2047, disposition filename, else the
 * type's name), g_malloc'd, or NULL.  When the header holds encoded words it
 * is parsed again after mp_rewrite_encoded_words(), since GMime decoded the
 * parameter with its RFC 2047 bug.
 */
static char *
part_filename(parse_ctx *ctx, GMimeObject *obj)
{
	bool		from_type;
	const char *f = gmime_filename(obj, &from_type);
	GMimeHeader *h;
	const char *raw;
	char	   *res = NULL;

	if (f == NULL)
		return NULL;
	h = mp_first_header(g_mime_object_get_header_list(obj),
					 from_type ? "Content-Type" : "Content-Disposition");
	raw = h ? g_mime_header_get_raw_value(h) : NULL;
	if (raw != NULL && strchr(raw, '*') != NULL)
	{
		char	   *v = rfc2231_param(ctx, raw, from_type ? "name" : "filename");

		if (v != NULL)
		{
			res = g_strdup(v);
			free(v);
			return res;
		}
		if (ctx->oom)
			return NULL;
	}
	if (raw != NULL && strstr(raw, "=?") != NULL)
	{
		char	   *unfolded = mp_header_unfold(raw);
		bool		hid;
		char	   *text = mp_rewrite_encoded_words(unfolded, &hid);
		const char *v = NULL;

		if (from_type)
		{
			GMimeContentType *ct = g_mime_content_type_parse(ctx->opts, text);

			if (ct != NULL)
			{
				v = g_mime_content_type_get_parameter(ct, "name");
				if (!is_blank_str(v))
					res = g_strdup(v);
				g_object_unref(ct);
			}
		}
		else
		{
			GMimeContentDisposition *cd = g_mime_content_disposition_parse(ctx->opts, text);

			if (cd != NULL)
			{
				v = g_mime_content_disposition_get_parameter(cd, "filename");
				if (!is_blank_str(v))
					res = g_strdup(v);
				g_object_unref(cd);
			}
		}
		mp_unhide_words(res);
		g_free(text);
		g_free(unfolded);
	}
	return res ? res : g_strdup(f);
}

/* The root of a multipart/related: the part named by start=, else the first. */
static GMimeObject *
related_root(GMimeMultipart *mp)
{
	int			n = g_mime_multipart_get_count(mp);
	const char *start = g_mime_object_get_content_type_parameter((GMimeObject *) mp, "start");

	if (n <= 0)
		return NULL;
	if (start != NULL)
	{
		char	   *id = g_mime_utils_decode_message_id(start);
		int			i;

		if (id != NULL)
		{
			for (i = 0; i < n; i++)
			{
				GMimeObject *c = g_mime_multipart_get_part(mp, i);
				const char *cid = g_mime_object_get_content_id(c);

				if (cid != NULL && strcmp(cid, id) == 0)
				{
					g_free(id);
					return c;
				}
			}
			g_free(id);
		}
	}
	return g_mime_multipart_get_part(mp, 0);
}

/*
 * find_body() below MP_MAX_DEPTH: the first text (or HTML) leaf of the
 * subtree in document order, found with an explicit stack instead of
 * recursion, so that a message nested hundreds of levels deep still has its
 * text (GMime itself parses up to 1024 levels).  The finer rules of
 * find_body() (the richest alternative, related's start=) are not applied
 * down there; encrypted parts are still skipped.
 */
static GMimeObject *
find_body_flat(GMimeObject *top, bool want_html)
{
	GPtrArray  *stack = g_ptr_array_new();
	GMimeObject *found = NULL;

	g_ptr_array_add(stack, top);
	while (stack->len > 0 && found == NULL)
	{
		GMimeObject *obj = g_ptr_array_remove_index(stack, stack->len - 1);

		if (GMIME_IS_MULTIPART(obj))
		{
			GMimeMultipart *mp = (GMimeMultipart *) obj;
			int			i;

			if (GMIME_IS_MULTIPART_ENCRYPTED(obj))
				continue;
			/* pushed last to first, so that the first part is looked at first */
			for (i = g_mime_multipart_get_count(mp) - 1; i >= 0; i--)
				g_ptr_array_add(stack, g_mime_multipart_get_part(mp, i));
		}
		else if (GMIME_IS_PART(obj) &&
				 ct_is(obj, "text", want_html ? "html" : "plain") &&
				 !is_explicit_attachment(obj))
			found = obj;
	}
	g_ptr_array_free(stack, TRUE);
	return found;
}

/*
 * The part a mail reader would show as the text (want_html false) or HTML
 * body, or NULL.
 */
static GMimeObject *
find_body(parse_ctx *ctx, GMimeObject *obj, bool want_html, int depth)
{
	if (obj == NULL)
		return NULL;
	if (GMIME_IS_MULTIPART(obj))
	{
		GMimeMultipart *mp = (GMimeMultipart *) obj;
		int			n = g_mime_multipart_get_count(mp);
		int			i;

		if (depth >= MP_MAX_DEPTH)
		{
			ctx->errors |= PE_NESTING;
			return find_body_flat(obj, want_html);
		}
		if (ct_is(obj, "multipart", "alternative"))
		{
			/* HTML: the last (richest) alternative that has one; text: first */
			for (i = 0; i < n; i++)
			{
				int			k = want_html ? n - 1 - i : i;
				GMimeObject *r = find_body(ctx, g_mime_multipart_get_part(mp, k),
										   want_html, depth + 1);

				if (r != NULL)
					return r;
			}
			return NULL;
		}
		if (ct_is(obj, "multipart", "related"))
			return find_body(ctx, related_root(mp), want_html, depth + 1);
		if (GMIME_IS_MULTIPART_ENCRYPTED(obj))
			return NULL;
		if (GMIME_IS_MULTIPART_SIGNED(obj))
			return n > 0 ? find_body(ctx, g_mime_multipart_get_part(mp, 0),
									 want_html, depth + 1) : NULL;
		for (i = 0; i < n; i++)
		{
			GMimeObject *r = find_body(ctx, g_mime_multipart_get_part(mp, i),
									   want_html, depth + 1);

			if (r != NULL)
				return r;
		}
		return NULL;
	}
	if (!GMIME_IS_PART(obj))
		return NULL;
	if (!ct_is(obj, "text", want_html ? "html" : "plain"))
		return NULL;
	if (is_explicit_attachment(obj))
		return NULL;
	return obj;
}

/* Extensions for derived filenames. */
static const struct
{
	const char *type;
	const char *ext;
}			type_ext[] =
{
	{"application/pdf", ".pdf"},
	{"application/zip", ".zip"},
	{"application/x-zip-compressed", ".zip"},
	{"application/gzip", ".gz"},
	{"application/x-gzip", ".gz"},
	{"application/x-tar", ".tar"},
	{"application/x-7z-compressed", ".7z"},
	{"application/x-rar-compressed", ".rar"},
	{"application/vnd.rar", ".rar"},
	{"application/msword", ".doc"},
	{"application/vnd.openxmlformats-officedocument.wordprocessingml.document", ".docx"},
	{"application/vnd.ms-excel", ".xls"},
	{"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", ".xlsx"},
	{"application/vnd.ms-powerpoint", ".ppt"},
	{"application/vnd.openxmlformats-officedocument.presentationml.presentation", ".pptx"},
	{"application/vnd.oasis.opendocument.text", ".odt"},
	{"application/vnd.oasis.opendocument.spreadsheet", ".ods"},
	{"application/rtf", ".rtf"},
	{"application/json", ".json"},
	{"application/xml", ".xml"},
	{"application/ics", ".ics"},
	{"application/pgp-signature", ".asc"},
	{"application/pgp-encrypted", ".asc"},
	{"application/pgp-keys", ".asc"},
	{"application/pkcs7-signature", ".p7s"},
	{"application/x-pkcs7-signature", ".p7s"},
	{"application/pkcs7-mime", ".p7m"},
	{"application/x-pkcs7-mime", ".p7m"},
	{"application/ms-tnef", ".dat"},
	{"application/vnd.ms-tnef", ".dat"},
	{"application/octet-stream", ".bin"},
	{"image/png", ".png"},
	{"image/jpeg", ".jpg"},
	{"image/jpg", ".jpg"},
	{"image/pjpeg", ".jpg"},
	{"image/gif", ".gif"},
	{"image/bmp", ".bmp"},
	{"image/webp", ".webp"},
	{"image/tiff", ".tif"},
	{"image/svg+xml", ".svg"},
	{"image/heic", ".heic"},
	{"image/x-icon", ".ico"},
	{"image/vnd.microsoft.icon", ".ico"},
	{"audio/mpeg", ".mp3"},
	{"audio/mp4", ".m4a"},
	{"audio/wav", ".wav"},
	{"audio/x-wav", ".wav"},
	{"audio/ogg", ".ogg"},
	{"video/mp4", ".mp4"},
	{"video/quicktime", ".mov"},
	{"video/mpeg", ".mpg"},
	{"text/plain", ".txt"},
	{"text/html", ".html"},
	{"text/csv", ".csv"},
	{"text/calendar", ".ics"},
	{"text/vcard", ".vcf"},
	{"text/x-vcard", ".vcf"},
	{"text/xml", ".xml"},
	{"text/rtf", ".rtf"},
	{"text/markdown", ".md"},
	{"message/rfc822", ".eml"},
	{"message/rfc2822", ".eml"},
	{"message/global", ".eml"},
	{"message/news", ".eml"},
	{"message/delivery-status", ".txt"},
	{"message/global-delivery-status", ".txt"},
	{"message/disposition-notification", ".txt"},
	{"message/global-disposition-notification", ".txt"},
	{"message/global-headers", ".txt"},
	{"text/rfc822-headers", ".txt"},
};

static const char *
ext_for_type(const char *mime_type)
{
	size_t		i;

	for (i = 0; i < sizeof(type_ext) / sizeof(type_ext[0]); i++)
		if (strcmp(mime_type, type_ext[i].type) == 0)
			return type_ext[i].ext;
	if (strncmp(mime_type, "text/", 5) == 0)
		return ".txt";
	return ".bin";
}

/*
 * A filename fit for a storage path: clean UTF-8, '/', '\' and control
 * characters (C0, DEL, C1) replaced by '_', trimmed, "." and ".." made
 * harmless, at most MP_MAX_FILENAME bytes (keeping a short extension).
 * Returns NULL (without OOM) when nothing is left.
 */
static char *
clean_filename(parse_ctx *ctx, const char *raw)
{
	char	   *u = mp_utf8_dup(ctx, raw);
	size_t		i = 0,
				o = 0,
				len;
	char	   *b;

	if (u == NULL)
		return NULL;
	len = strlen(u);
	while (i < len)
	{
		unsigned char c = (unsigned char) u[i];

		if (c < 0x20 || c == 0x7F || c == '/' || c == '\\')
		{
			u[o++] = '_';
			i++;
		}
		else if (c == 0xC2 && i + 1 < len && (unsigned char) u[i + 1] < 0xA0)
		{
			u[o++] = '_';		/* U+0080..U+009F */
			i += 2;
		}
		else
			u[o++] = u[i++];
	}
	u[o] = '\0';
	/* trim blanks */
	b = u;
	while (*b == ' ')
		b++;
	len = strlen(b);
	while (len > 0 && b[len - 1] == ' ')
		len--;
	memmove(u, b, len);
	u[len] = '\0';
	if (len == 0)
	{
		free(u);
		return NULL;
	}
	if (strcmp(u, ".") == 0 || strcmp(u, "..") == 0)
		memset(u, '_', len);
	if (len > MP_MAX_FILENAME)
	{
		const char *dot = strrchr(u, '.');
		size_t		extlen = dot ? strlen(dot) : 0;
		size_t		keep;

		if (extlen > 16)
			extlen = 0;
		keep = MP_MAX_FILENAME - extlen;
		/* back up to a UTF-8 character boundary */
		while (keep > 0 && ((unsigned char) u[keep] & 0xC0) == 0x80)
			keep--;
		/* the cut may leave blanks at the end (u[0] is not one) */
		while (keep > 0 && u[keep - 1] == ' ')
			keep--;
		memmove(u + keep, u + len - extlen, extlen);
		u[keep + extlen] = '\0';
	}
	return u;
}

static bool
add_attachment(parse_ctx *ctx, GMimeObject *obj, const char *part_id)
{
	mp_message *out = ctx->out;
	mp_attachment *a;
	GMimeContentType *ct = g_mime_object_get_content_type(obj);
	char	   *mt;
	const char *cid;
	const char *disp;
	char	   *fname;
	size_t		i;

	if (out->attachment_count == ctx->att_cap)
	{
		size_t		ncap = ctx->att_cap ? ctx->att_cap * 2 : 4;
		mp_attachment *n = realloc(out->attachments, ncap * sizeof(mp_attachment));

		if (n == NULL)
		{
			ctx->oom = true;
			return false;
		}
		out->attachments = n;
		ctx->att_cap = ncap;
	}
	a = &out->attachments[out->attachment_count++];
	memset(a, 0, sizeof(*a));

	a->part_id = mp_utf8_dup(ctx, part_id);

	mt = (ct && !mislabeled_text(obj)) ? g_mime_content_type_get_mime_type(ct) : NULL;
	if (mt != NULL && ct != NULL &&
		(is_blank_str(g_mime_content_type_get_media_type(ct)) ||
		 is_blank_str(g_mime_content_type_get_media_subtype(ct))))
	{
		/* "Content-Type: /png": GMime keeps an empty type; ours is invalid */
		g_free(mt);
		mt = g_strdup("application/octet-stream");
		ctx->errors |= PE_CONTENT_TYPE;
	}
	a->mime_type = mp_utf8_dup(ctx, mt ? mt : ct ? "text/plain" : "application/octet-stream");
	g_free(mt);
	if (a->mime_type == NULL)
		return false;
	for (i = 0; a->mime_type[i]; i++)
		a->mime_type[i] = g_ascii_tolower(a->mime_type[i]);

	fname = part_filename(ctx, obj);
	if (fname != NULL)
		a->filename = clean_filename(ctx, fname);
	g_free(fname);
	if (ctx->oom)
		return false;
	if (a->filename == NULL)
	{
		const char *ext = ext_for_type(a->mime_type);
		bool		is_msg = strcmp(ext, ".eml") == 0;
		GString    *s = g_string_new(is_msg ? "message-" : "attachment-");

		g_string_append(s, part_id);
		g_string_append(s, ext);
		a->filename = mp_utf8_dup_len(ctx, s->str, s->len);
		g_string_free(s, TRUE);
		a->filename_derived = true;
	}

	cid = g_mime_object_get_content_id(obj);
	if (cid != NULL && *cid != '\0')
		a->content_id = mp_utf8_dup(ctx, cid);
	else
	{
		GMimeHeaderList *hl = g_mime_object_get_header_list(obj);
		GMimeHeader *h = mp_first_header(hl, "Content-Id");

		if (h != NULL && g_mime_header_get_raw_value(h) != NULL)
		{
			char	   *unfolded = mp_header_unfold(g_mime_header_get_raw_value(h));

			a->content_id = mp_bare_id(ctx, unfolded);
			g_free(unfolded);
		}
	}
	disp = g_mime_object_get_disposition(obj);
	if (disp != NULL && *disp != '\0')
		a->is_inline = g_ascii_strcasecmp(disp, "inline") == 0;
	else
		a->is_inline = a->content_id != NULL;
	if (ctx->oom)
		return false;

	a->data = mp_part_content(ctx, obj, &a->size);
	if (a->data == NULL)
		return false;
	if (a->size == 0)
	{
		free(a->data);
		a->data = NULL;
	}
	if (!sha256_hex(a->data, a->size, a->sha256_hex))
	{
		ctx->oom = true;		/* OpenSSL fails only when out of memory */
		return false;
	}
	return true;
}

/* Text leaves a reader hides when another alternative was chosen. */
static bool
is_renderable_text(GMimeObject *obj)
{
	return ct_is(obj, "text", "plain") || ct_is(obj, "text", "html") ||
		ct_is(obj, "text", "enriched") || ct_is(obj, "text", "richtext");
}

/* Collect attachments; path holds the IMAP section of obj ("" at the top). */
static bool
walk(parse_ctx *ctx, GMimeObject *obj, char *path, size_t plen, int depth,
	 bool in_alternative)
{
	if (obj == NULL)
		return true;
	if (GMIME_IS_MULTIPART(obj))
	{
		GMimeMultipart *mp = (GMimeMultipart *) obj;
		int			n = g_mime_multipart_get_count(mp);
		bool		alt = in_alternative || ct_is(obj, "multipart", "alternative");
		const char *boundary = g_mime_multipart_get_boundary(mp);
		int			i;

		if (depth >= MP_MAX_DEPTH)
		{
			/*
			 * What lies below stays reachable without recursion: the whole
			 * subtree as one attachment of its exact bytes (its text was
			 * sought for the body by find_body_flat()).
			 */
			ctx->errors |= PE_NESTING;
			ctx->cut_boundary = ctx->bounds[depth - 1];
			return add_attachment(ctx, obj, path);
		}
		/*
		 * RFC 2046 5.1.1: a multipart has at least one part.  None, with a
		 * boundary and a closing line, means no boundary line opened a part
		 * (one with text after it, only the closing line), which GMime does
		 * not report; without them GMime did.
		 */
		if (n == 0 && !(ctx->errors & (PE_NO_BOUNDARY | PE_TRUNCATED)))
			ctx->errors |= PE_EMPTY_MULTIPART;
		/* RFC 2046 5.1.1: a boundary must not occur in the parts it delimits */
		ctx->bounds[depth] = boundary;
		for (i = 0; boundary != NULL && i < depth; i++)
			if (ctx->bounds[i] != NULL && strcmp(ctx->bounds[i], boundary) == 0)
				ctx->errors |= PE_SAME_BOUNDARY;
		for (i = 0; i < n; i++)
		{
			int			w = snprintf(path + plen, 16, "%s%d", plen ? "." : "", i + 1);

			if (!walk(ctx, g_mime_multipart_get_part(mp, i), path, plen + (size_t) w,
					  depth + 1, alt))
				return false;
			path[plen] = '\0';
		}
		return true;
	}
	if (plen == 0)
	{
		/* a single-part message: its body is section 1 */
		strcpy(path, "1");
		plen = 1;
	}
	if (obj == ctx->text_part || obj == ctx->html_part)
		return true;
	if (in_alternative && is_renderable_text(obj) && !is_explicit_attachment(obj) &&
		g_mime_object_get_content_id(obj) == NULL)
		return true;
	return add_attachment(ctx, obj, path);
}

/* The body of a text part, converted to clean UTF-8. */
static char *
body_of(parse_ctx *ctx, GMimeObject *obj, bool is_html)
{
	size_t		len = 0;
	unsigned char *data = mp_part_content(ctx, obj, &len);

	if (data == NULL)
		return NULL;
	return mp_text_to_utf8(ctx, data, len,
						g_mime_object_get_content_type_parameter(obj, "charset"),
						is_html);
}

/* The bodies, then every other leaf as an attachment. */
bool
mp_fill_parts(parse_ctx *ctx, GMimeMessage *message)
{
	mp_message *out = ctx->out;
	char		path[MP_MAX_DEPTH * 12 + 32];

	ctx->text_part = find_body(ctx, message->mime_part, false, 0);
	ctx->html_part = find_body(ctx, message->mime_part, true, 0);
	if (ctx->text_part != NULL &&
		(out->body_text = body_of(ctx, ctx->text_part, false)) == NULL)
		return false;
	if (ctx->html_part != NULL &&
		(out->body_html = body_of(ctx, ctx->html_part, true)) == NULL)
		return false;

	path[0] = '\0';
	if (!walk(ctx, message->mime_part, path, 0, 0, false))
		return false;

	/*
	 * A multipart whose boundary never shows up holds everything in its
	 * prologue; show that as the text rather than nothing.
	 */
	if (out->body_text == NULL && out->body_html == NULL &&
		message->mime_part != NULL && GMIME_IS_MULTIPART(message->mime_part) &&
		g_mime_multipart_get_count((GMimeMultipart *) message->mime_part) == 0)
	{
		const char *pro = g_mime_multipart_get_prologue((GMimeMultipart *) message->mime_part);

		if (pro != NULL && *pro != '\0')
		{
			size_t		len = strlen(pro);
			unsigned char *copy = malloc(len + 1);

			if (copy == NULL)
			{
				ctx->oom = true;
				return false;
			}
			memcpy(copy, pro, len);
			out->body_text = mp_text_to_utf8(ctx, copy, len,
										  g_mime_object_get_content_type_parameter(message->mime_part, "charset"),
										  false);
			if (out->body_text == NULL)
				return false;
		}
	}
	return true;
}
