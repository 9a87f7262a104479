#!/usr/bin/env python3
"""test/s3/s3_server.py: a small S3-compatible object store for the tests.

It owns nothing of the extension's logic.  Every request's AWS Signature
Version 4 is recomputed with botocore (AWS's own Python implementation,
Debian python3-botocore), so a signing mistake in the extension (or in the
libcurl it uses) is a 403 SignatureDoesNotMatch here exactly as it would be
at AWS.  It also checks what S3 checks and botocore does not:

  - x-amz-content-sha256 must be the SHA-256 of the body actually sent
    (400 XAmzContentSHA256Mismatch);
  - the credential scope's date, region and service; the clock skew;
  - the URI and query must be in AWS's canonical percent-encoding
    (uppercase hex, only A-Z a-z 0-9 - . _ ~ and '/' left bare), the
    encoding a signer has to produce;
  - with --strict-keys (default on) an object key must stay inside the
    character set Supabase Storage accepts, so a key that works here works
    there.

Path-style addressing: /<bucket>/<key>, also under /storage/v1/s3 (where
Supabase Storage mounts its S3 endpoint, so an endpoint with a path is
exercised).  Virtual-hosted addressing for host names under localhost:
Host <bucket>.localhost:<port>, path /<key>.  Operations: PUT, GET, HEAD,
DELETE object and ListObjectsV2 (GET /<bucket>?list-type=2 with prefix,
continuation-token, max-keys).  Errors are S3's XML documents.

The admin API (plain HTTP + JSON, no signature) is under /admin/:
  GET  /admin/objects?prefix=P     [{key, size, sha256, age_seconds}]
  GET  /admin/object?key=K         the object's bytes (404 if none)
  GET  /admin/stats                counts of requests by operation, rejects
  POST /admin/stats/reset
  POST /admin/faults {"ops": ["PUT"], "status": 503, "code": "SlowDown",
                      "count": N}   the next N matching requests fail
  POST /admin/config {"latency_ms": 50, "max_keys": 2, "secret_key": "...",
                      "drop_bucket": true, "create_bucket": true}
  POST /admin/age {"seconds": 7200}   every object becomes that much older
  POST /admin/put {"key": K, "data_hex": "..."}   an object behind our back
  POST /admin/delete {"key": K}   one object gone behind our back
  POST /admin/clear               delete every object
"""

import argparse
import datetime
import hashlib
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from xml.sax.saxutils import escape

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

# The characters Supabase Storage accepts in an object key.
SAFE_KEY = re.compile(r"^[A-Za-z0-9_/!.*'() &$=@;:+,?\-]+$")
MAX_SKEW = datetime.timedelta(minutes=15)
SUPABASE_MOUNT = "/storage/v1/s3"


class Store:
    def __init__(self, args):
        self.lock = threading.Lock()
        self.access_key = args.access_key
        self.secret_key = args.secret_key
        self.region = args.region
        self.bucket = args.bucket
        self.bucket_exists = True
        self.strict_keys = not args.lax_keys
        self.objects = {}          # key -> (bytes, sha256 hex, created monotonic-ish epoch)
        self.latency_ms = 0
        self.max_keys = 1000
        self.faults = []           # [{ops, status, code, count}]
        self.reset_stats()

    def reset_stats(self):
        self.stats = {"PUT": 0, "GET": 0, "HEAD": 0, "DELETE": 0, "LIST": 0,
                      "rejected": 0, "faults": 0, "codes": {}}

    def count_code(self, code):
        self.stats["codes"][code] = self.stats["codes"].get(code, 0) + 1


def xml_error(code, message, resource=""):
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code>'
            '<Message>%s</Message><Resource>%s</Resource>'
            '<RequestId>test</RequestId></Error>' %
            (code, escape(message), escape(resource))).encode()


