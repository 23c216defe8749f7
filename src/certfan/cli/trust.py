"""Trust: the offline problems ``check`` reports, and the ``doctor`` and ``audit`` commands.

``check`` stays in cli/check.py and calls :func:`check_problems` here; doctor
(prove the path online, changing nothing that serves) and audit (every
certificate on the fleet, managed or not) are registered by :func:`register`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from certfan.cli import output
from certfan.cli.options import EXIT_USAGE
from certfan.config import Config
from certfan.config.preflight import Problem


def check_problems(cfg: Config) -> list[Problem]:
    """What ``certfan check`` finds wrong offline (config/preflight.py)."""
    from certfan.config import preflight
    from certfan.issue import crypto

    return preflight.problems(cfg, ssh_key_problem=crypto.ssh_private_key_problem)


def check_failed(args: argparse.Namespace, cfg: Config, problems: list[Problem]) -> int:
    """One line per problem on stderr (file and key named), exit 2; or the JSON document."""
    for problem in problems:
        sys.stderr.write(f"certfan: error: {cfg.path}: {problem}\n")
    sys.stderr.flush()
    if getattr(args, "json", False):
        output.print_json(output.document(args.command, EXIT_USAGE, {
            "config": str(cfg.path),
            "problems": [{"key": p.key, "path": p.path, "message": p.message}
                         for p in problems],
        }, error=f"{len(problems)} problem(s) found"))
    return EXIT_USAGE


def register(sub: Any) -> None:
    """doctor and audit (added below as they land)."""
