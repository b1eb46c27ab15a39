#!/usr/bin/env python3
"""Measuring harness of scripts/bench (system python3, standard library only).

Expects the stand-ins' environment (MONGODB_URI, AWS_*), MONGODB_DB and the
buckets already set up, and the campaigns seeded. For each campaign it runs
the floor, the one-shot export to S3, the service (plain, gzip, four
concurrent), measuring only the measured process:

- floor / one-shot: a child process; CPU (user+sys) and peak RSS from
  os.wait4() of that child (its own rusage, not the stand-ins').
- service: a fresh `vf-export serve` per case; CPU from /proc/PID/stat
  (utime+stime) deltas over POST..FINISHED, peak RSS from VmHWM.
- service-interrupted: the same export with its `serve` process killed
  (-9) after a third and again after two thirds of the rows, each time a
  new process continuing it from its checkpoint: CPU summed over the three
  processes, wall from POST to FINISHED (it includes the two lapsed leases,
  LEASE_SECS=3).
- drain: two exports running in one `serve`, then SIGTERM: seconds to exit
  (each is handed back at its next part boundary), against an estimate of
  what waiting for them to finish would have taken (the uninterrupted
  service case's wall for the rows still to write).

Prints a table, one JSON line per run and the ratios. Exits non-zero only if
a run fails or a JSON line is missing; timings are never asserted.
"""

import argparse
import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

TICK = os.sysconf("SC_CLK_TCK")


