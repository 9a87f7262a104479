#!/usr/bin/env python3
"""test/bench/object_store.py: the object-storage benchmark (issue 14).

The first full sync of the benchmark mailbox (bench.py's BENCH: 10,000
messages, 1,500 attachments of 1 KB-5 MB) with blob_store = 'database' and
with blob_store = 's3', against the same double (50 ms per answer) and the
S3 test server (test/s3/s3_server.py) delayed 50 ms per request.  Prints a
Markdown table: wall time, the ratio s3 / database (target <= 1.2), the
requests the store received, and the size of the gmail_ingest schema
(pg_total_relation_size of its tables) after each sync.  --short: bench.py's
SHORT mailbox (1,500 messages) at the same latencies.

Run by test/bench/object_store.sh, which provides the cluster, the double
and the S3 server (S3_URL).
"""
import argparse
import json
import os
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402


def s3_admin(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
    req = urllib.request.Request(os.environ["S3_URL"] + path, data=data, method=method)
    return json.loads(urllib.request.urlopen(req, timeout=60).read() or b"null")


def schema_bytes(db):
    return int(bench.psql(db, "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                              "JOIN pg_namespace n ON n.oid = c.relnamespace "
                              "WHERE n.nspname = 'gmail_ingest' AND c.relkind = 'r'"))


def one(mode, email, tag, latency):
    db = f"gi_bench_objects_{mode}"
    bench.fresh_db(db)
    prefix = f"bench-{tag}-{mode}/"
    bench.psql(db, f"ALTER DATABASE {db} SET gmail_ingest.s3_prefix = '{prefix}';")
    mb = bench.add_mailbox(db, email)
    os.environ["PGOPTIONS"] = f"-c gmail_ingest.blob_store={mode}"
    s3_admin("POST", "/admin/stats/reset")
    try:
        r = bench.measured_sync(db, mb, email, force_full=True)
    finally:
        os.environ.pop("PGOPTIONS", None)
    st = s3_admin("GET", "/admin/stats")
    objs = s3_admin("GET", "/admin/objects?prefix=" + urllib.request.quote(prefix))
    rec = int(bench.psql(db, "SELECT count(*) FROM gmail_ingest.objects"))
    size = schema_bytes(db)
    return {"mode": mode, "wall_s": r["wall_s"], "messages": r["messages"], "put": st["PUT"],
            "head": st["HEAD"], "rejected": st["rejected"], "objects": len(objs),
            "object_mb": sum(o["size"] for o in objs) / 1e6, "recorded": rec,
            "schema_mb": size / 1e6, "db": db}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--short", action="store_true")
    ap.add_argument("--latency-ms", type=int, default=50)
    ap.add_argument("--s3-latency-ms", type=int, default=50)
    ap.add_argument("--keep", action="store_true", help="keep the databases")
    args = ap.parse_args()
    spec = dict(bench.SHORT if args.short else bench.BENCH)
    tag = str(int(time.time()))
    email = f"bench-objects-{tag}@example.com"
    content = "benchobjects-short@example.com" if args.short else "benchobjects@example.com"
    bench.log("generating the mailbox")
    made = bench.create_mailbox(email, spec, content, latency_ms=args.latency_ms)
    s3_admin("POST", "/admin/config", {"latency_ms": args.s3_latency_ms})
    try:
        res = [one("database", email, tag, args.latency_ms), one("s3", email, tag, args.latency_ms)]
    finally:
        s3_admin("POST", "/admin/config", {"latency_ms": 0})
    d, s = res
    ratio = s["wall_s"] / d["wall_s"]
    lines = [f"### Object storage: first full sync, {made['listed']:,} messages, "
             f"{made['raw_bytes'] / 1e6:.0f} MB raw; double {args.latency_ms} ms, "
             f"S3 server {args.s3_latency_ms} ms per request", "",
             "| blob_store | wall s | msg/s | PUTs | HEADs | objects (MB) | schema size MB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in res:
        lines.append(f"| {r['mode']} | {r['wall_s']:.2f} | {r['messages'] / r['wall_s']:.0f} | {r['put']} | "
                     f"{r['head']} | {r['objects']} ({r['object_mb']:.1f}) | {r['schema_mb']:.1f} |")
    lines += ["", f"s3 / database wall time: {ratio:.2f} (target <= 1.2)"]
    print("\n".join(lines))
    ok = (s["rejected"] == 0 and s["put"] == s["objects"] == s["recorded"] and d["put"] == 0
          and s["messages"] == d["messages"] == made["listed"])
    print(f"# invariants: {'ok' if ok else 'BROKEN'} (s3: {s['put']} PUTs, {s['objects']} objects, "
          f"{s['recorded']} recorded, {s['rejected']} refused)")
    if not args.keep:
        for r in res:
            bench.drop_db(r["db"])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
