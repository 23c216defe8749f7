"""Config for fleets: [host_defaults] under every host, a certificate's own
[certificates.rollout] merged over [rollout] key by key, and conf/example.toml
written with both."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from certfan import config
from certfan.config import RolloutPolicy
from certfan.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "conf" / "example.toml"

BASE = """\
[acme]
directory = "https://acme.example/directory"

[dns]
method = "hook"
hook = "hook"

[rollout]
canary = 2
concurrency = 8
verify_timeout = 30

[host_defaults]
user = "certfan"
port = 2200
root = "/etc/nginx/certfan"
identity_file = "keys/id_ed25519"
reload = "sudo -n systemctl reload nginx"

[[hosts]]
name = "sally"
address = "198.51.100.30"

[[hosts]]
name = "esme"
address = "198.51.100.40"
port = 22
user = "edge"

[[certificates]]
name = "media"
domains = ["media.example.org"]
deploy_to = ["sally", "esme"]

[[certificates]]
name = "static"
domains = ["static.example.org"]
deploy_to = ["esme"]
[certificates.rollout]
canary = 0
verify_timeout = 5
"""


def load(tmp_path: Path, text: str) -> config.Config:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return config.load(path)


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    return str(err.value).removeprefix(f"{tmp_path}/")


def test_host_defaults_apply_to_every_host_and_a_hosts_own_value_wins(tmp_path: Path) -> None:
    cfg = load(tmp_path, BASE)
    sally, esme = cfg.hosts["sally"], cfg.hosts["esme"]
    assert (sally.user, sally.port, sally.root) == ("certfan", 2200, "/etc/nginx/certfan")
    assert (esme.user, esme.port, esme.root) == ("edge", 22, "/etc/nginx/certfan")
    for host in (sally, esme):
        assert host.reload == ("sudo", "-n", "systemctl", "reload", "nginx")
        assert host.identity_file == tmp_path / "keys" / "id_ed25519"  # relative to the file
        assert host.config_test == ("nginx", "-t")  # no default given: certfan's own


def test_without_host_defaults_hosts_keep_certfans_defaults(tmp_path: Path) -> None:
    text = BASE[: BASE.index("[host_defaults]")] + BASE[BASE.index("[[hosts]]"):]
    sally = load(tmp_path, text).hosts["sally"]
    assert sally == config.Host("sally", "198.51.100.30")


def test_a_certificates_rollout_is_merged_over_the_global_policy_key_by_key(
    tmp_path: Path,
) -> None:
    cfg = load(tmp_path, BASE)
    glob = RolloutPolicy(canary=2, concurrency=8, verify_timeout=30.0)
    assert cfg.rollout == glob
    assert cfg.certificates["media"].rollout is None
    assert cfg.rollout_for("media") == glob
    assert cfg.rollout_for("static") == dataclasses.replace(glob, canary=0, verify_timeout=5.0)
    assert cfg.certificates["static"].hosts == ("esme",)


def test_every_rollout_key_can_be_set_per_certificate(tmp_path: Path) -> None:
    """Generic: whatever [rollout] accepts, [certificates.rollout] accepts too."""
    cfg = load(tmp_path, BASE)
    path = tmp_path / "c.toml"
    lines = [f"{f.name} = {_toml(getattr(cfg.rollout, f.name))}"
             for f in dataclasses.fields(RolloutPolicy)]
    text = BASE.replace("canary = 0\nverify_timeout = 5\n", "\n".join(lines) + "\n")
    path.write_text(text)
    assert config.load(path).rollout_for("static") == cfg.rollout


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if not isinstance(value, str) else f'"{value}"'


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('[host_defaults]\n', '[host_defaults]\naddress = "10.0.0.1"\n',
         "c.toml:14: host_defaults.address: is per host: set it in each [[hosts]]"),
        ('[host_defaults]\n', '[host_defaults]\nname = "x"\n',
         "c.toml:14: host_defaults.name: is per host: set it in each [[hosts]]"),
        ('port = 2200\n', 'prot = 2200\n',
         "c.toml:15: host_defaults.prot: unknown key (did you mean 'port'?)"),
        ('port = 2200\n', 'port = 70000\n',
         "c.toml:15: host_defaults.port: must be between 1 and 65535, got 70000"),
        ('reload = "sudo -n systemctl reload nginx"\n', 'reload = "systemctl reload nginx; id"\n',
         "c.toml:18: host_defaults.reload: ';' is shell syntax, but commands run without a "
         'shell; write an array such as ["sh", "-c", "..."]'),
        ('canary = 0\n', 'canery = 0\n',
         "c.toml:40: certificates[1].rollout.canery: unknown key (did you mean 'canary'?)"),
        ('verify_timeout = 5\n', 'verify_timeout = 0\n',
         "c.toml:41: certificates[1].rollout.verify_timeout: must be greater than 0 and at "
         "most 86400, got 0"),
        ('[certificates.rollout]\ncanary = 0\nverify_timeout = 5\n', 'rollout = 3\n',
         "c.toml:39: certificates[1].rollout: expected a table, got an integer (3)"),
    ],
)
def test_bad_defaults_and_overrides_are_one_line_naming_the_key(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    assert BASE.count(old) == 1
    assert error(tmp_path, BASE.replace(old, new)) == message


def test_the_example_sets_hosts_once_and_gives_one_certificate_its_own_policy() -> None:
    cfg = config.load(EXAMPLE)
    text = EXAMPLE.read_text()
    assert text.count("identity_file =") == 1 and text.count("config_test =") == 1
    for host in cfg.hosts.values():
        assert host.user == "certfan" and host.root == "/etc/nginx/certfan"
        assert host.known_hosts == Path("/etc/certfan/known_hosts")
    assert cfg.hosts["esme"].port == 2222 and cfg.hosts["sally"].port == 22
    assert cfg.rollout_for("media") == cfg.rollout
    assert cfg.rollout_for("static") == dataclasses.replace(cfg.rollout, canary=0,
                                                            failure_budget=1)
    assert [n.name for n in cfg.notify] == ["ops-chat", "pager"]
