#!/usr/bin/env python3
"""The corpus comparison of test/scripts/content_fidelity.sh (stdlib only).

  content_compare.py generate DIR
      writes the cases made at test time: 1,000 nested multiparts and a
      25 MB attachment.
  content_compare.py load DOUBLE_URL EMAIL MANIFEST FILE...
      adds each FILE's exact bytes to EMAIL in the Gmail API double and
      writes MANIFEST (JSON: name, path, Gmail id, whether it is malformed).
  content_compare.py compare MANIFEST EXPORT ALLOWLIST [ABSENT]
      EXPORT is what the database stored (JSON, see content_fidelity.sh).
      Every message is read again, independently, by Python's email package
      (policy default) and each decoded field is compared; prints every
      difference, the allowed ones by reason, the figures, and exits 1 on a
      difference the ALLOWLIST does not name or an entry that did not occur
      (ABSENT: comma-separated messages left out, whose entries may not).

Fields compared, per message (a message whose Python reading fails is a
difference of field "python"):

  subject        str(msg['Subject']) (first Subject header)
  headers        every top-level header in order: name as written (case
                 kept) and value read as unstructured text (RFC 2047 decoded)
  from, to, cc, bcc, reply_to
                 for every occurrence of the header, Python's addresses
                 (groups flattened): (display name or null, addr-spec or
                 null) against the addresses jsonb; the lower-cased addr-specs
                 against from_email / to_emails / cc_emails / bcc_emails /
                 reply_to_emails; the display text (each occurrence read as
                 unstructured text, joined by ", ") against from_address,
                 to_addresses, cc_addresses, bcc_addresses, reply_to
  rfc822_message_id, in_reply_to
                 the first <msg-id> of Message-ID / In-Reply-To, brackets off
  sent_at        msg['Date'].datetime (naive = UTC) in epoch seconds; NULL
                 when Python cannot read the date
  body_text      msg.get_body(('plain',)).get_content(), line ends normalised
  body_html      msg.get_body(('html',)).get_content(), line ends normalised
  attachments    the list of MIME sections, then per section: filename,
                 filename_derived, mime_type, size, sha256, is_inline,
                 content_id, and the storage path's {sha256}/{filename}.
                 Python walks the parts applying OUR attachment rules (those
                 of src/mime_parse.c: find_body(), walk(), add_attachment(),
                 clean_filename(), ext_for_type()) to its own reading of each
                 part: get_content_type(), get_filename(),
                 get_content_disposition(), Content-ID, and
                 get_payload(decode=True) for the bytes.  Python parses with
                 a message class that makes message/* parts leaves, as ours
                 are, so that it keeps their exact content.
  parse_error    set exactly for the malformed messages: the crafted cases
                 whose .expect says so, the generated 1,000-level nesting, and
                 the Python and peer corpus messages in which Python
                 finds a structural defect (see STRUCTURAL)

Also checked for every row: the export is valid UTF-8 (strict), no string
holds a NUL, every message was stored.

Normalisations (not differences): line ends (CRLF, CR -> LF) in bodies; in
header text, runs of blanks compare as one space and the ends are trimmed
(unfolding: src/mime_parse.c turns a line break and the blanks after it into
one space, RFC 5322 removes only the line break).
"""
import base64
import datetime
import email
import email.message
import email.policy
import hashlib
import json
import os
import random
import re
import sys
import threading
import time
import urllib.request

POLICY = email.policy.default
MAX_DEPTH = 64                   # MP_MAX_DEPTH of src/mime_parse.c
MAX_FILENAME = 255               # MP_MAX_FILENAME
ADDRESS_FIELDS = [("from", "From", "from_address", "from_email"),
                  ("to", "To", "to_addresses", "to_emails"),
                  ("cc", "Cc", "cc_addresses", "cc_emails"),
                  ("bcc", "Bcc", "bcc_addresses", "bcc_emails"),
                  ("reply_to", "Reply-To", "reply_to", "reply_to_emails")]
