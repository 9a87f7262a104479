/*-------------------------------------------------------------------------
 * mime_base64.c
 *	  The MIME parser's lenient base64 decoder: for base64 bodies and
 *	  attachments (GMime 3.2.13's decoder stops at the first padding,
 *	  upstream #150), and for the B encoded words that mime_headers.c
 *	  rewrites as Q words.
 *-------------------------------------------------------------------------
 */
#include "mime_internal.h"

/* base64: rank + 1 of each alphabet character, 0 for anything else */
const unsigned char mp_b64_rank[256] = {
	['A'] = 1,['B'] = 2,['C'] = 3,['D'] = 4,['E'] = 5,['F'] = 6,['G'] = 7,['H'] = 8,
	['I'] = 9,['J'] = 10,['K'] = 11,['L'] = 12,['M'] = 13,['N'] = 14,['O'] = 15,['P'] = 16,
	['Q'] = 17,['R'] = 18,['S'] = 19,['T'] = 20,['U'] = 21,['V'] = 22,['W'] = 23,['X'] = 24,
	['Y'] = 25,['Z'] = 26,
	['a'] = 27,['b'] = 28,['c'] = 29,['d'] = 30,['e'] = 31,['f'] = 32,['g'] = 33,['h'] = 34,
	['i'] = 35,['j'] = 36,['k'] = 37,['l'] = 38,['m'] = 39,['n'] = 40,['o'] = 41,['p'] = 42,
	['q'] = 43,['r'] = 44,['s'] = 45,['t'] = 46,['u'] = 47,['v'] = 48,['w'] = 49,['x'] = 50,
	['y'] = 51,['z'] = 52,
	['0'] = 53,['1'] = 54,['2'] = 55,['3'] = 56,['4'] = 57,['5'] = 58,['6'] = 59,['7'] = 60,
	['8'] = 61,['9'] = 62,['+'] = 63,['/'] = 64
};

/* Writes at most len * 3 / 4 + 3 bytes. */
size_t
mp_b64_step(b64_state *st, const unsigned char *in, size_t len, unsigned char *out)
{
	/* locals, so that stores through out cannot alias the state */
	unsigned int acc = st->acc;
	int			n = st->n;
	bool		bad = st->bad;
	unsigned char *o = out;
	const unsigned char *end = in + len;

	while (in < end)
	{
		unsigned char c;
		unsigned char r;

		/*
		 * The common case, four alphabet characters at a quantum's start
		 * (most of a line), decoded together behind one well-predicted
		 * branch; anything else takes the character-by-character path.
		 */
		while (n == 0 && end - in >= 4)
		{
			unsigned int r0 = mp_b64_rank[in[0]],
						r1 = mp_b64_rank[in[1]],
						r2 = mp_b64_rank[in[2]],
						r3 = mp_b64_rank[in[3]];
			unsigned int v;

			if ((r0 == 0) | (r1 == 0) | (r2 == 0) | (r3 == 0))
				break;
			v = ((r0 - 1) << 18) | ((r1 - 1) << 12) | ((r2 - 1) << 6) | (r3 - 1);
			o[0] = (unsigned char) (v >> 16);
			o[1] = (unsigned char) (v >> 8);
			o[2] = (unsigned char) v;
			o += 3;
			in += 4;
		}
		if (in >= end)
			break;
		c = *in++;
		r = mp_b64_rank[c];

		if (r != 0)
		{
			acc = (acc << 6) | (unsigned int) (r - 1);
			if (++n == 4)
			{
				o[0] = (unsigned char) (acc >> 16);
				o[1] = (unsigned char) (acc >> 8);
				o[2] = (unsigned char) acc;
				o += 3;
				acc = 0;
				n = 0;
			}
		}
		else if (c == '=')
		{
			if (n == 2)
				*o++ = (unsigned char) (acc >> 4);
			else if (n == 3)
			{
				o[0] = (unsigned char) (acc >> 10);
				o[1] = (unsigned char) (acc >> 2);
				o += 2;
			}
			else if (n == 1)
				bad = true;
			acc = 0;
			n = 0;
		}
		else if (c != ' ' && c != '\t' && c != '\r' && c != '\n')
			bad = true;
	}
	st->acc = acc;
	st->n = n;
	st->bad = bad;
	return (size_t) (o - out);
}

/* Flush a final quantum that lacks its padding; at most 2 bytes. */
size_t
mp_b64_finish(b64_state *st, unsigned char *out)
{
	static const unsigned char pad = '=';
	size_t		o = 0;

	if (st->n == 1)
		st->bad = true;
	if (st->n > 1)
		o = mp_b64_step(st, &pad, 1, out);
	st->acc = 0;
	st->n = 0;
	return o;
}
