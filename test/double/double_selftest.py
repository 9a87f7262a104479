#!/usr/bin/env python3
"""
double_selftest: checks that gmail_double.py behaves like Gmail where
gmail_ingest depends on it.  Starts the double on a free port, exercises
every endpoint, quirk, admin call and fault kind, and prints
"N passed, M failed"; exits non-zero on any failure.  Runs in well under 20 s.

    python3 test/double_selftest.py [-v]
"""

import base64
import email
import email.policy
import gzip
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gmail_fleet  # noqa: E402
import gmail_mailgen  # noqa: E402
from double_client import DoubleError, call, get_token, request, start_double  # noqa: E402

OWNER = "owner@example.com"
BIG = "big@example.com"
NOW_MS = 1_790_000_040_000
WINDOW_MS = 7 * gmail_mailgen.DAY_MS
G = "/gmail/v1/users/me"
NOT_FOUND_BODY = {"error": {"code": 404, "message": "Requested entity was not found.",
                            "errors": [{"message": "Requested entity was not found.",
                                        "domain": "global", "reason": "notFound"}],
                            "status": "NOT_FOUND"}}
VERBOSE = "-v" in sys.argv
passed = failed = 0


def check(name, condition, detail=""):
    global passed, failed
    if condition:
        passed += 1
        if VERBOSE:
            print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def error_of(fn):
    """The DoubleError fn raises, or None."""
    try:
        fn()
    except DoubleError as e:
        return e
    return None


class Ctx:
    """Server under test plus handy per-mailbox state."""

    def __init__(self, base):
        self.base = base
        self.token = None

    def admin(self, method, path, body=None):
        return call(self.base, method, "/admin" + path, body)

    def gmail(self, path, token=None, **params):
        query = urllib.parse.urlencode(params, doseq=True)
        return call(self.base, "GET", f"{G}/{path}" + (f"?{query}" if query else ""),
                    token=token or self.token)

    def gmail_error(self, path, token=None, **params):
        return error_of(lambda: self.gmail(path, token, **params))

    def messages(self, address=OWNER):
        return self.admin("GET", f"/mailboxes/{address}/messages")

    def all_pages(self, path, key, token=None, **params):
        items, pages, token_ = [], [], None
        while True:
            page = self.gmail(path, token, **params, **({"pageToken": token_} if token_ else {}))
            pages.append(page)
            items += page.get(key, [])
            token_ = page.get("nextPageToken")
            if not token_:
                return items, pages


def hidden(m, include_spam_trash=False):
    labels = set(m["labelIds"])
    return "DRAFT" in labels or (not include_spam_trash and labels & {"SPAM", "TRASH"})


def newest_first(msgs):
    return sorted(msgs, key=lambda m: (int(m["internalDate"]), m["id"]), reverse=True)


# ---------------------------------------------------------------- tests

def test_setup(c):
    c.admin("POST", "/reset")
    created = c.admin("POST", "/mailboxes", {"email": OWNER, "now_ms": NOW_MS})
    check("create mailbox counts", created["messages"] == 240 and created["threads"] == 60, created)
    check("create returns string history_id", isinstance(created["history_id"], str))
    big = c.admin("POST", "/mailboxes", {"email": BIG, "now_ms": NOW_MS, "messages": 700,
                                         "threads": 150, "attachments": 0, "seed": 2})
    check("create big mailbox", big["messages"] == 700)
    check("duplicate mailbox is 409",
          getattr(error_of(lambda: c.admin("POST", "/mailboxes", {"email": OWNER})), "status", 0) == 409)
    c.created = created
    c.token = get_token(c.base, "refresh-" + OWNER)
    c.big_token = get_token(c.base, "refresh-" + BIG)


def test_oauth(c):
    def grant(**fields):
        form = {"client_id": "test-client-id", "client_secret": "test-client-secret",
                "refresh_token": "refresh-" + OWNER, "grant_type": "refresh_token"}
        form.update(fields)
        return request(c.base, "POST", "/token", urllib.parse.urlencode(form))
    r = grant(client_secret="wrong")
    check("token wrong client 401 invalid_client", r.status == 401 and r.json() == {
        "error": "invalid_client", "error_description": "The OAuth client was not found."}, r.data)
    r = grant(refresh_token="nope")
    check("token unknown refresh 400 invalid_grant", r.status == 400 and r.json() == {
        "error": "invalid_grant", "error_description": "Token has been expired or revoked."})
    r = grant()
    body = r.json()
    check("token grant shape", r.status == 200 and set(body) == {
        "access_token", "expires_in", "scope", "token_type"} and body["token_type"] == "Bearer"
        and body["access_token"].startswith("ya29.") and body["expires_in"] == 3599
        and body["scope"] == "https://www.googleapis.com/auth/gmail.readonly", body)


def test_auth_errors(c):
    r = request(c.base, "GET", f"{G}/profile")
    err = r.json()["error"]
    check("no token 401 Google shape", r.status == 401 and err["code"] == 401
          and err["status"] == "UNAUTHENTICATED"
          and err["message"].startswith("Request had invalid authentication credentials")
          and err["errors"][0]["reason"] == "authError"
          and err["errors"][0]["location"] == "Authorization", err)
    check("401 has WWW-Authenticate", "invalid_token" in r.headers.get("www-authenticate", ""))
    e = c.gmail_error("profile", token="ya29.bogus")
    check("unknown token 401", e is not None and e.status == 401)
    e = c.gmail_error("messages/0123456789abcdef")
    check("unknown message 404 notFound", e and e.status == 404 and e.body == NOT_FOUND_BODY)
    e = c.gmail_error("messages", maxResults="abc")
    check("bad maxResults 400 invalidArgument",
          e and e.status == 400 and e.body["error"]["errors"][0]["reason"] == "invalidArgument")


def test_profile_labels(c):
    p = c.gmail("profile")
    check("profile", p == {"emailAddress": OWNER, "messagesTotal": 240, "threadsTotal": 60,
                           "historyId": c.created["history_id"]}, p)
    labels = {lb["id"]: lb for lb in c.gmail("labels")["labels"]}
    check("labels.list has system and user labels",
          "INBOX" in labels and labels.get("Label_1", {}).get("type") == "user", list(labels))


def test_messages_list(c):
    msgs = c.messages()
    visible = newest_first([m for m in msgs if not hidden(m)])
    items, pages = c.all_pages("messages", "messages")
    check("list pages of 100", len(pages[0]["messages"]) == 100 and "nextPageToken" in pages[0])
    check("last page has no nextPageToken", "nextPageToken" not in pages[-1])
    check("list = visible messages, newest first",
          [m["id"] for m in items] == [m["id"] for m in visible])
    check("list items are id+threadId only", all(set(m) == {"id", "threadId"} for m in items))
    check("resultSizeEstimate", pages[0]["resultSizeEstimate"] == len(visible))
    drafts = {m["id"] for m in msgs if "DRAFT" in m["labelIds"]}
    spam_trash = {m["id"] for m in msgs if {"SPAM", "TRASH"} & set(m["labelIds"])}
    check("mailbox has drafts, spam, trash", drafts and len(spam_trash) >= 2)
    everything, _ = c.all_pages("messages", "messages", includeSpamTrash="true", maxResults=500)
    ids = {m["id"] for m in everything}
    check("includeSpamTrash adds spam+trash, never drafts",
          spam_trash <= ids and not drafts & ids and len(ids) == 240 - len(drafts))
    check("spam/trash excluded by default", not spam_trash & {m["id"] for m in items})
    spam = c.gmail("messages", labelIds="SPAM")
    check("labelIds=SPAM lists spam", {m["id"] for m in spam["messages"]}
          == {m["id"] for m in msgs if "SPAM" in m["labelIds"]})

    big = c.gmail("messages", token=c.big_token, maxResults=1000)
    check("maxResults clamps to 500", len(big["messages"]) == 500 and "nextPageToken" in big)

    # after:/before: against internalDate, exactly.
    pivot = visible[len(visible) // 3]
    n = int(pivot["internalDate"]) // 1000
    after = [m["id"] for m in visible if int(m["internalDate"]) >= n * 1000]
    got, _ = c.all_pages("messages", "messages", q=f"after:{n}")
    check("q=after:N is internalDate >= N*1000", [m["id"] for m in got] == after
          and pivot["id"] in after)
    got, _ = c.all_pages("messages", "messages", q=f"before:{n}")
    check("q=before:N is internalDate < N*1000", pivot["id"] not in {m["id"] for m in got}
          and len(got) == len(visible) - len(after))
    lo = (NOW_MS - WINDOW_MS) // 1000
    got, _ = c.all_pages("messages", "messages", q=f"after:{lo} before:{n}")
    check("q=after: before: combined", [m["id"] for m in got] == [
        m["id"] for m in visible if lo * 1000 <= int(m["internalDate"]) < n * 1000])
    empty = c.gmail("messages", q=f"after:{NOW_MS // 1000 + 86400}")
    check("empty list: messages key absent", empty == {"resultSizeEstimate": 0}, empty)
    for q in ("after:2026/01/01", "from:alice", "newer_than:7d"):
        e = c.gmail_error("messages", q=q)
        check(f"unsupported q {q} -> 400", e and e.status == 400
              and e.body["error"]["errors"][0]["reason"] == "invalidArgument")
    e = c.gmail_error("messages", pageToken="garbage!")
    check("bad pageToken -> 400", e and e.status == 400)


def test_threads(c):
    msgs = c.messages()
    lo = NOW_MS - WINDOW_MS
    matching = newest_first([m for m in msgs if not hidden(m) and int(m["internalDate"]) >= lo])
    expected = list(dict.fromkeys(m["threadId"] for m in matching))
    got, pages = c.all_pages("threads", "threads", q=f"after:{lo // 1000}", maxResults=7)
    check("threads.list: threads with a matching message, by newest match",
          [t["id"] for t in got] == expected, (len(got), len(expected)))
    check("threads.list items", all(set(t) == {"id", "snippet", "historyId"}
                                    and isinstance(t["historyId"], str) for t in got))
    by_thread = {}
    for m in msgs:
        by_thread.setdefault(m["threadId"], []).append(m)
    straddling = [t for t in expected if any(int(m["internalDate"]) < lo for m in by_thread[t])]
    check("some listed thread has messages outside the window", straddling)

    # threads.get returns every message, including SPAM/TRASH/DRAFT, oldest first.
    special = next(t for t, ms in by_thread.items()
                   if len(ms) > 1 and any({"TRASH", "DRAFT"} & set(m["labelIds"]) for m in ms))
    th = c.gmail(f"threads/{special}")
    want = sorted(by_thread[special], key=lambda m: (int(m["internalDate"]), m["id"]))
    check("threads.get has all messages oldest first",
          [m["id"] for m in th["messages"]] == [m["id"] for m in want])
    check("thread historyId = max of its messages",
          th["historyId"] == str(max(int(m["historyId"]) for m in want)))
    check("threads.get full has payloads", all("payload" in m for m in th["messages"]))
    mini = c.gmail(f"threads/{special}", format="minimal")
    check("threads.get minimal shape", all(
        set(m) - {"labelIds"} == {"id", "threadId", "snippet", "historyId", "internalDate",
                                  "sizeEstimate"} for m in mini["messages"]), mini["messages"][0])
    e = c.gmail_error(f"threads/{special}", format="raw")
    check("threads.get format=raw -> 400", e and e.status == 400)
    e = c.gmail_error("threads/00000000000000aa")
    check("unknown thread -> 404", e and e.status == 404)


def test_message_get(c):
    msgs = c.messages()
    padded = unpadded = False
    for m in msgs[:60]:
        got = c.gmail(f"messages/{m['id']}", format="raw")
        raw = c.admin("GET", f"/mailboxes/{OWNER}/messages/{m['id']}/raw")
        b64 = got["raw"]
        ok = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)) == raw
        check(f"raw of {m['id']} is the exact bytes", ok and "+" not in b64 and "/" not in b64)
        if len(raw) % 3:
            padded |= b64.endswith("=")
            unpadded |= not b64.endswith("=")
        check("raw shape", got["internalDate"] == m["internalDate"]
              and got["historyId"] == m["historyId"] and got["sizeEstimate"] == len(raw)
              and got["threadId"] == m["threadId"] and isinstance(got["snippet"], str)
              and ("labelIds" in got) == bool(m["labelIds"]), got.keys())
    check("raw base64url both padded and unpadded", padded and unpadded)
    bare = next(m for m in msgs if not m["labelIds"])
    got = c.gmail(f"messages/{bare['id']}", format="minimal")
    check("labelIds absent on a label-less message", "labelIds" not in got, got)
    check("minimal shape", set(got) == {"id", "threadId", "snippet", "sizeEstimate",
                                        "historyId", "internalDate"}, got)
    meta = c.gmail(f"messages/{msgs[0]['id']}", format="metadata", metadataHeaders=["Subject", "From"])
    check("metadata honours metadataHeaders", {h["name"] for h in meta["payload"]["headers"]}
          <= {"Subject", "From"} and meta["payload"]["headers"])
    e = c.gmail_error(f"messages/{msgs[0]['id']}", format="bogus")
    check("bad format -> 400", e and e.status == 400)


