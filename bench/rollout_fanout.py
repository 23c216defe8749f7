"""Fleet rollout time against concurrency, on 24 lab nodes with 50 ms of added latency.

    sudo .venv/bin/python bench/rollout_fanout.py [--extra-nodes 20] [--latency-ms 50]

What it does, in one lab (4 + 20 edge nodes, each its own netns with sshd and nginx):

1. a first push with no added latency: every node starts in certbot's layout,
   so this run also converts it (reported, not compared);
2. 50 ms added each way on every node (the lab's delaying TCP proxy: SSH and
   HTTPS), then a fresh release pushed to the whole fleet with concurrency
   1, 4 and 8 (canary 1 each time): wall seconds, per-host seconds from the
   report, per-step seconds from the progress events, and the speedup against
   concurrency 1 -- the "one at a time" figure, what the incident's operator
   did by hand on four nodes, minus the typing;
3. the same release pushed again (nothing to do: every host is inspected and
   probed, none changed), and `renew` with nothing due (answered from local
   state, no SSH at all); both also as whole CLI commands (process start and
   imports included), as an operator or a timer runs them.

The ideal speedup is n / (canary + ceil((n - canary) / c)) host-times: the
canary runs alone, then ceil(...) waves of c hosts.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import replace

from _lab import Timer, banner, bench_lab, lab_config, percentile, quiet_logging, summary

from certfan.commands.renew import renew
from certfan.config import Config
from certfan.deploy import fleet, hostrun
from certfan.issue import order
from certfan.state.deploy import DeployState
from certfan.state.store import Release, Store

CERT = "media"
STEPS = ("connect", "inspect", "convert", "upload", "flip", "test", "reload", "prove")


class StepClock:
    """Progress events -> seconds per (host, step); called from host threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: dict[tuple[str, str], float] = {}
        self.seconds: dict[str, list[float]] = defaultdict(list)

    def __call__(self, event: hostrun.Event) -> None:
        now = time.monotonic()
        key = (event.host, event.step)
        with self._lock:
            if event.status == "start":
                self._started[key] = now
            elif event.status in ("ok", "failed") and key in self._started:
                self.seconds[event.step].append(now - self._started.pop(key))


def cli(cfg: Config, command: list[str]) -> tuple[int, float]:
    argv = [sys.executable, "-m", "certfan", "--config", str(cfg.path), *command]
    with Timer() as t:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return done.returncode, t.seconds


def ideal_speedup(hosts: int, canary: int, concurrency: int) -> float:
    waves = canary + math.ceil((hosts - canary) / concurrency)
    return hosts / waves


def push(cfg: Config, release: Release, concurrency: int, clock: StepClock | None = None
         ) -> tuple[fleet.Report, Timer]:
    hosts = [cfg.hosts[h] for h in cfg.certificates[CERT].hosts]
    policy = replace(cfg.rollout, concurrency=concurrency, canary=1)
    with Timer() as timer:
        report = fleet.push([(release, hosts)], policy, on_event=clock,
                              deploy_state=DeployState(cfg.state_dir))
    bad = [o for o in report.outcomes if not o.ok]
    if bad:
        print(f"   !! {len(bad)} host(s) not ok, e.g. {bad[0].host}: {bad[0].failed_step}: "
              f"{bad[0].error}")
    return report, timer


def show_run(label: str, report: fleet.Report, timer: Timer, clock: StepClock | None) -> None:
    per_host = [o.seconds for o in report.outcomes]
    results = ", ".join(f"{n} {r}" for r, n in sorted(_count(report).items()))
    print(f"   {label}: {timer.seconds:6.2f}s wall, {timer.cpu:5.2f}s CPU in certfan ({results})")
    print(f"      per host: {summary(per_host)}")
    if clock is not None:
        for step in STEPS:
            values = clock.seconds.get(step)
            if values:
                print(f"      {step:8} mean {statistics.fmean(values):.3f}s "
                      f"p95 {percentile(values, 95):.3f}s")


def _count(report: fleet.Report) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for o in report.outcomes:
        counts[o.result] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extra-nodes", type=int, default=20)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    args = ap.parse_args(argv)
    quiet_logging()
    with bench_lab(extra_nodes=args.extra_nodes) as lab:
        n = len(lab.nodes)
        banner(f"rollout fan-out: {n} nodes, +{args.latency_ms:g} ms each way", lab)
        # Only media, deployed to every node: renew must find nothing else to do.
        cfg = lab_config(lab, "fanout", certificates={"wild": None, "static": None},
                         rollout={"concurrency": max(args.concurrency)})
        store = Store(cfg.state_dir)

        release = order.issue(cfg, CERT, store)
        report, timer = push(cfg, release, 8)
        show_run("first push, no added latency, certbot layout converted, concurrency 8",
                 report, timer, None)

        with Timer() as t:
            for node in lab.nodes:
                lab.faults.add_latency(node, args.latency_ms)
        print(f"   latency proxies on {n} nodes in {t.seconds:.2f}s")

        walls: dict[int, float] = {}
        for concurrency in args.concurrency:
            release = order.issue(cfg, CERT, store)  # fresh version; not timed
            clock = StepClock()
            report, timer = push(cfg, release, concurrency, clock)
            walls[concurrency] = timer.seconds
            show_run(f"fresh release, concurrency {concurrency}", report, timer, clock)

        report, timer = push(cfg, release, max(args.concurrency))
        show_run(f"re-push, nothing to do, concurrency {max(args.concurrency)}",
                 report, timer, None)
        with Timer() as t:
            renewed = renew(cfg, store)
        did = "nothing" if renewed.rollout is None and not renewed.issued else "SOMETHING"
        print(f"   renew with nothing due: {t.seconds:.3f}s wall, {t.cpu:.3f}s CPU "
              f"(did {did}; no SSH)")
        for command in (["push", "--cert", CERT, "--json"], ["renew", "--quiet"]):
            code, seconds = cli(cfg, command)
            print(f"   `certfan {' '.join(command)}` as a command, nothing to do: "
                  f"{seconds:.2f}s wall (exit {code})")

    base = walls.get(1)
    print(f"\n   {'concurrency':>11} {'seconds':>8} {'s/host':>7} {'vs one at a time':>17} "
          f"{'ideal':>6}")
    for concurrency, wall in walls.items():
        ratio = f"{base / wall:.2f}x" if base else "-"
        print(f"   {concurrency:>11} {wall:8.2f} {wall / n:7.3f} {ratio:>17} "
              f"{ideal_speedup(n, 1, concurrency):5.2f}x")
    if base:
        print(f"   one at a time (concurrency 1, the incident's by-hand order, scripted): "
              f"{base:.1f}s for {n} hosts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
