"""Cost of one remote command over certfan's SSH session, with and without TCP_NODELAY.

    sudo .venv/bin/python bench/ssh_nodelay.py [--extra-nodes 20] [--commands 20]

certfan.ssh leaves paramiko's socket as it comes, with Nagle's algorithm on.
A rollout runs its steps as separate channels on one connection; when a
channel's CLOSE is still unacknowledged, the next CHANNEL_OPEN is held back by
Nagle until the peer's (delayed) ACK arrives. This measures, with no added
latency (nodes on veth pairs on this machine):

1. one trivial command (`true`) and one with 5 KB on stdin (like `upload`),
   repeated on one session, with the socket as certfan leaves it and with
   TCP_NODELAY set on it;
2. a push of a fresh release to the whole fleet at concurrency 1 and 8,
   through ``fleet.push(connect=...)`` with the stock ``ssh.connect`` and
   with a connect that sets TCP_NODELAY on the session it returns.

The what-if connect reaches into ``Session._client`` (the bench may; src may
not need to: the fix belongs in ssh.connect). The lab's latency proxy ends TCP
on this machine, so the effect on a WAN link cannot be measured here.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from dataclasses import replace

from _lab import Timer, banner, bench_lab, lab_config, percentile, quiet_logging

from certfan.config import Config, Host
from certfan.deploy import fleet, hostrun, ssh
from certfan.issue import order
from certfan.state.store import Store

CERT = "media"


def set_nodelay(session: ssh.Session) -> ssh.Session:
    transport = session._client.get_transport()
    if transport is None:
        raise SystemExit("bench: the session has no transport")
    transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return session


def connect_nodelay(host: Host, *, timeout: float) -> ssh.Session:
    return set_nodelay(ssh.connect(host, timeout=timeout))


def per_command(host: Host, nodelay: bool, count: int) -> dict[str, list[float]]:
    session = ssh.connect(host, timeout=5)
    if nodelay:
        set_nodelay(session)
    found: dict[str, list[float]] = {}
    try:
        for label, argv, stdin in (
            ("true", ["true"], None),
            ("5 KB to stdin", ["sh", "-c", "cat > /dev/null"], b"x" * 5000),
        ):
            session.run(argv, timeout=5, stdin=stdin)  # warm
            found[label] = []
            for _ in range(count):
                t0 = time.monotonic()
                session.run(argv, timeout=5, stdin=stdin)
                found[label].append(time.monotonic() - t0)
    finally:
        session.close()
    return found


def push(cfg: Config, store: Store, concurrency: int, connect: hostrun.Connect) -> float:
    release = order.issue(cfg, CERT, store)
    hosts = [cfg.hosts[h] for h in cfg.certificates[CERT].hosts]
    with Timer() as t:
        report = fleet.push([(release, hosts)], replace(cfg.rollout, concurrency=concurrency),
                              connect=connect)
    if not report.ok:
        bad = next(o for o in report.outcomes if not o.ok)
        print(f"   !! {bad.host}: {bad.failed_step}: {bad.error}")
    return t.seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extra-nodes", type=int, default=20)
    ap.add_argument("--commands", type=int, default=20)
    args = ap.parse_args(argv)
    quiet_logging()
    with bench_lab(extra_nodes=args.extra_nodes) as lab:
        n = len(lab.nodes)
        banner(f"SSH command cost and TCP_NODELAY, {n} nodes, no added latency", lab)
        cfg = lab_config(lab, "nodelay", certificates={"wild": None, "static": None})
        store = Store(cfg.state_dir)
        host = cfg.hosts[lab.nodes[0].name]
        print(f"   one session to {host.name}, {args.commands} commands each (median / p95):")
        for nodelay in (False, True):
            for label, values in per_command(host, nodelay, args.commands).items():
                print(f"      {'TCP_NODELAY' if nodelay else 'as certfan':11}  {label:14} "
                      f"{statistics.median(values) * 1000:6.1f} ms / "
                      f"{percentile(values, 95) * 1000:6.1f} ms")

        push(cfg, store, 8, ssh.connect)  # certbot layout converted, outside the figures
        print(f"   push of a fresh release to {n} hosts:")
        for concurrency in (1, 8):
            stock = push(cfg, store, concurrency, ssh.connect)
            fast = push(cfg, store, concurrency, connect_nodelay)
            print(f"      concurrency {concurrency}: as certfan {stock:5.2f}s "
                  f"({stock / n * 1000:4.0f} ms/host), with TCP_NODELAY {fast:5.2f}s "
                  f"({fast / n * 1000:4.0f} ms/host): {stock / fast:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
