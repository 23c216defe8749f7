"""Notifications: the payload, the chat shapes, delivery to a real HTTP receiver on
loopback and to a real command, failures that never raise, the once-a-day memory."""

from __future__ import annotations

import json
import logging
import stat
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from certfan import config
from certfan.commands import notify
from certfan.commands.notify_send import body, payload
from certfan.config.model import Notifier
from certfan.errors import ConfigError
from helpers.webhook import closed_port_url, receiver

NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
SECRET = "T0KEN-SECRET"


@dataclass(frozen=True)
class Outcome:  # the fields of deploy's HostOutcome that a notice reads
    host: str
    cert: str
    version: str
    result: str
    failed_step: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.result in ("deployed", "unchanged")


@dataclass(frozen=True)
class Rollout:
    outcomes: tuple[Outcome, ...]
    halted_by: Outcome | None = None


HALTED = Rollout(
    (
        Outcome("cdn-frankfurt-1", "media", "20261202-000102", "failed", "test",
                "nginx -t exited 1: unknown directive"),
        Outcome("sally", "media", "20261202-000102", "skipped: halted"),
    ),
    halted_by=Outcome("cdn-frankfurt-1", "media", "20261202-000102", "failed", "test"),
)


def test_a_halted_rollout_is_a_halted_notice_naming_the_host_step_and_version() -> None:
    notice = notify.rollout_notice("renew", HALTED)
    assert notice is not None
    doc = payload(notice, NOW, origin="certfan-01")
    assert doc == {
        "certfan": 1,
        "event": "halted",
        "command": "renew",
        "severity": "critical",
        "summary": "certfan renew: media: rollout of 20261202-000102 halted at cdn-frankfurt-1 "
                   "(test); 2 host(s) do not serve the new version",
        "origin": "certfan-01",
        "time": "2026-12-02T06:00:00Z",
        "items": [
            {"cert": "media", "host": "cdn-frankfurt-1", "version": "20261202-000102",
             "detail": "failed at test: nginx -t exited 1: unknown directive"},
            {"cert": "media", "host": "sally", "version": "20261202-000102",
             "detail": "skipped: halted"},
        ],
    }


def test_all_well_is_no_notice_and_a_partial_rollout_is_failed() -> None:
    fine = Rollout((Outcome("sally", "media", "v1", "deployed"),))
    assert notify.rollout_notice("push", fine) is None
    assert notify.rollout_notice("push", None) is None
    partial = Rollout((Outcome("sally", "media", "v1", "deployed"),
                       Outcome("esme", "media", "v1", "failed", "connect", "timed out")))
    notice = notify.rollout_notice("push", partial)
    assert notice is not None and notice.event == "failed"
    assert [i.host for i in notice.items] == ["esme"]


def test_a_failed_order_in_renew_is_failed_even_without_a_rollout() -> None:
    @dataclass(frozen=True)
    class Failed:
        cert: str
        error: str

    @dataclass(frozen=True)
    class Renewed:
        failed_issues: tuple[Failed, ...]
        rollout: Rollout | None = None

    notice = notify.renew_notice(Renewed((Failed("media", "the CA said no"),)))
    assert notice is not None and notice.event == "failed"
    assert notice.items[0].detail == "not renewed: the CA said no"
    assert notify.renew_notice(Renewed(())) is None


@pytest.mark.parametrize(
    ("fmt", "keys"),
    [("slack", {"text"}), ("discord", {"content"}), ("matrix", {"text", "msgtype"})],
)
def test_chat_formats_carry_the_summary_and_one_line_per_item(fmt: str, keys: set[str]) -> None:
    notice = notify.rollout_notice("renew", HALTED)
    assert notice is not None
    doc = json.loads(body(fmt, notice, NOW, "certfan-01"))
    assert set(doc) == keys
    message = doc.get("text") or doc["content"]
    lines = message.splitlines()
    assert lines[0].startswith("[critical] certfan renew: media: rollout of 20261202-000102")
    assert lines[1:] == ["- media/cdn-frankfurt-1: failed at test: nginx -t exited 1: "
                         "unknown directive", "- media/sally: skipped: halted"]


