/*-------------------------------------------------------------------------
 * json_tree.c
 *	  Builds a JsonNode tree from text with common/jsonapi.h.
 *
 * Owns what an answer from the network may do to the backend while it is
 * read: how deep it nests, how much memory its values take, and the
 * encoding of every string taken from it.
 *
 * Layout: nodes are 24 bytes, kept by value in exact-size arrays carved from
 * a per-parse arena, so a value costs no palloc chunk header.  While a
 * container is open its children wait on one shared stack; when it closes
 * they are copied into an array of their own.  Strings are copied into the
 * arena too, except large ones, which keep the lexer's own chunk.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/memutils.h"

#include "json_tree.h"
#include "utf8_text.h"

/* The node's str is a palloc chunk of its own (json_drop_str frees it). */
#define JF_OWN_CHUNK	0x01

#define ARENA_BLOCK		(64 * 1024)
/* Above this, an allocation (string or array) gets a chunk of its own. */
#define ARENA_LARGE		(ARENA_BLOCK / 8)

/*
 * The tree may take at most this many bytes per byte of answer, plus
 * TREE_ALLOWANCE.  Gmail's answers are list pages of at most 500 items,
 * well under a megabyte, and even without Gmail's indentation their values
 * are ids, labels and snippets of several bytes each: under three bytes of
 * tree per byte of text, counting the stack.  A hostile answer of "[]," or
 * "0," values would need over ten.
 */
#define TREE_BYTES_PER_BYTE	3
#define TREE_ALLOWANCE		(1024 * 1024)

/* A value whose parent is still open. */
typedef struct Pending
{
	JsonNode	node;
	const char *key;			/* member name, NULL in arrays */
} Pending;

typedef struct BuildState
{
	const JsonReadSpec *spec;
	MemoryContext cxt;

	Pending    *stack;			/* children of the open containers, in order */
	size_t		stack_len;
	size_t		stack_cap;
	size_t		open[JSON_TREE_MAX_DEPTH + 1];	/* where each open container's
												 * children start */
	int			depth;			/* open containers being built */
	int			skip;			/* open containers of a skipped value */
	bool		skip_value;		/* the next value belongs to an unread member */
	const char *key;			/* member name of the next value */
	bool		key_exact;		/* ... which must arrive valid as is */

	char	   *arena;			/* free space of the current block */
	size_t		arena_left;
	size_t		used;			/* bytes taken: blocks, own chunks, stack */
	size_t		budget;
	size_t		text_len;

	char	   *error;			/* set: the answer is refused */
} BuildState;

static void
fail(BuildState *st, char *error)
{
	if (st->error == NULL)
		st->error = error;
}

static bool
charge(BuildState *st, size_t bytes)
{
	st->used += bytes;
	if (st->used > st->budget)
	{
		fail(st, psprintf("JSON values too dense: over %zu bytes of memory for %zu bytes of text",
						  st->budget, st->text_len));
		return false;
	}
	return true;
}

/* size bytes from the arena, aligned for nodes when asked; NULL past the budget. */
static void *
arena_alloc(BuildState *st, size_t size, bool align, bool *own)
{
	size_t		pad;
	char	   *p;

	*own = false;
	if (size > ARENA_LARGE)
	{
		if (!charge(st, size))
			return NULL;
		*own = true;
		return MemoryContextAllocHuge(st->cxt, size);
	}
	pad = align ? (MAXIMUM_ALIGNOF - ((uintptr_t) st->arena % MAXIMUM_ALIGNOF)) % MAXIMUM_ALIGNOF : 0;
	if (st->arena == NULL || pad + size > st->arena_left)
	{
		if (!charge(st, ARENA_BLOCK))
			return NULL;
		st->arena = MemoryContextAlloc(st->cxt, ARENA_BLOCK);
		st->arena_left = ARENA_BLOCK;
		pad = 0;
	}
	p = st->arena + pad;
	st->arena += pad + size;
	st->arena_left -= pad + size;
	return p;
}

