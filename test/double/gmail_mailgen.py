"""
gmail_mailgen: deterministic, realistic mailbox content for the Gmail API double.

Owns: planning a mailbox (threads, reply chains, internal dates, labels,
attachments) from a seed, rendering every message as exact RFC 822 bytes,
composing a plausible reply for the admin API, and deriving a Gmail-style
snippet from raw bytes.  Standard library only.

Determinism: the same arguments, including now_ms, give byte-identical
messages, ids and dates.  Message content depends on the seed only; ids also
depend on the mailbox address, so two mailboxes generated from one seed hold
the same conversations under different ids, as in real Gmail.

What the generated corpus contains (so parsers meet every case):
  * threads with replies: "Re:" subjects, In-Reply-To and References chains,
    quoted text; threads that straddle the edge of the last window_days days;
  * text/plain in utf-8 (7bit, 8bit, quoted-printable), windows-1252, koi8-r
    and iso-2022-jp; text/html only; multipart/alternative text+html;
  * multipart/mixed(multipart/alternative, attachments...) and
    multipart/related(multipart/alternative, inline image with Content-ID),
    sometimes nested inside multipart/mixed with a further attachment;
  * attachments whose bytes repeat across messages, the same filename with
    different bytes, and non-ASCII filenames as RFC 2231 (incl. continuations,
    utf-8 and iso-8859-1) and as RFC 2047 encoded-words;
  * subjects and display names as RFC 2047 B and Q words in utf-8,
    iso-8859-1, koi8-r and iso-2022-jp; a long folded subject;
  * DRAFT, SPAM and TRASH messages, label-less messages, system labels and
    user labels Label_1..Label_3;
  * with header_quirks: one message without Date, one with a malformed Date,
    one without Message-ID and one reusing another thread's Message-ID.
"""

import base64
import codecs
import email
import email.policy
import math
import quopri
import random
import re
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from functools import lru_cache

SECOND_MS = 1000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def _codec_or(name, fallback):
    try:
        codecs.lookup(name)
        return name
    except LookupError:
        return fallback


JIS = _codec_or("iso-2022-jp", "utf-8")

USER_LABELS = {"Label_1": "Projects", "Label_2": "Receipts", "Label_3": "Travel/2026"}
SYSTEM_LABELS = ["INBOX", "SENT", "DRAFT", "SPAM", "TRASH", "UNREAD", "STARRED",
                 "IMPORTANT", "CATEGORY_PERSONAL", "CATEGORY_SOCIAL",
                 "CATEGORY_PROMOTIONS", "CATEGORY_UPDATES", "CATEGORY_FORUMS"]


@dataclass(frozen=True)
class Contact:
    name: str
    charset: str | None     # None: plain ASCII display name
    encoding: str | None    # RFC 2047 "B" or "Q"
    address: str
    category: str = "CATEGORY_PERSONAL"


CONTACTS = [
    Contact("Alice Wong", None, None, "alice.wong@example.com"),
    Contact("Doe, Jane", None, None, "jane.doe@example.org"),
    Contact("José Martínez", "iso-8859-1", "Q", "jose@example.es"),
    Contact("Zoë Ångström", "utf-8", "Q", "zoe@example.se"),
    Contact("François Dupont", "utf-8", "B", "francois@example.fr"),
    Contact("Иван Петров", "koi8-r", "B", "ivan.petrov@example.ru"),
    Contact("山田 太郎", JIS, "B", "taro.yamada@example.jp"),
    Contact("Build Bot", None, None, "noreply@ci.example.net", "CATEGORY_UPDATES"),
    Contact("Deals Weekly", None, None, "news@deals.example.com", "CATEGORY_PROMOTIONS"),
]
SPAMMERS = [
    Contact("Prize Department", None, None, "winner@lottery.example"),
    Contact("Служба поддержки", "koi8-r", "B", "support@bank-secure.example"),
]

# (text, charset, RFC 2047 encoding); charset None means plain ASCII.
SUBJECTS = [
    ("Quarterly report", None, None),
    ("Lunch on Friday?", None, None),
    ("Café menu for the offsite", "iso-8859-1", "Q"),
    ("Über die Präsentation morgen", "utf-8", "Q"),
    ("Отчёт за третий квартал", "koi8-r", "B"),
    ("会議の議事録について", JIS, "B"),
    ("Résumé review ✓ and next steps", "utf-8", "B"),
    ("Launch party 🎉 RSVP", "utf-8", "B"),
    ("Invoice #2041 – payment due", "utf-8", "Q"),
    ("Build failed: main (#8812)", None, None),
    ("A deliberately long subject line that keeps going so that header folding "
     "is exercised by every parser that reads this mailbox", None, None),
]
SPAM_SUBJECTS = [("You have WON a prize!!!", None, None),
                 ("Ваш аккаунт заблокирован", "koi8-r", "B")]

