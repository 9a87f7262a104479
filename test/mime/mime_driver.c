/*
 * mime_driver: parse one RFC 822 file with mp_parse() and print the record
 * as one JSON object (UTF-8, keys in a fixed order).
 *
 *   mime_driver [--no-check] [--repeat N] [--data] FILE|-
 *   mime_driver --parse-cpu N FILE...
 *
 * Besides printing, it checks the record's invariants (every string valid
 * UTF-8 without NUL, sha256 matches the data, filenames without '/' or
 * control characters, size/data consistent) and exits 3 when one fails.
 * --repeat N parses N times (for timing and leak checks); --data adds each
 * attachment's bytes as base64 under "data_b64".
 *
 * --parse-cpu N (the benchmark's floor, test/bench/cpu.py) reads every FILE,
 * parses them all N + 1 times over and prints one number: the process CPU
 * seconds of the last N passes, divided by N.  Reading the files, process
 * start-up and printing are outside the measured span, so thousands of
 * messages are measured in one process without start-up noise.
 */
#include "mime_parse.h"
#include "sha256_hex.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

static int	violations = 0;

static void
violation(const char *what, const char *detail)
{
	fprintf(stderr, "INVARIANT VIOLATED: %s%s%s\n", what, detail ? ": " : "",
			detail ? detail : "");
	violations++;
}

