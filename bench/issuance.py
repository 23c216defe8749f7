"""Issuance time against Pebble: per order, its DNS-01 phases, concurrent vs sequential.

    sudo .venv/bin/python bench/order.py [-n 10] [--wild 3] [--lag 2]

In one lab (Pebble with PEBBLE_VA_NOSLEEP, BIND9 taking RFC 2136 updates):

1. N issuances of ``media`` (one name, one TXT value) and a few of ``wild``
   (apex + wildcard: two TXT values at the same name), each through the
   public ``order.issue`` with a new ACME client, as one CLI run does:
   seconds per issuance and its phases -- publish (CNAME/zone lookups and the
   TSIG-signed updates), propagation proof (polling the zone's authoritative
   servers; rounds and seconds), ACME validation while the values are
   served, removal, and the rest (order, finalize, download, store);
2. the propagation proof when the DNS provider is slow: the same updates
   reach BIND only ``--lag`` seconds after certfan sent them (a stand-in for a
   provider API or a hidden primary that publishes late); the proof should
   track the lag to within one poll interval;
3. the proof time set beside fixed pre-validation sleeps of 10 s and 120 s
   (the kind of fixed ``propagation-seconds`` wait DNS plugins of other ACME
   clients use; comparison points only);
4. three certificates (media, wild, static via a CNAME into another zone)
   issued concurrently by ``issue_many`` vs one after another;
5. the whole CLI command ``certfan issue media`` (process start, imports,
   config, lock, order) for comparison with the in-process figure.

Pebble and BIND run on this machine, so the figures are certfan's own
overhead plus a CA and DNS server with no network between: a lower bound.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from _lab import Timer, banner, bench_lab, lab_config, percentile, quiet_logging, summary

from certfan.config import Config, Endpoint
from certfan.issue import dns01, order
from certfan.state.store import Store
from certfan_lab import Lab

FIXED_SLEEPS = (10.0, 120.0)
# certfan.acme polls an authorization or order at once, then after 0.1 s: a phase
# this long waited for that second poll (Pebble had not finished at the first).
SECOND_POLL = 0.09


@dataclass
class Phases:
    """Seconds of one order's DNS-01 step, split at the points certfan exposes."""

    publish: float = 0.0  # lookups + updates, up to the first propagation poll
    propagation: float = 0.0  # Lookup.wait_propagated
    rounds: int = 0
    validation: float = 0.0  # inside `published`: challenges answered, authz valid
    removal: float = 0.0


