#!/usr/bin/env python3
"""fleet.py: the fleet benchmark (issue 11), run by test/bench/fleet.sh.

N mailboxes of the double's fleet fixture, W workers as concurrent
`CALL gmail_ingest.run_due(...)` sessions, the double and the cluster both
holding the project to LIMIT units a minute, every answer delayed by
LATENCY ms.  Two phases:

  first sync    every mailbox's first sync: messages/s, the workers'
                backend CPU per message (from /proc), units / limit against
                the wall time (the pace), 429s by kind from the double.
  steady state  intervals of INTERVAL, new mail for a tenth of the fleet
                every minute, for STEADY minutes (more than one interval, so
                every mailbox comes due once): freshness lag p50 / p95 / max
                from fleet_status sampled every 10 s, the worst sample of
                each, and the workers' CPU share per mailbox per hour.

Prints a Markdown table (also appended to $OUT, default
bench_fleet_results.md) and the targets: pace within 10% of the limit,
0 x 429, p95 lag <= interval + 1 minute.
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "double"))
from double_client import call  # noqa: E402

DB = "bench_fleet"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def psql(sql, db=DB):
    out = subprocess.run(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql],
                         check=True, capture_output=True, text=True).stdout
    return out.strip()


def double(method, path, body=None):
    return call(os.environ["DOUBLE_URL"], method, path, body)


def backend_cpu_s(pids):
    """User + system CPU seconds of these backends so far."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / CLK_TCK


def set_project_limit(limit):
    psql(f"ALTER SYSTEM SET gmail_ingest.project_quota_units_per_minute = {limit}", "postgres")
    psql("SELECT pg_reload_conf()", "postgres")
    for _ in range(50):
        if psql("SHOW gmail_ingest.project_quota_units_per_minute", "postgres") == str(limit):
            return
        time.sleep(0.1)
    sys.exit("the project limit did not reach new sessions")


