"""A config for command-line tests without the lab: two hosts on loopback ports
nothing listens on (SSH and TLS are refused at once), a group, one certificate."""

from __future__ import annotations

from pathlib import Path

CONFIG = """\
state_dir = "{state}"
[acme]
directory = "https://127.0.0.1:9/dir"
[dns]
tsig_key_name = "k."
tsig_secret_file = "tsig"
[rollout]
connect_timeout = 1.0
[[hosts]]
name = "sally"
address = "127.0.0.1"
port = 9
probe_port = 9
[[hosts]]
name = "esme"
address = "127.0.0.1"
port = 9
probe_port = 9
[groups]
edge = ["sally", "esme"]
[[certificates]]
name = "media"
domains = ["media.example"]
deploy_to = ["sally", "esme"]
"""


def write_config(directory: Path) -> Path:
    path = directory / "certfan.toml"
    path.write_text(CONFIG.format(state=directory / "state"))
    return path
