"""Hostile config values, each refused at load with the key it names.

Shared by the CLI-level bad-input tests (tests/unit/test_reliability_config.py)
and the check that docs/reliability.md counts them.
"""

from __future__ import annotations

import math
from typing import Any

# (where in the example document, value, key path the error line must name)
HOSTILE: list[tuple[tuple[Any, ...], Any, str]] = [
    # names that would be shell or path syntax on a node or in the state dir
    (("hosts", 0, "name"), "sally;rm -rf /", "hosts[0].name"),
    (("hosts", 0, "name"), "$(reboot)", "hosts[0].name"),
    (("hosts", 0, "name"), "../esme", "hosts[0].name"),
    (("certificates", 0, "name"), "../../etc/passwd", "certificates[0].name"),
    (("certificates", 0, "name"), "media`id`", "certificates[0].name"),
    (("certificates", 0, "domains"), ["media.hachyderm.io; id"], "certificates[0].domains[0]"),
    (("certificates", 0, "domains"), ["*.*.hachyderm.io"], "certificates[0].domains[0]"),
    (("groups", "cdn"), ["sally", "../esme"], "groups.cdn[1]"),
    (("hosts", 0, "user"), "root$(id)", "hosts[0].user"),
    (("hosts", 0, "address"), "203.0.113.10;id", "hosts[0].address"),
    (("hosts", 0, "reload"), "systemctl reload nginx; reboot", "hosts[0].reload"),
    (("hosts", 0, "config_test"), "nginx -t && reboot", "hosts[0].config_test"),
    (("hosts", 0, "config_test"), [], "hosts[0].config_test"),
    (("dns", "server"), "ns1.example.org; id", "dns.server"),
    # paths with '..' or '~'
    (("hosts", 0, "root"), "/etc/nginx/../../root", "hosts[0].root"),
    (("hosts", 0, "root"), "/", "hosts[0].root"),
    (("hosts", 0, "root"), "relative/root", "hosts[0].root"),
    (("hosts", 0, "identity_file"), "../../etc/shadow", "hosts[0].identity_file"),
    (("hosts", 0, "known_hosts"), "~/.ssh/known_hosts", "hosts[0].known_hosts"),
    (("state_dir",), "/var/lib/../../etc", "state_dir"),
    (("dns", "tsig_secret_file"), "/etc/certfan/../shadow", "dns.tsig_secret_file"),
    # absurd numbers
    (("hosts", 0, "port"), 10**30, "hosts[0].port"),
    (("hosts", 0, "port"), 0, "hosts[0].port"),
    (("rollout", "concurrency"), 10**6, "rollout.concurrency"),
    (("rollout", "canary"), -1, "rollout.canary"),
    (("rollout", "failure_budget"), 2**63, "rollout.failure_budget"),
    (("rollout", "connect_timeout"), math.nan, "rollout.connect_timeout"),
    (("rollout", "command_timeout"), math.inf, "rollout.command_timeout"),
    (("rollout", "verify_timeout"), -5.0, "rollout.verify_timeout"),
    (("rollout", "verify_timeout"), 1e300, "rollout.verify_timeout"),
    (("dns", "propagation_timeout"), 0, "dns.propagation_timeout"),
    (("dns", "poll_interval"), 10**12, "dns.poll_interval"),
    (("dns", "port"), 65536, "dns.port"),
    # the CA over plain http
    (("acme", "directory"), "http://acme.example.org/directory", "acme.directory"),
]