/* Append a value to its parent's pending children (or as the root). */
static bool
add_pending(BuildState *st, JsonNode *node)
{
	if (st->stack_len == st->stack_cap)
	{
		size_t		ncap = st->stack_cap ? st->stack_cap * 2 : 256;

		if (!charge(st, (ncap - st->stack_cap) * sizeof(Pending)))
			return false;
		st->stack = st->stack
			? repalloc_huge(st->stack, ncap * sizeof(Pending))
			: MemoryContextAllocHuge(st->cxt, ncap * sizeof(Pending));
		st->stack_cap = ncap;
	}
	st->stack[st->stack_len].node = *node;
	st->stack[st->stack_len].key = st->key;
	st->stack_len++;
	st->key = NULL;
	st->key_exact = false;
	return true;
}

/*
 * A value starts: false when it is not built (skipped, or the answer is
 * already refused).
 */
static bool
value_wanted(BuildState *st)
{
	if (st->error != NULL || st->skip > 0)
		return false;
	if (st->skip_value)
	{
		st->skip_value = false;
		return false;
	}
	return true;
}

static void
on_struct_start(BuildState *st, JsonKind kind)
{
	JsonNode	node;

	if (!value_wanted(st))
	{
		st->skip++;
		return;
	}
	/* Not reached: json_parse_members() refuses deeper text first. */
	if (st->depth >= JSON_TREE_MAX_DEPTH)
	{
		fail(st, psprintf("JSON nested deeper than %d levels", JSON_TREE_MAX_DEPTH));
		st->skip++;
		return;
	}
	memset(&node, 0, sizeof(node));
	node.kind = kind;
	if (!add_pending(st, &node))
	{
		st->skip++;
		return;
	}
	st->open[st->depth++] = st->stack_len;
}

static void
on_object_start(void *state)
{
	on_struct_start((BuildState *) state, JK_OBJECT);
}

static void
on_array_start(void *state)
{
	on_struct_start((BuildState *) state, JK_ARRAY);
}

/*
 * A container ends: its children move from the stack to an array of their
 * own.  Every start was either built (depth) or skipped (skip), and each
 * end undoes the same one, so members after a skipped or refused value
 * never land in the wrong parent.
 */
static void
on_struct_end(void *state)
{
	BuildState *st = (BuildState *) state;
	size_t		start;
	size_t		n;
	Pending    *self;
	size_t		i;
	bool		own;

	if (st->skip > 0)
	{
		st->skip--;
		return;
	}
	if (st->depth == 0)
		return;					/* not reached */
	start = st->open[--st->depth];
	n = st->stack_len - start;
	self = &st->stack[start - 1];
	if (n > 0 && st->error == NULL)
	{
		size_t		size = n * sizeof(JsonNode) +
			(self->node.kind == JK_OBJECT ? n * sizeof(const char *) : 0);
		JsonNode   *items = arena_alloc(st, size, true, &own);

		if (items != NULL)
		{
			for (i = 0; i < n; i++)
				items[i] = st->stack[start + i].node;
			if (self->node.kind == JK_OBJECT)
			{
				const char **keys = (const char **) (items + n);

				for (i = 0; i < n; i++)
					keys[i] = st->stack[start + i].key;
			}
			self->node.items = items;
			self->node.n = (int32) n;
		}
	}
	st->stack_len = start;
}

/*
 * Copy a token (palloc'd by the lexer, ours to keep or free) into the tree
 * as valid UTF-8.  NULL when refused.
 */
static char *
keep_text(BuildState *st, char *token, bool exact, const char *what, uint8 *flags)
{
	size_t		len = strlen(token);
	size_t		outlen = len;
	bool		valid = utf8_text_valid(token, len);
	char	   *out;
	bool		own;

	/*
	 * An id must arrive as it is: a repaired one (including an escaped NUL
	 * or lone surrogate, already U+FFFD) would not be Gmail's any more.
	 */
	if (exact && (!valid || strstr(token, "\xEF\xBF\xBD") != NULL))
	{
		fail(st, psprintf("member \"%s\" is not valid UTF-8", what));
		pfree(token);
		return NULL;
	}
	if (!valid)
		outlen = utf8_text_repaired_len(token, len);
	if (valid && len + 1 > ARENA_LARGE)
	{
		/* Large and valid: keep the lexer's chunk rather than copy it. */
		if (!charge(st, len + 1))
		{
			pfree(token);
			return NULL;
		}
		*flags |= JF_OWN_CHUNK;
		return token;
	}
	out = arena_alloc(st, outlen + 1, false, &own);
	if (out != NULL)
	{
		if (valid)
			memcpy(out, token, len);
		else
			utf8_text_repair_into(token, len, out);
		out[outlen] = '\0';
		if (own)
			*flags |= JF_OWN_CHUNK;
	}
	pfree(token);
	return out;
}