def _parts(node):
    yield node
    for child in node.get("parts", ()):
        yield from _parts(child)


def test_full_payload(c):
    msgs = c.messages()
    raws = {m["id"]: c.admin("GET", f"/mailboxes/{OWNER}/messages/{m['id']}/raw")
            for m in msgs if m["attachment_count"]}
    nested = next(mid for mid, raw in raws.items() if b"multipart/related" in raw
                  and b"multipart/mixed" in raw)
    first = c.gmail(f"messages/{nested}", format="full")
    again = c.gmail(f"messages/{nested}", format="full")
    parts = list(_parts(first["payload"]))
    check("payload root partId ''", first["payload"]["partId"] == "" and "raw" not in first)
    check("payload nested partIds", {"0", "0.0", "0.0.0", "0.1"} <= {p["partId"] for p in parts},
          [p["partId"] for p in parts])
    inline = [p for p in parts if any(h["name"].lower() == "content-id" for h in p["headers"])]
    check("inline image part has Content-ID and attachmentId",
          inline and "attachmentId" in inline[0]["body"] and inline[0]["filename"] == "logo.png")
    ids1 = [p["body"].get("attachmentId") for p in parts if p["filename"]]
    ids2 = [p["body"].get("attachmentId") for p in _parts(again["payload"]) if p["filename"]]
    check("attachment ids present", ids1 and all(ids1))
    check("attachment ids ephemeral", all(a != b for a, b in zip(ids1, ids2)))
    decoded = [p.get_payload(decode=True) for p in
               email.message_from_bytes(raws[nested], policy=email.policy.default).walk()
               if not p.is_multipart() and p.get_filename()]
    for n, (a, b) in enumerate(zip(ids1, ids2)):
        d1 = c.gmail(f"messages/{nested}/attachments/{a}")
        d2 = c.gmail(f"messages/{nested}/attachments/{b}")
        data = base64.urlsafe_b64decode(d1["data"] + "=" * (-len(d1["data"]) % 4))
        check(f"attachment {n} bytes via either id", d1 == d2 and data == decoded[n]
              and d1["size"] == len(data) and set(d1) == {"size", "data"})
    other = next(mid for mid in raws if mid != nested)
    e = c.gmail_error(f"messages/{other}/attachments/{ids1[0]}")
    check("attachment id of another message -> 400", e and e.status == 400)
    text = next(p for p in parts if p["mimeType"] == "text/plain")
    check("text part has inline data", "data" in text["body"] and text["body"]["size"] > 0)

    names = set()
    for mid, raw in raws.items():
        if b"filename*" in raw or b'filename="=?' in raw:
            names |= {p["filename"] for p in _parts(c.gmail(f"messages/{mid}")["payload"])}
    check("RFC 2231 / 2047 filenames decoded",
          {"Übersicht 2026.xlsx", "Отчёт.docx", "résumé.pdf"} <= names, names)


def test_fields(c):
    r = c.gmail("messages", fields="messages(id),nextPageToken", maxResults=5)
    check("fields on messages.list", set(r) == {"messages", "nextPageToken"}
          and all(set(m) == {"id"} for m in r["messages"]), r)
    r = c.gmail("threads", fields="threads(id,historyId,snippet),nextPageToken", maxResults=3)
    check("fields on threads.list", set(r) == {"threads", "nextPageToken"})
    mid = r["threads"][0]["id"]
    r = c.gmail(f"messages/{mid}", format="full", fields="id,payload/headers")
    check("fields with a/b path", set(r) == {"id", "payload"} and set(r["payload"]) == {"headers"})
    e = c.gmail_error("messages", fields="messages(id")
    check("malformed fields -> 400", e and e.status == 400)


def test_gzip(c):
    def get(headers):
        return request(c.base, "GET", f"{G}/messages?maxResults=50", headers=headers, token=c.token)
    both = get({"Accept-Encoding": "gzip", "User-Agent": "gmail_ingest/1.0 (gzip)"})
    check("gzip with Accept-Encoding and UA", both.headers.get("content-encoding") == "gzip"
          and json.loads(gzip.decompress(both.data))["messages"])
    only_ae = get({"Accept-Encoding": "gzip", "User-Agent": "gmail_ingest/1.0"})
    only_ua = get({"User-Agent": "gmail_ingest/1.0 (gzip)"})
    check("no gzip without gzip in UA", "content-encoding" not in only_ae.headers)
    check("no gzip without Accept-Encoding", "content-encoding" not in only_ua.headers)


def test_bench_features(c):
    """warm mailboxes serve the bytes of the uncached answer; log-uniform sizes."""
    made = c.admin("POST", "/mailboxes", {"email": "cached@example.com", "content_email": OWNER,
                                          "now_ms": NOW_MS, "warm": True})
    tok = get_token(c.base, "refresh-cached@example.com")
    mid = c.admin("GET", "/mailboxes/cached@example.com/messages")[-1]["id"]
    gz = {"Accept-Encoding": "gzip", "User-Agent": "gmail_ingest/1.0 (gzip)"}

    def raw(token, headers=None):
        r = request(c.base, "GET", f"{G}/messages/{mid}?format=raw", headers=headers, token=token)
        return json.loads(gzip.decompress(r.data) if r.headers.get("content-encoding") == "gzip"
                          else r.data)
    plain = raw(tok)                 # no gzip: the ordinary path
    cached = raw(tok, gz)
    check("warm: the ordinary answer", made["messages"] == 240 and cached == plain
          and plain["raw"] and plain["id"] == mid)
    call(c.base, "POST", f"/admin/mailboxes/cached@example.com/messages/{mid}/labels",
         {"add": ["STARRED"]})
    again = raw(tok, gz)
    check("warm: a label change is served", "STARRED" in again["labelIds"]
          and again["historyId"] != cached["historyId"] and again == raw(tok))
    gen = gmail_mailgen.generate_mailbox("log@example.com", now_ms=NOW_MS, threads=30, messages=120,
                                         attachments=60, attachment_size_min=1000,
                                         attachment_size_max=1_000_000, attachment_size_dist="log")
    sizes = []
    for g in gen:
        for part in email.message_from_bytes(g.raw, policy=email.policy.default).walk():
            if part.get_filename() and part.get_content_type() != "image/png":
                sizes.append(len(part.get_payload(decode=True)))
    small = sum(1 for n in sizes if n < 31_623)        # below the geometric middle
    check("log-uniform attachment sizes: within bounds, about half below the geometric mean",
          sizes and min(sizes) >= 1000 and max(sizes) <= 1_000_000 and 0.25 < small / len(sizes) < 0.8,
          (len(sizes), small, min(sizes or [0]), max(sizes or [0])))


def test_keepalive(c):
    host, port = c.base.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    sock = None
    for _ in range(3):
        conn.request("GET", f"{G}/profile", headers={"Authorization": f"Bearer {c.token}"})
        resp = conn.getresponse()
        resp.read()
        check("keep-alive response has Content-Length", resp.getheader("Content-Length") is not None)
        sock = sock or conn.sock
        check("connection reused", conn.sock is sock)
    conn.close()


