"""Command line: parse argv, load the config, call the core, print, return an exit code.

This is the only module that prints or decides exit statuses. Core modules
return results and raise :class:`certfan.errors.CertfanError`.

Exit codes (documented in README and ``certfan --help``):
    0   success
    1   an operation failed (issuance, rollout on some host, ...)
    2   usage or configuration error
    3   partial: some hosts do not serve the version (push/renew)
    75  another certfan run holds the lock
    130 interrupted
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable, Sequence

from certfan import __version__
from certfan import config as config_mod
from certfan.errors import CertfanError

log = logging.getLogger("certfan")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_LOCKED = 75
EXIT_INTERRUPTED = 130

EPILOG = """\
config file: --config, else $CERTFAN_CONFIG, else /etc/certfan/certfan.toml
exit status: 0 ok, 1 failed, 2 usage/config error, 3 some hosts not serving
             the version, 75 another run holds the lock, 130 interrupted
"""


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("host", "cert", "step"):
            value = getattr(record, key, None)
            if value is not None:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, sort_keys=False)


def _setup_logging(args: argparse.Namespace) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if args.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    if args.debug:
        level = logging.DEBUG
    elif args.verbose:
        level = logging.INFO
    else:
        level = logging.WARNING
    root.setLevel(level)
    # Library chatter stays out unless --debug; paramiko logs at INFO per connection.
    for noisy in ("paramiko", "urllib3", "acme", "josepy"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.debug else logging.WARNING)


def _load_config(args: argparse.Namespace) -> config_mod.Config:
    return config_mod.load(config_mod.find_config(args.config))


# ---------------------------------------------------------------- check


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load_config(args)
    print(f"{cfg.path}: ok")
    print(f"  acme directory: {cfg.acme.directory}")
    print(f"  dns: {cfg.dns.method}", end="")
    print(f" via {cfg.dns.server}:{cfg.dns.port}" if cfg.dns.method == "rfc2136" else "")
    print(f"  state dir: {cfg.state_dir}")
    print(f"  hosts: {len(cfg.hosts)}  groups: {len(cfg.groups)}  certificates: {len(cfg.certificates)}")
    for cert in cfg.certificates.values():
        targets = ", ".join(cert.hosts) or "(no hosts)"
        print(f"  {cert.name}: {', '.join(cert.domains)} [{cert.key_type}] -> {targets}")
    return EXIT_OK


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="validate the configuration file and summarize it",
        description="Load and validate the configuration; print a summary. "
        "Exit 2 with one line naming file, key and line on any error.",
    )
    p.set_defaults(func=cmd_check)


# ---------------------------------------------------------------- parser

_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_check]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certfan",
        description="Get TLS certificates from an ACME CA through DNS-01 (RFC 2136) and roll "
        "them out over SSH to nginx edge nodes: canary first, config-tested, reloaded, "
        "proven by a TLS handshake, rolled back on failure.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"certfan {__version__}")
    parser.add_argument("-c", "--config", metavar="FILE", help="configuration file (TOML)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step at INFO")
    parser.add_argument(
        "--debug", action="store_true", help="log protocol detail; show tracebacks on errors"
    )
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log line format on stderr"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _setup_logging(args)
    try:
        return int(args.func(args))
    except CertfanError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"certfan: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("certfan: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
