"""
cpu.py: issue 15's figures, for bench.py --cpu.

For each size (2,000 / 10,000 / 50,000 messages by default; threads =
messages / 5, attachments 22 % of messages, 1 KB-1 MB log-uniform, about
40 KB of raw mail per message) a first full sync at latency 0, quota off,
in a new session whose backend is measured from inside: utime + stime of
/proc/<pid>/stat read before and after the sync (so the session's start is
not counted), peak RSS (VmHWM) and the shared memory it touched (RssShmem).

The floor, measured in the same run, for each size on that size's raw bytes:
  * the CPU of a backend COPYing the same raw messages (exported from the
    synced blobs table in COPY binary form) into a bytea column with lz4,
    measured at every size: once a mailbox outgrows shared_buffers, the
    COPY pays for writing out the buffers it evicts as the sync does;
  * the CPU the standalone MIME driver (test/mime, built -O2 like the
    extension) spends parsing them, measured inside one process (mime_driver
    --parse-cpu 5: the mean of five passes over every message after a
    warming pass), so process start-up and file reading are not counted;
    measured on the first size's mailbox (parsing involves no
    database, so its cost per message does not depend on the mailbox's
    size) and counted per message at every size.
The wire ratio: a first sync at 50 ms against curl --parallel fetching the
same requests (bench.wire_bound) on one of the mailboxes.
--perf profiles a second first sync of the --perf-sizes mailboxes (perf record
with DWARF call graphs): the top symbols by self time, and where the CPU
goes by phase (PHASES: inflating, MIME parsing, TOAST, rows, HTTP, ...).
"""

import os
import re
import shutil
import struct
import subprocess
import threading
import time

import bench

CLK_TCK = os.sysconf("SC_CLK_TCK")
SPEC_ATTACH_PCT = 22


