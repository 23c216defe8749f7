"""certfan check: validate the configuration and summarize it."""

from __future__ import annotations

import argparse
from typing import Any

from certfan.cli import docs, output, trust
from certfan.cli.options import EXIT_OK, command, load_config


def cmd_check(args: argparse.Namespace) -> int:
    """validate the configuration file and summarize it

    Load and validate the configuration, then check offline what the first renewal needs:
    every file it names exists, is readable and private where it must be, the TSIG secret
    and EAB key decode, identity files are keys, known_hosts has each host, the hook is
    executable, the CA's terms are agreed or an account exists. Exit 2 with one line per
    problem naming file and key.
    """
    cfg = load_config(args)
    problems = [] if args.syntax_only else trust.check_problems(cfg)  # files, keys, account
    if problems:
        return trust.check_failed(args, cfg, problems)
    dns = f"  dns: {cfg.dns.method}"
    if cfg.dns.method == "rfc2136":
        dns += f" via {cfg.dns.server}:{cfg.dns.port}"
    lines = [
        f"{cfg.path}: ok",
        f"  acme directory: {cfg.acme.directory}",
        dns,
        f"  state dir: {cfg.state_dir}",
        f"  hosts: {len(cfg.hosts)}  groups: {len(cfg.groups)}  "
        f"certificates: {len(cfg.certificates)}",
    ]
    for cert in cfg.certificates.values():
        targets = ", ".join(cert.hosts) or "(no hosts)"
        lines.append(f"  {cert.name}: {', '.join(cert.domains)} [{cert.key_type}] -> {targets}")
    return output.finish(args, EXIT_OK, lines, docs.config_doc(cfg))


def register(sub: Any) -> None:
    p = command(sub, "check", cmd_check)
    p.add_argument("--syntax-only", action="store_true",
                   help="validate the file alone, not the files it names (e.g. in CI)")