def test_history(c):
    h0 = c.gmail("profile")["historyId"]
    check("quiet mailbox: only historyId", c.gmail("history", startHistoryId=h0) == {"historyId": h0})
    msgs = c.messages()
    by_thread = {}
    for m in msgs:
        by_thread.setdefault(m["threadId"], []).append(m)
    x = next(m for m in msgs if "INBOX" in m["labelIds"] and len(by_thread[m["threadId"]]) > 2)
    tid = x["threadId"]
    thread_h0 = int(c.gmail(f"threads/{tid}", format="minimal")["historyId"])
    res = c.admin("POST", f"/mailboxes/{OWNER}/messages/{x['id']}/labels",
                  {"add": ["TRASH"], "remove": ["INBOX"]})
    check("relabel result", "TRASH" in res["labelIds"] and "INBOX" not in res["labelIds"])
    got = c.gmail(f"messages/{x['id']}", format="minimal")
    check("message historyId moves on label change", int(got["historyId"]) > int(x["historyId"]))
    check("thread historyId moves on label change",
          int(c.gmail(f"threads/{tid}", format="minimal")["historyId"]) > thread_h0)
    listed = {t["id"]: t for t in c.gmail("threads", includeSpamTrash="true", maxResults=500)["threads"]}
    check("threads.list historyId moves too", int(listed[tid]["historyId"]) > thread_h0)
    check("trashed message leaves messages.list",
          x["id"] not in {m["id"] for m in c.all_pages("messages", "messages")[0]})

    first = c.gmail("history", startHistoryId=h0)
    check("empty history page quirk", "history" not in first and first.get("nextPageToken"), first)
    second = c.gmail("history", startHistoryId=h0, pageToken=first["nextPageToken"])
    recs = second.get("history", [])
    check("history records after label change", len(recs) == 2 and "nextPageToken" not in second)
    check("labelsAdded TRASH record", recs and recs[0]["labelsAdded"][0]["labelIds"] == ["TRASH"]
          and recs[0]["labelsAdded"][0]["message"]["id"] == x["id"]
          and "TRASH" in recs[0]["labelsAdded"][0]["message"]["labelIds"], recs)
    check("labelsRemoved INBOX record", len(recs) > 1
          and recs[1]["labelsRemoved"][0]["labelIds"] == ["INBOX"])
    check("records ascending, > start, with messages[]", all(
        int(r["id"]) > int(h0) and r["messages"] == [{"id": x["id"], "threadId": tid}] for r in recs)
        and [r["id"] for r in recs] == sorted((r["id"] for r in recs), key=int))
    check("absent change lists are absent", all(
        set(r) <= {"id", "messages", "labelsAdded", "labelsRemoved"} for r in recs))
    check("history ids have gaps from 1..5", all(
        1 <= int(b["id"]) - int(a["id"]) <= 5 for a, b in zip(recs, recs[1:])))

    # Delete, then add a reply and a raw message.
    y = next(m for m in by_thread[tid] if m["id"] != x["id"])
    before_delete = int(c.gmail(f"threads/{tid}", format="minimal")["historyId"])
    c.admin("DELETE", f"/mailboxes/{OWNER}/messages/{y['id']}")
    e = c.gmail_error(f"messages/{y['id']}")
    check("deleted message 404", e and e.status == 404)
    check("delete bumps thread historyId",
          int(c.gmail(f"threads/{tid}", format="minimal")["historyId"]) > before_delete)
    added = c.admin("POST", f"/mailboxes/{OWNER}/messages", {"thread_id": tid})
    reply_raw = c.admin("GET", f"/mailboxes/{OWNER}/messages/{added['id']}/raw")
    check("composed reply threads on the parent", added["threadId"] == tid
          and b"In-Reply-To: <" in reply_raw and b"\r\nSubject: Re: " in reply_raw)
    raw = (b"From: a@example.com\r\nTo: owner@example.com\r\nSubject: exact\r\n"
           b"Message-ID: <exact@example.com>\r\n\r\nexact bytes \xff\r\n")
    added2 = c.admin("POST", f"/mailboxes/{OWNER}/messages",
                     {"raw_b64": base64.b64encode(raw).decode(), "labels": ["INBOX"],
                      "internal_date_ms": NOW_MS})
    got = c.gmail(f"messages/{added2['id']}", format="raw")
    check("added raw message served byte-exact", base64.urlsafe_b64decode(
        got["raw"] + "=" * (-len(got["raw"]) % 4)) == raw and got["internalDate"] == str(NOW_MS)
        and got["threadId"] == added2["id"])

    recs, pages = c.all_pages("history", "history", startHistoryId=h0, maxResults=1)
    kinds = [next(k for k in r if k not in ("id", "messages")) for r in recs]
    check("history paging, one record per page", kinds == [
        "labelsAdded", "labelsRemoved", "messagesDeleted", "messagesAdded", "messagesAdded"], kinds)
    check("empty page before the last page", "history" not in pages[-2] and "history" in pages[-1]
          and sum("history" not in p for p in pages) == 1)
    check("messagesDeleted carries id+threadId only",
          recs[2]["messagesDeleted"] == [{"message": {"id": y["id"], "threadId": tid}}])
    check("messagesAdded carries labelIds",
          recs[4]["messagesAdded"][0]["message"]["labelIds"] == ["INBOX"])
    last = c.gmail("history", startHistoryId=h0, historyTypes="labelAdded")
    last = c.gmail("history", startHistoryId=h0, historyTypes="labelAdded",
                   pageToken=last["nextPageToken"]) if "history" not in last else last
    check("historyTypes filter", [list(r)[2] for r in last["history"]] == ["labelsAdded"])
    c.admin("POST", "/config", {"empty_history_pages": False})
    direct = c.gmail("history", startHistoryId=h0)
    check("empty_history_pages=false: records on the first page", len(direct.get("history", [])) == 5
          and direct["historyId"] == c.gmail("profile")["historyId"])
    c.admin("POST", "/config", {"empty_history_pages": True})

    for bad in ("abc", "", "-5"):
        e = c.gmail_error("history", startHistoryId=bad)
        check(f"startHistoryId {bad!r} -> 400 invalidArgument", e and e.status == 400
              and e.body["error"]["errors"][0]["reason"] == "invalidArgument")
    e = c.gmail_error("history")
    check("missing startHistoryId -> 400", e and e.status == 400)
    e = c.gmail_error("history", startHistoryId="0")
    check("startHistoryId 0 -> 404", e and e.status == 404 and e.body == NOT_FOUND_BODY)
    expired = c.admin("POST", f"/mailboxes/{OWNER}/expire_history")
    e = c.gmail_error("history", startHistoryId=h0)
    check("expired history -> exact 404 body", e and e.status == 404 and e.body == NOT_FOUND_BODY,
          e and e.body)
    check("current id still valid after expiry",
          c.gmail("history", startHistoryId=expired["history_id"]) == {"historyId": expired["history_id"]})


def test_token_expiry(c):
    c.admin("POST", "/config", {"token_ttl": 1})
    tok = get_token(c.base, "refresh-" + OWNER)
    check("short-lived token works", c.gmail("profile", token=tok)["emailAddress"] == OWNER)
    time.sleep(1.1)
    e = c.gmail_error("profile", token=tok)
    check("token 401 after token_ttl", e and e.status == 401)
    c.admin("POST", "/config", {"token_ttl": 3599})
    tok = get_token(c.base, "refresh-" + OWNER)
    c.admin("POST", "/expire_tokens")
    e = c.gmail_error("profile", token=tok)
    check("expire_tokens -> 401", e and e.status == 401)
    tok = get_token(c.base, "refresh-" + OWNER)
    c.admin("POST", f"/mailboxes/{OWNER}/revoke")
    e = error_of(lambda: get_token(c.base, "refresh-" + OWNER))
    check("revoked refresh token -> invalid_grant", e and e.status == 400
          and e.body["error"] == "invalid_grant")
    check("revoking kills access tokens", getattr(c.gmail_error("profile", token=tok), "status", 0) == 401)
    c.admin("POST", f"/mailboxes/{OWNER}/revoke", {"revoked": False})
    c.token = get_token(c.base, "refresh-" + OWNER)
    check("re-authorised after un-revoke", c.gmail("profile")["emailAddress"] == OWNER)
    c.big_token = get_token(c.base, "refresh-" + BIG)


