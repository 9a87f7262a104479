#!/usr/bin/env python3
"""Write deterministic mutants of the crafted cases for a crash/leak smoke
test (no expectations: the driver must exit 0 with its invariants held).

  gen_fuzz.py CASES_DIR OUT_DIR [PER_CASE]
"""
import os
import random
import sys

TOKENS = [b'\r\n', b'\n', b'\r\n\r\n', b'--', b'--B\r\n', b'--B--\r\n', b'=?', b'?=',
          b'=?utf-8?B?', b'=?iso-2022-jp?B?GyRC', b'Content-Type: multipart/mixed; boundary="B"\r\n',
          b'Content-Transfer-Encoding: base64\r\n', b'Content-Transfer-Encoding: quoted-printable\r\n',
          b'Content-Transfer-Encoding: x-uuencode\r\nbegin 644 x\r\n', b'charset=utf-16',
          b'filename*0*=utf-8\'\'%E6', b'\x00', b'\xff\xfe', b'\xe2\x82', b':', b';', b'"', b'<', b'>',
          b'=', b'%', b'\\', b' ', b'\t', b'Content-Type: message/rfc822\r\n\r\n']


def mutate(data, rnd):
    data = bytearray(data)
    for _ in range(rnd.randint(1, 8)):
        op = rnd.randrange(6)
        pos = rnd.randrange(len(data) + 1)
        if op == 0 and data:                      # flip a byte
            data[min(pos, len(data) - 1)] = rnd.randrange(256)
        elif op == 1:                             # insert a token
            data[pos:pos] = rnd.choice(TOKENS)
        elif op == 2 and data:                    # delete a span
            del data[pos:pos + rnd.randint(1, 64)]
        elif op == 3 and data:                    # duplicate a span
            span = data[pos:pos + rnd.randint(1, 256)]
            data[pos:pos] = span * rnd.randint(1, 4)
        elif op == 4:                             # truncate
            del data[pos:]
        else:                                     # swap two spans
            a, b = sorted(rnd.randrange(len(data) + 1) for _ in range(2))
            data[a:b] = data[a:b][::-1]
    return bytes(data)


def main():
    src, out = sys.argv[1], sys.argv[2]
    per = int(sys.argv[3]) if len(sys.argv) > 3 else 6
    os.makedirs(out, exist_ok=True)
    rnd = random.Random(1234)
    for name in sorted(os.listdir(src)):
        if not name.endswith('.eml'):
            continue
        data = open(os.path.join(src, name), 'rb').read()
        for i in range(per):
            with open(os.path.join(out, '%s.%d.eml' % (name[:-4], i)), 'wb') as f:
                f.write(mutate(data, rnd))


if __name__ == '__main__':
    main()