static void
on_field_start(void *state, char *fname, bool isnull)
{
	BuildState *st = (BuildState *) state;
	const char *const *names = st->spec ? st->spec->names : NULL;
	const char *const *exact = st->spec ? st->spec->exact : NULL;
	uint8		flags = 0;

	if (st->error != NULL || st->skip > 0)
	{
		pfree(fname);
		return;
	}
	if (names == NULL)
	{
		st->key = keep_text(st, fname, false, NULL, &flags);
		return;
	}
	for (; *names != NULL; names++)
		if (strcmp(*names, fname) == 0)
			break;
	pfree(fname);
	if (*names == NULL)
	{
		st->skip_value = true;
		return;
	}
	st->key = *names;
	st->key_exact = false;
	for (; exact != NULL && *exact != NULL; exact++)
		if (strcmp(*exact, st->key) == 0)
			st->key_exact = true;
}

static void
on_scalar(void *state, char *token, JsonTokenType type)
{
	BuildState *st = (BuildState *) state;
	JsonNode	node;

	if (!value_wanted(st))
	{
		pfree(token);
		return;
	}
	memset(&node, 0, sizeof(node));
	switch (type)
	{
		case JSON_TOKEN_STRING:
			node.kind = JK_STRING;
			break;
		case JSON_TOKEN_NUMBER:
			node.kind = JK_NUMBER;
			break;
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
			node.kind = JK_BOOL;
			break;
		default:
			node.kind = JK_NULL;
			break;
	}
	node.str = keep_text(st, token, st->key_exact, st->key, &node.flags);
	if (node.str != NULL)
		add_pending(st, &node);
}

/*
 * One pass over the text before pg_parse_json sees it.
 *
 * pg_parse_json recurses once per nesting level, and a deep enough answer
 * ends in "stack depth limit exceeded": an ERROR that is no remote failure,
 * so the run would leave no failure record and abort the caller.  Nesting
 * deeper than JSON_TREE_MAX_DEPTH is refused here instead.
 *
 * PostgreSQL's lexer refuses \u0000 (no text value may hold NUL) and lone
 * UTF-16 surrogates, so one message with either in its snippet would make a
 * whole list answer unreadable, on every run.  Text columns get U+FFFD for
 * both anyway: each such escape is rewritten in place to \ufffd, of the
 * same length.
 *
 * Strings are tracked as the lexer tracks them; past a point where the
 * lexer fails, what this scan does no longer matters.
 */
static int
hex4(const char *p)
{
	int			v = 0;
	int			i;

	for (i = 0; i < 4; i++)
	{
		char		c = p[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	return v;
}

static bool
prescan(char *text, int len)
{
	char	   *p = text;
	char	   *end = text + len;
	int			depth = 0;

	while (p < end)
	{
		char		c = *p++;

		if (c == '"')
		{
			for (;;)
			{
				int			cp;

				while (p < end && *p != '"' && *p != '\\')
					p++;
				if (p >= end)
					return true;
				if (*p++ == '"')
					break;
				/* p is past a backslash: at the escaped character */
				if (p >= end)
					return true;
				if (*p != 'u' || end - p < 5 || (cp = hex4(p + 1)) < 0)
				{
					p++;
					continue;
				}
				if (cp >= 0xD800 && cp <= 0xDBFF && end - p >= 11 && p[5] == '\\' &&
					p[6] == 'u' && hex4(p + 7) >= 0xDC00 && hex4(p + 7) <= 0xDFFF)
				{
					p += 11;	/* a well-formed pair */
					continue;
				}
				if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF))
					memcpy(p + 1, "fffd", 4);
				p += 5;
			}
		}
		else if (c == '{' || c == '[')
		{
			if (++depth > JSON_TREE_MAX_DEPTH)
				return false;
		}
		else if (c == '}' || c == ']')
			depth--;
	}
	return true;
}