# the peer corpora's messages are named <source>__<group>-<name>.eml
PEER_SOURCES = ("mime4j", "mailparser", "mail")
PEER_NAME = re.compile(r'^(%s)__' % '|'.join(PEER_SOURCES))
# Python defects that mean the MIME structure itself is broken
STRUCTURAL = {"NoBoundaryInMultipartDefect", "StartBoundaryNotFoundDefect",
              "CloseBoundaryNotFoundDefect", "FirstHeaderLineIsContinuationDefect",
              "MisplacedEnvelopeHeaderDefect", "MissingHeaderBodySeparatorDefect",
              "MultipartInvariantViolationDefect", "InvalidMultipartContentTransferEncodingDefect",
              "InvalidBase64PaddingDefect", "InvalidBase64CharactersDefect",
              "InvalidBase64LengthDefect"}

# ext_for_type() of src/mime_parse.c
TYPE_EXT = {
    "application/pdf": ".pdf", "application/zip": ".zip", "application/x-zip-compressed": ".zip",
    "application/gzip": ".gz", "application/x-gzip": ".gz", "application/x-tar": ".tar",
    "application/x-7z-compressed": ".7z", "application/x-rar-compressed": ".rar",
    "application/vnd.rar": ".rar", "application/msword": ".doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.ms-excel": ".xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "application/vnd.ms-powerpoint": ".ppt",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "application/vnd.oasis.opendocument.text": ".odt",
    "application/vnd.oasis.opendocument.spreadsheet": ".ods", "application/rtf": ".rtf",
    "application/json": ".json", "application/xml": ".xml", "application/ics": ".ics",
    "application/pgp-signature": ".asc", "application/pgp-encrypted": ".asc",
    "application/pgp-keys": ".asc", "application/pkcs7-signature": ".p7s",
    "application/x-pkcs7-signature": ".p7s", "application/pkcs7-mime": ".p7m",
    "application/x-pkcs7-mime": ".p7m", "application/ms-tnef": ".dat",
    "application/vnd.ms-tnef": ".dat", "application/octet-stream": ".bin",
    "image/png": ".png", "image/jpeg": ".jpg", "image/jpg": ".jpg", "image/pjpeg": ".jpg",
    "image/gif": ".gif", "image/bmp": ".bmp", "image/webp": ".webp", "image/tiff": ".tif",
    "image/svg+xml": ".svg", "image/heic": ".heic", "image/x-icon": ".ico",
    "image/vnd.microsoft.icon": ".ico", "audio/mpeg": ".mp3", "audio/mp4": ".m4a",
    "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/ogg": ".ogg", "video/mp4": ".mp4",
    "video/quicktime": ".mov", "video/mpeg": ".mpg", "text/plain": ".txt",
    "text/html": ".html", "text/csv": ".csv", "text/calendar": ".ics", "text/vcard": ".vcf",
    "text/x-vcard": ".vcf", "text/xml": ".xml", "text/rtf": ".rtf", "text/markdown": ".md",
    "message/rfc822": ".eml", "message/rfc2822": ".eml", "message/global": ".eml",
    "message/news": ".eml", "message/delivery-status": ".txt",
    "message/global-delivery-status": ".txt", "message/disposition-notification": ".txt",
    "message/global-disposition-notification": ".txt", "message/global-headers": ".txt",
    "text/rfc822-headers": ".txt",
}


# ---------------------------------------------------------------- generate

HDR = ('From: Alice <alice@example.com>\r\nTo: bob@example.com\r\n'
       'Date: Mon, 2 Jan 2023 10:00:00 +0000\r\nMIME-Version: 1.0\r\n')