/* strict UTF-8 (RFC 3629), no NUL */
static int
valid_utf8(const char *str)
{
	const unsigned char *s = (const unsigned char *) str;

	while (*s)
	{
		unsigned char c = *s;
		int			n,
					i;
		unsigned char lo = 0x80,
					hi = 0xBF;

		if (c < 0x80)
		{
			s++;
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
		for (i = 1; i <= n; i++)
		{
			if (s[i] < lo || s[i] > hi)
				return 0;
			lo = 0x80;
			hi = 0xBF;
		}
		s += n + 1;
	}
	return 1;
}

static void
check_str(const char *what, const char *s)
{
	if (s != NULL && !valid_utf8(s))
		violation("invalid UTF-8", what);
}

static void
json_str(const char *s)
{
	const unsigned char *p;

	if (s == NULL)
	{
		fputs("null", stdout);
		return;
	}
	putchar('"');
	for (p = (const unsigned char *) s; *p; p++)
	{
		switch (*p)
		{
			case '"':
				fputs("\\\"", stdout);
				break;
			case '\\':
				fputs("\\\\", stdout);
				break;
			case '\n':
				fputs("\\n", stdout);
				break;
			case '\r':
				fputs("\\r", stdout);
				break;
			case '\t':
				fputs("\\t", stdout);
				break;
			case '\b':
				fputs("\\b", stdout);
				break;
			case '\f':
				fputs("\\f", stdout);
				break;
			default:
				if (*p < 0x20 || *p == 0x7F)
					printf("\\u%04x", *p);
				else
					putchar(*p);
		}
	}
	putchar('"');
}

static void
json_b64(const unsigned char *d, size_t n)
{
	static const char t[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t		i;

	putchar('"');
	for (i = 0; i + 2 < n; i += 3)
	{
		putchar(t[d[i] >> 2]);
		putchar(t[((d[i] & 3) << 4) | (d[i + 1] >> 4)]);
		putchar(t[((d[i + 1] & 15) << 2) | (d[i + 2] >> 6)]);
		putchar(t[d[i + 2] & 63]);
	}
	if (n - i == 1)
	{
		putchar(t[d[i] >> 2]);
		putchar(t[(d[i] & 3) << 4]);
		fputs("==", stdout);
	}
	else if (n - i == 2)
	{
		putchar(t[d[i] >> 2]);
		putchar(t[((d[i] & 3) << 4) | (d[i + 1] >> 4)]);
		putchar(t[(d[i + 1] & 15) << 2]);
		putchar('=');
	}
	putchar('"');
}

static void
json_list(const char *key, const mp_address_list *l)
{
	size_t		i;

	printf("\"%s\":{\"display\":", key);
	check_str(key, l->display);
	json_str(l->display);
	fputs(",\"items\":[", stdout);
	for (i = 0; i < l->count; i++)
	{
		check_str(key, l->items[i].name);
		check_str(key, l->items[i].address);
		if (i)
			putchar(',');
		fputs("{\"name\":", stdout);
		json_str(l->items[i].name);
		fputs(",\"address\":", stdout);
		json_str(l->items[i].address);
		putchar('}');
	}
	if (l->display == NULL && l->count != 0)
		violation("addresses without a header", key);
	fputs("]}", stdout);
}

static void
print_message(const mp_message *m, int with_data)
{
	size_t		i;

	fputs("{\"headers\":[", stdout);
	for (i = 0; i < m->header_count; i++)
	{
		check_str("header name", m->headers[i].name);
		check_str("header value", m->headers[i].value);
		if (m->headers[i].name == NULL || m->headers[i].value == NULL)
			violation("NULL header name or value", NULL);
		if (i)
			putchar(',');
		putchar('[');
		json_str(m->headers[i].name);
		putchar(',');
		json_str(m->headers[i].value);
		putchar(']');
	}
	fputs("],\n\"subject\":", stdout);
	check_str("subject", m->subject);
	json_str(m->subject);
	fputs(",\n", stdout);
	json_list("from", &m->from);
	fputs(",\n", stdout);
	json_list("to", &m->to);
	fputs(",\n", stdout);
	json_list("cc", &m->cc);
	fputs(",\n", stdout);
	json_list("bcc", &m->bcc);
	fputs(",\n", stdout);
	json_list("reply_to", &m->reply_to);
	fputs(",\n\"date\":", stdout);
	if (m->has_date)
		printf("%lld", (long long) m->date_epoch);
	else
		fputs("null", stdout);
	fputs(",\n\"message_id\":", stdout);
	check_str("message_id", m->message_id);
	json_str(m->message_id);
	fputs(",\n\"in_reply_to\":", stdout);
	check_str("in_reply_to", m->in_reply_to);
	json_str(m->in_reply_to);
	fputs(",\n\"references\":", stdout);
	check_str("references", m->references);
	json_str(m->references);
	fputs(",\n\"body_text\":", stdout);
	check_str("body_text", m->body_text);
	json_str(m->body_text);
	fputs(",\n\"body_html\":", stdout);
	check_str("body_html", m->body_html);
	json_str(m->body_html);
	fputs(",\n\"attachments\":[", stdout);
	for (i = 0; i < m->attachment_count; i++)
	{
		const mp_attachment *a = &m->attachments[i];
		char		hex[65];
		const char *p;

		check_str("part_id", a->part_id);
		check_str("filename", a->filename);
		check_str("mime_type", a->mime_type);
		check_str("content_id", a->content_id);
		if (a->part_id == NULL || a->filename == NULL || a->mime_type == NULL)
			violation("attachment with NULL part_id/filename/mime_type", NULL);
		if (a->filename != NULL)
		{
			if (a->filename[0] == '\0' || strcmp(a->filename, ".") == 0 ||
				strcmp(a->filename, "..") == 0)
				violation("bad filename", a->filename);
			for (p = a->filename; *p; p++)
				if (*p == '/' || *p == '\\' || (unsigned char) *p < 0x20 || *p == 0x7F)
					violation("bad filename character", a->filename);
		}
		if (a->size > 0 && a->data == NULL)
			violation("size without data", a->part_id);
		sha256_hex(a->data, a->size, hex);
		if (strcmp(hex, a->sha256_hex) != 0)
			violation("sha256 mismatch", a->part_id);
		if (i)
			putchar(',');
		fputs("\n{\"part_id\":", stdout);
		json_str(a->part_id);
		fputs(",\"filename\":", stdout);
		json_str(a->filename);
		printf(",\"filename_derived\":%s", a->filename_derived ? "true" : "false");
		fputs(",\"mime_type\":", stdout);
		json_str(a->mime_type);
		fputs(",\"content_id\":", stdout);
		json_str(a->content_id);
		printf(",\"is_inline\":%s,\"size\":%zu,\"sha256\":\"%s\"",
			   a->is_inline ? "true" : "false", a->size, a->sha256_hex);
		if (with_data)
		{
			fputs(",\"data_b64\":", stdout);
			json_b64(a->data, a->size);
		}
		putchar('}');
	}
	fputs("],\n\"parse_error\":", stdout);
	check_str("parse_error", m->parse_error);
	json_str(m->parse_error);
	fputs("}\n", stdout);
}

static unsigned char *
read_all(const char *path, size_t *len)
{
	FILE	   *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	unsigned char *buf = NULL;
	size_t		cap = 0,
				n = 0;

	if (f == NULL)
	{
		perror(path);
		exit(2);
	}
	for (;;)
	{
		size_t		r;

		if (n == cap)
		{
			cap = cap ? cap * 2 : 65536;
			buf = realloc(buf, cap);
			if (buf == NULL)
			{
				fputs("out of memory\n", stderr);
				exit(2);
			}
		}
		r = fread(buf + n, 1, cap - n, f);
		if (r == 0)
			break;
		n += r;
	}
	if (f != stdin)
		fclose(f);
	*len = n;
	return buf;
}

static double
process_cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * --parse-cpu N FILE...: mean CPU seconds of one pass over every file.  All
 * files are read first; then N + 1 passes parse each file once in turn, the
 * first pass (warming the code, the allocator and the page tables) not
 * counted.  Each parse meets a message the caches have not just seen, as
 * in a sync, rather than the same message parsed again and again.
 */
static int
parse_cpu(int reps, int nfiles, char **files)
{
	unsigned char **raw = calloc(nfiles, sizeof(*raw));
	size_t	   *len = calloc(nfiles, sizeof(*len));
	double		spent = 0;
	int			f,
				i;

	if (raw == NULL || len == NULL)
	{
		fputs("out of memory\n", stderr);
		return 2;
	}
	for (f = 0; f < nfiles; f++)
		raw[f] = read_all(files[f], &len[f]);
	mp_init();
	for (i = 0; i <= reps; i++)
	{
		double		t0 = process_cpu_s();

		for (f = 0; f < nfiles; f++)
		{
			mp_message m;

			if (!mp_parse(raw[f], len[f], &m))
			{
				fputs("mp_parse: out of memory\n", stderr);
				return 4;
			}
			mp_message_free(&m);
		}
		if (i > 0)
			spent += process_cpu_s() - t0;
	}
	for (f = 0; f < nfiles; f++)
		free(raw[f]);
	free(raw);
	free(len);
	printf("%.6f\n", spent / reps);
	return 0;
}

int
main(int argc, char **argv)
{
	const char *path = NULL;
	int			repeat = 1;
	int			check = 1;
	int			with_data = 0;
	int			i;
	unsigned char *raw;
	size_t		len;

	if (argc >= 4 && strcmp(argv[1], "--parse-cpu") == 0 && atoi(argv[2]) >= 1)
		return parse_cpu(atoi(argv[2]), argc - 3, argv + 3);
	for (i = 1; i < argc; i++)
	{
		if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc)
			repeat = atoi(argv[++i]);
		else if (strcmp(argv[i], "--no-check") == 0)
			check = 0;
		else if (strcmp(argv[i], "--data") == 0)
			with_data = 1;
		else
			path = argv[i];
	}
	if (path == NULL || repeat < 1)
	{
		fputs("usage: mime_driver [--no-check] [--repeat N] [--data] FILE|-\n"
			  "       mime_driver --parse-cpu N FILE...\n", stderr);
		return 2;
	}
	raw = read_all(path, &len);

	/*
	 * mp_init() re-registers the message/rfc822 family as leaf parts, and
	 * GMime drops (once per process) the buckets g_mime_init() had made for
	 * them.  Tell LeakSanitizer so; valgrind.supp says the same.
	 */
#if defined(__SANITIZE_ADDRESS__)
	__lsan_disable();
#endif
	mp_init();
#if defined(__SANITIZE_ADDRESS__)
	__lsan_enable();
#endif
	for (i = 0; i < repeat; i++)
	{
		mp_message m;

		if (!mp_parse(raw, len, &m))
		{
			fputs("mp_parse: out of memory\n", stderr);
			free(raw);
			return 4;
		}
		if (i == repeat - 1)
			print_message(&m, with_data);
		mp_message_free(&m);
	}
	free(raw);
	if (check && violations)
		return 3;
	return 0;
}
