"""renew, reissue, rollback, prune, import and the run lock, the parts that need no lab:
the lock, the cached ACME directory, what a run with nothing to do touches (nothing),
holds, the prune plans. The lab half is tests/lab/test_operations.py."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from certfan.cli import app as cli
from certfan.cli import render
from certfan.cli import rollout as cli_rollout
from certfan.commands import importing, prune
from certfan.commands import renew as renew_mod
from certfan.commands.tools import Tools, catch_up
from certfan.config import AcmeConfig, Certificate, Config, DnsConfig, Host, RolloutPolicy
from certfan.deploy import hostrun
from certfan.errors import LockError, SshError
from certfan.issue.acme import AcmeClient
from certfan.state import lock, revocations
from certfan.state.deploy import DeployState
from certfan.state.store import Release, Store
from helpers.ari import AriServer
from helpers.ops import Ops, cert_files, restore_logging

SRC = Path(__file__).resolve().parents[2] / "src"

_logging = pytest.fixture(autouse=True)(restore_logging)

# ---------------------------------------------------------------- the run lock


def test_a_second_holder_fails_at_once_naming_the_file_and_the_holder(tmp_path: Path) -> None:
    with lock.hold(tmp_path, "renew") as path:
        assert path == tmp_path / "lock"
        # raised while this block still holds the lock: waiting would never end
        with pytest.raises(LockError) as caught, lock.hold(tmp_path, "push"):
            pass
    message = str(caught.value)
    assert str(tmp_path / "lock") in message and f"pid {os.getpid()}" in message
    assert "certfan renew" in message and caught.value.exit_code == 75
    with lock.hold(tmp_path, "push"):  # released when the block ended
        pass
    assert (tmp_path / "lock").exists()  # never removed (that would race the next open)


def test_cli_commands_that_change_things_take_the_lock(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "certfan.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[acme]\ndirectory = "https://127.0.0.1:9/dir"\n'
        '[dns]\ntsig_key_name = "k."\ntsig_secret_file = "tsig"\n'
        '[rollout]\nconnect_timeout = 0.3\n'
        '[[hosts]]\nname = "a"\naddress = "192.0.2.1"\n'
        '[[certificates]]\nname = "media"\ndomains = ["media.example"]\ndeploy_to = ["a"]\n'
    )
    key, chain = cert_files(tmp_path, "adopted", days_left=60)
    store = Store(tmp_path / "state")
    store.activate(store.save("media", key.read_bytes(), chain.read_bytes(), order_url=None,
                              key_type="ec-p256"))
    with lock.hold(tmp_path / "state", "renew"):
        for args in (["renew"], ["reissue", "media"], ["rollback", "--cert", "media"],
                     ["prune"], ["import", "media", "--key", str(key), "--fullchain", str(chain)],
                     ["issue", "media"], ["push", "--cert", "media"]):
            assert cli.main(["-c", str(config), *args]) == 75, args
            err = capsys.readouterr().err
            assert "another certfan run holds the lock" in err and f"pid {os.getpid()}" in err
        # status only reads: it runs (and finds the made-up host unreachable: UNKNOWN)
        assert cli.main(["-c", str(config), "status", "--crit-days", "1"]) == 3


def test_jitter_sleeps_first_then_takes_the_lock(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    import random

    config = tmp_path / "certfan.toml"
    config.write_text(f'state_dir = "{tmp_path}"\n[acme]\ndirectory = "https://127.0.0.1:9/d"\n'
                      '[dns]\ntsig_key_name = "k."\ntsig_secret_file = "tsig"\n')
    slept: list[float] = []
    monkeypatch.setattr(random, "uniform", lambda low, high: high * 0.5)
    monkeypatch.setattr(cli_rollout.time, "sleep", slept.append)
    with lock.hold(tmp_path, "push"):
        assert cli.main(["-c", str(config), "renew", "--jitter", "1800"]) == 75
    assert slept == [900.0]
    assert "certfan push" in capsys.readouterr().err


# ---------------------------------------------------------------- a run with nothing to do


class _NoCA(AcmeClient):
    def directory(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the CA was contacted")


class _NoDns:
    def published(self, records, cancel=None):  # type: ignore[no-untyped-def]
        raise AssertionError("DNS was touched")


def _unit_config(state: Path, directory: str = "https://127.0.0.1:9/dir") -> Config:
    hosts = {n: Host(n, f"192.0.2.{i}") for i, n in enumerate(("a", "b", "c"), 1)}
    return Config(
        path=state / "certfan.toml",
        state_dir=state,
        acme=AcmeConfig(directory=directory),
        dns=DnsConfig(),
        rollout=RolloutPolicy(connect_timeout=1.0),
        hosts=hosts,
        certificates={"media": Certificate("media", ("media.lab.test",), hosts=tuple(hosts))},
    )


def _store_release(store: Store, tmp_path: Path, tag: str, days_left: float = 60.0) -> Release:
    key, chain = cert_files(tmp_path, tag, days_left=days_left)
    release = store.save("media", key.read_bytes(), chain.read_bytes(), order_url=None,
                         key_type="ec-p256")
    store.activate(release)
    return release


def _remember_no_ari(cfg: Config) -> None:
    client = AcmeClient(cfg.acme, cfg.state_dir)
    path = client.account_dir() / "directory.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"directory": cfg.acme.directory, "renewal_info": None,
                                "fetched_at": datetime.now(UTC).isoformat()}))


def test_nothing_due_and_every_host_current_touches_no_ca_dns_or_host(tmp_path: Path) -> None:
    cfg = _unit_config(tmp_path)
    store = Store(tmp_path)
    release = _store_release(store, tmp_path, "v1")
    deploy = DeployState(tmp_path)
    for host in cfg.hosts:
        deploy.record("media", host, deployed=release.version)
    _remember_no_ari(cfg)
    connected: list[str] = []

    def connect(host: Host, *, timeout: float):  # type: ignore[no-untyped-def]
        connected.append(host.name)
        raise SshError(host.name, "unreachable in this test")

    def prober(endpoint, sni, timeout):  # type: ignore[no-untyped-def]
        raise AssertionError("a host was probed")

    tools = Tools(acme=_NoCA(cfg.acme, tmp_path, directory_cache_ttl=3600),
                             dns=_NoDns(), connect=connect, prober=prober)
    report = renew_mod.renew(cfg, store, tools)
    assert report.ok and report.issued == () and report.rollout is None and connected == []
    assert "nothing due, every host current" in render.renew_summary(report)

    # One host behind (it missed a rollout): that host, and only that one, is visited.
    deploy.record("media", "b", deployed=None, error="connect: timed out")
    report = renew_mod.renew(cfg, store, tools)
    assert connected == ["b"] and report.rollout is not None and not report.ok
    assert [(o.host, o.result) for o in report.rollout.outcomes] == [("b", hostrun.FAILED)]


def test_the_directory_is_cached_so_later_runs_need_not_ask(tmp_path: Path) -> None:
    server = AriServer(with_ari=False)
    try:
        cfg = _unit_config(tmp_path, f"{server.base}/dir")
        first = AcmeClient(cfg.acme, tmp_path, directory_cache_ttl=3600)
        assert not first.supports_ari and server.requests == ["/dir"]
        again = AcmeClient(cfg.acme, tmp_path, directory_cache_ttl=3600)
        assert not again.supports_ari and server.requests == ["/dir"]  # from the cache
        uncached = AcmeClient(cfg.acme, tmp_path)  # no TTL: always asks
        assert not uncached.supports_ari and server.requests == ["/dir", "/dir"]
        # A stale cache is not used: the CA is asked, and the answer cached anew.
        path = first.account_dir() / "directory.json"

        def age(hours: float) -> None:
            doc = json.loads(path.read_text())
            doc["fetched_at"] = (datetime.now(UTC) - timedelta(hours=hours)).isoformat()
            path.write_text(json.dumps(doc))

        age(2)
        assert not AcmeClient(cfg.acme, tmp_path, directory_cache_ttl=3600).supports_ari
        assert server.requests == ["/dir"] * 3
        server.with_ari = True  # the CA starts offering ARI: noticed once the entry is stale
        assert not AcmeClient(cfg.acme, tmp_path, directory_cache_ttl=3600).supports_ari
        age(2)
        assert AcmeClient(cfg.acme, tmp_path, directory_cache_ttl=3600).supports_ari
        assert AcmeClient(cfg.acme, tmp_path, directory_cache_ttl=3600).supports_ari
        assert server.requests == ["/dir"] * 4
    finally:
        server.close()


def test_with_ari_a_run_asks_only_once_the_retry_after_has_passed(tmp_path: Path) -> None:
    server = AriServer(with_ari=True)
    server.window = (datetime.now(UTC) + timedelta(days=30), datetime.now(UTC) + timedelta(days=31))
    try:
        cfg = _unit_config(tmp_path, f"{server.base}/dir")
        store = Store(tmp_path)
        release = _store_release(store, tmp_path, "v1")
        for host in cfg.hosts:
            DeployState(tmp_path).record("media", host, deployed=release.version)
        tools = Tools(dns=_NoDns())
        assert renew_mod.renew(cfg, store, tools).ok
        assert len(server.ari_fetches()) == 1
        assert renew_mod.renew(cfg, store, tools).ok
        assert len(server.ari_fetches()) == 1 and server.requests.count("/dir") == 1
        later = datetime.now(UTC) + timedelta(hours=2)  # past Retry-After (1 hour)
        assert renew_mod.renew(cfg, store, tools, now=later).ok
        assert len(server.ari_fetches()) == 2
    finally:
        server.close()


# ---------------------------------------------------------------- holds and prune plans


def test_a_held_host_is_left_alone_until_it_moves_or_a_new_version_comes(tmp_path: Path) -> None:
    cfg = _unit_config(tmp_path)
    store = Store(tmp_path)
    old = _store_release(store, tmp_path, "v1")
    new = _store_release(store, tmp_path, "v2")
    deploy, holds = DeployState(tmp_path), revocations.Holds(tmp_path)
    for host in ("a", "c"):
        deploy.record("media", host, deployed=new.version)
    deploy.record("media", "b", deployed=old.version)
    holds.hold("media", ["b"], old.version)
    found = catch_up(cfg, store)
    assert found.targets == [] and found.held == [("media", "b", old.version)]
    deploy.record("media", "b", deployed=None, error="lost")  # no longer on the held version
    [(release, hosts)] = catch_up(cfg, store).targets
    assert release == new and [h.name for h in hosts] == ["b"]
    assert holds.active("media", deploy) == {}


@pytest.mark.parametrize(
    ("versions", "current", "in_use", "keep", "delete"),
    [
        (["0001-aaaaaaaaaaaa", "0002-bbbbbbbbbbbb", "0003-cccccccccccc",
          "0004-dddddddddddd"], "0004-dddddddddddd", [], 1,
         ["0001-aaaaaaaaaaaa", "0002-bbbbbbbbbbbb"]),
        # rolled back to 0002: the newest (0004) stays for --keep 1, and so do 0002 and 0001
        (["0001-aaaaaaaaaaaa", "0002-bbbbbbbbbbbb", "0003-cccccccccccc",
          "0004-dddddddddddd"], "0002-bbbbbbbbbbbb", [], 1, ["0003-cccccccccccc"]),
        # a host that missed rollouts still serves 0001
        (["0001-aaaaaaaaaaaa", "0002-bbbbbbbbbbbb", "0003-cccccccccccc"], "0003-cccccccccccc",
         ["0001-aaaaaaaaaaaa"], 1, []),
        (["0001-aaaaaaaaaaaa", "0002-bbbbbbbbbbbb"], "0002-bbbbbbbbbbbb", [], 5, []),
        ([], None, [], 3, []),
    ],
)
def test_local_prune_plan(versions: list[str], current: str | None, in_use: list[str],
                          keep: int, delete: list[str]) -> None:
    plan = prune.plan_local("media", versions, current, in_use, keep)
    assert list(plan.delete) == delete
    assert sorted(plan.keep + plan.delete) == sorted(versions)


@pytest.mark.parametrize(
    ("listed", "live", "keep", "delete"),
    [
        (["0001-aaaaaaaaaaaa", "0002-bbbbbbbbbbbb", "0003-cccccccccccc", "certbot-1"],
         "0003-cccccccccccc", [], ["0001-aaaaaaaaaaaa"]),
        # rolled back: live is older than the newest on the host
        (["0001-aaaaaaaaaaaa", "0002-bbbbbbbbbbbb", "0003-cccccccccccc"],
         "0002-bbbbbbbbbbbb", ["0003-cccccccccccc"], []),
        (["0001-aaaaaaaaaaaa", "0002-bbbbbbbbbbbb", "0005-eeeeeeeeeeee"],
         "certbot-1", ["0005-eeeeeeeeeeee"], ["0001-aaaaaaaaaaaa", "0002-bbbbbbbbbbbb"]),
        (["0001-aaaaaaaaaaaa", ".0002-bbbbbbbbbbbb.tmp", "fullchain1.pem"], None, [],
         ["0001-aaaaaaaaaaaa"]),
    ],
)
def test_host_prune_plan(listed: list[str], live: str | None, keep: list[str],
                         delete: list[str]) -> None:
    assert list(prune.plan_host(listed, live, keep)) == delete


def test_import_refuses_a_key_that_does_not_match(tmp_path: Path) -> None:
    cfg = _unit_config(tmp_path)
    key, _ = cert_files(tmp_path, "one", days_left=60)
    _, chain = cert_files(tmp_path, "two", days_left=60)
    with pytest.raises(Exception, match="does not match"):
        importing.import_cert(cfg, Store(tmp_path), "media", key, chain)
    assert Store(tmp_path).current("media") is None


# ---------------------------------------------------------------- on the lab


@pytest.fixture
def ops(lab, tmp_path: Path) -> Ops:  # type: ignore[no-untyped-def]
    return Ops(lab, tmp_path)
