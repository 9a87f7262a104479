#!/usr/bin/env python3
"""Check a mime_driver JSON record against a .expect file.

Each non-blank, non-# line is PATH OP VALUE:
  PATH   dotted path into the record: subject, from.items.0.address,
         attachments.1.filename ...; hdr.NAME is the first header named NAME
         (case-insensitive); hdr.NAME.2 the third one.
  OP     =    equal.  VALUE null / set (not null); a list compares its
              length; true/false; numbers; otherwise the exact string
         !=   not equal (same rules)
         ~=   the string contains VALUE
         !~=  the string is null or does not contain VALUE
         #=   the string (or list) has VALUE characters (items)
  VALUE  may use \\n \\r \\t \\\\ \\uXXXX escapes.
Prints one line per failed expectation; exit status 1 if any failed.
"""
import json
import re
import sys

LINE = re.compile(r'^([A-Za-z0-9_.\-]+?)(!~=|~=|#=|!=|=)(.*)$')
ESC = re.compile(r'\\(n|r|t|\\|u[0-9a-fA-F]{4})')


def unescape(s):
    def rep(m):
        c = m.group(1)
        return {'n': '\n', 'r': '\r', 't': '\t', '\\': '\\'}.get(c) or chr(int(c[1:], 16))
    return ESC.sub(rep, s)


MISSING = object()


def lookup(rec, path):
    parts = path.split('.')
    if parts[0] == 'hdr' and len(parts) >= 2:
        name = parts[1].lower()
        nth = int(parts[2]) if len(parts) > 2 else 0
        vals = [v for n, v in rec['headers'] if n.lower() == name]
        return vals[nth] if nth < len(vals) else MISSING
    cur = rec
    for p in parts:
        if isinstance(cur, list):
            if not p.isdigit() or int(p) >= len(cur):
                return MISSING
            cur = cur[int(p)]
        elif isinstance(cur, dict):
            if p not in cur:
                return MISSING
            cur = cur[p]
        else:
            return MISSING
    return cur


def equal(actual, value):
    if value == 'null':
        return actual is None
    if value == 'set':
        return actual is not None
    if isinstance(actual, bool):
        return value == ('true' if actual else 'false')
    if isinstance(actual, list):
        return value.isdigit() and len(actual) == int(value)
    if isinstance(actual, int):
        return value.lstrip('-').isdigit() and actual == int(value)
    return actual == value


def main():
    rec = json.load(open(sys.argv[1], encoding='utf-8'))
    failed = 0
    for n, line in enumerate(open(sys.argv[2], encoding='utf-8'), 1):
        line = line.rstrip('\n')
        if not line.strip() or line.lstrip().startswith('#'):
            continue
        m = LINE.match(line)
        if not m:
            print('  %s:%d: cannot read expectation: %s' % (sys.argv[2], n, line))
            failed += 1
            continue
        path, op, value = m.group(1), m.group(2), unescape(m.group(3))
        actual = lookup(rec, path)
        if actual is MISSING:
            ok = False
        elif op == '=':
            ok = equal(actual, value)
        elif op == '!=':
            ok = not equal(actual, value)
        elif op == '~=':
            ok = isinstance(actual, str) and value in actual
        elif op == '!~=':
            ok = actual is None or (isinstance(actual, str) and value not in actual)
        else:
            ok = isinstance(actual, (str, list)) and value.isdigit() and len(actual) == int(value)
        if not ok:
            shown = '<missing>' if actual is MISSING else json.dumps(actual, ensure_ascii=False)
            if len(shown) > 200:
                shown = shown[:200] + '...'
            print('  %s:%d: %s%s%s  (got %s)' % (sys.argv[2].split('/')[-1], n, path, op,
                                                m.group(3), shown))
            failed += 1
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
