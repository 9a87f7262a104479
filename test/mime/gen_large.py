#!/usr/bin/env python3
"""Generate the big MIME test cases (not committed) into DIR, each NAME.eml
with a NAME.expect beside it (see check_expect.py).

  gen_large.py DIR
"""
import base64
import hashlib
import os
import random
import sys

HDR = ('From: Alice <alice@example.com>\r\nTo: bob@example.com\r\n'
       'Date: Mon, 2 Jan 2023 10:00:00 +0000\r\nMessage-ID: <big@example.com>\r\n'
       'MIME-Version: 1.0\r\n')


def b64_lines(data):
    enc = base64.b64encode(data)
    return b'\r\n'.join(enc[i:i + 76] for i in range(0, len(enc), 76))


def write(d, name, data, expect):
    with open(os.path.join(d, name + '.eml'), 'wb') as f:
        f.write(data)
    with open(os.path.join(d, name + '.expect'), 'w', encoding='utf-8') as f:
        f.write(expect)


def nested(levels):
    out = [HDR + 'Subject: nested %d\r\n' % levels]
    for i in range(levels):
        out.append('Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i))
    out.append('Content-Type: text/plain\r\n\r\ndeep body\r\n')
    for i in reversed(range(levels)):
        out.append('--b%d--\r\n' % i)
    return ''.join(out).encode()


def main():
    d = sys.argv[1]
    os.makedirs(d, exist_ok=True)
    rnd = random.Random(20240101)

    # 1,000 nested multiparts: the walk stops at 64 levels and says so; the
    # text below is still found (without recursion) and the multipart at
    # level 64 is one attachment of its exact bytes
    write(d, 'deep_nesting_1000', nested(1000),
          'subject=nested 1000\nbody_text=deep body\nattachments=1\n'
          'attachments.0.mime_type=multipart/mixed\nparse_error~=nesting\n')
    # deeper than GMime's own limit (1024): GMime keeps what lies below it
    # as the unparsed prologue of the 1024th multipart, so there is no text,
    # but the attachment still holds every byte down there
    write(d, 'deep_nesting_5000', nested(5000),
          'subject=nested 5000\nbody_text=null\nattachments=1\n'
          'attachments.0.size=347577\nparse_error~=nesting\n')
    # a shallow one under the limit still finds its body
    write(d, 'deep_nesting_60', nested(60),
          'body_text=deep body\nparse_error=null\nattachments=0\n')

    # a 25 MB attachment (base64) next to a small body
    blob = rnd.randbytes(25 * 1024 * 1024)
    msg = (HDR + 'Subject: big attachment\r\n'
           'Content-Type: multipart/mixed; boundary="BIG"\r\n\r\n'
           '--BIG\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n'
           '--BIG\r\nContent-Type: application/octet-stream; name="big.bin"\r\n'
           'Content-Transfer-Encoding: base64\r\n\r\n').encode() + b64_lines(blob) + b'\r\n--BIG--\r\n'
    write(d, 'big_attachment_25mb', msg,
          'body_text=see attached\nattachments=1\nattachments.0.filename=big.bin\n'
          'attachments.0.size=%d\nattachments.0.sha256=%s\nparse_error=null\n'
          % (len(blob), hashlib.sha256(blob).hexdigest()))

    # a 20 MB windows-1252 text body (charset conversion speed)
    text = bytes(rnd.choice(b'abcdefghij \xe9\xe8\x80\x93\x94') for _ in range(1024)) * (20 * 1024)
    msg = (HDR + 'Subject: big text\r\nContent-Type: text/plain; charset=windows-1252\r\n'
           'Content-Transfer-Encoding: 8bit\r\n\r\n').encode() + text
    write(d, 'big_text_cp1252', msg,
          'body_text~=\u20ac\nbody_text!~=\ufffd\nparse_error=null\n')

    # 5,000 sibling parts and 20,000 headers (5,000 of them To:)
    parts = [HDR + 'Subject: many parts\r\nContent-Type: multipart/mixed; boundary="P"\r\n\r\n']
    parts.append('--P\r\nContent-Type: text/plain\r\n\r\nfirst\r\n')
    for i in range(4999):
        parts.append('--P\r\nContent-Type: application/octet-stream; name="f%d.bin"\r\n\r\n%d\r\n' % (i, i))
    parts.append('--P--\r\n')
    write(d, 'many_parts', ''.join(parts).encode(),
          'body_text=first\nattachments=4999\nattachments.4998.part_id=5000\n'
          'attachments.4998.filename=f4998.bin\n')
    hdrs = [HDR]
    for i in range(15000):
        hdrs.append('X-Filler-%d: value %d\r\n' % (i, i))
    for i in range(5000):
        hdrs.append('To: user%d@example.com\r\n' % i)
    hdrs.append('Subject: many headers\r\n\r\nbody\r\n')
    write(d, 'many_headers', ''.join(hdrs).encode(),
          'headers=20006\nto.items=5001\nto.items.5000.address=user4999@example.com\n'
          'subject=many headers\n')

    # a 600 KB folded subject made of 20,000 encoded words
    subj = '\r\n '.join('=?utf-8?B?%s?=' % base64.b64encode(('wörd %d ' % i).encode()).decode()
                        for i in range(20000))
    msg = (HDR + 'Subject: ' + subj + '\r\n\r\nbody\r\n').encode()
    write(d, 'huge_subject', msg,
          'subject~=wörd 0 wörd 1 \nsubject~=wörd 19999\nbody_text=body\\r\\n\n')

    # 37 MB of headers: a 30 MB line and 500,000 encoded words (too slow for
    # valgrind, which copies on every realloc of GMime's header buffer)
    msg = (b'From: a@example.com\r\nSubject: ' + b'x' * 30000000 + b'\r\nX-Long: ' +
           b' '.join(b'=?utf-8?Q?a?=' for _ in range(500000)) + b'\r\n\r\nbody\r\n')
    write(d, 'native_huge_header', msg, 'subject#=30000000\nhdr.X-Long#=500000\nbody_text=body\\r\\n\n')

    # a long binary blob with no structure at all
    write(d, 'random_binary', rnd.randbytes(3 * 1024 * 1024), '')


if __name__ == '__main__':
    main()