def say(msg):
    print(f"\n==> {msg}", flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def child(cmd, env, log):
    """Run a child; returns (stdout, stderr, wall_ms, cpu_ms, max_rss_kb)."""
    with open(log, "w+") as err, open(log + ".out", "w+") as out:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        _, status, ru = os.wait4(p.pid, 0)
        wall = (time.monotonic() - t0) * 1000
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        o, e = out.read(), err.read()
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({p.returncode}):\n{e[-2000:]}")
    cpu = (ru.ru_utime + ru.ru_stime) * 1000
    return o, e, wall, cpu, ru.ru_maxrss


def proc_cpu_ms(pid):
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime/stime are fields 14/15.
    return (int(fields[11]) + int(fields[12])) * 1000 / TICK


def proc_hwm_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def iso_ms(s):
    """Epoch milliseconds of an ISO-8601 UTC timestamp from the API."""
    t = datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return t.timestamp() * 1000


def http(method, url, body=None, token=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


class Service:
    """A fresh `vf-export serve` for one case."""

    def __init__(self, binary, env, log, concurrency="4"):
        self.port = free_port()
        # Default POLL_INTERVAL_MS: a POST wakes this process's worker at once.
        env = dict(env, PORT=str(self.port), WORKER_CONCURRENCY=concurrency, DEV_ROUTES="true")
        self.log = open(log, "w")
        self.p = subprocess.Popen([binary, "serve"], env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(300):
            try:
                http("GET", self.base + "/heartbeat")
                break
            except Exception:
                if self.p.poll() is not None:
                    raise RuntimeError(f"vf-export serve exited; see {log}")
                time.sleep(0.1)
        else:
            raise RuntimeError(f"vf-export serve did not answer; see {log}")

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()

    def token(self, campaign):
        return http("POST", self.base + "/dev/token",
                    {"userId": "bench", "campaigns": {campaign: ["REPORT"]}})["token"]

    def export(self, campaign, token, i):
        return http("GET", f"{self.base}/campaigns/{campaign}/exports/{i}", token=token)

    def run(self, campaign, bodies):
        """POST each body; wait until all FINISHED. Returns (rows, wall, cpu, rss).

        Status is polled once a second, as a campaign tool would (polling
        faster measures the status route, not the export); the wall time is
        the exports' own first date.created to last date.finished (server
        clock, ms)."""
        token = http("POST", self.base + "/dev/token",
                     {"userId": "bench", "campaigns": {campaign: ["REPORT"]}})["token"]
        time.sleep(0.5)  # let start-up settle out of the window
        cpu0 = proc_cpu_ms(self.p.pid)
        ids = [http("POST", f"{self.base}/campaigns/{campaign}/exports", b, token)["id"] for b in bodies]
        rows, pending, created, finished = 0, set(ids), [], []
        while pending:
            for i in list(pending):
                d = http("GET", f"{self.base}/campaigns/{campaign}/exports/{i}", token=token)
                if d["status"] == "FINISHED":
                    rows += int(d["count"])
                    want = (d.get("progress") or {}).get("expectedRows")
                    if want is not None and int(d["count"]) != int(want):
                        # Counted, not hidden: a short export on the stand-in
                        # is a finding (see docs/performance.md), not noise.
                        say(f"WARNING: export {i} FINISHED with {d['count']} rows, "
                            f"{want} expected at its start")
                    created.append(iso_ms(d["date"]["created"]))
                    finished.append(iso_ms(d["date"]["finished"]))
                    pending.discard(i)
                elif d["status"] in ("FAILED", "EXPIRED"):
                    raise RuntimeError(f"export {i} ended {d['status']}: {d}")
            if pending:
                if self.p.poll() is not None:
                    raise RuntimeError("vf-export serve exited during the export")
                time.sleep(1.0)
        wall = max(finished) - min(created)
        cpu = proc_cpu_ms(self.p.pid) - cpu0
        return rows, wall, cpu, proc_hwm_kb(self.p.pid)


def wait_rows(svc, campaign, token, ids, at_least, timeout=3600):
    """Until every export in `ids` reported `at_least` rows written."""
    t0 = time.monotonic()
    while True:
        ds = [svc.export(campaign, token, i) for i in ids]
        if all(int((d.get("progress") or {}).get("rowsWritten") or 0) >= at_least for d in ds):
            return ds
        for d in ds:
            if d["status"] in ("FINISHED", "FAILED", "EXPIRED"):
                raise RuntimeError(f"export ended before {at_least} rows: {d}")
        if time.monotonic() - t0 > timeout:
            raise RuntimeError("exports never reached the rows")
        time.sleep(0.2)


def interrupted(vf, env, run, tag, campaign, rows):
    """An export whose process is killed twice: (rows, wall, cpu, rss)."""
    env = dict(env, LEASE_SECS="3")
    cpu, svcs = 0.0, []
    svc = Service(vf, env, f"{run}/interrupted-{tag}-1.log", concurrency="1")
    svcs.append(svc)
    token = svc.token(campaign)
    cpu0 = proc_cpu_ms(svc.p.pid)
    i = http("POST", f"{svc.base}/campaigns/{campaign}/exports",
             {"exportType": "entries", "dateKey": "interrupted"}, token)["id"]
    try:
        for n, frac in ((2, 1 / 3), (3, 2 / 3)):
            wait_rows(svc, campaign, token, [i], int(rows * frac))
            cpu += proc_cpu_ms(svc.p.pid) - cpu0
            svc.p.kill()
            svc.p.wait()
            svc = Service(vf, env, f"{run}/interrupted-{tag}-{n}.log", concurrency="1")
            svcs.append(svc)
            cpu0 = proc_cpu_ms(svc.p.pid)
        while True:
            d = svc.export(campaign, token, i)
            if d["status"] == "FINISHED":
                break
            if d["status"] in ("FAILED", "EXPIRED"):
                raise RuntimeError(f"interrupted export ended {d['status']}: {d}")
            time.sleep(1.0)
        cpu += proc_cpu_ms(svc.p.pid) - cpu0
        wall = iso_ms(d["date"]["finished"]) - iso_ms(d["date"]["created"])
        resumed = (d.get("progress") or {}).get("resumedFromRow")
        say(f"{tag}: interrupted export FINISHED with {d['count']} rows, last attempt from row {resumed}")
        return int(d["count"]), wall, cpu, proc_hwm_kb(svc.p.pid)
    finally:
        for s in svcs:
            s.stop()


def drain(vf, env, run, tag, campaign, rows):
    """Two exports running, then SIGTERM: (seconds to exit, rows written by then)."""
    svc = Service(vf, env, f"{run}/drain-{tag}.log", concurrency="2")
    try:
        token = svc.token(campaign)
        ids = [http("POST", f"{svc.base}/campaigns/{campaign}/exports",
                    {"exportType": "entries", "dateKey": f"drain{k}"}, token)["id"] for k in range(2)]
        ds = wait_rows(svc, campaign, token, ids, max(1, rows // 10))
        written = sum(int(d["progress"]["rowsWritten"]) for d in ds)
        t0 = time.monotonic()
        svc.p.terminate()
        svc.p.wait(600)
        return time.monotonic() - t0, written
    finally:
        svc.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="directory of vf-export and vf-floor")
    ap.add_argument("--run", required=True, help="scratch directory for logs")
    ap.add_argument("--bucket", required=True)
    ap.add_argument("--max-4x-rows", type=int, default=0,
                    help="skip the four-concurrent case above this many rows (0: never skip)")
    ap.add_argument("campaigns", nargs="+", help="ID:ROWS")
    a = ap.parse_args()
    env = dict(os.environ)
    vf, floor = os.path.join(a.bin, "vf-export"), os.path.join(a.bin, "vf-floor")
    results, expected, drains = [], [], []

    def record(case, rows, wall, cpu, rss):
        r = {
            "case": case,
            "rows": rows,
            "wall_ms": round(wall),
            "cpu_ms": round(cpu),
            "cpu_us_per_row": round(cpu * 1000 / max(rows, 1), 2),
            "max_rss_kb": rss,
        }
        results.append(r)
        print(json.dumps(r), flush=True)

    for spec in a.campaigns:
        cid, size = spec.split(":")
        n = int(size)
        tag = f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M"
        skip_4x = 0 < a.max_4x_rows < n
        cases = ["floor", "oneshot", "service", "service-gzip"] + ([] if skip_4x else ["service-4x"])
        cases += ["service-interrupted"]
        expected += [f"{c}/{tag}" for c in cases]

        say(f"{tag}: floor (vf-floor)")
        o, _, wall, cpu, rss = child([floor, "--campaign", cid], env, f"{a.run}/floor-{tag}.log")
        record(f"floor/{tag}", int(o.split()[-1]), wall, cpu, rss)

        say(f"{tag}: one-shot (vf-export export --out s3://)")
        key = f"s3://{a.bucket}/bench/{cid}.csv"
        _, e, wall, cpu, rss = child([vf, "export", "--campaign", cid, "--type", "entries", "--out", key],
                                     env, f"{a.run}/oneshot-{tag}.log")
        done = [l for l in e.splitlines() if " rows, " in l and " bytes in " in l]
        record(f"oneshot/{tag}", int(done[-1].split()[1]), wall, cpu, rss)

        for case, bodies in (
            ("service", [{"exportType": "entries"}]),
            ("service-gzip", [{"exportType": "entries", "compression": "gzip", "dateKey": "gz"}]),
            ("service-4x", [{"exportType": "entries", "dateKey": f"c{i}"} for i in range(4)]),
        ):
            if case not in cases:
                say(f"{tag}: {case} skipped (--max-4x-rows {a.max_4x_rows})")
                continue
            say(f"{tag}: {case} (vf-export serve, WORKER_CONCURRENCY=4, POST..FINISHED)")
            svc = Service(vf, env, f"{a.run}/{case}-{tag}.log")
            try:
                rows, wall, cpu, rss = svc.run(cid, bodies)
            finally:
                svc.stop()
            record(f"{case}/{tag}", rows, wall, cpu, rss)

        say(f"{tag}: service-interrupted (killed after 1/3 and 2/3 of the rows, continued from its checkpoints)")
        record(f"service-interrupted/{tag}", *interrupted(vf, env, a.run, tag, cid, n))

        say(f"{tag}: drain (SIGTERM to a serve running two exports)")
        secs, written = drain(vf, env, a.run, tag, cid, n)
        svc_row = next((r for r in results if r["case"] == f"service/{tag}"), None)
        before = None
        if svc_row:
            # Waiting for both to finish: the rest of their rows at the
            # single export's pace (two share the process: a lower bound).
            left = max(0, 2 * n - written)
            before = svc_row["wall_ms"] / 1000 * left / max(n, 1)
        drains.append({"case": f"drain/{tag}", "exit_s": round(secs, 2),
                       "rows_written_at_sigterm": written,
                       "wait_to_finish_s_estimate": round(before, 1) if before is not None else None})
        print(json.dumps(drains[-1]), flush=True)

    by = {r["case"]: r for r in results}
    print()
    print(f"{'case':<18}{'rows':>10}{'wall ms':>10}{'cpu ms':>10}{'cpu us/row':>12}{'rss KB':>10}{'rows/s':>10}")
    for r in results:
        rps = r["rows"] * 1000 / max(r["wall_ms"], 1)
        print(f"{r['case']:<18}{r['rows']:>10}{r['wall_ms']:>10}{r['cpu_ms']:>10}"
              f"{r['cpu_us_per_row']:>12}{r['max_rss_kb']:>10}{rps:>10.0f}")

    print("\nratios (targets in brackets; informational, never asserted)")
    tags = [c.split("/")[1] for c in expected if c.startswith("floor/")]

    def ratio(label, x, y, target):
        if x is None or y is None or not y:
            return
        v = x / y
        ok = "holds" if v <= target else "MISSES"
        print(f"  {label:<52}{v:>7.2f}  [<= {target}] {ok}")

    for t in tags:
        f, o = by.get(f"floor/{t}"), by.get(f"oneshot/{t}")
        s, s4 = by.get(f"service/{t}"), by.get(f"service-4x/{t}")
        g = by.get(f"service-gzip/{t}")
        if not (f and o and s and g):
            continue
        ratio(f"{t}: one-shot CPU/row / floor CPU/row", o["cpu_us_per_row"], f["cpu_us_per_row"], 1.5)
        ratio(f"{t}: service CPU/row / floor CPU/row", s["cpu_us_per_row"], f["cpu_us_per_row"], 1.5)
        ratio(f"{t}: service-gzip CPU/row / floor CPU/row", g["cpu_us_per_row"], f["cpu_us_per_row"], 1.5)
        ratio(f"{t}: one-shot wall / floor wall", o["wall_ms"], f["wall_ms"], 1.1)
        ratio(f"{t}: service wall / floor wall", s["wall_ms"], f["wall_ms"], 1.1)
        if s4:
            ratio(f"{t}: four-concurrent CPU/row / single service CPU/row",
                  s4["cpu_us_per_row"], s["cpu_us_per_row"], 1.1)
        ratio(f"{t}: one-shot peak RSS MiB (target <= 32)", o["max_rss_kb"] / 1024, 1, 32)
        si = by.get(f"service-interrupted/{t}")
        if si:
            ratio(f"{t}: interrupted-twice CPU/row / service CPU/row", si["cpu_us_per_row"], s["cpu_us_per_row"], 1.1)
    for d in drains:
        print(f"  {d['case']}: exit {d['exit_s']} s after SIGTERM; waiting for the exports "
              f"to finish would have taken ~{d['wait_to_finish_s_estimate']} s")
    if len(tags) >= 2:
        lo, hi = by.get(f"oneshot/{tags[0]}"), by.get(f"oneshot/{tags[-1]}")
        if lo and hi:
            ratio(f"one-shot RSS {tags[-1]} / RSS {tags[0]}", hi["max_rss_kb"], lo["max_rss_kb"], 1.2)

    missing = [c for c in expected if c not in by]
    if missing:
        print(f"bench: missing results: {missing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so each case's `finally` stops its service.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