def test_a_webhook_gets_the_json_document(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    notice = notify.rollout_notice("renew", HALTED)
    assert notice is not None
    with receiver() as r:
        [delivery] = notify.send([Notifier("ops", webhook=r.url)], notice, now=NOW)
        assert delivery.ok, delivery
        assert r.posts[0][0] == f"/hooks/{SECRET}"
        assert r.bodies()[0]["event"] == "halted"
        assert r.bodies()[0]["items"][0]["host"] == "cdn-frankfurt-1"
    port = r.url.split(":")[2].split("/")[0]
    assert delivery.channel == f"webhook http://127.0.0.1:{port}/…"
    assert SECRET not in caplog.text


def test_an_entry_only_gets_the_events_it_asked_for() -> None:
    notice = notify.rollout_notice("renew", HALTED)
    assert notice is not None
    with receiver() as r:
        assert notify.send([Notifier("x", webhook=r.url, on=("expiring",))], notice) == []
        assert r.bodies() == []


def test_an_unreachable_or_refusing_webhook_is_reported_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    notice = notify.rollout_notice("renew", HALTED)
    assert notice is not None
    [down] = notify.send([Notifier("down", webhook=closed_port_url(), timeout=2)], notice)
    assert not down.ok and "refused" in (down.error or "").lower()
    with receiver() as r:
        r.status = 500
        [refused] = notify.send([Notifier("five", webhook=r.url)], notice)
    assert not refused.ok and refused.error == "HTTP 500"
    assert SECRET not in caplog.text
    assert "could not deliver halted" in caplog.text


def test_a_hanging_webhook_is_abandoned_at_the_deadline() -> None:
    notice = notify.rollout_notice("renew", HALTED)
    assert notice is not None
    with receiver() as r:
        r.hold = threading.Event()
        [late] = notify.send([Notifier("slow", webhook=r.url, timeout=30)], notice, deadline=0.3)
        assert not late.ok and late.error == "not done within 0.3s"
        assert r.bodies() == []  # still held when send returned


def test_webhook_file_holds_the_url(tmp_path: Path) -> None:
    notice = notify.rollout_notice("renew", HALTED)
    assert notice is not None
    with receiver() as r:
        url_file = tmp_path / "hook.url"
        url_file.write_text(r.url + "\n")
        [d] = notify.send([Notifier("f", webhook_file=url_file)], notice)
        assert d.ok and d.channel == f"webhook from {url_file}"
        assert len(r.bodies()) == 1
    [missing] = notify.send([Notifier("m", webhook_file=tmp_path / "nope")], notice)
    assert not missing.ok and "cannot read" in (missing.error or "")


def test_a_command_gets_the_document_on_stdin_and_the_event_in_its_environment(
    tmp_path: Path,
) -> None:
    out = tmp_path / "got.json"
    script = (
        "import json, os, sys; doc = json.load(sys.stdin); "
        "doc['env'] = [os.environ[k] for k in ('CERTFAN_EVENT', 'CERTFAN_COMMAND', "
        "'CERTFAN_SEVERITY')]; open(sys.argv[1], 'w').write(json.dumps(doc))"
    )
    notice = notify.rollout_notice("push", HALTED)
    assert notice is not None
    [d] = notify.send([Notifier("cmd", command=(sys.executable, "-c", script, str(out)))], notice)
    assert d.ok, d
    got = json.loads(out.read_text())
    assert got["env"] == ["halted", "push", "critical"]
    assert got["items"][1]["host"] == "sally"


def test_a_failing_or_missing_command_is_reported(tmp_path: Path) -> None:
    notice = notify.rollout_notice("push", HALTED)
    assert notice is not None
    fail = (sys.executable, "-c", "import sys; sys.stderr.write('no mail relay\\n'); sys.exit(3)")
    [d] = notify.send([Notifier("cmd", command=fail)], notice)
    assert not d.ok and d.error == "exit status 3: no mail relay"
    [gone] = notify.send([Notifier("cmd", command=(str(tmp_path / "absent"),))], notice)
    assert not gone.ok and "No such file" in (gone.error or "")


# ---------------------------------------------------------------- expiry, once a day


def _cfg(tmp_path: Path, url: str) -> config.Config:
    path = tmp_path / "c.toml"
    path.write_text(f"""\
state_dir = "state"
[acme]
directory = "https://acme.example/dir"
[dns]
method = "hook"
hook = "hook"
[[notify]]
webhook = "{url}"
on = ["expiring"]
""")
    return config.load(path)


ITEMS = [notify.Item("media", "sally", "v1", "served certificate expires in 3.0 days"),
         notify.Item("media", "esme", "v1", "served certificate expires in 3.0 days")]


def test_expiry_is_told_once_a_day_per_certificate(tmp_path: Path) -> None:
    with receiver() as r:
        cfg = _cfg(tmp_path, r.url)
        assert [d.ok for d in notify.fire_expiring(cfg, ITEMS, now=NOW)] == [True]
        assert notify.fire_expiring(cfg, ITEMS, now=NOW + timedelta(hours=23)) == []
        other = [notify.Item("static", "sally", "v2", "served certificate expired")]
        assert len(notify.fire_expiring(cfg, ITEMS + other, now=NOW + timedelta(hours=23))) == 1
        assert len(notify.fire_expiring(cfg, ITEMS, now=NOW + timedelta(hours=24))) == 1
        bodies = r.bodies()
    assert [b["event"] for b in bodies] == ["expiring"] * 3
    assert [sorted({i["cert"] for i in b["items"]}) for b in bodies] == [
        ["media"], ["static"], ["media"]]
    assert [i["host"] for i in bodies[0]["items"]] == ["sally", "esme"]
    memory = cfg.state_dir / "notify" / "expiring.json"
    assert set(json.loads(memory.read_text())) == {"media", "static"}
    assert stat.S_IMODE(memory.parent.stat().st_mode) == 0o700
    assert [p.name for p in memory.parent.iterdir()] == ["expiring.json"]  # no temp left


def test_an_undelivered_expiry_notice_is_tried_again(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, closed_port_url())
    [d] = notify.fire_expiring(cfg, ITEMS, now=NOW)
    assert not d.ok
    assert not (cfg.state_dir / "notify" / "expiring.json").exists()
    with receiver() as r:
        cfg = _cfg(tmp_path, r.url)
        assert [d.ok for d in notify.fire_expiring(cfg, ITEMS, now=NOW)] == [True]


def test_status_items_are_the_pairs_inside_the_warning_window() -> None:
    @dataclass(frozen=True)
    class Check:
        host: str
        cert: str
        current: str | None
        left: float | None

        def days_left(self, now: datetime) -> float | None:
            return self.left

    @dataclass(frozen=True)
    class Report:
        checks: tuple[Check, ...]
        now: datetime = NOW
        warn_days: float = 20.0

    report = Report((Check("sally", "media", "v1", 3.04), Check("esme", "media", "v1", 60.0),
                     Check("cut", "media", "v1", None), Check("old", "static", "v2", -1.0)))
    assert notify.expiring_items(report) == [
        notify.Item("media", "sally", "v1", "served certificate expires in 3.0 days"),
        notify.Item("static", "old", "v2", "served certificate expired"),
    ]


# ---------------------------------------------------------------- config


def _load(tmp_path: Path, notify_toml: str) -> config.Config:
    path = tmp_path / "n.toml"
    path.write_text('[acme]\ndirectory = "https://acme.example/dir"\n'
                    '[dns]\nmethod = "hook"\nhook = "h"\n' + notify_toml)
    return config.load(path)


def test_notify_config_is_parsed_with_defaults(tmp_path: Path) -> None:
    cfg = _load(tmp_path, '[[notify]]\nwebhook = "https://hooks.example/x"\nformat = "slack"\n'
                          '[[notify]]\nname = "pager"\ncommand = "page-oncall --team edge"\n'
                          'on = ["halted"]\ntimeout = 2\n')
    assert cfg.notify == (
        Notifier("notify[0]", webhook="https://hooks.example/x", format="slack"),
        Notifier("pager", command=("page-oncall", "--team", "edge"), on=("halted",), timeout=2.0),
    )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[notify]]\nwebhook = "http://hooks.example/T0KEN-SECRET"\n',
         "n.toml:7: notify[0].webhook: must be an https:// URL (http:// only to loopback), "
         "got http://hooks.example/…"),
        ('[[notify]]\nwebhook = "https://h.example/T0KEN-SECRET x"\n',
         "n.toml:7: notify[0].webhook: not a URL (the value is not shown: it may hold a token)"),
        ('[[notify]]\nformat = "slack"\n',
         "n.toml:6: notify[0]: needs a webhook, a webhook_file or a command (or several)"),
        ('[[notify]]\ncommand = ["mail"]\nformat = "slack"\n',
         "n.toml:8: notify[0].format: format applies to a webhook; there is none"),
        ('[[notify]]\ncommand = "mail ops; rm -rf /"\n',
         "n.toml:7: notify[0].command: ';' is shell syntax, but commands run without a shell; "
         'write an array such as ["sh", "-c", "..."]'),
        ('[[notify]]\ncommand = ["mail"]\non = ["halt"]\n',
         "n.toml:8: notify[0].on[0]: must be one of failed, halted, expiring; got 'halt' "
         "(did you mean 'halted'?)"),
        ('[[notify]]\ncommand = ["mail"]\nwebhok = "https://x.example/"\n',
         "n.toml:8: notify[0].webhok: unknown key (did you mean 'webhook'?)"),
        ('[[notify]]\nname = "a"\ncommand = ["mail"]\n[[notify]]\nname = "a"\ncommand = ["x"]\n',
         "n.toml:10: notify[1].name: duplicate notify name 'a' (first used by notify[0])"),
    ],
)
def test_bad_notify_config_is_one_line_and_never_shows_the_token(
    tmp_path: Path, toml: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, toml)
    assert str(err.value) == f"{tmp_path}/{message}"
    assert SECRET not in str(err.value)