WORDS = ("the quarterly numbers look good and we should ship the release after "
         "review of budget plan team meeting agenda notes draft proposal timeline "
         "customer feedback design update schedule migration rollout metrics "
         "contract vendor invoice travel offsite slides demo").split()
FLAVOUR = {
    "utf-8": ["naïve café", "déjà vu", "Straße", "smörgåsbord", "✓ done", "€42",
              "日本語", "Привет", "a<b & c>d"],
    "windows-1252": ["“quoted”", "it’s", "€12.50", "café", "— dash", "naïve"],
}
SENTENCES = {
    "koi8-r": ["Спасибо за отчёт, всё выглядит хорошо.",
               "Давайте обсудим бюджет на следующей неделе.",
               "Презентация готова, посмотрите, пожалуйста.",
               "Встреча перенесена на четверг."],
    JIS: ["資料を添付しましたのでご確認ください。",
          "来週の会議の日程について相談させてください。",
          "よろしくお願いいたします。",
          "予算案を更新しました。"],
}

# Body kinds; every one appears at least once in a large enough mailbox.
BODY_KINDS = ["plain", "qp", "cp1252", "koi8r", "jis", "html", "alternative"]
BODY_WEIGHTS = [30, 8, 5, 4, 4, 6, 43]
KIND_LANGUAGE = {"cp1252": "windows-1252", "koi8r": "koi8-r", "jis": JIS}
TZ_OFFSETS = [0, -8, -5, 1, 2, 5.5, 9]