JsonNode *
json_parse_members(char *text, int len, const JsonReadSpec *spec, char **error)
{
	BuildState	st;
	JsonSemAction sem;
	JsonLexContext *lex;
	JsonParseErrorType rc;
	MemoryContext old;
	JsonNode   *root = NULL;

	*error = NULL;
	if (!prescan(text, len))
	{
		*error = psprintf("JSON nested deeper than %d levels", JSON_TREE_MAX_DEPTH);
		return NULL;
	}

	memset(&st, 0, sizeof(st));
	st.spec = spec;
	st.text_len = len;
	st.budget = (size_t) len * TREE_BYTES_PER_BYTE + TREE_ALLOWANCE;
	/* Everything of the parse, the lexer's too, so a refusal frees it all. */
	st.cxt = AllocSetContextCreate(CurrentMemoryContext, "json tree", ALLOCSET_SMALL_SIZES);
	memset(&sem, 0, sizeof(sem));
	sem.semstate = &st;
	sem.object_start = on_object_start;
	sem.object_end = on_struct_end;
	sem.array_start = on_array_start;
	sem.array_end = on_struct_end;
	sem.object_field_start = on_field_start;
	sem.scalar = on_scalar;

	old = MemoryContextSwitchTo(st.cxt);
	lex = makeJsonLexContextCstringLen(text, len, PG_UTF8, true);
	rc = pg_parse_json(lex, &sem);
	MemoryContextSwitchTo(old);

	if (rc != JSON_SUCCESS)
	{
		/* The lexer quotes the offending token, raw bytes and all. */
		char	   *detail = json_errdetail(rc, lex);
		size_t		dlen = strlen(detail);

		*error = palloc(utf8_text_repaired_len(detail, dlen) + 1);
		(*error)[utf8_text_repair_into(detail, dlen, *error)] = '\0';
	}
	else if (st.error != NULL)
		*error = pstrdup(st.error);
	else if (st.stack_len == 1)
	{
		root = MemoryContextAlloc(st.cxt, sizeof(JsonNode));
		*root = st.stack[0].node;
	}
	else
		*error = pstrdup("no JSON value");	/* not reached */

	if (root == NULL)
	{
		MemoryContextDelete(st.cxt);
		return NULL;
	}
	/* Keep the tree only: the stack and the lexer's buffers go now. */
	if (st.stack)
		pfree(st.stack);
	if (lex->strval)
	{
		pfree(lex->strval->data);
		pfree(lex->strval);
	}
	pfree(lex);
	return root;
}

JsonNode *
json_parse_text(char *text, int len, char **error)
{
	return json_parse_members(text, len, NULL, error);
}

void
json_drop_str(JsonNode *node)
{
	if (node == NULL || node->kind == JK_ARRAY || node->kind == JK_OBJECT)
		return;
	if (node->str != NULL && (node->flags & JF_OWN_CHUNK))
		pfree(node->str);
	node->str = NULL;
	node->flags &= ~JF_OWN_CHUNK;
}

JsonNode *
json_get(JsonNode *obj, const char *key)
{
	const char **keys;
	int			i;

	if (obj == NULL || obj->kind != JK_OBJECT)
		return NULL;
	keys = (const char **) (obj->items + obj->n);
	for (i = 0; i < obj->n; i++)
		if (keys[i] && strcmp(keys[i], key) == 0)
			return &obj->items[i];
	return NULL;
}

const char *
json_get_str(JsonNode *obj, const char *key)
{
	JsonNode   *v = json_get(obj, key);

	if (v == NULL || (v->kind != JK_STRING && v->kind != JK_NUMBER))
		return NULL;
	return v->str;
}

/* Gmail sends 64-bit numbers as strings; accept both spellings. */
bool
json_get_int64(JsonNode *obj, const char *key, int64 *out)
{
	const char *s = json_get_str(obj, key);
	char	   *end;
	long long	v;

	if (s == NULL || *s == '\0')
		return false;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return false;
	*out = (int64) v;
	return true;
}

int
json_len(JsonNode *arr)
{
	return (arr && arr->kind == JK_ARRAY) ? arr->n : 0;
}

JsonNode *
json_at(JsonNode *arr, int i)
{
	return (arr && arr->kind == JK_ARRAY && i >= 0 && i < arr->n) ? &arr->items[i] : NULL;
}