def test_quota_and_stats(c):
    c.admin("POST", "/stats/reset")
    mid = c.messages()[0]["id"]
    c.gmail("profile")
    c.gmail("messages", maxResults=1)
    c.gmail(f"messages/{mid}", format="minimal")
    c.gmail(f"threads/{c.messages()[0]['threadId']}", format="minimal")
    c.gmail("history", startHistoryId=c.gmail("profile")["historyId"])
    st = c.admin("GET", f"/stats?email={OWNER}")["mailboxes"][OWNER]
    # the 2026 model by default: messages.get 20, threads.get 40
    check("units by the 2026 cost table", st["units"] == 1 + 5 + 20 + 40 + 2 + 1, st)
    check("requests per endpoint", st["requests"] == {"profile": 2, "messages.list": 1,
                                                      "messages.get": 1, "threads.get": 1,
                                                      "history.list": 1}, st["requests"])
    check("bytes_sent counted", st["bytes_sent"] > 0)
    check("stats filter by email", list(c.admin("GET", f"/stats?email={OWNER}")["mailboxes"]) == [OWNER])

    c.admin("POST", "/stats/reset")
    got = c.admin("POST", "/config", {"quota_model": "legacy", "quota_units_per_minute": 12})
    check("legacy model loads the old table", got["costs"]["messages.get"] == 5
          and got["costs"]["threads.get"] == 10 and got["quota_model"] == "legacy", got)
    c.gmail(f"messages/{mid}", format="minimal")
    c.gmail(f"messages/{mid}", format="minimal")
    e = c.gmail_error(f"messages/{mid}", format="minimal")
    err = e.body["error"] if e else {}
    m = re.fullmatch(r"User-rate limit exceeded\.  Retry after (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)",
                     err.get("message", ""))
    check("quota 429 shape", e and e.status == 429 and err["status"] == "RESOURCE_EXHAUSTED"
          and err["errors"][0]["reason"] == "rateLimitExceeded"
          and err["errors"][0]["domain"] == "usageLimits" and m, err)
    if m:
        retry = time.mktime(time.strptime(m[1][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
        check("Retry after is within the next minute", time.time() < retry + 1 <= time.time() + 62)
    check("cheap call still fits the window", c.gmail("profile")["emailAddress"] == OWNER)
    check("other mailbox unaffected", c.gmail("profile", token=c.big_token)["emailAddress"] == BIG)
    st = c.admin("GET", "/stats")["mailboxes"][OWNER]
    check("429 counted", st["errors_sent"] == {"429": 1} and st["units"] == 11
          and st["requests"]["messages.get"] == 3, st)
    c.admin("POST", "/config", {"quota_units_per_minute": 0, "costs": {"messages.get": 20}})
    c.admin("POST", "/stats/reset")
    c.gmail(f"messages/{mid}", format="minimal")
    check("configurable costs", c.admin("GET", "/stats")["mailboxes"][OWNER]["units"] == 20)
    got = c.admin("POST", "/config", {"quota_model": "2026"})
    check("2026 model restores its table", got["costs"]["messages.get"] == 20
          and got["costs"]["attachments.get"] == 20 and got["costs"]["watch"] == 100, got)
    check("bad quota_model -> 400",
          getattr(error_of(lambda: c.admin("POST", "/config", {"quota_model": "2025"})), "status", 0) == 400)
    check("bad config key -> 400",
          getattr(error_of(lambda: c.admin("POST", "/config", {"nope": 1})), "status", 0) == 400)


def test_project_quota(c):
    """A limit over all mailboxes together, beside the per-user one."""
    mid = c.messages()[0]["id"]
    big_mid = c.gmail("messages", token=c.big_token, maxResults=1)["messages"][0]["id"]
    c.admin("POST", "/stats/reset")
    c.admin("POST", "/config", {"project_quota_units_per_minute": 50})
    since = time.time() - 0.001
    c.gmail(f"messages/{mid}", format="minimal")                        # 20
    c.gmail(f"messages/{big_mid}", format="minimal", token=c.big_token)  # 40 in all: another user
    e = c.gmail_error(f"messages/{mid}", format="minimal")              # 60 > 50
    err = e.body["error"] if e else {}
    check("project 429 shape", e and e.status == 429 and err["status"] == "RESOURCE_EXHAUSTED"
          and err["errors"][0]["reason"] == "rateLimitExceeded"
          and err["errors"][0]["domain"] == "usageLimits"
          and "limit 'Queries per minute' of service 'gmail.googleapis.com'" in err["message"]
          and "per user" not in err["message"], err)
    check("profile still fits the project's minute",
          c.gmail("profile", token=c.big_token)["emailAddress"] == BIG)
    st = c.admin("GET", "/stats")
    check("project 429 counted apart from per-user ones",
          st["rate_limited"] == {"user": 0, "project": 1}, st["rate_limited"])
    check("units of the last minute: the charged requests only", st["units_last_minute"] == 41,
          st["units_last_minute"])
    charges = c.admin("GET", f"/charges?since={since}")["charges"]
    check("charge log: time, units and mailbox of each charged request",
          [(u, e) for _, u, e in charges] == [(20, OWNER), (20, BIG), (1, BIG)]
          and all(since <= t <= time.time() for t, _, _ in charges), charges)
    # the per-user limit answers first and counts as such
    c.admin("POST", f"/mailboxes/{OWNER}/config", {"quota_units_per_minute": 10})
    e = c.gmail_error(f"messages/{mid}", format="minimal")
    check("per-user 429 beside the project limit", e and "User-rate limit" in e.body["error"]["message"]
          and c.admin("GET", "/stats")["rate_limited"] == {"user": 1, "project": 1})
    c.admin("POST", f"/mailboxes/{OWNER}/config", {"quota_units_per_minute": None})
    c.admin("POST", "/config", {"project_quota_units_per_minute": 0})
    check("project limit off: no 429", c.gmail(f"messages/{mid}", format="minimal")["id"] == mid)
    c.admin("POST", "/stats/reset")
    check("reset zeroes the 429 counts and the charge log",
          c.admin("GET", "/stats")["rate_limited"] == {"user": 0, "project": 0}
          and c.admin("GET", "/charges")["charges"] == [])


def _parallel(n, fn):
    results = [None] * n

    def run(i):
        start = time.monotonic()
        try:
            results[i] = (fn(), time.monotonic() - start)
        except Exception as e:  # noqa: BLE001 - the caller inspects it
            results[i] = (e, time.monotonic() - start)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrency_and_latency(c):
    c.admin("POST", "/stats/reset")
    c.admin("POST", "/config", {"max_concurrent_per_user": 2, "latency_ms": 400})
    results = _parallel(4, lambda: request(c.base, "GET", f"{G}/profile", token=c.token))
    statuses = sorted(r.status for r, _ in results)
    check("concurrency cap: 2 served, 2 rejected", statuses == [200, 200, 429, 429], statuses)
    rejected = next(r for r, _ in results if r.status == 429).json()["error"]
    check("concurrency 429 body", rejected["message"] == "Too many concurrent requests for user"
          and rejected["errors"][0]["reason"] == "rateLimitExceeded")
    check("latency applied", all(t >= 0.39 for _, t in results))
    st = c.admin("GET", "/stats")["mailboxes"][OWNER]
    check("peak concurrency recorded", st["peak_concurrency"] == 4 and st["in_flight"] == 0, st)
    c.admin("POST", "/config", {"max_concurrent_per_user": 0, "latency_ms": 0})


def test_faults(c):
    mids = [m["id"] for m in c.messages()[:3]]

    def faults(*rules):
        c.admin("DELETE", "/faults")
        c.admin("POST", "/faults", list(rules))

    faults({"endpoint": "messages.get", "kind": "status", "status": 503, "retry_after": 7})
    r = request(c.base, "GET", f"{G}/messages/{mids[0]}", token=c.token)
    check("status fault", r.status == 503 and r.headers.get("retry-after") == "7"
          and r.json()["error"]["errors"][0]["reason"] == "backendError", r.data[:200])
    check("status fault count=1", c.gmail(f"messages/{mids[0]}")["id"] == mids[0])

    faults({"endpoint": "profile", "kind": "status", "status": 403,
            "reason": "userRateLimitExceeded", "after": 1})
    first, second = c.gmail_error("profile"), c.gmail_error("profile")
    check("after=1 skips the first request", first is None and second and second.status == 403
          and second.body["error"]["errors"][0]["domain"] == "usageLimits")
    fired = c.admin("GET", "/faults")[0]
    check("GET /admin/faults reports hits", fired["fired"] == 1 and fired["seen"] == 2, fired)

    faults({"endpoint": "messages.get", "kind": "gone", "message_id": mids[1], "count": -1})
    e = c.gmail_error(f"messages/{mids[1]}")
    check("gone fault -> 404 for that message only", e and e.body == NOT_FOUND_BODY
          and c.gmail(f"messages/{mids[2]}")["id"] == mids[2])

    for kind in ("delay", "slow_body"):
        faults({"endpoint": "messages.get", "kind": kind, "ms": 300})
        start = time.monotonic()
        got = c.gmail(f"messages/{mids[0]}", format="raw")
        check(f"{kind} fault", time.monotonic() - start >= 0.29 and got["id"] == mids[0])

    faults({"endpoint": "messages.list", "kind": "truncate"})
    check("truncate fault -> incomplete body", isinstance(
        _exception(lambda: c.gmail("messages")), http.client.IncompleteRead))
    faults({"endpoint": "profile", "kind": "corrupt_gzip"})
    r = request(c.base, "GET", f"{G}/profile", token=c.token)
    check("corrupt_gzip fault -> a gzip body that does not inflate",
          r.status == 200 and r.headers.get("content-encoding") == "gzip"
          and isinstance(_exception(lambda: gzip.decompress(r.data)), (OSError, EOFError, zlib.error)))
    faults({"endpoint": "*", "kind": "invalid_json"})
    r = request(c.base, "GET", f"{G}/profile", token=c.token)
    check("invalid_json fault", r.status == 200 and isinstance(_exception(r.json), ValueError))
    faults({"endpoint": "profile", "kind": "body", "retry_after": 9,
            "body": [{"text": '{"a":['}, {"text": "0,", "repeat": 3}, {"hex": "30ff5d7d"}]})
    r = request(c.base, "GET", f"{G}/profile", token=c.token)
    check("body fault", r.status == 200 and r.data == b'{"a":[0,0,0,0\xff]}'
          and r.headers.get("retry-after") == "9", r.data[:100])
    faults({"endpoint": "profile", "kind": "body", "count": 2,
            "body": [{"text": '{"nextPageToken":"p'}, {"counter": True}, {"text": '"}'}]})
    pages = [request(c.base, "GET", f"{G}/profile", token=c.token).data for _ in range(2)]
    check("body fault counter part", pages == [b'{"nextPageToken":"p1"}', b'{"nextPageToken":"p2"}'], pages)
    faults({"endpoint": "token", "kind": "body", "status": 400, "body": [{"text": "{}"}]})
    check("body fault at the token endpoint", request(c.base, "POST", "/token", body=b"").status == 400)
    check("bad body fault refused", isinstance(_exception(lambda: c.admin(
        "POST", "/faults", [{"endpoint": "profile", "kind": "body", "body": [{"x": 1}]}])), Exception))
    faults({"endpoint": "profile", "kind": "reset"})
    check("reset fault -> connection error", isinstance(
        _exception(lambda: c.gmail("profile")), (ConnectionError, http.client.HTTPException)))

    faults({"endpoint": "messages.get", "kind": "hang"})
    host, port = c.base.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=0.5)
    conn.request("GET", f"{G}/messages/{mids[0]}", headers={"Authorization": f"Bearer {c.token}"})
    check("hang fault never answers", isinstance(_exception(conn.getresponse), TimeoutError))
    conn.close()
    deadline = time.monotonic() + 3
    while c.admin("GET", "/stats")["mailboxes"][OWNER]["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    check("hung request ends when the client leaves",
          c.admin("GET", "/stats")["mailboxes"][OWNER]["in_flight"] == 0)

    faults({"endpoint": "token", "kind": "status", "status": 500})
    e = error_of(lambda: get_token(c.base, "refresh-" + OWNER))
    check("token fault in OAuth shape", e and e.status == 500 and "error" in e.body
          and isinstance(e.body["error"], str))

    def sequence():
        faults({"endpoint": "profile", "kind": "status", "status": 500, "count": -1,
                "probability": 0.5})
        return [c.gmail_error("profile") is None for _ in range(16)]
    s1, s2 = sequence(), sequence()
    check("probabilistic faults are seeded", s1 == s2 and 2 <= sum(s1) <= 14, s1)
    c.admin("DELETE", "/faults")
    check("DELETE /admin/faults clears", c.admin("GET", "/faults") == []
          and c.gmail("profile")["emailAddress"] == OWNER)
    e = error_of(lambda: c.admin("POST", "/faults", [{"endpoint": "nope", "kind": "status"}]))
    check("bad fault rule -> 400", e and e.status == 400)


def test_isolation(c):
    """Per-mailbox fault rules, limits and content_email (tests share a double)."""
    base = {"seed": 5, "messages": 30, "threads": 8, "now_ms": NOW_MS}
    c.admin("POST", "/mailboxes", dict(base, email="iso-a@example.com", refresh_token="rt-iso-a"))
    c.admin("POST", "/mailboxes", dict(base, email="iso-b@example.com", refresh_token="rt-iso-b",
                                       content_email="iso-a@example.com"))
    a, b = c.messages("iso-a@example.com"), c.messages("iso-b@example.com")
    raws_equal = all(c.admin("GET", f"/mailboxes/iso-a@example.com/messages/{m['id']}/raw")
                     == c.admin("GET", f"/mailboxes/iso-b@example.com/messages/{m['id']}/raw")
                     for m in a)
    check("content_email: same ids, dates, labels and bytes", a == b and raws_equal)
    ta, tb = get_token(c.base, "rt-iso-a"), get_token(c.base, "rt-iso-b")
    check("content_email: the profile names the mailbox's own address",
          c.gmail("profile", token=tb)["emailAddress"] == "iso-b@example.com"
          and c.gmail("profile", token=tb)["historyId"] == c.gmail("profile", token=ta)["historyId"])
    added = [c.admin("POST", f"/mailboxes/{x}/messages", {"internal_date_ms": NOW_MS})
             for x in ("iso-a@example.com", "iso-b@example.com")]
    check("content_email: later additions get the same ids", added[0] == added[1], added)

    c.admin("DELETE", "/faults")
    c.admin("POST", "/faults", [{"endpoint": "profile", "kind": "status", "status": 500,
                                 "count": -1, "email": "iso-b@example.com"},
                                {"endpoint": "token", "kind": "status", "status": 500,
                                 "count": -1, "email": "iso-b@example.com"},
                                {"endpoint": "messages.list", "kind": "status", "status": 400,
                                 "count": -1}])
    check("email fault: other mailbox unaffected", c.gmail_error("profile", token=ta) is None)
    e = c.gmail_error("profile", token=tb)
    check("email fault: its mailbox hit", e is not None and e.status == 500)
    check("email token fault: other mailbox unaffected", bool(get_token(c.base, "rt-iso-a")))
    e = error_of(lambda: get_token(c.base, "rt-iso-b"))
    check("email token fault: its mailbox hit", e is not None and e.status == 500)
    mine = c.admin("GET", "/faults?email=iso-b@example.com")
    check("GET /admin/faults?email= lists only its rules", len(mine) == 2
          and all(r["email"] == "iso-b@example.com" for r in mine) and mine[0]["fired"] == 1, mine)
    c.admin("DELETE", "/faults?email=iso-b@example.com")
    left = c.admin("GET", "/faults")
    check("DELETE /admin/faults?email= clears only its rules",
          len(left) == 1 and left[0]["endpoint"] == "messages.list", left)
    c.admin("DELETE", "/faults")

    got = c.admin("POST", "/mailboxes/iso-b@example.com/config",
                  {"quota_units_per_minute": 2, "latency_ms": 200})
    check("mailbox config answers its overrides", got == {"quota_units_per_minute": 2, "latency_ms": 200})
    start = time.monotonic()
    first, second = c.gmail_error("profile", token=tb), c.gmail_error("profile", token=tb)
    third = c.gmail_error("profile", token=tb)
    check("mailbox quota and latency apply to that mailbox",
          first is None and second is None and third is not None and third.status == 429
          and time.monotonic() - start >= 0.59)
    start = time.monotonic()
    check("other mailboxes keep the global config", all(
        c.gmail_error("profile", token=ta) is None for _ in range(3)) and time.monotonic() - start < 0.5)
    c.admin("POST", "/mailboxes/iso-b@example.com/config",
            {"quota_units_per_minute": None, "latency_ms": None})
    check("null drops an override", c.gmail_error("profile", token=tb) is None)
    e = error_of(lambda: c.admin("POST", "/mailboxes/iso-b@example.com/config", {"costs": {}}))
    check("unknown mailbox config key -> 400", e is not None and e.status == 400)


def _exception(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - returned for inspection
        return e
    return None


def test_robustness(c):
    host, port = c.base.split("//")[1].split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"GET /gmail/v1/users/me/prof")          # half a request, then gone
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"NONSENSE\r\n\r\n")
        s.recv(100)
    check("server survives broken clients", c.gmail("profile")["emailAddress"] == OWNER)
    e = error_of(lambda: call(c.base, "GET", "/gmail/v1/users/me/nope", token=c.token))
    check("unknown Gmail path -> 404", e and e.status == 404)


def test_generation(c):
    msgs = gmail_mailgen.generate_mailbox(OWNER, now_ms=NOW_MS)
    again = gmail_mailgen.generate_mailbox(OWNER, now_ms=NOW_MS)
    check("generation deterministic (bytes, ids, dates, labels)",
          [(m.id, m.raw, m.internal_date, m.labels) for m in msgs]
          == [(m.id, m.raw, m.internal_date, m.labels) for m in again])
    other = gmail_mailgen.generate_mailbox("someone@example.com", now_ms=NOW_MS)
    check("same seed, other mailbox: other ids", not {m.id for m in msgs} & {m.id for m in other})
    check("ids are 16 hex chars, thread id = first message id",
          all(re.fullmatch(r"[0-9a-f]{16}", m.id) for m in msgs)
          and all(m.thread_id == min((x for x in msgs if x.thread_id == m.thread_id),
                                     key=lambda x: (x.internal_date, x.id)).id for m in msgs))
    blob = b"\n".join(m.raw for m in msgs)
    for needle in [b"=?UTF-8?B?", b"=?UTF-8?Q?", b"=?ISO-8859-1?Q?", b"=?KOI8-R?B?",
                   b"=?ISO-2022-JP?B?", b'charset="WINDOWS-1252"', b"quoted-printable",
                   b"multipart/alternative", b"multipart/related", b"Content-ID: <ii_",
                   b"Content-Disposition: inline", b"filename*=UTF-8''", b"filename*0*=UTF-8''",
                   b"filename*=iso-8859-1''", b'filename="=?UTF-8?B?', b"\r\nSubject: Re: ",
                   b"\r\nIn-Reply-To: <", b"\r\nReferences: <"]:
        check(f"corpus contains {needle.decode()}", needle in blob)
    labels = {lb for m in msgs for lb in m.labels}
    check("corpus labels", {"INBOX", "UNREAD", "IMPORTANT", "SENT", "DRAFT", "SPAM", "TRASH",
                            "Label_1", "CATEGORY_PERSONAL"} <= labels, labels)

    def attachments(m):
        e = email.message_from_bytes(m.raw, policy=email.policy.default)
        return [(p.get_filename(), hashlib.sha256(p.get_payload(decode=True)).hexdigest(), m.id)
                for p in e.walk() if not p.is_multipart() and p.get_filename()]
    atts = [a for m in msgs for a in attachments(m)]
    check("about `attachments` attachment parts", 40 <= len(atts) <= 60, len(atts))
    by_hash = {}
    by_name = {}
    for name, digest, mid in atts:
        by_hash.setdefault(digest, set()).add(mid)
        by_name.setdefault(name, set()).add(digest)
    check("identical attachment bytes in different messages", any(len(v) > 1 for v in by_hash.values()))
    check("same filename, different bytes", len(by_name.get("report.pdf", ())) > 1)
    lo = NOW_MS - WINDOW_MS
    inside = sum(m.internal_date >= lo for m in msgs)
    check("about window/days of messages inside the window", 0.16 <= inside / 240 <= 0.30, inside)
    threads = {}
    for m in msgs:
        threads.setdefault(m.thread_id, []).append(m.internal_date >= lo)
    check("threads straddle the window edge", any(len(set(v)) == 2 for v in threads.values()))
    start = time.monotonic()
    gmail_mailgen.generate_mailbox("perf@example.com", now_ms=NOW_MS, messages=10_000,
                                   threads=2_500, attachments=500)
    check("10,000 messages generate in < 10 s", time.monotonic() - start < 10,
          time.monotonic() - start)

    # Through the server: same parameters after a reset give the same mailbox.
    params = {"email": "det@example.com", "seed": 7, "messages": 50, "threads": 15,
              "now_ms": NOW_MS}

    def snapshot():
        c.admin("POST", "/mailboxes", params)
        listing = c.admin("GET", "/mailboxes/det@example.com/messages")
        raws = [c.admin("GET", f"/mailboxes/det@example.com/messages/{m['id']}/raw") for m in listing]
        return listing, raws
    one_ = snapshot()
    c.admin("POST", "/reset")
    check("server generation deterministic across reset", snapshot() == one_)
    check("reset forgot other mailboxes", [m["email"] for m in c.admin("GET", "/mailboxes")]
          == ["det@example.com"])


def test_empty_mailbox_and_cli(c):
    c.admin("POST", "/mailboxes", {"email": "empty@example.com", "messages": 0, "threads": 0,
                                   "refresh_token": "rt-empty"})
    tok = get_token(c.base, "rt-empty")
    check("empty mailbox: no messages key", c.gmail("messages", token=tok) == {"resultSizeEstimate": 0})
    check("empty mailbox: no threads key", c.gmail("threads", token=tok) == {"resultSizeEstimate": 0})
    h = c.gmail("profile", token=tok)["historyId"]
    check("empty mailbox: quiet history", c.gmail("history", token=tok, startHistoryId=h) == {"historyId": h})
    added = c.admin("POST", "/mailboxes/empty@example.com/messages", {"labels": []})
    got = c.gmail(f"messages/{added['id']}", token=tok, format="minimal")
    check("added message without labels has no labelIds", "labelIds" not in got
          and added["threadId"] == added["id"])

    cli = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "double_client.py"),
           c.base]
    out = subprocess.run(cli + ["GET", "/admin/mailboxes/empty@example.com", "--get", "messages"],
                         capture_output=True, text=True)
    check("CLI --get prints one value", out.returncode == 0 and out.stdout.strip() == "1", out)
    out = subprocess.run(cli + ["POST", "/admin/config", '{"latency_ms": 0}'], capture_output=True, text=True)
    check("CLI prints JSON", out.returncode == 0 and json.loads(out.stdout)["latency_ms"] == 0, out)
    out = subprocess.run(cli + ["GET", f"{G}/profile"], capture_output=True, text=True)
    check("CLI exits 1 on HTTP errors, still printing the body",
          out.returncode == 1 and json.loads(out.stdout)["error"]["code"] == 401, out)