# Attachment kinds, used round-robin so a mailbox gets a bit of everything:
# (filename, content type, filename header style, content source).
ATTACHMENT_KINDS = [
    ("report.pdf", "application/pdf", "plain", "fresh"),
    ("terms-and-conditions.pdf", "application/pdf", "plain", "shared"),
    ("Übersicht 2026.xlsx",
     "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "rfc2231", "fresh"),
    ("Отчёт.docx",
     "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "rfc2047", "fresh"),
    ("résumé.pdf", "application/pdf", "rfc2231-latin1", "fresh"),
    ("data-export.csv", "text/csv", "plain", "csv"),
    ("photo_2026.jpg", "image/jpeg", "plain", "fresh"),
    ("請求書 第2041号 株式会社サンプル 御中 最終版.pdf", "application/pdf", "rfc2231-cont", "fresh"),
    ("report.pdf", "application/pdf", "plain", "fresh"),   # same name, new bytes
    ("terms-and-conditions.pdf", "application/pdf", "plain", "shared"),
    ("archive.zip", "application/zip", "plain", "fresh"),
]
MAGIC = {"application/pdf": b"%PDF-1.4\n", "image/jpeg": b"\xff\xd8\xff\xe0",
         "image/png": b"\x89PNG\r\n\x1a\n", "application/zip": b"PK\x03\x04"}


# ---------------------------------------------------------------- encoding

def _q_encode(data):
    out = []
    for b in data:
        c = chr(b)
        if c == " ":
            out.append("_")
        elif c.isascii() and (c.isalnum() or c in "!*+-/"):
            out.append(c)
        else:
            out.append(f"={b:02X}")
    return "".join(out)


def _encoded_word(text, charset, enc):
    data = text.encode(charset)
    body = base64.b64encode(data).decode() if enc == "B" else _q_encode(data)
    return f"=?{charset.upper()}?{enc}?{body}?="


@lru_cache(maxsize=None)
def encode_words(text, charset, enc):
    """RFC 2047 encoded-words for text, each at most 75 chars, folded."""
    words, chunk = [], ""
    for ch in text:
        if chunk and len(_encoded_word(chunk + ch, charset, enc)) > 75:
            words.append(_encoded_word(chunk, charset, enc))
            chunk = ch
        else:
            chunk += ch
    words.append(_encoded_word(chunk, charset, enc))
    return "\r\n ".join(words)


def fold(name, value):
    """Fold an unencoded header value at spaces to keep lines near 78 chars."""
    if len(name) + 2 + len(value) <= 78:
        return value
    lines, line = [], ""
    limit = 78 - len(name) - 2
    for word in value.split(" "):
        if line and len(line) + 1 + len(word) > limit:
            lines.append(line)
            line, limit = word, 77
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\r\n ".join(lines)


def wrap(text, width=72):
    """Greedy word wrap (textwrap is needlessly slow for bulk generation)."""
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\n".join(lines)


def header_text(text, charset, enc):
    return encode_words(text, charset, enc) if charset else text


def format_address(c):
    if c.charset:
        return f"{encode_words(c.name, c.charset, c.encoding)} <{c.address}>"
    if re.search(r'[(),.:;<>@\[\]\\"]', c.name):
        return f'"{c.name}" <{c.address}>'
    return f"{c.name} <{c.address}>"


def b64_lines(data):
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def qp_encode(text_bytes):
    """Quoted-printable with CRLF line ends (quopri works in LF)."""
    return quopri.encodestring(text_bytes.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")


def crlf(text):
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


# ------------------------------------------------------------ MIME assembly

@dataclass
class Part:
    headers: list            # [(name, wire value)]
    body: bytes


def render_headers(headers):
    return "".join(f"{n}: {v}\r\n" for n, v in headers).encode("ascii")


def multipart(subtype, parts, boundary):
    delimiter = b"--" + boundary.encode()
    chunks = []
    for p in parts:
        body = p.body if p.body.endswith(b"\r\n") else p.body + b"\r\n"
        chunks.append(delimiter + b"\r\n" + render_headers(p.headers) + b"\r\n" + body)
    return Part([("Content-Type", f'multipart/{subtype}; boundary="{boundary}"')],
                b"".join(chunks) + delimiter + b"--\r\n")


def text_part(subtype, text, charset, cte):
    data = crlf(text).encode(charset, "replace")
    if cte == "quoted-printable":
        body = qp_encode(data)
    elif cte == "base64":
        body = b64_lines(data)
    else:
        body = data if data.endswith(b"\r\n") else data + b"\r\n"
    return Part([("Content-Type", f'text/{subtype}; charset="{charset.upper()}"'),
                 ("Content-Transfer-Encoding", cte)], body)


def attachment_part(filename, ctype, style, data, *, disposition="attachment", content_id=None):
    if style == "plain":
        ct = f'{ctype}; name="{filename}"'
        cd = f'{disposition}; filename="{filename}"'
    elif style == "rfc2047":
        word = encode_words(filename, "utf-8", "B").replace("\r\n ", "")
        ct = f'{ctype}; name="{word}"'
        cd = f'{disposition}; filename="{word}"'
    elif style in ("rfc2231", "rfc2231-latin1"):
        cs, label = ("utf-8", "UTF-8") if style == "rfc2231" else ("iso-8859-1", "iso-8859-1")
        value = f"{label}''" + urllib.parse.quote(filename.encode(cs), safe="")
        ct = f"{ctype};\r\n name*={value}"
        cd = f"{disposition};\r\n filename*={value}"
    elif style == "rfc2231-cont":
        quoted = re.findall(r"%[0-9A-F]{2}|.", urllib.parse.quote(filename.encode("utf-8"), safe=""))
        chunks, cur = [], ""
        for tok in quoted:
            if len(cur) + len(tok) > 45:
                chunks.append(cur)
                cur = ""
            cur += tok
        chunks.append(cur)
        # RFC 2231 continuations; the charset prefix goes on segment 0 only,
        # and a multi-byte character may be split across segments (legal).
        segs = [f"filename*{i}*=" + ("UTF-8''" if i == 0 else "") + chunk
                for i, chunk in enumerate(chunks)]
        ct = ctype
        cd = disposition + ";\r\n " + ";\r\n ".join(segs)
    else:
        raise ValueError(style)
    headers = [("Content-Type", ct), ("Content-Disposition", cd),
               ("Content-Transfer-Encoding", "base64")]
    if content_id:
        headers.append(("Content-ID", f"<{content_id}>"))
    return Part(headers, b64_lines(data))


# ---------------------------------------------------------------- snippets

def make_snippet(text):
    """Gmail-style snippet: whitespace collapsed, ~200 chars, HTML-escaped."""
    s = " ".join(text.split())[:200]
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;"))


def _decode_text(part):
    data = part.get_payload(decode=True) or b""
    cs = part.get_content_charset() or "us-ascii"
    try:
        return data.decode(cs, "replace")
    except LookupError:
        return data.decode("latin-1")


def describe_raw(raw):
    """(snippet, attachment_count) for arbitrary raw bytes (admin-added mail).

    Gmail stores any bytes: when Python's email cannot read them (1,000
    nested multiparts exceed its recursion limit) the message still goes in,
    with an empty snippet and no attachment counted."""
    try:
        return _describe_raw(raw)
    except RecursionError:
        return "", 0


def _describe_raw(raw):
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    plain = html = None
    attachments = 0
    for part in msg.walk():
        if part.is_multipart():
            continue
        try:
            filename = part.get_filename()
        except Exception:      # malformed parameters: treat as unnamed
            filename = None
        if filename:
            attachments += 1
        elif part.get_content_type() == "text/plain" and plain is None:
            plain = _decode_text(part)
        elif part.get_content_type() == "text/html" and html is None:
            html = re.sub(r"<[^>]*>", " ", _decode_text(part))
    return make_snippet(plain if plain is not None else html or ""), attachments


# -------------------------------------------------------------- generation

@dataclass
class Generated:
    id: str
    thread_id: str
    internal_date: int           # epoch ms
    labels: list
    raw: bytes
    snippet: str
    attachment_count: int


@dataclass
class _Plan:
    thread: int
    pos: int
    date_ms: int
    from_me: bool
    kind: str = "plain"
    attachments: int = 0
    related: bool = False
    labels: list = field(default_factory=list)
    special: str | None = None   # DRAFT, SPAM or TRASH
    labelless: bool = False
    msgid_header: str | None = ""  # "" until assigned, None = header omitted
    date_quirk: str | None = None  # "missing" or "malformed"
    id: str = ""


@dataclass
class _Thread:
    contact: Contact
    subject: tuple
    cc: Contact | None
    user_label: str | None
    spam: bool = False
    plans: list = field(default_factory=list)


class _Writer:
    """Renders messages; owns the content RNG and the shared attachment blobs."""

    def __init__(self, rng, owner, owner_name, size_min, size_max, size_dist="uniform"):
        self.rng = rng
        self.owner = Contact(owner_name, None, None, owner)
        self.size_min, self.size_max = min(size_min, size_max), size_max
        self.size_dist = size_dist
        self.attachment_counter = 0
        shared_size = min(self.size_max, 12 * 1024)
        self.shared = {
            "terms-and-conditions.pdf": self._blob("application/pdf", shared_size),
            "logo.png": self._blob("image/png", min(self.size_max, 2081)),
        }

    # --- content pieces

    def _blob(self, ctype, size):
        magic = MAGIC.get(ctype, b"")
        return magic + self.rng.randbytes(max(0, size - len(magic)))

    def _csv(self, size):
        rows, total, n = ["id,name,amount,currency"], 25, 0
        while total < size:
            n += 1
            row = f"{n},item-{self.rng.randrange(10**6)},{self.rng.randrange(10**5) / 100},EUR"
            rows.append(row)
            total += len(row) + 2
        return "\r\n".join(rows).encode()[:size]

    def _sentence(self, flavour):
        words = [self.rng.choice(WORDS) for _ in range(self.rng.randint(6, 14))]
        if flavour and self.rng.random() < 0.35:
            words.insert(self.rng.randrange(len(words)), self.rng.choice(flavour))
        sentence = " ".join(words)
        return sentence[0].upper() + sentence[1:] + "."

    def paragraphs(self, lang):
        paras = []
        for _ in range(self.rng.randint(1, 3)):
            if lang in SENTENCES:
                paras.append(" ".join(self.rng.choice(SENTENCES[lang])
                                      for _ in range(self.rng.randint(1, 3))))
            else:
                paras.append(" ".join(self._sentence(FLAVOUR.get(lang))
                                      for _ in range(self.rng.randint(1, 4))))
        return paras

    def _date_header(self, date_ms):
        seconds = date_ms // 1000 - self.rng.randint(0, 90)
        tz = timezone(timedelta(hours=self.rng.choice(TZ_OFFSETS)))
        return format_datetime(datetime.fromtimestamp(seconds, tz))

    def new_msgid(self, from_me):
        if from_me:
            token = base64.b64encode(self.rng.randbytes(27), b"+_").decode()
            return f"<CA{token}@mail.gmail.com>"
        return f"<{self.rng.getrandbits(64):016x}.{self.rng.getrandbits(32):08x}@example.net>"

    def _boundary(self):
        return f"000000000000{self.rng.getrandbits(64):016x}"

    # --- bodies

    def _text_body(self, kind, paras, quote):
        """Returns (Part, plain text used for the snippet)."""
        charset = KIND_LANGUAGE.get(kind, "utf-8")
        if kind == "qp":   # long lines so QP needs soft breaks
            text = "\n\n".join(paras)
        else:
            text = "\n\n".join(wrap(p) for p in paras)
        if quote:
            text += "\n\n" + quote
        text = text.encode(charset, "replace").decode(charset)   # what survives the charset
        if kind == "html":
            return text_part("html", self._html(paras, quote), "utf-8", "base64"), text
        if kind == "qp":
            return text_part("plain", text, "utf-8", "quoted-printable"), text
        if kind == "jis":
            return text_part("plain", text, charset, "7bit"), text
        cte = "7bit" if text.isascii() else "8bit"
        return text_part("plain", text, charset, cte), text

    @staticmethod
    def _html(paras, quote, image_cid=None):
        def esc(s):
            return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        body = "".join(f"<p>{esc(p)}</p>\n" for p in paras)
        if image_cid:
            body += f'<p><img src="cid:{image_cid}" alt="logo" width="120"></p>\n'
        if quote:
            body += f'<blockquote class="gmail_quote">{esc(quote)}</blockquote>\n'
        return f'<div dir="ltr">\n{body}</div>\n'

    def _alternative(self, paras, quote, image_cid=None):
        text = "\n\n".join(wrap(p) for p in paras) + ("\n\n" + quote if quote else "")
        plain = text_part("plain", text, "utf-8", "quoted-printable")
        html = text_part("html", self._html(paras, quote, image_cid), "utf-8", "quoted-printable")
        return multipart("alternative", [plain, html], self._boundary()), text

    def _attachment(self):
        name, ctype, style, source = ATTACHMENT_KINDS[self.attachment_counter % len(ATTACHMENT_KINDS)]
        self.attachment_counter += 1
        if self.size_dist == "log":      # log-uniform: most small, a few near the maximum
            lo, hi = math.log(max(1, self.size_min)), math.log(self.size_max)
            size = min(self.size_max, max(self.size_min, int(math.exp(self.rng.uniform(lo, hi)))))
        else:
            size = self.rng.randint(self.size_min, self.size_max)
        if source == "shared":
            data = self.shared[name]
        elif source == "csv":
            data = self._csv(size)
        else:
            data = self._blob(ctype, size)
        return attachment_part(name, ctype, style, data)

    def body(self, kind, attachments, related, quote):
        """Root Part of a message, its plain text and its paragraphs."""
        paras = self.paragraphs(KIND_LANGUAGE.get(kind, "utf-8"))
        if related:
            cid = f"ii_{self.rng.getrandbits(40):010x}"
            alt, text = self._alternative(paras, quote, cid)
            image = attachment_part("logo.png", "image/png", "plain", self.shared["logo.png"],
                                    disposition="inline", content_id=cid)
            root = multipart("related", [alt, image], self._boundary())
        elif kind == "alternative":
            root, text = self._alternative(paras, quote)
        else:
            root, text = self._text_body(kind, paras, quote)
        if attachments:
            root = multipart("mixed", [root] + [self._attachment() for _ in range(attachments)],
                             self._boundary())
        return root, text, paras

    # --- whole messages

    def message(self, *, sender, to, cc, subject_wire, date_ms, msgid, in_reply_to,
                references, kind, attachments, related, quote, date_quirk=None,
                delivered=True):
        """Exact RFC 822 bytes, snippet and body paragraphs of one message."""
        root, text, paras = self.body(kind, attachments, related, quote)
        h = []
        if delivered:
            h.append(("Delivered-To", self.owner.address))
            h.append(("Received", f"by 2002:a05:7300:{self.rng.getrandbits(16):x}:b0:"
                      f"{self.rng.getrandbits(16):x} with SMTP id {self.rng.getrandbits(48):x};"
                      f"\r\n        {self._date_header(date_ms)}"))
        h.append(("MIME-Version", "1.0"))
        h.append(("From", format_address(sender)))
        if date_quirk == "malformed":
            h.append(("Date", "Thu, 31 Smarch 2026 25:61:99 +9900"))
        elif date_quirk != "missing":
            h.append(("Date", self._date_header(date_ms)))
        if msgid:
            h.append(("Message-ID", msgid))
        h.append(("Subject", subject_wire))
        h.append(("To", format_address(to)))
        if cc:
            h.append(("Cc", format_address(cc)))
        if in_reply_to:
            h.append(("In-Reply-To", in_reply_to))
            h.append(("References", fold("References", " ".join(references))))
        raw = render_headers(h + root.headers) + b"\r\n" + root.body
        return raw, make_snippet(text), paras


def _quote(parent_sender, parent_date_ms, parent_paras):
    """Attribution line plus the parent's first paragraph, quoted."""
    when = datetime.fromtimestamp(parent_date_ms // 1000, timezone.utc).strftime("%a, %b %d, %Y at %H:%M")
    lines = wrap(parent_paras[0], 70).splitlines()
    return f"On {when} {parent_sender.name} <{parent_sender.address}> wrote:\n" + \
        "\n".join("> " + ln for ln in lines)


def _choose(rng, candidates, k, prefer):
    """k distinct candidates, the first one satisfying prefer() when possible."""
    k = min(k, len(candidates))
    if k <= 0:
        return []
    preferred = [c for c in candidates if prefer(c)]
    first = rng.choice(preferred) if preferred else rng.choice(candidates)
    rest = [c for c in candidates if c is not first]
    return [first] + rng.sample(rest, k - 1)


def message_id_for(rng, date_ms, taken):
    """16 lowercase hex chars that grow with internalDate, like Gmail's ids."""
    while True:
        mid = f"{((date_ms << 20) | rng.getrandbits(20)) & (2**64 - 1):016x}"
        if mid not in taken:
            taken.add(mid)
            return mid


def generate_mailbox(owner, *, now_ms, seed=1, threads=60, messages=240, days=30,
                     window_days=7, attachments=50, attachment_size_min=1024,
                     attachment_size_max=40 * 1024, attachment_size_dist="uniform",
                     drafts=None, spam=None, trash=None,
                     labelless=None, header_quirks=True, name=None, id_rng=None):
    """Plan and render a mailbox; returns Generated messages, oldest first.

    messages and threads are exact counts.  drafts/spam/trash/labelless
    default to small proportions of the mailbox (none below 10 messages).
    id_rng draws the message ids; by default it is seeded from seed and owner.
    attachment_size_dist: "uniform" (default) or "log" (log-uniform between
    attachment_size_min and attachment_size_max, for benchmarks: most
    attachments small, a few large, as in real mail).
    """
    if threads < 1 or messages < threads:
        raise ValueError("need threads >= 1 and messages >= threads")
    if days <= 0 or window_days < 0 or attachments < 0 or attachment_size_max < 1:
        raise ValueError("days must be > 0; window_days, attachments >= 0; attachment_size_max >= 1")
    if attachment_size_dist not in ("uniform", "log"):
        raise ValueError("attachment_size_dist must be \"uniform\" or \"log\"")
    rng = random.Random(seed)
    id_rng = id_rng or random.Random(f"{seed}/{owner}")
    owner_name = name or owner.split("@")[0].replace(".", " ").title()
    writer = _Writer(rng, owner, owner_name, attachment_size_min, attachment_size_max,
                     attachment_size_dist)
    big = messages >= 10

    def default(value, fraction):
        return value if value is not None else (max(1, messages // fraction) if big else 0)

    n_spam = min(default(spam, 60), threads - 1)
    n_drafts, n_trash, n_labelless = default(drafts, 80), default(trash, 60), default(labelless, 100)
    days_ms, window_ms = int(days * DAY_MS), int(window_days * DAY_MS)
    boundary_ms = now_ms - window_ms
    latest_ms = now_ms - 60 * SECOND_MS

    def between(lo, hi):
        return rng.randint(lo, max(lo, hi))

    # Threads and their sizes; spam threads hold one message each.
    thread_list = []
    for t in range(threads):
        is_spam = t >= threads - n_spam
        contact = rng.choice(SPAMMERS if is_spam else CONTACTS)
        subject = rng.choice(SPAM_SUBJECTS if is_spam else SUBJECTS)
        cc = rng.choice(CONTACTS) if not is_spam and rng.random() < 0.2 else None
        label = rng.choice(list(USER_LABELS)) if not is_spam and rng.random() < 0.15 else None
        thread_list.append(_Thread(contact, subject, cc if cc != contact else None, label, is_spam))
    normal = threads - n_spam
    sizes = [1] * threads
    for _ in range(messages - threads):
        sizes[int(normal * rng.random() ** 2)] += 1   # skewed: a few long threads

    # Internal dates, whole seconds within the last `days`; some threads
    # straddle the window boundary so a window cuts through them.
    multi = [t for t in range(normal) if sizes[t] > 1]
    straddle = set()
    if 0 < window_days < days:
        straddle = set(rng.sample(multi, min(len(multi), max(1, len(multi) // 10))))
    for t, th in enumerate(thread_list):
        n = sizes[t]
        if t in straddle:
            start = max(now_ms - days_ms, boundary_ms - between(2 * HOUR_MS, 3 * DAY_MS))
            end = min(latest_ms, boundary_ms + between(HOUR_MS, min(window_ms, 3 * DAY_MS)))
            mids = sorted(between(start, end) for _ in range(n - 2))
            times = [start] + mids + [end]
        else:
            # A thread spans hours to days; the whole span lands uniformly
            # within the last `days`, so about window/days of mail is recent.
            span = min(days_ms - 2 * HOUR_MS,
                       sum(int(rng.expovariate(1 / (8 * HOUR_MS))) for _ in range(n - 1)))
            if th.spam and t == normal and window_ms > 0:   # first spam: inside the window
                start = now_ms - between(HOUR_MS, min(window_ms, days_ms))
            else:
                start = now_ms - between(HOUR_MS + span, days_ms)
            times = [start] + sorted(start + between(0, span) for _ in range(n - 1))
        secs = []
        for x in times:                  # whole seconds, strictly increasing
            s = x // 1000
            secs.append(max(s, secs[-1] + 1) if secs else s)
        overshoot = secs[-1] - latest_ms // 1000
        if overshoot > 0:
            secs = [s - overshoot for s in secs]
        from_me = rng.random() < 0.25 and not th.spam
        for pos, s in enumerate(secs):
            if pos:
                from_me = (not from_me) if rng.random() < 0.8 else from_me
            th.plans.append(_Plan(t, pos, s * 1000, from_me))

    plans = [p for th in thread_list for p in th.plans]

    def in_window(p):
        return p.date_ms >= boundary_ms

    # Specials.
    for th in thread_list:
        if th.spam:
            th.plans[0].special = "SPAM"
    draft_threads = _choose(rng, [th for th in thread_list if len(th.plans) > 1], n_drafts,
                            lambda th: in_window(th.plans[-1]))
    for th in draft_threads:
        th.plans[-1].special, th.plans[-1].from_me = "DRAFT", True
    trash_cands = [p for p in plans if p.special is None
                   and (p.pos > 0 or len(thread_list[p.thread].plans) == 1)]
    for p in _choose(rng, trash_cands, n_trash, in_window):
        p.special = "TRASH"
    received = [p for p in plans if p.special is None and not p.from_me]
    for p in _choose(rng, received, n_labelless, lambda p: True):
        p.labelless = True

    # Bodies: every kind at least once, then weighted; attachments and
    # inline images spread over messages.
    order = plans[:]
    rng.shuffle(order)
    for i, p in enumerate(order):
        p.kind = BODY_KINDS[i] if i < len(BODY_KINDS) else rng.choices(BODY_KINDS, BODY_WEIGHTS)[0]
    # Related messages and the first holders take "alternative" bodies, so
    # the kinds guaranteed above survive.
    alternatives = [p for p in plans if p.kind == "alternative"] or plans
    n_related = 0 if attachments == 0 else (1 if attachments < 4 else max(1, attachments // 10))
    related = rng.sample(alternatives, min(n_related, len(alternatives)))
    for p in related:
        p.related = True
    plain_alternatives = [p for p in alternatives if not p.related] or plans
    remaining, holders = attachments - len(related), 0
    while remaining > 0:
        if holders == 0 and related:     # mixed(related(alternative, image), attachment)
            p = related[0]
        elif holders <= 1:               # mixed(alternative, attachment)
            p = rng.choice(plain_alternatives)
        else:
            p = rng.choice(plans)
        k = min(remaining, rng.choice([1, 1, 1, 2, 2, 3]))
        p.attachments += k
        remaining -= k
        holders += 1

    # Labels.
    for th in thread_list:
        for p in th.plans:
            if p.special == "SPAM":
                p.labels = ["UNREAD", "SPAM"]
            elif p.special == "DRAFT":
                p.labels = ["DRAFT"]
            elif p.labelless:
                p.labels = []
            elif p.from_me:
                p.labels = ["SENT"]
            else:
                labels = []
                if in_window(p) and rng.random() < 0.5:
                    labels.append("UNREAD")
                if rng.random() < 0.3:
                    labels.append("IMPORTANT")
                labels.append(th.contact.category)
                if p.special is None and rng.random() < 0.85:
                    labels.append("INBOX")
                p.labels = labels
            if p.special == "TRASH":    # trashing drops INBOX and adds TRASH
                p.labels = [lb for lb in p.labels if lb != "INBOX"] + ["TRASH"]
            if th.user_label and p.special not in ("SPAM", "DRAFT"):
                p.labels.append(th.user_label)

    # Message-ID headers, then the header quirks.
    for p in plans:
        p.msgid_header = writer.new_msgid(p.from_me)
    ordinary = [p for p in plans if p.special is None and not p.from_me]
    leaves = [th.plans[-1] for th in thread_list if th.plans[-1].special is None]
    if header_quirks and messages >= 20 and len(ordinary) >= 2 and len(leaves) >= 3:
        no_date, bad_date = rng.sample(ordinary, 2)
        no_date.date_quirk, bad_date.date_quirk = "missing", "malformed"
        no_id, dup = rng.sample(leaves, 2)      # leaves: no reply references them
        no_id.msgid_header = None
        donor = rng.choice([p for p in plans if p.thread != dup.thread and p.msgid_header])
        dup.msgid_header = donor.msgid_header

    # Ids follow internalDate, so each thread's id is its first message's id.
    taken = set()
    for p in sorted(plans, key=lambda p: (p.date_ms, p.thread, p.pos)):
        p.id = message_id_for(id_rng, p.date_ms, taken)

    # Render, thread by thread so replies can quote and reference parents.
    out = []
    for th in thread_list:
        refs, prev_paras, prev_sender = [], None, None
        subject = header_text(*th.subject)
        subject = fold("Subject", subject) if not th.subject[1] else subject
        for p in th.plans:
            sender, to = (writer.owner, th.contact) if p.from_me else (th.contact, writer.owner)
            quote = _quote(prev_sender, th.plans[p.pos - 1].date_ms, prev_paras) if p.pos else None
            raw, snippet, prev_paras = writer.message(
                sender=sender, to=to, cc=th.cc, date_ms=p.date_ms, msgid=p.msgid_header,
                subject_wire=("Re: " + subject) if p.pos else subject,
                in_reply_to=refs[-1] if refs else None, references=refs,
                kind=p.kind, attachments=p.attachments, related=p.related, quote=quote,
                date_quirk=p.date_quirk, delivered=not p.from_me and p.special != "DRAFT")
            prev_sender = sender
            if p.msgid_header:
                refs = refs + [p.msgid_header]
            out.append(Generated(p.id, th.plans[0].id, p.date_ms, list(p.labels), raw, snippet,
                                 p.attachments + (1 if p.related else 0)))
    out.sort(key=lambda g: (g.internal_date, g.id))
    return out


def compose_message(owner, rng, *, date_ms, parent_raw=None):
    """A plausible new message, or a reply to parent_raw, sent to the owner.

    Returns (raw bytes, snippet).  The subject, In-Reply-To and References
    follow the parent's headers exactly as they appear on the wire.
    """
    writer = _Writer(rng, owner, owner.split("@")[0].title(), 512, 2048)
    sender = rng.choice(CONTACTS)
    subject, in_reply_to, refs, quote = f"Note {rng.getrandbits(24):06x}", None, [], None
    if parent_raw is not None:
        parent = email.message_from_bytes(parent_raw, policy=email.policy.compat32)

        def hdr(name):
            v = parent.get(name)
            return re.sub(r"\r?\n(?=[ \t])", "", str(v)).strip() if v is not None else None
        psubject = hdr("Subject") or ""
        subject = psubject if psubject.lower().startswith("re:") else "Re: " + psubject
        parent_id = hdr("Message-ID")
        refs = (hdr("References") or "").split() + ([parent_id] if parent_id else [])
        in_reply_to = parent_id
        quote = "On an earlier date someone wrote:\n> (quoted text)"
    raw, snippet, _ = writer.message(
        sender=sender, to=writer.owner, cc=None, subject_wire=fold("Subject", subject),
        date_ms=date_ms, msgid=writer.new_msgid(False), in_reply_to=in_reply_to,
        references=refs, kind="plain", attachments=0, related=False, quote=quote)
    return raw, snippet