def generate(d):
    os.makedirs(d, exist_ok=True)
    # 1,000 nested multipart/mixed, the text at the bottom
    out = [HDR + 'Message-ID: <nested1000@example.com>\r\nSubject: nested 1000\r\n']
    for i in range(1000):
        out.append('Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i))
    out.append('Content-Type: text/plain\r\n\r\ndeep body\r\n')
    for i in reversed(range(1000)):
        out.append('--b%d--\r\n' % i)
    with open(os.path.join(d, 'gen_nested_1000.eml'), 'wb') as f:
        f.write(''.join(out).encode())
    with open(os.path.join(d, 'gen_nested_1000.expect'), 'w') as f:
        f.write('parse_error~=nesting\n')
    # a 25 MB attachment (base64, 76-column lines) beside a small text
    blob = random.Random(20240101).randbytes(25 * 1024 * 1024)
    enc = base64.encodebytes(blob).replace(b'\n', b'\r\n')
    msg = (HDR + 'Message-ID: <big25@example.com>\r\nSubject: big attachment\r\n'
           'Content-Type: multipart/mixed; boundary="BIG"\r\n\r\n'
           '--BIG\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n'
           '--BIG\r\nContent-Type: application/octet-stream; name="big.bin"\r\n'
           'Content-Disposition: attachment\r\n'
           'Content-Transfer-Encoding: base64\r\n\r\n').encode() + enc + b'--BIG--\r\n'
    with open(os.path.join(d, 'gen_attachment_25mb.eml'), 'wb') as f:
        f.write(msg)
    with open(os.path.join(d, 'gen_attachment_25mb.expect'), 'w') as f:
        f.write('parse_error=null\n')


# ---------------------------------------------------------------- load

def malformed_by_expect(path):
    """True/False when the crafted case's .expect says whether parse_error
    is set, None when it does not say."""
    exp = os.path.splitext(path)[0] + '.expect'
    if not os.path.exists(exp):
        return None
    for line in open(exp, encoding='utf-8'):
        line = line.strip()
        if line.startswith('parse_error=null'):
            return False
        if line.startswith('parse_error~=') or line.startswith('parse_error=set') or \
                (line.startswith('parse_error=') and not line.startswith('parse_error=null')):
            return True
    return None


def load(url, mailbox, manifest_path, files):
    now_ms = int(time.time() * 1000)
    manifest = []
    for k, path in enumerate(files):
        raw = open(path, 'rb').read()
        body = json.dumps({"raw_b64": base64.b64encode(raw).decode(),
                           "labels": ["INBOX"],
                           "internal_date_ms": now_ms - (len(files) - k) * 60_000}).encode()
        req = urllib.request.Request(f"{url}/admin/mailboxes/{mailbox}/messages", data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=300) as r:
            mid = json.load(r)["id"]
        name = os.path.basename(path)
        manifest.append({"name": name, "path": os.path.abspath(path), "id": mid,
                         "expect_malformed": malformed_by_expect(path),
                         "size": len(raw)})
    with open(manifest_path, 'w') as f:
        json.dump(manifest, f, indent=1)


# ---------------------------------------------------------------- Python's reading

WS = re.compile(r'[ \t\r\n]+')


def norm_text(s):
    """Header text: runs of blanks as one space, ends trimmed."""
    return None if s is None else WS.sub(' ', s).strip()


def norm_body(s):
    return None if s is None else s.replace('\r\n', '\n').replace('\r', '\n')


def unstructured(raw_value):
    """A raw header value read by Python as unstructured text (RFC 2047)."""
    value = ''.join(re.split(r'\r\n|\r|\n', raw_value))
    return str(POLICY.header_factory('X-Unstructured', value))


def sanitize(s):
    """Raw 8-bit header bytes, which Python keeps as surrogate escapes in
    parsed parts (display names, addr-specs, parameters), read as UTF-8 with
    U+FFFD, as email.utils._sanitize does for whole header values."""
    if s is None:
        return None
    return s.encode('utf-8', 'surrogateescape').decode('utf-8', 'replace')


def addr_list(msg, hname):
    """(name, addr-spec) of every mailbox in every hname header, or raise."""
    out = []
    for h in msg.get_all(hname) or []:
        for a in h.addresses:
            spec = a.addr_spec
            if spec in ('', '<>'):
                spec = None
            out.append([sanitize(a.display_name) or None, sanitize(spec)])
    return out


def ctype_of(part):
    return part.get_content_type()


def disposition(part):
    try:
        return part.get_content_disposition()
    except Exception:
        return None


def filename_of(part):
    try:
        f = part.get_filename()
    except Exception:
        return None
    if f is None or not str(f).strip():
        return None
    return sanitize(str(f))


def is_explicit_attachment(part):
    return disposition(part) == 'attachment' or filename_of(part) is not None


def content_id(part):
    v = part.get('content-id')
    if v is None:
        return None
    s = str(v).strip()
    if s.startswith('<'):
        s = s[1:]
        if s.endswith('>'):
            s = s[:-1]
    s = s.strip()
    return s or None


def is_python_multipart(part):
    return ctype_of(part).startswith('multipart/')


def children(part):
    """The parts of a multipart as src/mime_parse.c sees them: Python's
    parts, or none when Python kept the payload as text (no boundary)."""
    p = part.get_payload()
    return p if isinstance(p, list) else []


def related_root(part):
    kids = children(part)
    if not kids:
        return None
    start = part.get_param('start')
    if start:
        start = str(start).strip()
        if start.startswith('<') and start.endswith('>'):
            start = start[1:-1]
        for c in kids:
            if content_id(c) == start:
                return c
    return kids[0]


def find_body_flat(top, want_html):
    """find_body_flat() of src/mime_parse.c: below MAX_DEPTH, the first text
    (or HTML) leaf in document order, encrypted parts skipped."""
    stack = [top]
    while stack:
        part = stack.pop()
        if is_python_multipart(part):
            if ctype_of(part) != 'multipart/encrypted':
                stack.extend(reversed(children(part)))
        elif ctype_of(part) == ('text/html' if want_html else 'text/plain') \
                and not is_explicit_attachment(part):
            return part
    return None


def find_body(part, want_html, depth=0):
    """find_body() of src/mime_parse.c, on Python's tree (for the walk)."""
    if part is None:
        return None
    ct = ctype_of(part)
    if is_python_multipart(part):
        if depth >= MAX_DEPTH:
            return find_body_flat(part, want_html)
        kids = children(part)
        if ct == 'multipart/alternative':
            for c in (reversed(kids) if want_html else kids):
                r = find_body(c, want_html, depth + 1)
                if r is not None:
                    return r
            return None
        if ct == 'multipart/related':
            return find_body(related_root(part), want_html, depth + 1)
        if ct == 'multipart/encrypted':
            return None
        if ct == 'multipart/signed':
            return find_body(kids[0], want_html, depth + 1) if kids else None
        for c in kids:
            r = find_body(c, want_html, depth + 1)
            if r is not None:
                return r
        return None
    if ct != ('text/html' if want_html else 'text/plain'):
        return None
    if is_explicit_attachment(part):
        return None
    return part


EXT_RE = re.compile(r'\.[^.]*$')


def clean_filename(raw):
    """clean_filename() of src/mime_parse.c."""
    out = []
    for ch in raw:
        c = ord(ch)
        if c < 0x20 or c == 0x7F or ch in '/\\' or 0x80 <= c < 0xA0:
            out.append('_')
        else:
            out.append(ch)
    u = ''.join(out).strip(' ')
    if not u:
        return None
    if u in ('.', '..'):
        u = '_' * len(u)
    b = u.encode('utf-8', 'surrogateescape')
    if len(b) > MAX_FILENAME:
        dot = b.rfind(b'.')
        ext = b[dot:] if dot >= 0 else b''
        if len(ext) > 16:
            ext = b''
        keep = MAX_FILENAME - len(ext)
        while keep > 0 and (b[keep] & 0xC0) == 0x80:
            keep -= 1
        while keep > 0 and b[keep - 1] == 0x20:
            keep -= 1
        b = b[:keep] + ext
        u = b.decode('utf-8', 'surrogateescape')
    return u


def ext_for_type(t):
    if t in TYPE_EXT:
        return TYPE_EXT[t]
    return '.txt' if t.startswith('text/') else '.bin'


class LeafMessage(email.message.EmailMessage):
    """While Python parses, a message/* part is a leaf, as src/mime_parse.c
    has it (a forwarded message is stored as its bytes, never looked into):
    Python then keeps the part's exact content instead of parsing it."""
    parsing = False

    def get_content_type(self):
        t = super().get_content_type()
        if LeafMessage.parsing and t.startswith('message/'):
            return 'application/x-message-leaf'
        return t


def parse(raw):
    LeafMessage.parsing = True
    try:
        return email.message_from_bytes(raw, _class=LeafMessage, policy=POLICY)
    finally:
        LeafMessage.parsing = False


def part_bytes(part):
    """The transfer-decoded content of a leaf, by Python."""
    data = part.get_payload(decode=True)
    return data if data is not None else b''


def attachment_of(part, path, data=None):
    ct = ctype_of(part)
    f = filename_of(part)
    name = clean_filename(f) if f is not None else None
    derived = name is None
    if derived:
        ext = ext_for_type(ct)
        name = ('message-' if ext == '.eml' else 'attachment-') + path + ext
    cid = content_id(part)
    disp = disposition(part)
    if data is None:
        data = part_bytes(part)
    return {"part_id": path, "filename": name, "filename_derived": derived,
            "mime_type": ct, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "is_inline": (disp == 'inline') if disp else cid is not None,
            "content_id": cid}


RENDERABLE = {'text/plain', 'text/html', 'text/enriched', 'text/richtext'}


def delimiter_lines(seg, boundary):
    """The delimiter lines of boundary in seg (RFC 2046 5.1.1: "--boundary",
    an optional "--", blanks), as (start, end of line without its LF)."""
    pat = re.compile(rb'(?m)^--' + re.escape(boundary.encode('utf-8', 'surrogateescape'))
                     + rb'(?:--)?[ \t\r]*$')
    return [(m.start(), m.end()) for m in pat.finditer(seg)]


def subtree_bytes(raw, chain):
    """The exact bytes of the part reached from the top by chain, a list of
    (boundary, child index): each step keeps the bytes between the child's
    delimiter line and the next one (whose line break belongs to it).  The
    independent counterpart of subtree_bytes() of src/mime_parse.c, which
    starts at the part's first header as GMime found it."""
    m = re.search(rb'\r?\n\r?\n', raw)
    seg = raw[m.end():] if m else b''
    for boundary, idx in chain:
        lines = delimiter_lines(seg, boundary)
        if idx >= len(lines):
            return b''
        s = lines[idx][1]
        if seg[s:s + 1] == b'\n':
            s += 1
        e = lines[idx + 1][0] if idx + 1 < len(lines) else len(seg)
        if idx + 1 < len(lines):
            if e > s and seg[e - 1:e] == b'\n':
                e -= 1
            if e > s and seg[e - 1:e] == b'\r':
                e -= 1
        seg = seg[s:e]
    return seg


def walk(part, path, depth, in_alt, bodies, out, raw=b'', chain=()):
    """walk() of src/mime_parse.c."""
    if is_python_multipart(part):
        if depth >= MAX_DEPTH:
            # the subtree below the cap is one attachment of its exact bytes
            out.append(attachment_of(part, path, subtree_bytes(raw, chain)))
            return
        alt = in_alt or ctype_of(part) == 'multipart/alternative'
        for i, c in enumerate(children(part)):
            walk(c, (path + '.' if path else '') + str(i + 1), depth + 1, alt, bodies, out,
                 raw, chain + ((part.get_boundary(), i),))
        return
    if not path:
        path = '1'
    if any(part is b for b in bodies):
        return
    if in_alt and ctype_of(part) in RENDERABLE and not is_explicit_attachment(part) \
            and content_id(part) is None:
        return
    out.append(attachment_of(part, path))


def body_content(part):
    if part is None:
        return None
    return norm_body(part.get_content())


def structural_defects(msg):
    found = set()
    for part in msg.walk():
        for d in part.defects:
            if type(d).__name__ in STRUCTURAL:
                found.add(type(d).__name__)
    return found


def python_reading(raw):
    """Every compared field as Python reads it; a field whose reading raises
    holds ('error', text)."""
    msg = parse(raw)
    r = {}

    def field(name, fn):
        try:
            r[name] = fn()
        except Exception as e:              # recorded, compared, reported
            r[name] = ("error", "%s: %s" % (type(e).__name__, e))

    field("subject", lambda: norm_text(str(msg['subject'])) if msg['subject'] is not None else None)
    field("headers", lambda: [[n, norm_text(unstructured(v))] for n, v in msg.raw_items()])
    for key, hname, disp_col, _ in ADDRESS_FIELDS:
        field(key, lambda hname=hname: addr_list(msg, hname))

        def display(hname=hname):
            vals = [norm_text(unstructured(v)) for n, v in msg.raw_items() if n.lower() == hname.lower()]
            if not vals:
                return None
            s = vals[0]
            for v in vals[1:]:
                if v:
                    s = s + ', ' + v if s else v
            return s
        field("display:" + disp_col, display)

    def sent_at():
        h = msg['date']
        if h is None or h.datetime is None:
            return None
        dt = h.datetime
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=datetime.timezone.utc)
        return int(dt.timestamp())
    field("sent_at", sent_at)
    def msgid(hname):
        v = msg[hname]
        if v is None:
            return None
        t = sanitize(WS.sub(' ', str(v)).strip())
        m = re.match(r'<([^<>]*)>', t)    # ours keeps the first msg-id
        if m:
            return m.group(1).strip() or None
        return t.lstrip('<').rstrip('>').strip() or None
    field("rfc822_message_id", lambda: msgid('message-id'))
    field("in_reply_to", lambda: msgid('in-reply-to'))
    field("body_text", lambda: body_content(msg.get_body(('plain',))))
    field("body_html", lambda: body_content(msg.get_body(('html',))))

    def attachments():
        bodies = [find_body(msg, False), find_body(msg, True)]
        out = []
        walk(msg, '', 0, False, [b for b in bodies if b is not None], out, raw)
        return out
    field("attachments", attachments)
    field("structural", lambda: sorted(structural_defects(msg)))
    return r