def test_fleet(c):
    """The fleet fixture: N generated mailboxes from one spec, one-call statistics
    and new mail, all-or-nothing creation; members are ordinary mailboxes."""
    spec = {"count": 1000, "prefix": "fleet", "now_ms": NOW_MS}
    start = time.monotonic()
    made = c.admin("POST", "/fleet", spec)
    took = time.monotonic() - start
    print(f"fleet: 1,000 mailboxes of {made['messages'] // max(made['created'], 1)} messages "
          f"created in {took:.2f} s ({made['generation_seconds']:.2f} s generating)")
    check("fleet of 1,000 created in a few seconds", took < 5, took)
    emails = [m["email"] for m in made["mailboxes"]]
    check("fleet addresses and tokens", made["created"] == 1000 and len(set(emails)) == 1000
          and emails[0] == "fleet-0001@fleet.test" and emails[-1] == "fleet-1000@fleet.test"
          and all(m["refresh_token"] == "refresh-" + m["email"] for m in made["mailboxes"]),
          made["mailboxes"][:2])
    defaults = gmail_fleet.FLEET_DEFAULTS
    check("fleet members hold the default small mailbox",
          made["messages"] == 1000 * defaults["messages"] and made["now_ms"] == NOW_MS, made["messages"])
    listed = {m["email"] for m in c.admin("GET", "/mailboxes")}
    check("members are mailboxes of the double", set(emails) <= listed)

    # Distinct content: no two of a sample share a message id or a body.
    sample = emails[:3] + emails[-2:]
    ids, bodies = [], []
    for e in sample:
        msgs = c.messages(e)
        ids += [m["id"] for m in msgs]
        for m in msgs:
            raw = c.admin("GET", f"/mailboxes/{e}/messages/{m['id']}/raw")
            bodies.append(raw.split(b"\r\n\r\n", 1)[1])
    check("members' ids are distinct", len(set(ids)) == len(ids) == 5 * defaults["messages"])
    check("members' bodies are distinct", len(set(bodies)) == len(bodies), len(set(bodies)))

    # A member answers every endpoint exactly as a normal mailbox of the same
    # content (POST /admin/mailboxes with content_email and the member's seed).
    member = "fleet-0002@fleet.test"
    c.admin("POST", "/mailboxes", dict(defaults, email="twin@example.com", content_email=member,
                                       seed="1/2", now_ms=NOW_MS))
    tm, tt = get_token(c.base, "refresh-" + member), get_token(c.base, "refresh-twin@example.com")

    def both(path, **params):
        return c.gmail(path, token=tm, **params), c.gmail(path, token=tt, **params)
    pm, pt = both("profile")
    check("member profile", pm["emailAddress"] == member and pm["messagesTotal"] == defaults["messages"]
          and dict(pm, emailAddress="") == dict(pt, emailAddress=""), (pm, pt))
    lm, lt = both("messages", includeSpamTrash="true")
    check("member messages.list = a normal mailbox's", lm == lt and len(lm["messages"]) >= 1, lm)
    for m in lm["messages"]:
        gm, gt = both(f"messages/{m['id']}", format="raw")
        check(f"member messages.get raw {m['id']}", gm == gt and gm["raw"])
        fm, ft = both(f"messages/{m['id']}", format="metadata")
        check(f"member messages.get metadata {m['id']}", fm == ft)
    tid = lm["messages"][0]["threadId"]
    thm, tht = both(f"threads/{tid}", format="minimal")
    check("member threads.get", thm == tht and thm["messages"])
    h0 = pm["historyId"]
    for e in (member, "twin@example.com"):
        c.admin("POST", f"/mailboxes/{e}/messages/{lm['messages'][0]['id']}/labels",
                {"add": ["STARRED"], "remove": ["UNREAD"]})
        c.admin("POST", f"/mailboxes/{e}/messages", {"internal_date_ms": NOW_MS})
    hm, _ = c.all_pages("history", "history", token=tm, startHistoryId=h0)
    ht, _ = c.all_pages("history", "history", token=tt, startHistoryId=h0)
    check("member history.list after mutations", hm == ht and len(hm) >= 2, (hm, ht))
    c.admin("POST", "/faults", {"endpoint": "profile", "kind": "status", "status": 503,
                                "email": member})
    e = c.gmail_error("profile", token=tm)
    check("member fault rule fires for it alone", e is not None and e.status == 503
          and c.gmail_error("profile", token=get_token(c.base, "refresh-fleet-0003@fleet.test")) is None)
    c.admin("POST", f"/mailboxes/{member}/config", {"quota_units_per_minute": 1})
    c.gmail("profile", token=tm)
    e = c.gmail_error("profile", token=tm)
    check("member per-mailbox config applies", e is not None and e.status == 429)
    c.admin("POST", f"/mailboxes/{member}/config", {"quota_units_per_minute": None})

    # Statistics in one call: totals, error classes and per-member calls.
    c.admin("POST", "/fleet/stats/reset", {"prefix": "fleet"})
    zero = c.admin("GET", "/fleet/stats?prefix=fleet")
    check("fleet stats reset", zero["requests"] == {} and zero["units"] == 0
          and all(not any(v for k, v in row.items() if k not in ("messages", "history_id"))
                  for row in zero["per_mailbox"].values()))
    a, b = "fleet-0010@fleet.test", "fleet-0999@fleet.test"
    ta = get_token(c.base, "refresh-" + a)
    tb = get_token(c.base, "refresh-" + b)
    c.gmail("profile", token=ta)
    c.gmail("messages", token=ta)
    c.gmail("history", token=ta, startHistoryId=c.gmail("profile", token=ta)["historyId"])
    c.gmail("profile", token=tb)
    c.admin("POST", "/faults", [{"endpoint": "messages.list", "kind": "status", "status": 500,
                                 "email": b},
                                {"endpoint": "history.list", "kind": "status", "status": 429,
                                 "email": b}])
    c.gmail_error("messages", token=tb)
    c.gmail_error("history", token=tb, startHistoryId="1")
    c.gmail_error("messages/0000000000000000", token=tb)     # 404
    start = time.monotonic()
    st = c.admin("GET", "/fleet/stats?prefix=fleet")
    print(f"fleet: stats of 1,000 members in {time.monotonic() - start:.3f} s")
    check("fleet stats: request totals", st["requests"] == {
        "token": 2, "profile": 3, "messages.list": 2, "history.list": 2, "messages.get": 1},
        st["requests"])
    check("fleet stats: units", st["units"] == 3 * 1 + 2 * 5 + 2 * 2 + 20, st["units"])  # 2026 costs: get 20
    check("fleet stats: errors by status and class", st["errors_sent"] == {
        "500": 1, "429": 1, "404": 1} and st["errors_4xx"] == 2 and st["errors_5xx"] == 1,
          {k: v for k, v in st.items() if k.startswith("errors")})
    check("fleet stats: members", st["mailboxes"] == 1000 and len(st["per_mailbox"]) == 1000
          and st["messages"] == sum(r["messages"] for r in st["per_mailbox"].values()))
    pa, pb = st["per_mailbox"][a], st["per_mailbox"][b]
    check("fleet stats: per member calls", (pa["token"], pa["profile"], pa["messages.list"],
                                            pa["history.list"]) == (1, 2, 1, 1)
          and (pb["token"], pb["profile"], pb["messages.list"], pb["history.list"]) == (1, 1, 1, 1)
          and pa["units"] == 1 * 2 + 5 + 2, (pa, pb))
    untouched = [r for e, r in st["per_mailbox"].items() if e not in (a, b)]
    check("fleet stats: the other members made no call", len(untouched) == 998 and all(
        r["token"] == r["profile"] == r["messages.list"] == r["history.list"] == 0 for r in untouched))
    check("fleet stats: history ids are the profiles'",
          pa["history_id"] == c.gmail("profile", token=ta)["historyId"])

    # New mail for every 100th member, one call.
    before = c.admin("GET", "/fleet/stats?prefix=fleet")["per_mailbox"]
    got = c.admin("POST", "/fleet/mail", {"prefix": "fleet", "count_per_mailbox": 2, "every": 100})
    after = c.admin("GET", "/fleet/stats?prefix=fleet")["per_mailbox"]
    changed = [e for e in emails if after[e]["history_id"] != before[e]["history_id"]]
    check("fleet mail: every 100th member, 2 messages each", got["mailboxes"] == 10
          and got["added"] == 20 and changed == emails[::100] == got["emails"], got)
    check("fleet mail: message counts", all(
        after[e]["messages"] == before[e]["messages"] + (2 if e in changed else 0) for e in emails))
    t1 = get_token(c.base, "refresh-" + emails[0])
    new = c.all_pages("history", "history", token=t1, startHistoryId=before[emails[0]]["history_id"],
                      historyTypes="messageAdded")[0]
    check("fleet mail: members' history shows the new messages",
          len(new) == 2 and all("INBOX" in r["messagesAdded"][0]["message"]["labelIds"] for r in new), new)
    newest = c.gmail("messages", token=t1, maxResults=1)["messages"][0]
    c.admin("POST", "/fleet/mail", {"prefix": "fleet", "every": 1000, "reply": True,
                                    "labels": ["INBOX"]})
    reply = c.gmail("messages", token=t1, maxResults=1)["messages"][0]
    check("fleet mail reply: into the newest thread", reply["id"] != newest["id"]
          and reply["threadId"] == newest["threadId"])

    # Refusals: overlaps are 409 and create nothing; bad specs are 400.
    e = error_of(lambda: c.admin("POST", "/fleet", {"count": 5, "prefix": "fleet", "first": 998}))
    check("fleet overlapping a fleet -> 409", e is not None and e.status == 409, e)
    c.admin("POST", "/mailboxes", {"email": "other-0003@fleet.test", "messages": 1, "threads": 1})
    e = error_of(lambda: c.admin("POST", "/fleet", {"count": 5, "prefix": "other"}))
    check("fleet overlapping a mailbox -> 409", e is not None and e.status == 409
          and "other-0003@fleet.test" in str(e.body), e)
    check("a refused fleet creates no member", getattr(error_of(
        lambda: c.admin("GET", "/mailboxes/other-0001@fleet.test")), "status", 0) == 404)
    more = c.admin("POST", "/fleet", {"count": 3, "prefix": "fleet", "first": 1001,
                                      "domain": "fleet.test", "messages": 1, "threads": 1})
    check("a fleet grows with first", [m["email"] for m in more["mailboxes"]] == [
        "fleet-1001@fleet.test", "fleet-1002@fleet.test", "fleet-1003@fleet.test"]
        and c.admin("GET", "/fleet/stats?prefix=fleet")["mailboxes"] == 1003)
    for bad in ({"prefix": "x"}, {"count": 0, "prefix": "x"}, {"count": "5", "prefix": "x"},
                {"count": 100_001, "prefix": "x"}, {"count": 2, "prefix": "X"},
                {"count": 2, "prefix": "a/b"}, {"count": 2, "prefix": ""},
                {"count": 2, "prefix": "x", "domain": "nodot"},
                {"count": 2, "prefix": "x", "domain": "a b.test"},
                {"count": 2, "prefix": "x", "email": "a@b.test"},
                {"count": 2, "prefix": "x", "content_email": "a@b.test"},
                {"count": 2, "prefix": "x", "bogus": 1}, {"count": 2, "prefix": "x", "seed": "s"},
                {"count": 2, "prefix": "x", "messages": 1, "threads": 3},
                {"count": 2, "prefix": "x", "first": -1}, [1]):
        e = error_of(lambda: c.admin("POST", "/fleet", bad))
        check(f"bad fleet {bad} -> 400", e is not None and e.status == 400, e)
    check("refused specs created nothing", not any(
        m["email"].startswith("x-") for m in c.admin("GET", "/mailboxes")))
    for method, path, body, status in (
            ("GET", "/fleet/stats", None, 400), ("GET", "/fleet/stats?prefix=nope", None, 404),
            ("POST", "/fleet/mail", {"prefix": "nope"}, 404),
            ("POST", "/fleet/mail", {"prefix": "fleet", "count_per_mailbox": 0}, 400),
            ("POST", "/fleet/mail", {"prefix": "fleet", "every": 0}, 400),
            ("POST", "/fleet/mail", {"prefix": "fleet", "labels": "INBOX"}, 400),
            ("POST", "/fleet/stats/reset", {}, 400)):
        e = error_of(lambda: c.admin(method, path, body))
        check(f"{method} {path} {body} -> {status}", e is not None and e.status == status, e)

    # dq.py, the shell's client.
    dq = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "dq.py")]
    env = dict(os.environ, DOUBLE_URL=c.base)

    def run(*args):
        out = subprocess.run(dq + list(args), capture_output=True, text=True, env=env)
        return out.stdout.split("\n")[:-1] if out.returncode == 0 else ["exit", out.returncode, out.stderr]
    lines = run("fleet", "3", "cli", '{"domain": "cli.test", "messages": 2, "threads": 1}')
    check("dq.py fleet prints address and token", lines == [
        f"cli-000{n}@cli.test refresh-cli-000{n}@cli.test" for n in (1, 2, 3)], lines)
    get_token(c.base, "refresh-cli-0002@cli.test")
    check("dq.py fleet-calls", run("fleet-calls", "cli", "token") == ["0:2 1:1"])
    stats = run("fleet-stats", "cli")
    check("dq.py fleet-stats", stats == ["e4xx=0 e5xx=0 mailboxes=3 messages=6 peak=0 token=1 units=0"],
          stats)
    check("dq.py fleet-mail", run("fleet-mail", "cli", "1", "2") == ["2"])
    check("dq.py fleet-history", [x.split()[0] for x in run("fleet-history", "cli")]
          == ["cli-0001@cli.test", "cli-0002@cli.test", "cli-0003@cli.test"])
    check("dq.py fleet-reset-stats", run("fleet-reset-stats", "cli") == []
          and run("fleet-calls", "cli", "token") == ["0:3"])
    refused = run("fleet", "3", "cli", '{"domain": "cli.test"}')
    check("dq.py fleet refused: exit 1 and the double's reason", refused[:2] == ["exit", 1]
          and "409" in refused[2] and "cli-0001@cli.test" in refused[2], refused)


