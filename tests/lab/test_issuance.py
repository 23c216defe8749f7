"""Issuance end to end against the lab: Pebble (ACME) and BIND9 (RFC 2136).

Every test has its own state directory; values someone else put at the
challenge names are seeded with nsupdate and must survive every run, and
no value certfan added may remain, whether the order succeeded or failed.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certfan import config
from certfan.config import Config
from certfan.errors import AcmeError, DnsError, Interrupted
from certfan.issue import crypto, dns01, due, order
from certfan.issue.acme import AcmeClient
from certfan.state.store import Store
from helpers.dns import nsupdate, txt

CHALLENGE_NAMES = (
    "_acme-challenge.lab.test",
    "_acme-challenge.media.lab.test",
    "static.delegated.test",
    "chain.delegated.test",
)


def _config(lab, tmp_path: Path, **overrides: object) -> Config:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = lab.write_config(tmp_path / "certfan.toml", state_dir=tmp_path / "state", **overrides)
    return config.load(path)


@pytest.fixture
def seeded(lab, tmp_path: Path) -> Iterator[dict[str, set[str]]]:
    """An unrelated TXT value at every challenge name certfan will write to."""
    values = {name: f"unrelated-{secrets.token_hex(4)}" for name in CHALLENGE_NAMES}
    for name, value in values.items():
        nsupdate(lab, tmp_path, "add", name, value)
    yield {name: {value} for name, value in values.items()}
    for name, value in values.items():
        nsupdate(lab, tmp_path, "delete", name, value)


def _assert_only(lab, expected: dict[str, set[str]]) -> None:
    assert {name: txt(lab, name) for name in CHALLENGE_NAMES} == expected


def _due(cfg: Config, store: Store, acme: AcmeClient | None = None) -> list[due.Status]:
    return [s for s in due.renewal_status(cfg, store, acme=acme) if s.decision.due]


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# ---------------------------------------------------------------- success


@pytest.mark.lab
def test_apex_wildcard_and_cname_delegated_names(lab, tmp_path: Path, seeded) -> None:
    cfg = _config(
        lab,
        tmp_path,
        certificates={
            "static": {"key_type": "rsa-2048"},
            "chain": {"domains": ["chain.lab.test"], "key_type": "ec-p384"},
        },
    )
    store = Store(cfg.state_dir)
    wild = order.issue(cfg, "wild", store)
    static = order.issue(cfg, "static", store)
    chain = order.issue(cfg, "chain", store)
    _assert_only(lab, seeded)

    assert wild.names == ("lab.test", "*.lab.test") and wild.key_type == "ec-p256"
    assert static.names == ("static.lab.test",) and static.key_type == "rsa-2048"
    assert chain.names == ("chain.lab.test",)
    wild_key = crypto.load_key(wild.file("privkey.pem").read_bytes())
    assert isinstance(wild_key, ec.EllipticCurvePrivateKey) and wild_key.curve.name == "secp256r1"
    static_key = crypto.load_key(static.file("privkey.pem").read_bytes())
    assert isinstance(static_key, rsa.RSAPrivateKey) and static_key.key_size == 2048
    assert crypto.key_type_of(crypto.load_key(chain.file("privkey.pem").read_bytes())) == "ec-p384"
    for rel in (wild, static, chain):
        assert store.current(rel.cert) == rel
        assert rel.order_url and rel.order_url.startswith(cfg.acme.directory.rsplit("/", 1)[0])
        assert "Pebble" in rel.issuer
        assert crypto.key_matches_cert(
            rel.file("privkey.pem").read_bytes(), rel.file("cert.pem").read_bytes()
        )
        assert rel.file("chain.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
        assert _mode(rel.file("privkey.pem")) == 0o600
        for d in (rel.path, rel.path.parent, rel.path.parent.parent, cfg.state_dir):
            assert _mode(d) == 0o700, d
    account = next((cfg.state_dir / "account").iterdir())
    assert _mode(account) == 0o700 and _mode(account / "key.pem") == 0o600
    assert json.loads((account / "account.json").read_text())["uri"].startswith("https://")


@pytest.mark.lab
def test_several_due_certificates_are_ordered_concurrently(lab, tmp_path: Path) -> None:
    cfg = _config(lab, tmp_path)

    class Together(dns01.Dns01):
        """Every order must be inside DNS-01 at the same time, or the barrier breaks."""

        barrier = threading.Barrier(3, timeout=20)

        def published(self, records, cancel=None):  # type: ignore[no-untyped-def]
            self.barrier.wait()
            return super().published(records, cancel)

    store = Store(cfg.state_dir)
    assert [s.cert for s in _due(cfg, store)] == ["media", "wild", "static"]
    outcomes = order.issue_many(cfg, store, ["media", "wild", "static"], dns=Together(cfg.dns))
    assert [o.cert for o in outcomes] == ["media", "wild", "static"]
    assert all(o.ok for o in outcomes), [str(o.error) for o in outcomes]
    assert _due(cfg, store) == []


@pytest.mark.lab
def test_outcome_for_every_certificate_even_when_some_fail(lab, tmp_path: Path) -> None:
    cfg = _config(lab, tmp_path, certificates={"bogus": {"domains": ["nowhere.invalid"]}})
    store = Store(cfg.state_dir)
    outcomes = order.issue_many(cfg, store, ["media", "bogus"])
    assert outcomes[0].ok and not outcomes[1].ok
    print(f"\nbogus: {outcomes[1].error}")
    assert "nowhere.invalid" in str(outcomes[1].error)


# ---------------------------------------------------------------- failures


class WrongAnswer(dns01.Dns01):
    """Fault injection: publishes a value that is not the key authorization."""

    def published(self, records, cancel=None):  # type: ignore[no-untyped-def]
        return super().published([(name, f"wrong-{value[:20]}") for name, value in records], cancel)


@pytest.mark.lab
def test_wrong_answer_names_domain_and_ca_detail_and_cleans_up(lab, tmp_path, seeded) -> None:
    cfg = _config(lab, tmp_path)
    store = Store(cfg.state_dir)
    with pytest.raises(AcmeError) as err:
        order.issue(cfg, "wild", store, dns=WrongAnswer(cfg.dns))
    text = str(err.value)
    assert "validation of" in text and "lab.test failed" in text
    assert "unauthorized" in text or "TXT" in text  # what Pebble reported
    _assert_only(lab, seeded)
    assert store.current("wild") is None and store.versions("wild") == []


@pytest.mark.lab
def test_wrong_tsig_key_says_so_and_cleans_up(lab, tmp_path, seeded) -> None:
    wrong = tmp_path / "wrong.secret"
    wrong.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    wrong.chmod(0o600)
    cfg = _config(lab, tmp_path, dns={"tsig_secret_file": str(wrong)})
    with pytest.raises(DnsError, match=r"zone lab\.test\. at 127\.0\.0\.1:\d+ refused: BADSIG"):
        order.issue(cfg, "wild", Store(cfg.state_dir))
    _assert_only(lab, seeded)


@pytest.mark.lab
def test_propagation_deadline_cleans_up(lab, tmp_path, seeded) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # a port nobody serves
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    cfg = _config(
        lab,
        tmp_path,
        dns={
            "nameservers": [f"127.0.0.1:{lab.dns_port}", f"127.0.0.1:{dead}"],
            "propagation_timeout": 0.5,
            "poll_interval": 0.1,
        },
    )
    with pytest.raises(DnsError, match="not served after 0.5s"):
        order.issue(cfg, "wild", Store(cfg.state_dir))
    _assert_only(lab, seeded)


@pytest.mark.lab
def test_ctrl_c_in_a_single_issue_cleans_up(lab, tmp_path, seeded) -> None:
    cfg = _config(lab, tmp_path)

    class CtrlC(dns01.Dns01):
        def _wait(self, added, cancel):  # type: ignore[no-untyped-def]
            assert {v for n in CHALLENGE_NAMES for v in txt(lab, n)} > set().union(*seeded.values())
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        order.issue(cfg, "wild", Store(cfg.state_dir), dns=CtrlC(cfg.dns))
    _assert_only(lab, seeded)


@pytest.mark.lab
def test_ctrl_c_during_issue_many_cleans_up(lab, tmp_path, seeded) -> None:
    cfg = _config(lab, tmp_path)

    class CtrlCWhileWaiting(dns01.Dns01):
        """Ctrl-C reaches the main thread while the workers wait for propagation."""

        pressed = threading.Event()
        lock = threading.Lock()

        def _wait(self, added, cancel):  # type: ignore[no-untyped-def]
            with self.lock:  # one Ctrl-C, from whichever worker gets here first
                if not self.pressed.is_set():
                    self.pressed.set()
                    # A real SIGINT: interrupt_main() would not wake a blocked wait().
                    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            if cancel is not None and cancel.wait(20):
                raise Interrupted("interrupted while waiting for DNS propagation")
            pytest.fail("the worker was never told to stop")

    with pytest.raises(KeyboardInterrupt):
        order.issue_many(
            cfg, Store(cfg.state_dir), ["wild", "static"], dns=CtrlCWhileWaiting(cfg.dns)
        )
    _assert_only(lab, seeded)


# ---------------------------------------------------------------- store and keys


@pytest.mark.lab
def test_crash_between_issuance_and_flip(lab, tmp_path: Path) -> None:
    cfg = _config(lab, tmp_path)
    old = order.issue(cfg, "media", Store(cfg.state_dir))

    class Crash(BaseException):
        pass

    class CrashBeforeFlip(Store):
        def activate(self, release):  # type: ignore[no-untyped-def]
            raise Crash

    with pytest.raises(Crash):
        order.issue(cfg, "media", CrashBeforeFlip(cfg.state_dir))
    store = Store(cfg.state_dir)  # the next process
    assert store.current("media") == old
    [first, new] = store.versions("media")
    assert first == old and new.version.startswith("0002-")
    assert crypto.key_matches_cert(
        new.file("privkey.pem").read_bytes(), new.file("cert.pem").read_bytes()
    )
    assert _mode(new.file("privkey.pem")) == 0o600
    assert [n for n in os.listdir(new.path.parent) if n.startswith(".")] == []


@pytest.mark.lab
def test_fresh_key_by_default_reused_on_request(lab, tmp_path: Path) -> None:
    cfg = _config(lab, tmp_path)
    store = Store(cfg.state_dir)
    a, b = order.issue(cfg, "media", store), order.issue(cfg, "media", store)
    assert a.file("privkey.pem").read_bytes() != b.file("privkey.pem").read_bytes()
    reuse = _config(lab, tmp_path, certificates={"media": {"reuse_key": True}})
    c = order.issue(reuse, "media", store)
    assert c.file("privkey.pem").read_bytes() == b.file("privkey.pem").read_bytes()
    assert c.serial != b.serial