@dataclass
class Recorder:
    """Phases per order, from any thread (issue_many runs orders concurrently)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    done: list[Phases] = field(default_factory=list)
    local: threading.local = field(default_factory=threading.local)

    def take(self) -> list[Phases]:
        with self.lock:
            done, self.done = self.done, []
        return done


class TimedLookup(dns01.Lookup):
    def __init__(self, cfg: Config, recorder: Recorder):
        super().__init__(cfg.dns)
        self.recorder = recorder

    def wait_propagated(
        self,
        pending: Iterable[tuple[str, str, tuple[Endpoint, ...]]],
        *,
        timeout: float,
        interval: float,
        cancel: threading.Event | None = None,
    ) -> int:
        t0 = time.monotonic()
        rounds = super().wait_propagated(pending, timeout=timeout, interval=interval,
                                         cancel=cancel)
        phases: Phases = self.recorder.local.phases
        phases.propagation, phases.rounds = time.monotonic() - t0, rounds
        return rounds


class TimedDns(dns01.Dns01):
    """Dns01 whose `published` notes when each phase ends (collaborator passed in)."""

    def __init__(self, cfg: Config, recorder: Recorder, publisher: object | None = None):
        super().__init__(cfg.dns, publisher=publisher,  # type: ignore[arg-type]
                         lookup=TimedLookup(cfg, recorder))
        self.recorder = recorder

    @contextmanager
    def published(self, records: Sequence[tuple[str, str]],  # type: ignore[override]
                  cancel: threading.Event | None = None) -> Iterator[list[dns01.Published]]:
        phases = self.recorder.local.phases = Phases()
        t0 = time.monotonic()
        try:
            with super().published(records, cancel) as added:
                t1 = time.monotonic()
                phases.publish = t1 - t0 - phases.propagation
                yield added
                t2 = time.monotonic()
            phases.validation, phases.removal = t2 - t1, time.monotonic() - t2
        finally:
            with self.recorder.lock:
                self.recorder.done.append(phases)


class LatePublisher:
    """RFC 2136 updates that reach the server ``lag`` seconds after certfan sent them."""

    def __init__(self, inner: dns01.Rfc2136, lag: float):
        self.inner, self.lag = inner, lag
        self._pending: list[threading.Thread] = []

    def add(self, fqdn: str, value: str, zone: str | None = None) -> None:
        def later() -> None:
            time.sleep(self.lag)
            self.inner.add(fqdn, value, zone)

        thread = threading.Thread(target=later, daemon=True)
        thread.start()
        self._pending.append(thread)

    def remove(self, fqdn: str, value: str, zone: str | None = None) -> None:
        for thread in self._pending:
            thread.join(self.lag + 15)
        self.inner.remove(fqdn, value, zone)


def issue_series(cfg: Config, store: Store, cert: str, count: int, dns: TimedDns
                 ) -> tuple[list[float], list[tuple[float, Phases]], float]:
    """Wall seconds per issuance; (wall, phases) of those that ran DNS-01; CPU seconds.

    Pebble 2.4 reuses a valid authorization about 1% of the time even with
    PEBBLE_AUTHZREUSE=0 (it creates a new one when rand.Intn(100) > 0): such
    an order has no DNS-01 step, so it has wall time but no phases.
    """
    walls: list[float] = []
    timed: list[tuple[float, Phases]] = []
    cpu = 0.0
    for _ in range(count):
        with Timer() as t:
            order.issue(cfg, cert, store, dns=dns)
        walls.append(t.seconds)
        cpu += t.cpu
        phases = dns.recorder.take()
        if len(phases) == 1:
            timed.append((t.seconds, phases[0]))
    return walls, timed, cpu


def show_series(label: str, walls: list[float], timed: list[tuple[float, Phases]],
                cpu: float) -> None:
    print(f"   {label}: {summary(walls)}")
    print(f"      CPU in certfan: {cpu / len(walls) * 1000:.1f} ms per issuance "
          f"({cpu / sum(walls):.0%} of the wall time)")
    if len(timed) < len(walls):
        print(f"      {len(walls) - len(timed)} order(s) got a reused valid authorization "
              "from Pebble: no DNS-01, left out of the phases")
    if not timed:
        return
    phases = [p for _, p in timed]
    parts = {
        "publish": [p.publish for p in phases],
        "propagation proof": [p.propagation for p in phases],
        "ACME validation": [p.validation for p in phases],
        "removal": [p.removal for p in phases],
        "order/finalize/store": [w - (p.publish + p.propagation + p.validation + p.removal)
                                 for w, p in timed],
    }
    for name, values in parts.items():
        print(f"      {name:21} mean {statistics.fmean(values) * 1000:7.1f} ms "
              f"p95 {percentile(values, 95) * 1000:7.1f} ms")
    rounds = [p.rounds for p in phases]
    print(f"      propagation polls per order: min {min(rounds)} max {max(rounds)}")
    slow = {name: sum(1 for v in parts[name] if v >= SECOND_POLL) for name in
            ("ACME validation", "order/finalize/store")}
    print(f"      waited for a second ACME poll (phase >= {SECOND_POLL * 1000:.0f} ms): "
          f"validation {slow['ACME validation']} of {len(phases)}, "
          f"finalize {slow['order/finalize/store']} of {len(phases)}")


def cli_issue(lab: Lab, cfg: Config, runs: int) -> list[float]:
    walls = []
    for _ in range(runs):
        argv = [sys.executable, "-m", "certfan", "--config", str(cfg.path), "issue", "media"]
        with Timer() as t:
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"   !! certfan issue exited {done.returncode}: {done.stderr.strip()[-300:]}")
        walls.append(t.seconds)
    return walls


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10, help="issuances of media")
    ap.add_argument("--wild", type=int, default=3, help="issuances of wild (two TXT values)")
    ap.add_argument("--lag", type=float, default=2.1, help="simulated provider lag, seconds")
    ap.add_argument("--lag-runs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=10, help="repeats of the 3-certificate test")
    args = ap.parse_args(argv)
    quiet_logging()
    with bench_lab() as lab:
        banner("issuance against Pebble + BIND9 (DNS-01, RFC 2136 + TSIG)", lab)
        cfg = lab_config(lab, "issuance")
        store = Store(cfg.state_dir)
        recorder = Recorder()
        dns = TimedDns(cfg, recorder)
        print(f"   dns.poll_interval {cfg.dns.poll_interval:g}s, "
              f"propagation_timeout {cfg.dns.propagation_timeout:g}s")

        with Timer() as t:
            order.issue(cfg, "media", store, dns=dns)
        recorder.take()
        print(f"   first issuance (creates the ACME account): {t.seconds:.3f}s")

        media, media_phases, cpu = issue_series(cfg, store, "media", args.n, dns)
        show_series(f"media x{args.n} (1 name, 1 TXT value)", media, media_phases, cpu)
        wild, wild_phases, cpu = issue_series(cfg, store, "wild", args.wild, dns)
        show_series(f"wild x{args.wild} (apex + wildcard, 2 TXT values)", wild, wild_phases, cpu)

        late = TimedDns(cfg, recorder, LatePublisher(dns01.Rfc2136(cfg.dns), args.lag))
        lagged, lag_phases, cpu = issue_series(cfg, store, "media", args.lag_runs, late)
        show_series(f"media x{args.lag_runs}, DNS updates land {args.lag:g}s late",
                    lagged, lag_phases, cpu)
        if not media_phases or not lag_phases:
            print("   !! no order ran DNS-01 (Pebble reused every authorization); rerun")
            return 1
        over = [p.propagation - args.lag for _, p in lag_phases]
        interval_ms = cfg.dns.poll_interval * 1000
        print(f"      proof - lag: mean {statistics.fmean(over) * 1000:.0f} ms, "
              f"max {max(over) * 1000:.0f} ms (bound: one poll interval, {interval_ms:.0f} ms)")

        proof = statistics.fmean(p.propagation for _, p in media_phases)
        whole = statistics.fmean(media)
        lag_proof = statistics.fmean(p.propagation for _, p in lag_phases)
        print("\n   propagation wait: measured proof vs a fixed sleep before validation")
        print(f"   {'':32} {'wait':>9} {'whole issuance':>15}")
        print(f"   {'certfan proof, lab (instant)':32} {proof:8.3f}s {whole:14.3f}s")
        print(f"   {f'certfan proof, {args.lag:g}s provider lag':32} {lag_proof:8.3f}s "
              f"{statistics.fmean(w for w, _ in lag_phases):14.3f}s")
        for sleep in FIXED_SLEEPS:
            floor = sleep + whole - proof  # the issuance with the proof replaced by the sleep
            label = f"fixed sleep {sleep:g}s (other tools)"
            print(f"   {label:32} {sleep:8.3f}s >= {floor:11.3f}s   "
                  f"(at least {floor / whole:,.0f}x the lab issuance; "
                  f"{sleep / lag_proof:.1f}x the {args.lag:g}s-lag proof)")

        certs = ["media", "wild", "static"]
        seq, con, seq_cpu, con_cpu = [], [], 0.0, 0.0
        for _ in range(args.rounds):
            with Timer() as t:
                for name in certs:
                    order.issue(cfg, name, store)
            seq.append(t.seconds)
            seq_cpu += t.cpu
            with Timer() as t:
                outcomes = order.issue_many(cfg, store, certs)
            con.append(t.seconds)
            con_cpu += t.cpu
            failed = [o for o in outcomes if not o.ok]
            if failed:
                print(f"   !! issue_many: {failed[0].cert}: {failed[0].error}")
        s, c = statistics.median(seq), statistics.median(con)
        print(f"\n   3 certificates (media, wild, static), median of {args.rounds}:")
        print(f"      one after another: {s:.3f}s   issue_many (concurrent): {c:.3f}s   "
              f"speedup {s / c:.2f}x")
        print(f"      CPU in certfan per round: {seq_cpu / args.rounds:.3f}s one after another, "
              f"{con_cpu / args.rounds:.3f}s concurrent (Pebble and BIND share the same CPUs)")

        cli = cli_issue(lab, cfg, 3)
        print(f"\n   `certfan issue media` as a command: {summary(cli)}")
        print(f"      of which process start, imports, config and lock: "
              f"~{statistics.fmean(cli) - whole:.3f}s over the in-process mean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