# ---------------------------------------------------------------- compare

def load_allowlist(path):
    """Groups of lines: "reason: TEXT" then "MESSAGE FIELD[,FIELD...]" lines
    allowed for that reason; '#' starts a comment.  A FIELD may be
    attachment:PART.* (every field of one attachment).  Returns
    {(message, field): reason} in file order."""
    allowed = {}
    reason = None
    for line in open(path, encoding='utf-8'):
        line = line.split('#', 1)[0].strip()
        if not line:
            continue
        if line.startswith('reason:'):
            reason = line[len('reason:'):].strip()
            continue
        parts = line.split()
        if reason is None or len(parts) != 2:
            raise SystemExit("allow-list: need a reason: line, then MESSAGE FIELD[,FIELD]: %r" % line)
        for fld in parts[1].split(','):
            if (parts[0], fld) in allowed:
                raise SystemExit("allow-list: %s %s listed twice" % (parts[0], fld))
            allowed[(parts[0], fld)] = reason
    return allowed


def check_strings(obj, where, problems):
    if isinstance(obj, str):
        if '\x00' in obj:
            problems.append("%s: NUL in a string" % where)
        if any(0xD800 <= ord(c) <= 0xDFFF for c in obj):
            problems.append("%s: surrogate in a string" % where)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            check_strings(v, where, problems)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            check_strings(v, where, problems)