def test_push(c):
    """users.watch/stop and the Pub/Sub pull surface (gmail_pubsub.py)."""
    topic, closed = "projects/st/topics/gmail", "projects/st/topics/closed"
    sub = "projects/st/subscriptions/pull"
    c.admin("POST", "/pubsub/topics", {"name": topic})
    c.admin("POST", "/pubsub/topics", {"name": closed, "publish_grant": False})
    c.admin("POST", "/pubsub/subscriptions", {"name": sub, "topic": topic, "ack_deadline_seconds": 0.5})
    c.admin("POST", "/pubsub/config", {"pull_wait_ms": 300})
    addr = "push@example.com"
    c.admin("POST", "/mailboxes", {"email": addr, "now_ms": NOW_MS, "messages": 4, "threads": 2,
                                   "attachments": 0, "seed": 9})
    tok = get_token(c.base, "refresh-" + addr)

    def watch(t):
        return call(c.base, "POST", f"{G}/watch", {"topicName": t}, token=tok)
    for bad, status in (("projects/st/topics/none", 404), (closed, 403), ("gmail", 400)):
        e = error_of(lambda: watch(bad))
        check(f"watch refuses {bad} with {status}", getattr(e, "status", 0) == status, e)
    e = error_of(lambda: watch(closed))
    check("watch's 403 names the push account's grant",
          "User not authorized" in json.dumps(getattr(e, "body", "")), e)
    w = watch(topic)
    stats = c.admin("GET", "/pubsub/stats")
    check("watch answers historyId and a 7-day expiration (strings)",
          isinstance(w["historyId"], str) and int(w["expiration"]) - stats["now_ms"] > 7 * 86400_000 - 5000, w)
    units = c.admin("GET", f"/stats?email={addr}")["mailboxes"][addr]
    check("watch costs 100 units a call (refused ones too)",
          units["units_by_endpoint"].get("watch") == 100 * units["requests"]["watch"], units)
    pt = c.admin("POST", "/pubsub/token", {})["access_token"]

    def pull(n=10, token=pt):
        return call(c.base, "POST", f"/v1/{sub}:pull", {"maxMessages": n}, token=token)

    def ack(ids):
        return call(c.base, "POST", f"/v1/{sub}:acknowledge", {"ackIds": ids}, token=pt)
    check("pull without a token is 401", getattr(error_of(lambda: pull(token="nope")), "status", 0) == 401)
    check("pull of an unknown subscription is 404", getattr(error_of(lambda: call(
        c.base, "POST", "/v1/projects/st/subscriptions/none:pull", {"maxMessages": 1}, token=pt)), "status", 0) == 404)
    t0 = time.monotonic()
    check("an empty pull is held, then answers {}", pull() == {} and time.monotonic() - t0 >= 0.25)
    m = c.admin("POST", f"/mailboxes/{addr}/messages", {})
    got = pull()["receivedMessages"]
    note = json.loads(base64.b64decode(got[0]["message"]["data"]))
    check("a change publishes {emailAddress, historyId} with the new history id",
          len(got) == 1 and note == {"emailAddress": addr, "historyId": int(m["historyId"])}, got)
    time.sleep(0.6)
    again = pull()["receivedMessages"]
    check("unacknowledged: delivered again after the ack deadline",
          len(again) == 1 and again[0]["message"]["messageId"] == got[0]["message"]["messageId"], again)
    ack([again[0]["ackId"], got[0]["ackId"]])
    time.sleep(0.6)
    st = c.admin("GET", "/pubsub/stats")["subscriptions"][sub]
    check("acknowledged: not delivered again", pull() == {} and st["outstanding"] == 0, st)
    # the cap: one notification a second; later changes fold into the next
    for _ in range(3):
        c.admin("POST", f"/mailboxes/{addr}/messages", {})
    first = pull()["receivedMessages"]
    ack([x["ackId"] for x in first])
    time.sleep(1.1)
    rest = pull()["receivedMessages"]
    last = json.loads(base64.b64decode(rest[-1]["message"]["data"]))["historyId"]
    check("one notification a second per mailbox, the rest folded into one with the newest id",
          len(first) == 1 and len(rest) == 1 and str(last) == c.admin("GET", f"/mailboxes/{addr}")["history_id"],
          (first, rest))
    ack([x["ackId"] for x in rest])
    c.admin("POST", "/pubsub/faults", {"subscription": sub, "duplicate": 1.0, "reorder": True})
    time.sleep(1.1)
    c.admin("POST", f"/mailboxes/{addr}/messages", {})
    dup = pull()["receivedMessages"]
    check("the duplicate fault sends each delivery twice, with two ack ids",
          len(dup) == 2 and dup[0]["message"]["messageId"] == dup[1]["message"]["messageId"]
          and dup[0]["ackId"] != dup[1]["ackId"], dup)
    ack([x["ackId"] for x in dup])
    c.admin("POST", "/pubsub/faults", {"subscription": sub, "duplicate": 0, "reorder": False,
                                       "fail": [503]})
    check("the fail fault answers the next call 503", getattr(error_of(pull), "status", 0) == 503)
    call(c.base, "POST", "/admin/pubsub/publish", {"topic": topic, "data": "%%%"})
    bad = pull()["receivedMessages"]
    check("admin publish delivers raw data", bad[0]["message"]["data"] == "%%%", bad)
    call(c.base, "POST", f"/v1/{sub}:modifyAckDeadline", {"ackIds": [bad[0]["ackId"]], "ackDeadlineSeconds": 0},
         token=pt)
    check(":modifyAckDeadline 0 gives it back at once", len(pull()["receivedMessages"]) == 1)
    # the clock: a watch lapses 7 days on; renewing moves it
    c.admin("POST", "/pubsub/clock", {"advance_ms": 7 * 86400_000})
    n0 = c.admin("GET", "/pubsub/stats")["counts"]["notifications"]
    time.sleep(1.1)
    c.admin("POST", f"/mailboxes/{addr}/messages", {})
    st = c.admin("GET", "/pubsub/stats")
    check("a lapsed watch publishes nothing", st["counts"]["notifications"] == n0
          and not st["watches"][addr]["active"], st["counts"])
    watch(topic)
    time.sleep(1.1)
    c.admin("POST", f"/mailboxes/{addr}/messages", {})
    check("renewed, it publishes again", c.admin("GET", "/pubsub/stats")["counts"]["notifications"] == n0 + 1)
    r = request(c.base, "POST", f"{G}/stop", {}, token=tok)
    check("users.stop answers 204 without a body", r.status == 204 and r.data == b"", r.status)
    c.admin("POST", f"/mailboxes/{addr}/messages", {})
    check("stopped: no more notifications", c.admin("GET", "/pubsub/stats")["counts"]["notifications"] == n0 + 1)
    c.admin("POST", "/pubsub/config", {"pull_wait_ms": 2000})



