"""The command-line grammar every command shares: global options, exit codes,
checked option values, and "did you mean" for names the config does not know.

Global options (``--config``, ``-v``, ``--debug``, ``--log-format``,
``--json``, ``--quiet``) are accepted before or after the command: the
top-level parser holds their defaults and each subparser repeats them with
``SUPPRESS`` defaults, so a subparser sets only what was given after the
command and never resets what was given before it.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from certfan.errors import CertfanError

if TYPE_CHECKING:
    from certfan import config as config_mod

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_LOCKED = 75  # LockError.exit_code; named here for the table in --help and docs
EXIT_INTERRUPTED = 130

EPILOG = f"""\
config file: --config, else $CERTFAN_CONFIG, else /etc/certfan/certfan.toml
exit status: {EXIT_OK} ok, {EXIT_FAILED} failed, {EXIT_USAGE} usage/config error, \
{EXIT_PARTIAL} some hosts not serving
             the version, {EXIT_LOCKED} another run holds the lock, \
{EXIT_INTERRUPTED} interrupted;
             status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (monitoring plugins)
"""

Handler = Callable[[argparse.Namespace], int]


class UsageError(CertfanError):
    """A command-line value is wrong (unknown name, out of range): exit 2."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, usage: str | None = None):
        super().__init__(message)
        self.usage = usage  # the (sub)command's usage line, for a parse error


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are raised, so ``main`` returns the exit code
    and a ``--json`` run still prints its one document."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}", self.format_usage())


_GLOBALS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("-c", "--config"), {"metavar": "FILE", "default": None,
                          "help": "configuration file (TOML)"}),
    (("-v", "--verbose"), {"action": "store_true", "default": False,
                           "help": "log each step at INFO"}),
    (("--debug",), {"action": "store_true", "default": False,
                    "help": "log protocol detail; show tracebacks on errors"}),
    (("--log-format",), {"choices": ("text", "json"), "default": "text",
                         "help": "log line format on stderr"}),
    (("--json",), {"action": "store_true", "default": False,
                   "help": "print one JSON document (see docs/cli.md) instead of text"}),
    (("-q", "--quiet"), {"action": "store_true", "default": False,
                         "help": "print nothing when the command succeeds (exit 0)"}),
)


def add_globals(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The global options; ``suppress`` for a subparser (keep what came before the command)."""
    group = parser.add_argument_group("global options")
    for flags, spec in _GLOBALS:
        spec = dict(spec)
        if suppress:
            spec["default"] = argparse.SUPPRESS
        group.add_argument(*flags, **spec)


def command(sub: Any, name: str, handler: Handler, *, help: str | None = None,
            description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand with the global options and ``handler`` as its ``func``.

    Without ``help`` and ``description`` they come from the handler's docstring:
    its first line, and the paragraph after it (what ``--help`` and the man page show).
    """
    first, _, rest = inspect.cleandoc(handler.__doc__ or "").partition("\n")
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help or first, description=description or " ".join(rest.split()) or first)
    add_globals(p, suppress=True)
    p.set_defaults(func=handler, command=name)
    return p


def add_names(p: argparse.ArgumentParser, *, certs: str | None = None,
              hosts: str | None = None, groups: str | None = None) -> None:
    """The repeatable selection options (--cert, --host, --group), each with its help."""
    for flag, dest, meta, text in (("--cert", "certs", "NAME", certs),
                                   ("--host", "hosts", "HOST", hosts),
                                   ("--group", "groups", "GROUP", groups)):
        if text:
            p.add_argument(flag, dest=dest, action="append", metavar=meta, help=text)


def add_window(p: argparse.ArgumentParser, what: str = "a served certificate") -> None:
    """--warn-days and --crit-days (monitoring thresholds); :func:`check_window` after parsing."""
    from certfan import defaults

    p.add_argument("--warn-days", type=non_negative, default=defaults.STATUS_WARN_DAYS,
                   metavar="N", help=f"WARNING when {what} expires within N days; more than "
                   f"--crit-days (default {defaults.STATUS_WARN_DAYS:g})")
    p.add_argument("--crit-days", type=non_negative, default=defaults.STATUS_CRIT_DAYS,
                   metavar="N",
                   help=f"CRITICAL within N days (default {defaults.STATUS_CRIT_DAYS:g})")


def check_window(args: argparse.Namespace) -> None:
    if args.warn_days <= args.crit_days:
        raise UsageError(f"--warn-days {args.warn_days:g} must be greater than "
                         f"--crit-days {args.crit_days:g}")


# ---------------------------------------------------------------- checked values


def _number(text: str, kind: Callable[[str], float], minimum: float, strict: bool) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    if value < minimum or (strict and value == minimum):
        bound = "greater than" if strict else "at least"
        raise argparse.ArgumentTypeError(f"must be {bound} {minimum:g}, got {text}")
    return value


def non_negative(text: str) -> float:
    return _number(text, float, 0, strict=False)


def positive_int(text: str) -> int:
    return int(_number(text, int, 1, strict=False))


# ---------------------------------------------------------------- names from the config


def load_config(args: argparse.Namespace) -> config_mod.Config:
    from certfan import config as config_mod

    return config_mod.load(config_mod.find_config(args.config))


def _unknown(option: str, what: str, name: str, known: Iterable[str], path: object) -> UsageError:
    choices = list(known)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    listed = ", ".join(choices[:12]) + (", ..." if len(choices) > 12 else "")
    return UsageError(f"{option} {name!r}: no such {what} in {path}{hint} "
                      f"(known: {listed or 'none'})")


def check_names(cfg: config_mod.Config, *, hosts: Sequence[str] = (),
                groups: Sequence[str] = (), certs: Sequence[str] = (),
                cert_option: str = "--cert") -> None:
    """Every name given on the command line exists in the config, or UsageError
    naming the option, the value, the closest names, and the file."""
    for name in hosts:
        if name not in cfg.hosts:
            raise _unknown("--host", "host", name, cfg.hosts, cfg.path)
    for name in groups:
        if name not in cfg.groups:
            raise _unknown("--group", "group", name, cfg.groups, cfg.path)
    for name in certs:
        if name not in cfg.certificates:
            raise _unknown(cert_option, "certificate", name, cfg.certificates, cfg.path)
