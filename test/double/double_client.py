#!/usr/bin/env python3
"""
double_client: a tiny standard-library client for gmail_double.py, used by
shell tests and by double_selftest.py.

    python3 test/double_client.py URL METHOD PATH [BODY] [--token T] [--get KEY]

prints the answer (JSON as one line; other bodies as raw bytes).  BODY is
JSON, or form fields (a=1&b=2) for POST /token.  --token sends a Bearer
token; --get a.b.0.c prints one value of the JSON answer (strings unquoted).
Exit status: 0 for 2xx, 1 for any other HTTP status (the body is still
printed), 2 when the server cannot be reached.

    from double_client import call, request, start_double, get_token
"""

import argparse
import gzip
import http.client
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))


class DoubleError(Exception):
    """A non-2xx answer; .status, .body (parsed JSON when possible), .headers."""

    def __init__(self, status, body, headers):
        super().__init__(f"HTTP {status}: {body}")
        self.status, self.body, self.headers = status, body, headers


class Response:
    def __init__(self, status, headers, data):
        self.status, self.headers, self.data = status, headers, data

    def json(self):
        data = self.data
        if self.headers.get("content-encoding") == "gzip":
            data = gzip.decompress(data)
        return json.loads(data) if data else None


def request(base, method, path, body=None, headers=None, token=None, timeout=30):
    """Send one request; returns Response(status, lower-cased headers, raw body).
    body: dict/list (sent as JSON), str or bytes (JSON if it parses, else form)."""
    url = urllib.parse.urlsplit(base)
    if url.scheme == "https":
        conn = http.client.HTTPSConnection(url.hostname, url.port, timeout=timeout,
                                           context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        if isinstance(body, (dict, list)):
            data, ctype = json.dumps(body).encode(), "application/json"
        else:
            data = body.encode() if isinstance(body, str) else body
            try:
                json.loads(data)
                ctype = "application/json"
            except ValueError:
                ctype = "application/x-www-form-urlencoded"
        hdrs.setdefault("Content-Type", ctype)
    try:
        conn.request(method, url.path.rstrip("/") + path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def call(base, method, path, body=None, token=None, headers=None):
    """JSON answer of a request; raises DoubleError for non-2xx statuses."""
    resp = request(base, method, path, body, headers, token)
    try:
        parsed = resp.json()
    except ValueError:
        parsed = resp.data
    if not 200 <= resp.status < 300:
        raise DoubleError(resp.status, parsed, resp.headers)
    return parsed


def get_token(base, refresh_token, client_id="test-client-id", client_secret="test-client-secret"):
    """Access token for a mailbox's refresh token."""
    form = urllib.parse.urlencode({"client_id": client_id, "client_secret": client_secret,
                                   "refresh_token": refresh_token,
                                   "grant_type": "refresh_token"})
    return call(base, "POST", "/token", form)["access_token"]


def start_double(*extra_args, scheme="http", timeout=10):
    """Start gmail_double.py on a free port; returns (process, base URL)."""
    port_file = os.path.join(tempfile.mkdtemp(prefix="gmail_double."), "port")
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "gmail_double.py"),
                             "--port", "0", "--port-file", port_file, *extra_args])
    deadline = time.monotonic() + timeout
    while not os.path.exists(port_file):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("gmail_double did not start")
        time.sleep(0.02)
    with open(port_file) as f:
        port = int(f.read())
    os.remove(port_file)
    os.rmdir(os.path.dirname(port_file))
    return proc, f"{scheme}://127.0.0.1:{port}"


def _pick(value, path):
    for key in path.split("."):
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


def main(argv=None):
    ap = argparse.ArgumentParser(description="Call gmail_double and print the answer.")
    ap.add_argument("url")
    ap.add_argument("method")
    ap.add_argument("path")
    ap.add_argument("body", nargs="?")
    ap.add_argument("--token")
    ap.add_argument("--get", metavar="KEY", help="print one value, e.g. history_id or messages.0.id")
    args = ap.parse_args(argv)
    try:
        resp = request(args.url, args.method.upper(), args.path, args.body, token=args.token)
    except OSError as e:
        print(f"double_client: {e}", file=sys.stderr)
        return 2
    try:
        answer = resp.json()
    except ValueError:
        sys.stdout.buffer.write(resp.data)
    else:
        if args.get:
            try:
                value = _pick(answer, args.get)
            except (KeyError, IndexError, ValueError, TypeError):
                print(f"double_client: no {args.get} in {json.dumps(answer)}", file=sys.stderr)
                return 1
            print(value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
        else:
            print(json.dumps(answer, ensure_ascii=False))
    return 0 if 200 <= resp.status < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
