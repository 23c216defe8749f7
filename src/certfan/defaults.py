"""Defaults of command options, kept apart from the heavy modules that use them
so that building the CLI parser (and `certfan --help`) imports nothing else."""

from __future__ import annotations

STATUS_WARN_DAYS = 20.0  # WARNING when a served certificate expires within this many days
STATUS_CRIT_DAYS = 7.0  # CRITICAL within this many days
PRUNE_KEEP = 3  # newest versions prune keeps besides those in use