def short(v, n=160):
    s = json.dumps(v, ensure_ascii=False)
    return s if len(s) <= n else s[:n] + '...(%d chars)' % len(s)


def first_diff(a, b):
    """Where two strings part, for the report."""
    if not isinstance(a, str) or not isinstance(b, str):
        return ''
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i]:
        i += 1
    return ' [from char %d: db %s, python %s]' % (i, short(a[i:i + 40], 60), short(b[i:i + 40], 60))


def group_of(name):
    if name.startswith("msg_"):
        return "Python"
    return "peer corpora" if PEER_NAME.match(name) else "crafted or generated"


def compare(manifest_path, export_path, allow_path, absent=''):
    manifest = json.load(open(manifest_path))
    raw_export = open(export_path, 'rb').read()
    problems = []
    try:
        text = raw_export.decode('utf-8', 'strict')
    except UnicodeDecodeError as e:
        problems.append("export is not valid UTF-8: %s" % e)
        text = raw_export.decode('utf-8', 'replace')
    export = json.loads(text)
    rows = {m["provider_message_id"]: m for m in export["messages"]}
    allowed = load_allowlist(allow_path)
    used = set()
    comparisons = 0
    differences = []                  # (message, field, db, python)
    fields = set()

    by_group = {}                     # group -> [messages, comparisons, differences]

    def cmp(name, fld, db, py, detail=''):
        nonlocal comparisons
        comparisons += 1
        by_group[group_of(name)][1] += 1
        fields.add('attachment.' + fld.rsplit('.', 1)[1] if fld.startswith('attachment:') else fld)
        if db != py:
            differences.append((name, fld, db, py, detail))
            by_group[group_of(name)][2] += 1

    for m in manifest:
        name = m["name"]
        by_group.setdefault(group_of(name), [0, 0, 0])[0] += 1
        row = rows.get(m["id"])
        if row is None:
            problems.append("%s: not stored (Gmail id %s)" % (name, m["id"]))
            continue
        check_strings(row, name, problems)
        raw = open(m["path"], 'rb').read()
        try:
            py = python_reading(raw)
        except Exception as e:
            cmp(name, "python", None, "%s: %s" % (type(e).__name__, e))
            continue

        cmp(name, "subject", norm_text(row["subject"]), py["subject"])
        db_headers = [[h["name"], norm_text(h["value"])] for h in (row["headers"] or [])]
        cmp(name, "headers", db_headers, py["headers"])
        addrs = row["addresses"] or {}
        for key, hname, disp_col, emails_col in ADDRESS_FIELDS:
            db_items = [[a["name"], a["address"]] for a in addrs.get(key, [])]
            db_items = [[norm_text(n) if n is not None else None, a] for n, a in db_items]
            pv = py[key]
            if isinstance(pv, list):
                pv = [[norm_text(n) if n is not None else None, a] for n, a in pv]
            cmp(name, key, db_items, pv)
            if isinstance(pv, list):
                lowered = [a.lower() for n, a in pv if a]
                if key == "from":
                    cmp(name, emails_col, row["from_email"], lowered[0] if lowered else None)
                else:
                    cmp(name, emails_col, row[emails_col] or [], lowered)
            else:
                cmp(name, emails_col, row[emails_col], pv)
            cmp(name, disp_col, norm_text(row[disp_col]), py["display:" + disp_col])
        for k in ("rfc822_message_id", "in_reply_to"):
            cmp(name, k, row[k], py[k])
        db_date = int(row["sent_at"]) if row["sent_at"] is not None else None
        cmp(name, "sent_at", db_date, py["sent_at"])
        for b in ("body_text", "body_html"):
            cmp(name, b, norm_body(row[b]), py[b], first_diff(norm_body(row[b]), py[b]))

        pa = py["attachments"]
        db_att = sorted(row["attachments"] or [], key=lambda a: [int(x) for x in a["part_id"].split('.')])
        if not isinstance(pa, list):
            cmp(name, "attachments", len(db_att), pa)
        else:
            cmp(name, "attachments", [a["part_id"] for a in db_att], [a["part_id"] for a in pa])
            by_part = {a["part_id"]: a for a in pa}
            for a in db_att:
                p = by_part.get(a["part_id"])
                if p is None:
                    continue
                for k in ("filename", "filename_derived", "mime_type", "size", "sha256",
                          "is_inline", "content_id"):
                    cmp(name, "attachment:%s.%s" % (a["part_id"], k), a[k], p[k])
                if "storage_path" in a:      # {org_id}/{mailbox_id}/{sha256}/{filename}
                    cmp(name, "attachment:%s.storage_path" % a["part_id"],
                        a["storage_path"].split('/', 2)[-1], p["sha256"] + '/' + p["filename"])

        if m["expect_malformed"] is not None:
            want = m["expect_malformed"]
            why = "its .expect"
        else:
            want = bool(py["structural"]) if isinstance(py["structural"], list) else None
            why = "Python's defects %s" % (py["structural"] or "none")
        cmp(name, "parse_error", row["parse_error"] is not None, want,
            " [db: %s; expected from %s]" % (row["parse_error"], why))

    # report
    unexpected = []
    by_reason = {}
    for name, fld, db, py, detail in differences:
        key = (name, fld)
        if key not in allowed and fld.startswith('attachment:'):
            key = (name, fld.rsplit('.', 1)[0] + '.*')
        if key in allowed:
            used.add(key)
            by_reason.setdefault(allowed[key], []).append((name, fld))
            print("allowed  %s %s: db %s, python %s" % (name, fld, short(db, 100), short(py, 100)))
        else:
            unexpected.append((name, fld, db, py, detail))
    for name, fld, db, py, detail in unexpected:
        print("DIFF     %s %s:\n           db     %s\n           python %s%s"
              % (name, fld, short(db, 400), short(py, 400), detail))
    # entries of a message the caller left out (a known bug elsewhere) are not stale
    absent = set(a for a in absent.split(',') if a)
    stale = [k for k in allowed if k not in used and k[0] not in absent]
    for k in stale:
        print("STALE    allow-list entry %s %s did not occur" % k)
    for p in problems:
        print("PROBLEM  %s" % p)

    peer = [m for m in manifest if PEER_NAME.match(m["name"])]
    print("corpus: %d messages (%d Python email test messages, %d of the peer corpora%s, "
          "%d crafted or generated), %d bytes"
          % (len(manifest), sum(1 for m in manifest if m["name"].startswith("msg_")), len(peer),
             "".join(", %s %d" % (src, sum(1 for m in peer if m["name"].startswith(src + "__")))
                     for src in PEER_SOURCES) if peer else "",
             sum(1 for m in manifest if not m["name"].startswith("msg_") and m not in peer),
             sum(m["size"] for m in manifest)))
    print("fields compared (%d): %s" % (len(fields), ", ".join(sorted(fields))))
    for g in ("Python", "peer corpora", "crafted or generated"):
        if g in by_group:
            print("  %s: %d messages, %d comparisons, %d differences"
                  % (g, by_group[g][0], by_group[g][1], by_group[g][2]))
    print("comparisons: %d, differences: %d (%d allowed, %d not allowed), stale allow-list entries: %d"
          % (comparisons, len(differences), len(differences) - len(unexpected), len(unexpected),
             len(stale)))
    print("allowed differences by reason:")
    for reason, items in by_reason.items():
        print("  %3d  %s" % (len(items), reason))
        print("       %s" % ", ".join("%s %s" % i for i in items))
    ok = not unexpected and not stale and not problems
    print("RESULT %s" % ("ok" if ok else "FAILED"))
    return 0 if ok else 1


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    cmd = sys.argv[1]
    if cmd == "generate":
        generate(sys.argv[2])
        return 0
    if cmd == "load":
        load(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])
        return 0
    if cmd == "compare":
        # Python's parser recurses once per MIME level: room for 1,000 levels
        sys.setrecursionlimit(200000)
        threading.stack_size(1 << 29)
        res = []
        t = threading.Thread(target=lambda: res.append(compare(*sys.argv[2:6])))
        t.start()
        t.join()
        return res[0] if res else 1
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