def test_tls():
    if not shutil.which("openssl"):
        print("skip TLS test: no openssl binary")
        return
    tmp = tempfile.mkdtemp(prefix="gmail_double_tls.")
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    proc, base = start_double("--tls-cert", cert, "--tls-key", key, scheme="https")
    try:
        call(base, "POST", "/admin/mailboxes", {"email": "tls@example.com", "messages": 3,
                                                "threads": 2, "attachments": 0})
        tok = get_token(base, "refresh-tls@example.com")
        p = call(base, "GET", f"{G}/profile", token=tok)
        check("HTTPS serving", p["messagesTotal"] == 3)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def test_jwt_grant(c):
    """Service accounts: the JWT bearer grant checked as Google does (double_jwt.py)."""
    import double_jwt
    tmp = tempfile.mkdtemp(prefix="double_jwt.")
    try:
        keys = {}
        for name in ("a", "b"):
            pem = os.path.join(tmp, f"{name}.pem")
            subprocess.run(["openssl", "genrsa", "-out", pem, "2048"], check=True, capture_output=True)
            pub = subprocess.run(["openssl", "pkey", "-in", pem, "-pubout"], check=True,
                                 capture_output=True, text=True).stdout
            keys[name] = (pem, pub)
        # The parser against OpenSSL's own reading of the key.
        modulus = subprocess.run(["openssl", "rsa", "-in", keys["a"][0], "-noout", "-modulus"], check=True,
                                 capture_output=True, text=True).stdout.strip().split("=", 1)[1]
        pkcs1 = subprocess.run(["openssl", "rsa", "-in", keys["a"][0], "-RSAPublicKey_out"], check=True,
                               capture_output=True, text=True).stdout
        n, e = double_jwt.parse_public_key(keys["a"][1])
        check("jwt: SPKI modulus is OpenSSL's", n == int(modulus, 16) and e == 65537)
        check("jwt: PKCS#1 key reads the same", double_jwt.parse_public_key(pkcs1) == (n, e))

        domain, user = "dwd-selftest.example", "dwd-user@dwd-selftest.example"
        sa_email = "sync@selftest-project.iam.gserviceaccount.com"
        scope = "https://www.googleapis.com/auth/gmail.readonly"
        c.admin("POST", "/mailboxes", {"email": user, "refresh_token": "rt-dwd", "threads": 2,
                                       "messages": 3, "attachments": 0, "now_ms": NOW_MS})
        reg = c.admin("POST", "/service_accounts", {
            "client_email": sa_email, "client_id": "101234567890", "key_id": "kid-a",
            "public_key": keys["a"][1], "scopes": [scope], "domain": domain})
        check("jwt: register", reg["modulus_bits"] == 2048 and reg["scopes"] == [scope])
        token_url = c.base + "/token"

        def assertion(key="a", header=None, **claims):
            now = int(time.time())
            body = {"iss": sa_email, "sub": user, "scope": scope, "aud": token_url,
                    "iat": now, "exp": now + 3600}
            body.update(claims)
            head = header or {"alg": "RS256", "typ": "JWT", "kid": "kid-a"}
            enc = [base64.urlsafe_b64encode(json.dumps(x).encode()).decode().rstrip("=")
                   for x in (head, body)]
            signing_input = ".".join(enc)
            sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", keys[key][0]],
                                 input=signing_input.encode(), check=True, capture_output=True).stdout
            return signing_input + "." + base64.urlsafe_b64encode(sig).decode().rstrip("=")

        def grant(a):
            form = urllib.parse.urlencode({"grant_type": double_jwt.JWT_BEARER, "assertion": a})
            return request(c.base, "POST", "/token", form)

        def refused(name, r, status, pair):
            check(name, r.status == status and r.json() == {"error": pair[0], "error_description": pair[1]},
                  f"{r.status} {r.data[:200]!r}")

        r = grant(assertion())
        body = r.json()
        check("jwt: granted", r.status == 200 and body["token_type"] == "Bearer" and body["scope"] == scope)
        tok = body.get("access_token")
        check("jwt: the token opens the sub's mailbox", c.gmail("profile", token=tok)["emailAddress"] == user)
        e = error_of(lambda: call(c.base, "GET", f"/gmail/v1/users/{OWNER}/profile", token=tok))
        check("jwt: ... and no other (403 Delegation denied)", e is not None and e.status == 403
              and "Delegation denied" in json.dumps(e.body))
        refused("jwt: key of another account", grant(assertion(key="b")), 400, double_jwt.BAD_SIGNATURE)
        good = assertion()
        refused("jwt: tampered claims", grant(good.split(".")[0] + "." +
                base64.urlsafe_b64encode(json.dumps({"iss": sa_email, "sub": OWNER}).encode()).decode().rstrip("=")
                + "." + good.split(".")[2]), 400, double_jwt.BAD_SIGNATURE)
        refused("jwt: wrong kid", grant(assertion(header={"alg": "RS256", "typ": "JWT", "kid": "old"})),
                400, double_jwt.BAD_SIGNATURE)
        now = int(time.time())
        refused("jwt: exp - iat > 3600", grant(assertion(iat=now, exp=now + 3601)), 400, double_jwt.BAD_TIME)
        refused("jwt: expired window", grant(assertion(iat=now - 4000, exp=now - 400)), 400, double_jwt.BAD_TIME)
        refused("jwt: issued in the future", grant(assertion(iat=now + 900, exp=now + 4000)), 400,
                double_jwt.BAD_TIME)
        check("jwt: within the leeway", grant(assertion(iat=now + 60, exp=now + 3660)).status == 200)
        refused("jwt: scope not granted", grant(assertion(scope=scope + " https://mail.google.com/")), 401,
                double_jwt.UNAUTHORIZED)
        refused("jwt: consumer account", grant(assertion(sub="someone@gmail.com")), 401, double_jwt.UNAUTHORIZED)
        refused("jwt: unknown user", grant(assertion(sub="nobody@" + domain)), 400, double_jwt.UNKNOWN_USER)
        refused("jwt: unknown service account", grant(assertion(iss="x@y.iam.gserviceaccount.com")), 400,
                double_jwt.UNKNOWN_ACCOUNT)
        r = grant(assertion(aud="https://oauth2.googleapis.com/token"))
        check("jwt: wrong aud", r.status == 400 and r.json()["error"] == "invalid_grant")
        c.admin("POST", f"/service_accounts/{sa_email}", {"scopes": []})
        refused("jwt: delegation revoked", grant(assertion()), 401, double_jwt.UNAUTHORIZED)
        c.admin("POST", f"/service_accounts/{sa_email}", {"scopes": [scope], "clock_skew_s": 7200})
        refused("jwt: clock far off", grant(assertion()), 400, double_jwt.BAD_TIME)
        c.admin("POST", f"/service_accounts/{sa_email}", {"clock_skew_s": 0})
        check("jwt: granted again", grant(assertion()).status == 200)
        stats = c.admin("GET", f"/stats?email={user}")
        check("jwt: token requests counted for the sub's mailbox",
              stats["mailboxes"][user]["requests"].get("token", 0) >= 10 and stats["jwt_grants"] >= 14)
        e = error_of(lambda: c.admin("POST", "/service_accounts", {"client_email": "x@y", "client_id": "1",
                                                                     "key_id": "k", "public_key": "nope"}))
        check("jwt: a bad public key is refused", e is not None and e.status == 400)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    started = time.monotonic()
    proc, base = start_double()
    c = Ctx(base)
    tests = [test_setup, test_oauth, test_auth_errors, test_profile_labels, test_messages_list,
             test_threads, test_message_get, test_full_payload, test_fields, test_gzip,
             test_keepalive, test_history, test_token_expiry, test_quota_and_stats, test_project_quota,
             test_concurrency_and_latency, test_faults, test_isolation, test_robustness,
             test_empty_mailbox_and_cli, test_generation, test_bench_features, test_fleet,
             test_jwt_grant, test_push]
    try:
        for test in tests:
            try:
                test(c)
            except Exception:  # noqa: BLE001 - report and go on
                check(f"{test.__name__} raised", False, traceback.format_exc())
        try:
            test_tls()
        except Exception:  # noqa: BLE001
            check("test_tls raised", False, traceback.format_exc())
        check("double still running", proc.poll() is None)
    finally:
        proc.terminate()
        proc.wait()
    if VERBOSE:
        print(f"{time.monotonic() - started:.1f} s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
