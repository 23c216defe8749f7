"""python -m certfan_lab demo | up [--nodes N] | down: the README demo, a lab by hand, or clear a crashed one."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from certfan_lab import cleanup
from certfan_lab.core import DEFAULT_DIR, DIR_ENV, Lab
from certfan_lab.procs import LabError


def _up(args: argparse.Namespace) -> int:
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    lab = Lab(args.dir, extra_nodes=args.nodes)
    try:
        lab.start()
        print(f"lab up in {lab.start_seconds:.2f}s: {lab.dir}", flush=True)
        print(f"config: {lab.config_path}", flush=True)
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
    base = Path(args.dir or os.environ.get(DIR_ENV) or DEFAULT_DIR).absolute()
    if not args.force:
        cleanup.refuse_if_owned_elsewhere(base)
    cleanup.purge(base)
    print(f"cleared {base}")
    return 0


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", help=f"lab directory (default ${DIR_ENV} or {DEFAULT_DIR})")
    common.add_argument("-v", "--verbose", action="store_true")
    ap = argparse.ArgumentParser(prog="python -m certfan_lab", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up", parents=[common], help="start the lab and keep it up until Ctrl-C/SIGTERM"
    )
    up.add_argument(
        "--nodes",
        type=int,
        default=0,
        metavar="N",
        help="extra benchmark nodes edge-01..edge-N (group 'edges')",
    )
    demo = sub.add_parser(
        "demo", parents=[common], help="run certfan's main job end to end on a fresh lab"
    )
    demo.add_argument("--keep", action="store_true", help="keep the lab up afterwards until Ctrl-C")
    down = sub.add_parser("down", parents=[common], help="clear what a crashed lab left behind")
    down.add_argument(
        "--force", action="store_true", help="even if the process that started the lab still runs"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
    )
    try:
        if args.command == "demo":
            from certfan_lab import demo as demo_mod

            return demo_mod.run(keep=args.keep)
        return _up(args) if args.command == "up" else _down(args)
    except LabError as exc:
        print(f"certfan_lab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