def size_spec(n):
    return {"threads": max(1, n // 5), "messages": n, "attachments": n * SPEC_ATTACH_PCT // 100,
            "attachment_size_min": 1024, "attachment_size_max": 1024 * 1024,
            "attachment_size_dist": "log"}


class Session:
    """One psql session driven line by line, so a profiler can be attached
    to its backend between two statements."""

    def __init__(self, db):
        self.p = subprocess.Popen(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", db],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, bufsize=1)

    def query(self, sql):
        self.p.stdin.write(sql.rstrip().rstrip(";") + ";\n\\echo __done__\n")
        self.p.stdin.flush()
        out = []
        while True:
            line = self.p.stdout.readline()
            if line == "":
                raise RuntimeError("psql ended: " + self.p.stderr.read()[-2000:])
            line = line.rstrip("\n")
            if line == "__done__":
                return "\n".join(out)
            out.append(line)

    def close(self):
        try:
            self.p.stdin.close()
        except OSError:
            pass
        self.p.wait(timeout=60)


def proc_cpu_s(stat_text):
    """utime + stime in seconds from a /proc/<pid>/stat line."""
    fields = stat_text[stat_text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_stat(sess, pid):
    return sess.query(f"SELECT pg_read_file('/proc/{pid}/stat')")


def proc_status(sess, pid):
    return sess.query(f"SELECT pg_read_file('/proc/{pid}/status')")


def perf_start(pid, path, messages):
    """perf record of the backend with DWARF call graphs (the extension and
    PostgreSQL are built without frame pointers, so -g alone loses most
    callers); the rate is lowered for big mailboxes to keep about 20,000
    samples (16 KB of stack each)."""
    hz = max(49, min(499, int(20000 / max(1.0, messages * 0.0012))))
    return subprocess.Popen(["perf", "record", "--call-graph", "dwarf,16384", "-F", str(hz),
                             "-p", str(pid), "-o", path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# Where a sample's CPU goes: the innermost frame of its stack that one of
# these recognises (walking from the leaf towards main) names its phase, so
# the SHA-256 inside the MIME parser counts as SHA-256 and the memcpy inside
# a batch's array as building the batch.  A stack no rule recognises (or
# cut short by the 16 KB copied per sample) counts by its leaf's library.
PHASES = [
    ("inflating gzip answers (libdeflate)", lambda s, d: "libdeflate" in d),
    ("SHA-256 of raw messages and attachments", lambda s, d: s.startswith(("sha256_hex", "EVP_Digest"))
     or "libcrypto" in d),
    ("MIME parsing (GMime, src/mime_*.c)", lambda s, d: s.startswith(("mp_", "g_mime")) or "libgmime" in d
     or "libglib" in d or "libgobject" in d),
    ("answer JSON and base64url (the raw member)", lambda s, d: s in (
        "gmail_parse_body", "gmail_base64url_decode", "json_parse_members", "find_top_level_string")),
    ("TOAST: blob bytes and long columns (lz4, chunks, their WAL and index)", lambda s, d: s in (
        "toast_save_datum", "heap_toast_insert_or_update", "toast_tuple_externalize",
        "toast_compress_datum", "toast_tuple_try_compression") or "liblz4" in d),
    ("HTTP: libcurl and its sockets", lambda s, d: "libcurl" in d or s in ("http_wait_any",)),
    ("rows: the batch statements without TOAST (executor, indexes, WAL, triggers)", lambda s, d: s in (
        "SPI_execute_plan", "SPI_execute_snapshot", "run_plan", "store_batch_flush", "SPI_prepare",
        "SPI_prepare_cursor", "SPI_execute_with_args", "SPI_execute")),
    ("building rows and batch arrays", lambda s, d: s in (
        "build_message_row", "store_batch_add_message", "store_batch_add_blob",
        "store_batch_add_attachment", "column_array", "construct_md_array")),
]


def perf_phases(path):
    """Share of samples per phase (PHASES), from perf script's call stacks."""
    r = subprocess.run(["perf", "script", "-i", path, "-F", "comm,ip,sym,dso"],
                       capture_output=True, text=True, timeout=1800)
    counts, total, frames = {}, 0, None

    def account(stack):
        for sym, dso in stack:
            for name, rule in PHASES:
                if rule(sym, dso):
                    return name
        dso = next((d for _, d in stack if d != "inlined"), "")
        lib = ("kernel" if "kernel" in dso else "postgres" if dso.endswith("/postgres")
               else "libc" if "libc.so" in dso else os.path.basename(dso) or "unknown")
        return f"other: {lib}"

    for line in r.stdout.splitlines() + ["postgres"]:
        if not line.startswith(("\t", " ")):
            if frames:
                name = account(frames)
                counts[name] = counts.get(name, 0) + 1
                total += 1
            frames = []
            continue
        m = re.match(r"\s*[0-9a-f]+\s+(.*?)(?:\+0x[0-9a-f]+)?(?: \(inlined\))?\s+\((.*)\)\s*$", line)
        if m and frames is not None:
            frames.append((m.group(1), m.group(2)))
    return [(100.0 * c / total, n) for n, c in sorted(counts.items(), key=lambda x: -x[1])] if total else []


def perf_stop(proc, path, top=15):
    proc.send_signal(2)
    proc.wait(timeout=300)
    r = subprocess.run(["perf", "report", "-i", path, "--no-children", "--sort", "dso,symbol",
                        "--stdio", "--percent-limit", "0.02", "-g", "none"],
                       capture_output=True, text=True, timeout=600)
    agg = {}
    for line in r.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(\S+)", line)
        if m:
            sym = m.group(3)
            if sym.startswith("0x"):
                sym = "(unresolved addresses)"    # a library without symbols: one row per library
            key = (m.group(2), sym)
            agg[key] = agg.get(key, 0.0) + float(m.group(1))
    rows = sorted(((p, d, s) for (d, s), p in agg.items()), reverse=True)
    return rows[:top], perf_phases(path)


def memlog_start(db, pid):
    """GI_BENCH_MEMLOG=SECONDS (a debugging aid, off by default): have the
    syncing backend log its memory contexts to the server log that often
    (pg_log_backend_memory_contexts), to see what grows during a sync."""
    every = float(os.environ.get("GI_BENCH_MEMLOG") or 0)
    if every <= 0:
        return None
    stop = threading.Event()

    def loop():
        s = Session(db)
        try:
            while not stop.wait(every):
                s.query(f"SELECT pg_log_backend_memory_contexts({pid})")
        finally:
            s.close()
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return (stop, t)


def memlog_stop(memlog):
    if memlog:
        memlog[0].set()
        memlog[1].join(timeout=30)


def cpu_sync(db, mbid, email, concurrency, perf_path=None, expected=2000, settings=()):
    """A first full sync in a new session: CPU of its backend, RSS, tuples."""
    sess = Session(db)
    try:
        sess.query("SET client_min_messages = warning")
        sess.query(f"SET gmail_ingest.quota_units_per_minute = 0")
        sess.query(f"SET gmail_ingest.max_concurrency = {concurrency}")
        for setting in settings:
            sess.query(f"SET {setting}")
        pid = int(sess.query("SELECT pg_backend_pid()"))
        perf = perf_start(pid, perf_path, expected) if perf_path else None
        if perf:
            time.sleep(1.0)                         # perf attached before the work starts
        memlog = memlog_start(db, pid)
        cpu0 = proc_cpu_s(proc_stat(sess, pid))
        t0 = time.monotonic()
        run = sess.query(f"SELECT status || ' ' || messages_inserted || ' ' || bytes_downloaded "
                         f"FROM gmail_ingest.gmail_sync({mbid}, {bench.DAYS}, true)")
        wall = time.monotonic() - t0
        cpu1 = proc_cpu_s(proc_stat(sess, pid))
        status = proc_status(sess, pid)
        prof = perf_stop(perf, perf_path) if perf else None
        memlog_stop(memlog)
    finally:
        sess.close()
    st, msgs, wire_bytes = run.split()
    if st != "succeeded":
        raise RuntimeError(f"sync {st}")
    return {"cpu_s": cpu1 - cpu0, "wall_s": wall, "messages": int(msgs), "bytes": int(wire_bytes),
            "hwm_kb": bench.proc_status_kb(status, "VmHWM"),
            "shmem_kb": bench.proc_status_kb(status, "RssShmem"),
            "anon_kb": bench.proc_status_kb(status, "RssAnon"), "profile": prof}


def another_first_sync(name, email, concurrency, *args, **kwargs):
    """cpu_sync of email's mailbox once more, into a database of its own
    (name + pid), dropped afterwards."""
    db = f"{name}_{os.getpid()}"
    bench.fresh_db(db)
    try:
        return cpu_sync(db, bench.add_mailbox(db, email), email, concurrency, *args, **kwargs)
    finally:
        bench.drop_db(db)


def export_raw(db, path):
    """The synced raw messages in COPY binary form at path (written by the server)."""
    bench.psql(db, f"COPY (SELECT b.data FROM gmail_ingest.blobs b JOIN gmail_ingest.mail_messages m "
                   f"ON m.raw_sha256 = b.sha256) TO '{path}' (FORMAT binary)")


def export_blobs(db, path):
    """Every blob the sync stored (raw messages and attachments) in COPY
    binary form at path; returns their total size in bytes."""
    bench.psql(db, f"COPY (SELECT data FROM gmail_ingest.blobs) TO '{path}' (FORMAT binary)")
    return int(bench.psql(db, "SELECT coalesce(sum(size_bytes), 0) FROM gmail_ingest.blobs"))


def split_copy_binary(path):
    """The one-column rows of a COPY binary file, as bytes."""
    with open(path, "rb") as f:
        data = f.read()
    pos = 11 + 4
    ext = struct.unpack(">i", data[pos:pos + 4])[0]
    pos += 4 + ext
    rows = []
    while True:
        (nf,) = struct.unpack(">h", data[pos:pos + 2])
        pos += 2
        if nf == -1:
            return rows
        (ln,) = struct.unpack(">i", data[pos:pos + 4])
        pos += 4
        rows.append(data[pos:pos + ln])
        pos += ln


def copy_floor(db, path):
    """CPU of a backend COPYing the raw messages into an lz4 bytea column."""
    bench.psql(db, "DROP TABLE IF EXISTS public.floor_copy; "
                   "CREATE TABLE public.floor_copy (data bytea COMPRESSION lz4)")
    sess = Session(db)
    try:
        pid = int(sess.query("SELECT pg_backend_pid()"))
        cpu0 = proc_cpu_s(proc_stat(sess, pid))
        sess.query(f"COPY public.floor_copy FROM '{path}' (FORMAT binary)")
        cpu1 = proc_cpu_s(proc_stat(sess, pid))
    finally:
        sess.close()
    bench.psql(db, "DROP TABLE public.floor_copy")
    return cpu1 - cpu0


def build_mime_driver(outdir):
    root = os.path.abspath(os.path.join(bench.HERE, "..", ".."))
    subprocess.run(["make", "-s", "-C", os.path.join(root, "test", "mime"), f"OUT={outdir}"],
                   check=True, capture_output=True, timeout=600)
    return os.path.join(outdir, "mime_driver")


def mime_floor(driver, files, reps=5):
    """Parse CPU of the standalone driver over files, measured inside one
    process (mime_driver --parse-cpu): the mean of reps passes over every
    file after a warming pass; start-up and file reading not counted."""
    r = subprocess.run([driver, "--parse-cpu", str(reps)] + files, capture_output=True, text=True,
                       check=True, timeout=3600)
    return float(r.stdout.strip())


def run_cpu(args, workdir):
    sizes = [int(s) for s in args.cpu_sizes.split(",")]
    gi_work = os.environ.get("GI_WORK") or workdir
    floordir = os.path.join(gi_work, f"bench_floor_{os.getpid()}")
    os.makedirs(floordir, exist_ok=True)
    shutil.chown(floordir, "postgres", "postgres")
    results, floor, wire, wire_sync = [], None, None, None
    try:
        for i, n in enumerate(sizes):
            email = f"benchcpu{n}-{os.getpid()}@example.com"
            bench.log(f"cpu: generating {n} messages")
            made = bench.create_mailbox(email, size_spec(n), f"benchcpu{n}@example.com", latency_ms=0,
                                        warm="raw")
            db = f"bench_cpu{n}_{os.getpid()}"
            bench.fresh_db(db)
            mbid = bench.add_mailbox(db, email)
            bench.log(f"cpu: first sync of {n} messages")
            r = cpu_sync(db, mbid, email, args.concurrency)
            if i == 0:
                # the same first sync without gzip (gmail_ingest.accept_gzip = off)
                bench.log(f"cpu: first sync of {n} messages with accept_gzip off")
                r["plain"] = another_first_sync(f"bench_plain{n}", email, args.concurrency,
                                                settings=("gmail_ingest.accept_gzip = off",))
            if args.perf and n in args.perf_sizes:
                # profiled in a second first sync (a database of its own), so
                # perf's overhead stays out of the measured figures
                bench.log(f"cpu: profiled first sync of {n} messages")
                pr = another_first_sync(f"bench_perf{n}", email, args.concurrency,
                                        os.path.join(args.perf_dir or workdir, f"perf{n}.data"), n)
                r["profile"], r["profile_cpu_s"] = pr["profile"], pr["cpu_s"]
            r.update({"n": n, "raw_bytes": made["raw_bytes"], "generate_s": made["generate_s"],
                      "threads": size_spec(n)["threads"], "attachments": size_spec(n)["attachments"]})
            results.append(r)
            bench.log(f"cpu: the floor's COPY of {n} messages (lz4)")
            raw = os.path.join(floordir, "raw.bin")
            export_raw(db, raw)
            copy_s = copy_floor(db, raw)
            r["floor_copy_s"] = copy_s
            # not the floor: what COPYing every byte the sync stores costs
            stored = os.path.join(floordir, "stored.bin")
            r["stored_bytes"] = export_blobs(db, stored)
            r["stored_copy_s"] = copy_floor(db, stored)
            os.unlink(stored)
            if i == 0:
                bench.log("cpu: the floor's MIME driver")
                msgs = split_copy_binary(raw)
                mdir = os.path.join(workdir, "msgs")
                os.makedirs(mdir, exist_ok=True)
                files = []
                for k, m in enumerate(msgs):
                    fn = os.path.join(mdir, f"{k}.eml")
                    with open(fn, "wb") as f:
                        f.write(m)
                    files.append(fn)
                driver = build_mime_driver(os.path.join(workdir, "mime"))
                mime_s = mime_floor(driver, files)
                floor = {"copy_s": copy_s, "mime_s": mime_s, "messages": len(msgs),
                         "raw_bytes": sum(len(m) for m in msgs)}
                shutil.rmtree(mdir, ignore_errors=True)
            os.unlink(raw)
            bench.drop_db(db)
            if n == args.wire_size:
                bench.log(f"cpu: wire ratio at 50 ms on {n} messages")
                bench.set_limits(email, 50)
                db = f"bench_wire{n}_{os.getpid()}"
                bench.fresh_db(db)
                mbid = bench.add_mailbox(db, email)
                wire_sync = bench.measured_sync(db, mbid, email, True, concurrency=args.concurrency)
                bench.drop_db(db)
                wire = bench.wire_bound(email, args.concurrency, workdir)
    finally:
        shutil.rmtree(floordir, ignore_errors=True)
    return cpu_tables(results, floor, wire_sync, wire), results, floor


def cpu_tables(results, floor, wire_sync, wire):
    mbs = 1048576
    lines = ["### CPU per message (first full sync, latency 0 ms, quota off)", "",
             f"Threads = messages ÷ 5; attachments = {SPEC_ATTACH_PCT} % of messages, 1 KB–1 MB "
             "log-uniform. Backend CPU = utime + stime of the syncing backend (/proc/<pid>/stat, "
             "read before and after the sync in its session).", "",
             "| messages | KB raw/msg | wall s | backend CPU s | ms/message | MB/s/core | floor ms/msg | ÷ floor | × 2k per msg |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    mime_ms = floor["mime_s"] * 1000 / floor["messages"] if floor else None
    base = results[0]["cpu_s"] / results[0]["messages"] if results and results[0]["messages"] else None
    for r in results:
        per = r["cpu_s"] * 1000 / r["messages"] if r["messages"] else float("nan")
        rate = r["raw_bytes"] / mbs / r["cpu_s"] if r["cpu_s"] else float("nan")
        # this size's COPY plus the MIME driver's cost per message
        floor_ms = (r["floor_copy_s"] * 1000 / r["messages"] + mime_ms
                    if mime_ms is not None and r.get("floor_copy_s") is not None and r["messages"] else None)
        ratio = f"{per / floor_ms:.2f}" if floor_ms else ""
        fcol = f"{floor_ms:.3f}" if floor_ms else ""
        grow = f"{per / 1000 / base:.2f}" if base else ""
        lines.append(f"| {r['messages']} | {r['raw_bytes'] / r['n'] / 1024:.1f} | {r['wall_s']:.1f} "
                     f"| {r['cpu_s']:.2f} | {per:.3f} | {rate:.1f} | {fcol} | {ratio} | {grow} |")
    for r in results:
        if r.get("plain") and r["messages"]:
            p = r["plain"]
            per = p["cpu_s"] * 1000 / r["messages"]
            floor_ms = (r["floor_copy_s"] * 1000 / r["messages"] + mime_ms
                        if mime_ms is not None and r.get("floor_copy_s") is not None else None)
            lines += ["", f"The {r['messages']}-message first sync again with `gmail_ingest.accept_gzip = off` "
                      f"(plain answers, {p['bytes'] / 1e6:.1f} MB on the wire against "
                      f"{r['bytes'] / 1e6:.1f} MB gzipped): {p['cpu_s']:.2f} s of backend CPU, "
                      f"**{per:.3f} ms/message**"
                      + (f", {per / floor_ms:.2f} × the floor" if floor_ms else "") + "."]
    if floor:
        lines += ["", f"Floor, on the {floor['messages']}-message mailbox ({floor['raw_bytes'] / mbs:.1f} MB "
                  "of raw messages):", "",
                  "| part | CPU s | ms/message | MB/s/core |", "|---|---:|---:|---:|"]
        for name, s in (("COPY of the raw bytes into bytea (lz4)", floor["copy_s"]),
                        ("MIME driver parsing them (test/mime)", floor["mime_s"]),
                        ("floor (sum)", floor["copy_s"] + floor["mime_s"])):
            lines.append(f"| {name} | {s:.2f} | {s * 1000 / floor['messages']:.3f} "
                         f"| {floor['raw_bytes'] / mbs / s if s else float('nan'):.1f} |")
        lines += ["", "The COPY at every size (its own raw bytes; the floor column above adds "
                  "the MIME driver's ms/message), and beside it, not part of the floor, the COPY "
                  "of every blob the sync stored (the raw messages and the attachments' "
                  "decoded bytes):", "",
                  "| messages | COPY CPU s | ms/message | MB/s/core | stored blobs MB | their COPY CPU s "
                  "| ms/message |", "|---:|---:|---:|---:|---:|---:|---:|"]
        for r in results:
            if r.get("floor_copy_s") is not None and r["messages"]:
                c = r["floor_copy_s"]
                sc = r.get("stored_copy_s")
                lines.append(f"| {r['messages']} | {c:.2f} | {c * 1000 / r['messages']:.3f} "
                             f"| {r['raw_bytes'] / mbs / c if c else float('nan'):.1f} "
                             f"| {r.get('stored_bytes', 0) / mbs:.1f} | {sc:.2f} "
                             f"| {sc * 1000 / r['messages']:.3f} |")
    lines += ["", "### Backend memory vs mailbox size (same first syncs)", "",
              "| messages | VmHWM MB | RssShmem at end MB | peak RSS − shared MB | RssAnon at end MB |",
              "|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['messages']} | {r['hwm_kb'] / 1024:.1f} | {r['shmem_kb'] / 1024:.1f} "
                     f"| {(r['hwm_kb'] - r['shmem_kb']) / 1024:.1f} | {r['anon_kb'] / 1024:.1f} |")
    if wire:
        lines += ["", f"### Wire ratio at 50 ms ({wire['messages']} messages, first full sync vs curl --parallel)", "",
                  f"sync {wire_sync['wall_s']:.2f} s, wire {wire['wall_s']:.2f} s: **{wire_sync['wall_s'] / wire['wall_s']:.2f}**"]
    for r in results:
        if r.get("profile"):
            top, phases = r["profile"]
            per = r["cpu_s"] * 1000 / r["messages"] if r["messages"] else float("nan")
            lines += ["", f"### Profile of the backend, {r['messages']} messages (perf record, DWARF call "
                      "graphs, self time; a second first sync into a database of its own)", "", "| % | object | symbol |", "|---:|---|---|"]
            lines += [f"| {p:.2f} | {d} | `{s}` |" for p, d, s in top]
            lines += ["", f"Where it goes, {r['messages']} messages (each sample counted once, by the innermost "
                      "frame of its stack that names a phase; ms/message = share × the measured "
                      f"{per:.3f}; the profiled sync, a second one, took "
                      f"{r['profile_cpu_s'] * 1000 / r['messages']:.3f} ms/message under perf):", "",
                      "| phase | % of samples | ms/message |", "|---|---:|---:|"]
            lines += [f"| {n} | {p:.1f} | {p * per / 100:.3f} |" for p, n in phases]
    return "\n".join(lines) + "\n"