class Reject(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def canonical_path_ok(raw_path):
    return quote(unquote(raw_path), safe="/~") == raw_path


def canonical_query_ok(raw_query):
    if not raw_query:
        return True
    for pair in raw_query.split("&"):
        k, _, v = pair.partition("=")
        for part in (k, v):
            if quote(unquote(part), safe="-_.~") != part:
                return False
    return True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "TestS3/1.0"

    def log_message(self, fmt, *args):
        sys.stderr.write("s3: " + (fmt % args) + "\n")

    @property
    def st(self):
        return self.server.store

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def send(self, status, body=b"", ctype="application/xml", extra=None, head=False):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def send_json(self, obj, status=200):
        self.send(status, json.dumps(obj).encode(), "application/json")

    # ---- dispatch ----
    def do_GET(self):
        self.handle_any("GET")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_HEAD(self):
        self.handle_any("HEAD")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def do_POST(self):
        self.handle_any("POST")

    def handle_any(self, method):
        parts = urlsplit(self.path)
        if parts.path.startswith("/admin/"):
            return self.admin(method, parts)
        body = self.body()
        try:
            self.s3(method, parts, body)
        except Reject as r:
            self.log_message("refused %s %s: %s %s (Authorization: %s)", method, parts.path, r.code,
                             r.message, re.sub(r"Signature=\w+", "Signature=...",
                                               self.headers.get("Authorization", "-")))
            with self.st.lock:
                self.st.stats["rejected"] += 1
                self.st.count_code(r.code)
            self.send(r.status, xml_error(r.code, r.message, parts.path), head=(method == "HEAD"))

    # ---- S3 ----
    def verify_signature(self, method, parts, body):
        st = self.st
        auth = self.headers.get("Authorization", "")
        m = re.match(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,"
                     r"\s*SignedHeaders=([^,]+),\s*Signature=([0-9a-f]{64})$", auth)
        if not m:
            raise Reject(403, "AccessDenied", "missing or malformed SigV4 Authorization header")
        akid, date, region, service, signed, signature = m.groups()
        if akid != st.access_key:
            raise Reject(403, "InvalidAccessKeyId",
                         "The AWS Access Key Id you provided does not exist in our records.")
        amz_date = self.headers.get("x-amz-date", "")
        try:
            when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ")
        except ValueError:
            raise Reject(403, "AccessDenied", "x-amz-date missing or malformed")
        if abs(datetime.datetime.utcnow() - when) > MAX_SKEW:
            raise Reject(403, "RequestTimeTooSkewed", "request time too skewed")
        if date != amz_date[:8] or service != "s3":
            raise Reject(403, "SignatureDoesNotMatch", "credential scope date or service")
        if region != st.region:
            raise Reject(400, "AuthorizationHeaderMalformed",
                         "the region '%s' is wrong; expecting '%s'" % (region, st.region))
        names = signed.split(";")
        for needed in ("host", "x-amz-date", "x-amz-content-sha256"):
            if needed not in names:
                raise Reject(403, "AccessDenied", "%s is not signed" % needed)
        claimed = self.headers.get("x-amz-content-sha256", "")
        if claimed != "UNSIGNED-PAYLOAD" and claimed != hashlib.sha256(body).hexdigest():
            raise Reject(400, "XAmzContentSHA256Mismatch",
                         "The provided 'x-amz-content-sha256' header does not match what was computed.")
        if not canonical_path_ok(parts.path) or not canonical_query_ok(parts.query):
            raise Reject(403, "SignatureDoesNotMatch",
                         "the URI is not in canonical percent-encoding")
        # botocore recomputes the signature from exactly the signed headers
        headers = {}
        for n in names:
            v = self.headers.get(n)
            if v is None:
                raise Reject(403, "AccessDenied", "signed header %s is absent" % n)
            headers[n] = v
        url = "http://%s%s" % (headers["host"], self.path)
        req = AWSRequest(method=method, url=url, headers=headers, data=body)
        req.context["timestamp"] = amz_date
        signer = S3SigV4Auth(Credentials(st.access_key, st.secret_key), "s3", st.region)
        expected = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
        if expected != signature:
            raise Reject(403, "SignatureDoesNotMatch",
                         "The request signature we calculated does not match the signature you provided.")

    def s3(self, method, parts, body):
        st = self.st
        path = parts.path
        if path.startswith(SUPABASE_MOUNT + "/"):
            path = path[len(SUPABASE_MOUNT):]
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        if host.endswith(".localhost"):
            # virtual-hosted style: the bucket is in the host name
            bucket = host[:-len(".localhost")]
            with st.lock:
                st.stats["virtual_hosted"] = st.stats.get("virtual_hosted", 0) + 1
            raw_key = path[1:]
        else:
            segs = path.split("/", 2)
            bucket = unquote(segs[1]) if len(segs) > 1 else ""
            raw_key = segs[2] if len(segs) > 2 else ""
        key = unquote(raw_key)
        q = dict(parse_qsl(parts.query, keep_blank_values=True))
        op = ("LIST" if method == "GET" and not key else method)

        if st.latency_ms:
            time.sleep(st.latency_ms / 1000.0)
        self.verify_signature(method, parts, body)
        with st.lock:
            st.stats[op] = st.stats.get(op, 0) + 1
            for f in st.faults:
                if f["count"] > 0 and (not f.get("ops") or op in f["ops"]):
                    f["count"] -= 1
                    st.stats["faults"] += 1
                    st.count_code(f.get("code", "InternalError"))
                    self.send(f.get("status", 503),
                              xml_error(f.get("code", "InternalError"), "injected fault", parts.path),
                              head=(method == "HEAD"))
                    return
            if bucket != st.bucket or not st.bucket_exists:
                raise Reject(404, "NoSuchBucket", "The specified bucket does not exist")
            if op == "LIST":
                return self.list_objects(q)
            if not key:
                raise Reject(400, "InvalidRequest", "no key")
            if st.strict_keys and (not SAFE_KEY.match(key) or len(key.encode()) > 1024):
                raise Reject(400, "InvalidKey", "Invalid key: %s" % key)
            if method == "PUT":
                st.objects[key] = (body, hashlib.sha256(body).hexdigest(), time.time())
                etag = '"%s"' % hashlib.md5(body).hexdigest()
                return self.send(200, b"", extra={"ETag": etag})
            obj = st.objects.get(key)
            if method == "DELETE":
                st.objects.pop(key, None)
                return self.send(204)
            if obj is None:
                raise Reject(404, "NoSuchKey", "The specified key does not exist.")
            if method in ("GET", "HEAD"):
                data = obj[0]
                return self.send(200, data, "application/octet-stream",
                                 extra={"ETag": '"%s"' % hashlib.md5(data).hexdigest()},
                                 head=(method == "HEAD"))
            raise Reject(405, "MethodNotAllowed", method)

    def list_objects(self, q):
        st = self.st
        if q.get("list-type") != "2":
            raise Reject(400, "InvalidArgument", "only ListObjectsV2 is implemented")
        prefix = q.get("prefix", "")
        max_keys = min(int(q.get("max-keys", "1000")), st.max_keys)
        start = q.get("continuation-token", "")
        keys = sorted(k for k in st.objects if k.startswith(prefix) and k > start)
        page, more = keys[:max_keys], len(keys) > max_keys
        out = ['<?xml version="1.0" encoding="UTF-8"?>',
               '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
               "<Name>%s</Name><Prefix>%s</Prefix><KeyCount>%d</KeyCount><MaxKeys>%d</MaxKeys>"
               % (escape(st.bucket), escape(prefix), len(page), max_keys),
               "<IsTruncated>%s</IsTruncated>" % ("true" if more else "false")]
        if more:
            out.append("<NextContinuationToken>%s</NextContinuationToken>" % escape(page[-1]))
        for k in page:
            data, _, created = st.objects[k]
            lm = datetime.datetime.utcfromtimestamp(created).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            out.append("<Contents><Key>%s</Key><LastModified>%s</LastModified>"
                       "<Size>%d</Size><StorageClass>STANDARD</StorageClass></Contents>"
                       % (escape(k), lm, len(data)))
        out.append("</ListBucketResult>")
        self.send(200, "".join(out).encode())

    # ---- admin ----
    def admin(self, method, parts):
        st = self.st
        body = self.body()
        q = dict(parse_qsl(parts.query, keep_blank_values=True))
        arg = json.loads(body) if body else {}
        path = parts.path
        now = time.time()
        with st.lock:
            if method == "GET" and path == "/admin/objects":
                prefix = q.get("prefix", "")
                return self.send_json([{"key": k, "size": len(v[0]), "sha256": v[1],
                                        "age_seconds": now - v[2]}
                                       for k, v in sorted(st.objects.items())
                                       if k.startswith(prefix)])
            if method == "GET" and path == "/admin/object":
                obj = st.objects.get(q.get("key", ""))
                if obj is None:
                    return self.send_json({"error": "no such key"}, 404)
                return self.send(200, obj[0], "application/octet-stream")
            if method == "GET" and path == "/admin/stats":
                return self.send_json(st.stats)
            if method == "POST" and path == "/admin/stats/reset":
                st.reset_stats()
                return self.send_json({"ok": True})
            if method == "POST" and path == "/admin/faults":
                st.faults = [f for f in st.faults if f["count"] > 0]
                st.faults.append({"ops": arg.get("ops"), "status": int(arg.get("status", 503)),
                                  "code": arg.get("code", "SlowDown"),
                                  "count": int(arg.get("count", 1))})
                return self.send_json({"ok": True})
            if method == "POST" and path == "/admin/config":
                if "latency_ms" in arg:
                    st.latency_ms = int(arg["latency_ms"])
                if "max_keys" in arg:
                    st.max_keys = int(arg["max_keys"])
                if "secret_key" in arg:
                    st.secret_key = arg["secret_key"]
                if arg.get("drop_bucket"):
                    st.bucket_exists = False
                if arg.get("create_bucket"):
                    st.bucket_exists = True
                if arg.get("clear_faults"):
                    st.faults = []
                return self.send_json({"ok": True})
            if method == "POST" and path == "/admin/age":
                secs = float(arg.get("seconds", 0))
                st.objects = {k: (v[0], v[1], v[2] - secs) for k, v in st.objects.items()}
                return self.send_json({"ok": True})
            if method == "POST" and path == "/admin/put":
                data = bytes.fromhex(arg.get("data_hex", ""))
                st.objects[arg["key"]] = (data, hashlib.sha256(data).hexdigest(), now)
                return self.send_json({"ok": True})
            if method == "POST" and path == "/admin/delete":
                st.objects.pop(arg["key"], None)
                return self.send_json({"ok": True})
            if method == "POST" and path == "/admin/clear":
                st.objects = {}
                return self.send_json({"ok": True})
        self.send_json({"error": "unknown admin call"}, 404)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--bucket", default="gmail-test")
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--access-key", default="TESTACCESSKEY")
    ap.add_argument("--secret-key", default="test-s3-secret-key")
    ap.add_argument("--lax-keys", action="store_true",
                    help="accept any key (AWS S3's rule) instead of Supabase's set")
    args = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    srv.store = Store(args)
    if args.port_file:
        with open(args.port_file + ".tmp", "w") as f:
            f.write(str(srv.server_address[1]))
        import os
        os.rename(args.port_file + ".tmp", args.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