def start_workers(n, runtime):
    procs = []
    for w in range(n):
        env = dict(os.environ, PGAPPNAME=f"gi_bench_worker_{w}")
        procs.append(subprocess.Popen(
            ["psql", "-X", "-q", "-d", DB, "-c", f"CALL gmail_ingest.run_due('{runtime}')"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for _ in range(100):
        pids = psql("SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'gi_bench_worker_%'").split()
        if len(pids) == n:
            return procs, [int(p) for p in pids]
        time.sleep(0.1)
    sys.exit("the workers did not start")


def stop_workers(procs):
    psql("SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE 'gi_bench_worker_%'")
    for p in procs:
        p.wait()


def rate_limited():
    s = double("GET", "/admin/stats?email=-")
    return s["rate_limited"]["user"], s["rate_limited"]["project"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mailboxes", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--limit", type=int, default=60000, help="project units per minute")
    ap.add_argument("--latency-ms", type=int, default=50)
    ap.add_argument("--interval", default="15 minutes")
    ap.add_argument("--interval-s", type=int, default=900)
    ap.add_argument("--steady-minutes", type=float, default=20)
    ap.add_argument("--out", default=os.environ.get("OUT", "bench_fleet_results.md"))
    a = ap.parse_args()

    psql(f"DROP DATABASE IF EXISTS {DB}", "postgres")
    psql(f"CREATE DATABASE {DB}", "postgres")
    psql("CREATE EXTENSION gmail_ingest")
    prefix = "bf%d" % (time.time() % 1e6)
    t = time.monotonic()
    members = double("POST", "/admin/fleet", {"count": a.mailboxes, "prefix": prefix})["mailboxes"]
    lines = "\n".join(f"{m['email']} {m['refresh_token']}" for m in members)
    psql("WITH org AS MATERIALIZED (SELECT gen_random_uuid() AS id) "
         "SELECT count(gmail_ingest.add_mailbox(org.id, split_part(l, ' ', 1), split_part(l, ' ', 2))) "
         f"FROM org, unnest(string_to_array($l${lines}$l$, E'\\n')) AS l")
    print(f"# fleet of {a.mailboxes} created and registered in {time.monotonic() - t:.1f} s", flush=True)
    double("POST", "/admin/config", {"project_quota_units_per_minute": a.limit, "latency_ms": a.latency_ms})
    set_project_limit(a.limit)
    user0, project0 = rate_limited()

    # --- first sync of the whole fleet
    t0 = time.monotonic()
    procs, pids = start_workers(a.workers, "2 hours")
    cpu0 = backend_cpu_s(pids)
    while int(psql("SELECT count(*) FROM gmail_ingest.mailboxes WHERE history_id IS NULL")) > 0:
        time.sleep(0.5)
    wall = time.monotonic() - t0
    cpu = backend_cpu_s(pids) - cpu0
    msgs = int(psql("SELECT count(*) FROM gmail_ingest.mail_messages"))
    units = int(psql("SELECT sum(quota_units) FROM gmail_ingest.sync_runs"))
    failed = int(psql("SELECT count(*) FROM gmail_ingest.sync_runs WHERE status <> 'succeeded'"))
    user1, project1 = rate_limited()
    first = {"wall": wall, "msgs": msgs, "units": units, "cpu": cpu, "failed": failed,
             "u429": user1 - user0, "p429": project1 - project0,
             "pace": wall / (units / a.limit * 60)}
    print("# first sync: %(msgs)d messages in %(wall).1f s, %(units)d units, pace %(pace).3f, "
          "CPU %(cpu).1f s, 429s user %(u429)d project %(p429)d, failed runs %(failed)d" % first, flush=True)

    # --- steady state
    psql(f"SELECT count(gmail_ingest.set_schedule(id, '{a.interval}')) FROM gmail_ingest.mailboxes")
    cpu0 = backend_cpu_s(pids)
    run0 = int(psql("SELECT max(id) FROM gmail_ingest.sync_runs"))
    t1 = time.monotonic()
    next_mail = t1
    samples = []
    end = t1 + a.steady_minutes * 60
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_mail:
            double("POST", "/admin/fleet/mail", {"prefix": prefix, "count_per_mailbox": 1, "every": 10})
            next_mail += 60
        row = psql("SELECT extract(epoch FROM lag_p50), extract(epoch FROM lag_p95), "
                   "extract(epoch FROM lag_max), due_now, running FROM gmail_ingest.fleet_status")
        samples.append([float(x) for x in row.split("|")])
        time.sleep(10)
    steady_s = time.monotonic() - t1
    steady_cpu = backend_cpu_s(pids) - cpu0
    stop_workers(procs)
    user2, project2 = rate_limited()
    steady_failed = int(psql("SELECT count(*) FROM gmail_ingest.sync_runs WHERE status <> 'succeeded'")) - failed
    turns = int(psql(f"SELECT count(*) FROM gmail_ingest.sync_runs WHERE id > {run0}"))
    if steady_s < a.interval_s:
        sys.exit("the steady state was shorter than one interval")
    p50 = max(s[0] for s in samples)
    p95 = max(s[1] for s in samples)
    lag_max = max(s[2] for s in samples)
    cpu_share = steady_cpu / a.mailboxes / (steady_s / 3600)

    table = [
        f"Fleet benchmark: {a.mailboxes} mailboxes, {a.workers} workers, project limit {a.limit} units/min "
        f"(double and GUC), {a.latency_ms} ms per answer, interval {a.interval}.",
        "",
        "| phase | figure | value |",
        "|---|---|---:|",
        f"| first sync | messages | {msgs} |",
        f"| first sync | wall s | {wall:.1f} |",
        f"| first sync | messages/s | {msgs / wall:.1f} |",
        f"| first sync | backend CPU ms per message | {first['cpu'] * 1000 / max(msgs, 1):.2f} |",
        f"| first sync | quota units | {units} |",
        f"| first sync | wall ÷ (units ÷ limit) | {first['pace']:.3f} |",
        f"| first sync | 429s (per-user / project) | {first['u429']} / {first['p429']} |",
        f"| first sync | failed runs | {failed} |",
        f"| steady | minutes measured | {steady_s / 60:.1f} |",
        f"| steady | turns | {turns} |",
        f"| steady | freshness lag p50 / p95 / max, s (worst of the 10 s samples) | {p50:.0f} / {p95:.0f} / {lag_max:.0f} |",
        f"| steady | backend CPU s per mailbox per hour | {cpu_share:.3f} |",
        f"| steady | 429s (per-user / project) | {user2 - user1} / {project2 - project1} |",
        f"| steady | failed runs | {steady_failed} |",
    ]
    ok_pace = abs(first["pace"] - 1) <= 0.10
    ok_429 = first["u429"] + first["p429"] + (user2 - user1) + (project2 - project1) == 0
    ok_lag = p95 <= a.interval_s + 60
    table += ["", f"Targets: pace within 10% of the limit: {'met' if ok_pace else 'NOT met'}; "
              f"0 x 429: {'met' if ok_429 else 'NOT met'}; p95 lag <= interval + 1 minute: "
              f"{'met' if ok_lag else 'NOT met'}."]
    text = "\n".join(table)
    print(text)
    with open(a.out, "a") as f:
        f.write(text + "\n\n")
    double("POST", "/admin/config", {"project_quota_units_per_minute": 0, "latency_ms": 0})
    psql("ALTER SYSTEM RESET gmail_ingest.project_quota_units_per_minute", "postgres")
    psql("SELECT pg_reload_conf()", "postgres")
    return 0 if ok_pace and ok_429 and ok_lag else 1


if __name__ == "__main__":
    sys.exit(main())
