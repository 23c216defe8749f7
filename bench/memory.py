"""Peak memory of a fleet push and of a series of issuances, each in a fresh process.

    sudo .venv/bin/python bench/memory.py [--extra-nodes 20] [--issues 10]

The parent starts one lab (4 + 20 edge nodes, no added latency) and runs each
measurement in a child process of its own, so one figure never carries another's
high-water mark:

* baseline: imports (certfan.issuance, certfan.rollout: acme, paramiko, ...)
  and the config loaded, nothing done;
* push of a fresh release to all 24 nodes at concurrency 8 (and at 1 and 24,
  to tell the fixed cost from the cost per concurrent SSH session);
* 10 issuances of ``media`` in one process.

Each child reports its resident set after the imports, the peak resident set
during the work (VmHWM, reset just before the work starts), and in a second
run of the same work, the peak of Python allocations (tracemalloc, which slows
and inflates the process, so it is never on during the RSS run). Growth is the
peak during the work minus the RSS before it; per host divides it by the
hosts (per session, by the concurrency).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

CERT = "media"


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"bench: no {field} in /proc/self/status")


def current_rss_mib() -> float:
    return _status_mib("VmRSS")


def peak_rss_mib() -> float:
    """The high-water mark of this process's resident set (VmHWM).

    Not getrusage(RUSAGE_SELF).ru_maxrss: Linux carries the pre-exec high-water
    mark over into it, so a child of a big parent reports the parent's peak.
    """
    return _status_mib("VmHWM")


def reset_peak_rss() -> None:
    """Lower VmHWM to the current RSS (Linux >= 4.0: ``5`` to clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


# ---------------------------------------------------------------- child


def child(kind: str, config_path: str, concurrency: int, issues: int, trace: bool) -> dict:
    from certfan import config
    from certfan.deploy import fleet, hostrun
    from certfan.issue import order
    from certfan.state.store import Store

    cfg = config.load(config_path)
    store = Store(cfg.state_dir)
    imported_peak = peak_rss_mib()
    reset_peak_rss()
    before = current_rss_mib()
    if trace:
        tracemalloc.start()
    t0 = time.monotonic()
    ok = True
    if kind == "push":
        release = store.current(CERT)
        if release is None:
            raise SystemExit("bench: no release of media to push (the parent issues one)")
        hosts = [cfg.hosts[h] for h in cfg.certificates[CERT].hosts]
        policy = replace(cfg.rollout, concurrency=concurrency, canary=1)
        report = fleet.push([(release, hosts)], policy)
        ok = report.ok and all(o.result == hostrun.DEPLOYED for o in report.outcomes)
    elif kind == "issue":
        for _ in range(issues):
            order.issue(cfg, CERT, store)
    seconds = time.monotonic() - t0
    traced = tracemalloc.get_traced_memory()[1] / 2**20 if trace else None
    return {"imported_peak_mib": imported_peak, "before_mib": before, "peak_mib": peak_rss_mib(),
            "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "traced_peak_mib": traced, "seconds": seconds, "ok": ok}


# ---------------------------------------------------------------- parent


def run_child(kind: str, config_path: Path, *, concurrency: int = 1, issues: int = 0,
              trace: bool = False) -> dict:
    argv = [sys.executable, __file__, "--child", kind, "--config", str(config_path),
            "--concurrency", str(concurrency), "--issues", str(issues)]
    if trace:
        argv.append("--trace")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench: child {kind} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extra-nodes", type=int, default=20)
    ap.add_argument("--issues", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--child", choices=("baseline", "push", "issue"))
    ap.add_argument("--config")
    ap.add_argument("--trace", action="store_true")
    args = ap.parse_args(argv)
    if args.child:
        # Only certfan itself in this process: the lab helpers stay in the parent.
        logging.basicConfig(level=logging.WARNING)
        print(json.dumps(child(args.child, args.config, args.concurrency, args.issues,
                               args.trace)))
        return 0

    from _lab import banner, bench_lab, lab_config, quiet_logging

    from certfan.deploy import fleet
    from certfan.issue import order
    from certfan.state.store import Store

    quiet_logging()
    with bench_lab(extra_nodes=args.extra_nodes) as lab:
        n = len(lab.nodes)
        banner(f"memory: push to {n} nodes, {args.issues} issuances", lab)
        cfg = lab_config(lab, "memory", certificates={"wild": None, "static": None})
        store = Store(cfg.state_dir)
        # The nodes start in certbot's layout: convert them once, outside the figures.
        release = order.issue(cfg, CERT, store)
        hosts = [cfg.hosts[h] for h in cfg.certificates[CERT].hosts]
        fleet.push([(release, hosts)], replace(cfg.rollout, concurrency=8))

        rows = []
        base = run_child("baseline", cfg.path)
        rows.append(("baseline: imports + config", base, None, 1))
        for concurrency in sorted({1, args.concurrency, n}):
            results = []
            for trace in (False, True):
                order.issue(cfg, CERT, store)  # a fresh version for each push
                results.append(run_child("push", cfg.path, concurrency=concurrency,
                                         trace=trace))
            rows.append((f"push {n} hosts, concurrency {concurrency}", results[0],
                         results[1]["traced_peak_mib"], concurrency))
        issued = run_child("issue", cfg.path, issues=args.issues)
        issued_traced = run_child("issue", cfg.path, issues=args.issues, trace=True)
        rows.append((f"{args.issues} issuances of {CERT}", issued,
                     issued_traced["traced_peak_mib"], 1))

    print(f"\n   {'what':32} {'secs':>5} {'RSS before':>10} {'peak RSS':>9} {'growth':>9} "
          f"{'Python peak':>11} {'per host':>9} {'per session':>11}")
    for label, r, python_peak, concurrency in rows:
        peak = max(r["peak_mib"], r["imported_peak_mib"])
        growth = r["peak_mib"] - r["before_mib"]
        per_host = per_session = ""
        if label.startswith("push"):
            per_host = f"{growth * 1024 / n:5.0f} KiB"
            per_session = f"{growth * 1024 / concurrency:7.0f} KiB"
        elif label.startswith(f"{args.issues} issuances"):
            per_host = f"{growth * 1024 / args.issues:5.0f} KiB"  # per issuance
        flag = "" if r["ok"] else "  (NOT ALL OK)"
        py = f"{python_peak:7.2f} MiB" if python_peak is not None else ""
        print(f"   {label:32} {r['seconds']:5.1f} {r['before_mib']:6.1f} MiB {peak:5.1f} MiB "
              f"{growth:+5.1f} MiB {py:>11} {per_host:>9} {per_session:>11}{flag}")
    pushes = {c: r for label, r, _, c in rows if label.startswith("push")}
    lo, hi = min(pushes), max(pushes)
    if hi > lo:
        grow = {c: r["peak_mib"] - r["before_mib"] for c, r in pushes.items()}
        marginal = (grow[hi] - grow[lo]) / (hi - lo) * 1024
        fixed = grow[lo] - marginal / 1024
        print(f"   each further concurrent SSH session: ~{marginal:.0f} KiB "
              f"(concurrency {lo} -> {hi}); fixed cost of a push ~{fixed:.1f} MiB")
    print(f"   peak RSS: the process's high-water mark (imports included); growth: peak during "
          f"the work minus RSS before it;\n   per host = growth / {n} (issuances: per "
          "issuance); per session = growth / concurrency")
    print(f"   (getrusage ru_maxrss in these children reads {base['ru_maxrss_mib']:.1f} MiB: "
          "Linux carries the parent's pre-exec peak into it, so it is not used)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
