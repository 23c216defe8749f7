"""What the benchmarks share: a lab in its own slot, a config, small statistics.

The benchmark lab runs in slot 7 (its own directory, namespaces, subnet, ports
and login user) so it never collides with a test session's lab on the default
slot or on slots 1-6. Each parameter can be moved by an environment variable:

    CERTFAN_BENCH_LAB_DIR   /tmp/certfan-lab-7
    CERTFAN_BENCH_PREFIX    cf7
    CERTFAN_BENCH_SUBNET    117          (10.117.0.0/16)
    CERTFAN_BENCH_DNS_PORT  10753
    CERTFAN_BENCH_ACME_PORT 14700
    CERTFAN_BENCH_MGMT_PORT 15700
    CERTFAN_BENCH_USER      certfan-lab7

Benchmarks print figures; they never assert times (they are not tests).
"""

from __future__ import annotations

import logging
import os
import resource
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from certfan import config
from certfan.config import Config
from certfan_lab import Lab, preflight, slots

DEFAULTS: dict[str, tuple[str, type]] = {
    "base_dir": ("CERTFAN_BENCH_LAB_DIR", str),
    "prefix": ("CERTFAN_BENCH_PREFIX", str),
    "subnet": ("CERTFAN_BENCH_SUBNET", int),
    "dns_port": ("CERTFAN_BENCH_DNS_PORT", int),
    "acme_port": ("CERTFAN_BENCH_ACME_PORT", int),
    "mgmt_port": ("CERTFAN_BENCH_MGMT_PORT", int),
    "user": ("CERTFAN_BENCH_USER", str),
}
SLOT_7: dict[str, Any] = slots.lab_args(slots.BENCH_SLOT)  # certfan_lab/slots.py


def lab_args() -> dict[str, Any]:
    """Slot-7 lab parameters, each overridable by its environment variable."""
    args = dict(SLOT_7)
    for key, (env, kind) in DEFAULTS.items():
        if os.environ.get(env):
            args[key] = kind(os.environ[env])
    return args


@contextmanager
def bench_lab(extra_nodes: int = 0) -> Iterator[Lab]:
    """A started lab (4 + extra_nodes edge nodes), always stopped on the way out."""
    problem = preflight()
    if problem:
        sys.exit(f"bench: the lab cannot run here: {problem} (run `sudo bash scripts/setup`)")
    lab = Lab(extra_nodes=extra_nodes, **lab_args())
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()


def lab_config(lab: Lab, name: str, **overrides: Any) -> Config:
    """Write a certfan config for ``lab`` (state under the lab dir) and load it."""
    path = lab.write_config(lab.dir / f"{name}.toml", state_dir=lab.dir / f"state-{name}",
                            **overrides)
    return config.load(path)


def quiet_logging() -> None:
    """certfan logs at INFO per step and host; a benchmark shows its own lines only."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


# ---------------------------------------------------------------- figures


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> str:
    if not values:
        return "n=0"
    return (f"n={len(values)} mean {statistics.fmean(values):.3f}s "
            f"p50 {statistics.median(values):.3f}s p95 {percentile(values, 95):.3f}s "
            f"max {max(values):.3f}s")


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Timer:
    """``with Timer() as t: ...``; then ``t.seconds`` (wall) and ``t.cpu`` (this process)."""

    def __enter__(self) -> Self:
        self._t0, self._c0 = time.monotonic(), cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self._t0
        self.cpu = cpu_seconds() - self._c0


def banner(title: str, lab: Lab | None = None) -> None:
    """Title, machine, and the load average: CPU-bound figures move with other work."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"== {title}")
    print(f"   machine: {os.cpu_count()} CPU(s), load {load}, Python {sys.version.split()[0]}"
          + (f"; lab {lab.dir} ({len(lab.nodes)} nodes, up in {lab.start_seconds:.2f}s)"
             if lab else ""), flush=True)


def state_path(lab: Lab, name: str) -> Path:
    return lab.dir / f"state-{name}"
