"""python -m certfan_lab demo | up | down [--slot N] [--dir D] [--dns-port P] ...: the README
demo, a lab by hand, or clear a crashed one.

``--slot N`` (or ``$CERTFAN_LAB_SLOT``) picks a row of the slot table in
certfan_lab/slots.py, the one pytest and the benchmarks use; the options for a
single parameter (``--dir``, ``--prefix``, ``--subnet``, ``--dns-port``,
``--acme-port``, ``--mgmt-port``, ``--user``) then move just that one.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from certfan_lab import cleanup, slots
from certfan_lab.core import DEFAULT_DIR, DIR_ENV, Lab
from certfan_lab.procs import LabError

_SINGLE = ("base_dir", "prefix", "subnet", "dns_port", "acme_port", "mgmt_port", "user")


def lab_args(args: argparse.Namespace) -> dict[str, Any]:
    """The slot's row, then each parameter given on its own."""
    chosen = slots.lab_args(slots.parse(args.slot) if args.slot is not None else slots.from_env())
    for key in _SINGLE:
        value = getattr(args, key, None)
        if value is not None:
            chosen[key] = value
    return chosen


def _up(args: argparse.Namespace) -> int:
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    lab = Lab(extra_nodes=args.nodes, **lab_args(args))
    try:
        lab.start()
        print(f"lab up in {lab.start_seconds:.2f}s: {lab.dir}", flush=True)
        print(f"config: {lab.config_path}", flush=True)
        print(f"ACME {lab.directory_url}  DNS 127.0.0.1:{lab.dns_port}  "
              f"nodes 10.{lab.subnet}.0.0/16  login user {lab.user}", flush=True)
        for n in lab.nodes:
            print(f"  {n.name:<18} {n.address:<12} netns {n.netns}", flush=True)
        print("Ctrl-C or SIGTERM stops it.", flush=True)
        while not done.wait(3600):
            pass
    finally:
        lab.stop()
        print(f"lab down in {lab.stop_seconds:.2f}s", flush=True)
    return 0


def _down(args: argparse.Namespace) -> int:
    base = Path(lab_args(args).get("base_dir") or os.environ.get(DIR_ENV) or DEFAULT_DIR).absolute()
    if not args.force:
        cleanup.refuse_if_owned_elsewhere(base)
    cleanup.purge(base)
    print(f"cleared {base}")
    return 0


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--slot", metavar="N",
        help=f"lab slot 0-{slots.MAX_SLOT} (default ${slots.SLOT_ENV} or 0): its own directory, "
        "namespaces, subnet, ports and login user, beside other labs",
    )
    common.add_argument(
        "--dir", dest="base_dir", metavar="DIR",
        help=f"lab directory (default: the slot's; slot 0: ${DIR_ENV} or {DEFAULT_DIR})",
    )
    common.add_argument("-v", "--verbose", action="store_true")
    one = argparse.ArgumentParser(add_help=False)
    one.add_argument("--prefix", help="network namespace prefix (slot 0: cfl)")
    one.add_argument("--subnet", type=int, metavar="K", help="nodes on 10.K.0.0/16 (slot 0: 77)")
    one.add_argument("--dns-port", type=int, metavar="P",
                     help="BIND9 on 127.0.0.1:P (slot 0: 10053)")
    one.add_argument("--acme-port", type=int, metavar="P",
                     help="Pebble's ACME port (slot 0: 14000)")
    one.add_argument("--mgmt-port", type=int, metavar="P",
                     help="Pebble's management port (slot 0: 15000)")
    one.add_argument("--user", help="the nodes' login user (slot 0: certfan-lab)")
    ap = argparse.ArgumentParser(prog="python -m certfan_lab", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up", parents=[common, one], help="start the lab and keep it up until Ctrl-C/SIGTERM"
    )
    up.add_argument(
        "--nodes",
        type=int,
        default=0,
        metavar="N",
        help="extra benchmark nodes edge-01..edge-N (group 'edges')",
    )
    demo = sub.add_parser(
        "demo", parents=[common, one], help="run certfan's main job end to end on a fresh lab"
    )
    demo.add_argument("--keep", action="store_true", help="keep the lab up afterwards until Ctrl-C")
    down = sub.add_parser("down", parents=[common], help="clear what a crashed lab left behind")
    down.add_argument(
        "--force", action="store_true", help="even if the process that started the lab still runs"
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
    )
    try:
        if args.command == "demo":
            from certfan_lab import demo as demo_mod

            return demo_mod.run(keep=args.keep, lab_args=lab_args(args))
        return _up(args) if args.command == "up" else _down(args)
    except slots.SlotError as exc:
        print(f"certfan_lab: {exc}", file=sys.stderr)
        return 2
    except LabError as exc:
        print(f"certfan_lab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
