"""Command line: argv -> exit code. The only place that prints or decides exit statuses.

Core code returns results and raises :class:`certfan.errors.CertfanError`.
Each command family is a module with ``register(sub)``, which adds its
subcommands through :func:`certfan.cli.options.command` (the global options
and the handler ``func(args) -> int``); :data:`FAMILIES` lists them. A
handler imports the heavy modules it needs inside itself, so ``--help`` and
the reporting commands load no CA or DNS code.

Exit codes (README, ``certfan --help``, docs/cli.md):
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
from collections.abc import Sequence
from types import ModuleType

from certfan import __version__
from certfan.cli import check, output, report, rollout, shell, trust, versions
from certfan.cli.options import (
    EPILOG,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Parser,
    UsageError,
    add_globals,
)
from certfan.errors import CertfanError

log = logging.getLogger("certfan")

FAMILIES: tuple[ModuleType, ...] = (check, versions, rollout, report, trust, shell)


class JsonFormatter(logging.Formatter):
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


def setup_logging(args: argparse.Namespace) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if args.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s",
                                               "%H:%M:%S"))
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
    for noisy in ("urllib3", "acme", "josepy"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.debug else logging.WARNING)
    # paramiko logs a failed handshake at ERROR with a traceback; certfan reports
    # the same failure itself as one line naming the host.
    logging.getLogger("paramiko").setLevel(logging.DEBUG if args.debug else logging.CRITICAL)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="certfan",
        description="Get TLS certificates from an ACME CA through DNS-01 (RFC 2136 with TSIG, "
        "a DNS provider's API through lexicon, or a hook) and roll them out over SSH to nginx "
        "edge nodes: canary first, config-tested, reloaded, proven by a TLS handshake, rolled "
        "back on failure.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"certfan {__version__}")
    add_globals(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for family in FAMILIES:
        family.register(sub)
    return parser



def _command_of(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str:
    """The command word in ``argv``, for the JSON document of a run that could not parse it."""
    names = {n for a in parser._actions if isinstance(a, argparse._SubParsersAction)
             for n in a.choices}
    return next((w for w in argv if w in names), "certfan")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        if "--json" not in argv:
            sys.stderr.write(exc.usage or parser.format_usage())
        return output.fail(argparse.Namespace(json="--json" in argv), _command_of(parser, argv),
                           EXIT_USAGE, str(exc))
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    setup_logging(args)
    try:
        return int(args.func(args))
    except CertfanError as exc:
        if args.debug:
            traceback.print_exc()
        return output.fail(args, args.command, exc.exit_code, str(exc))
    except KeyboardInterrupt:
        return output.fail(args, args.command, EXIT_INTERRUPTED, "interrupted")


if __name__ == "__main__":
    sys.exit(main())
