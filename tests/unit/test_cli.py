"""The command-line grammar: global options anywhere, checked values, did-you-mean,
--quiet, and one line on stderr for a usage error. No lab: the config's hosts are
loopback ports nothing listens on, and the commands tested here stop before
they would need one (or, for status, report them UNKNOWN)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from certfan.cli import app as cli
from helpers.cliconf import write_config
from helpers.ops import restore_logging

_logging = pytest.fixture(autouse=True)(restore_logging)



@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("order", [
    ("-c", "{c}", "check", "--syntax-only"),
    ("check", "--syntax-only", "-c", "{c}"),
    ("check", "--config={c}", "--syntax-only"),
    ("-v", "check", "--config", "{c}", "--syntax-only"),
    ("check", "--syntax-only", "--config", "{c}", "-v", "--log-format", "json"),
])
def test_global_options_before_or_after_the_command(config: Path, capsys, order) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = _run(capsys, *(w.format(c=config) for w in order))
    assert code == 0 and out.startswith(f"{config}: ok")


def test_an_option_before_the_command_is_not_reset_by_the_subparser(config: Path) -> None:
    args = cli.build_parser().parse_args(["--json", "-c", str(config), "-v", "status", "-q"])
    assert (args.json, args.config, args.verbose, args.quiet) == (True, str(config), True, True)
    args = cli.build_parser().parse_args(["status"])
    assert (args.json, args.config, args.verbose, args.quiet) == (False, None, False, False)


def test_json_and_quiet_on_every_command() -> None:
    parser = cli.build_parser()
    [sub] = [a for a in parser._actions if a.dest == "command"]
    for name, p in sub.choices.items():  # type: ignore[union-attr]
        flags = {s for a in p._actions for s in a.option_strings}
        assert {"--json", "--quiet", "--config", "--verbose", "--debug"} <= flags, name


def test_quiet_prints_nothing_on_success(config: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert _run(capsys, "check", "-c", str(config), "--quiet", "--syntax-only") == (0, "", "")


@pytest.mark.parametrize(("argv", "expected"), [
    (["push", "--host", "sallly"], "--host 'sallly': no such host in {c}; did you mean 'sally'?"),
    (["push", "--group", "egde"], "--group 'egde': no such group in {c}; did you mean 'edge'?"),
    (["push", "--cert", "medai"], "--cert 'medai': no such certificate in {c}; "
                                  "did you mean 'media'?"),
    (["rollback", "--cert", "media", "--host", "esmee"], "--host 'esmee': no such host"),
    (["prune", "--cert", "mediaa"], "did you mean 'media'?"),
    (["issue", "medias"], "CERT 'medias': no such certificate in {c}; did you mean 'media'?"),
    (["reissue", "medi"], "did you mean 'media'?"),
    (["push", "--host", "zzz"], "--host 'zzz': no such host in {c} (known: sally, esme)"),
])
def test_unknown_names_on_the_command_line_get_a_did_you_mean(config: Path, capsys, argv,
                                                              expected) -> None:  # type: ignore[no-untyped-def]
    code, out, err = _run(capsys, "-c", str(config), *argv)
    assert code == 2 and out == ""
    [line] = err.splitlines()
    assert line.startswith("certfan: error: ") and expected.format(c=config) in line, line


def test_status_reports_an_unknown_host_as_unknown_with_the_hint(config: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = _run(capsys, "status", "-c", str(config), "--host", "sallly")
    assert code == 3 and out.startswith("CERTFAN UNKNOWN: --host 'sallly'")
    assert "did you mean 'sally'?" in out


@pytest.mark.parametrize(("argv", "expected"), [
    (["status", "--warn-days", "5", "--crit-days", "10"],
     "--warn-days 5 must be greater than --crit-days 10"),
    (["status", "--warn-days", "7", "--crit-days", "7"], "must be greater than --crit-days 7"),
    (["status", "--crit-days", "-1"], "argument --crit-days: must be at least 0, got -1"),
    (["status", "--warn-days", "nan"], "argument --warn-days: not a finite number: 'nan'"),
    (["status", "--warn-days", "soon"], "argument --warn-days: not a number: 'soon'"),
    (["prune", "--keep", "0"], "argument --keep: must be at least 1, got 0"),
    (["renew", "--jitter", "-5"], "argument --jitter: must be at least 0, got -5"),
    (["reissue", "media", "--reason", "superseded"], "--reason needs --revoke-old"),
])
def test_option_values_are_checked(config: Path, capsys, argv, expected) -> None:  # type: ignore[no-untyped-def]
    code, out, err = _run(capsys, "-c", str(config), *argv)
    assert code == 2 and out == ""
    assert expected in err and err.count("error:") == 1, err


def test_a_usage_error_under_json_is_still_one_document(config: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    for argv in (["push", "--json", "--host", "sallly"], ["prune", "--json", "--keep", "0"],
                 ["--json", "nosuchcommand"]):
        code, out, err = _run(capsys, "-c", str(config), *argv)
        doc = json.loads(out)
        assert code == 2 and doc["exit"] == 2 and doc["ok"] is False
        assert doc["error"] in err and doc["command"] in (argv[0], "certfan")


def test_no_command_prints_help_and_is_a_usage_error(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = _run(capsys)
    assert code == 2 and out == "" and "COMMAND" in err


def test_rollout_report_has_blank_lines_only_on_a_terminal() -> None:
    from certfan.cli import render
    from certfan.deploy.fleet import Report
    from certfan.deploy.model import DEPLOYED, FAILED, INTERRUPTED, HostOutcome

    report = Report((
        HostOutcome("sally", "media", "0002-aaaaaaaaaaaa", DEPLOYED, serving="0002-aaaaaaaaaaaa"),
        HostOutcome("esme", "media", "0002-aaaaaaaaaaaa", FAILED, failed_step="test",
                    error="nginx -t: exit status 1", output_tail="emerg: bad\nfailed",
                    serving="0001-bbbbbbbbbbbb"),
        HostOutcome("fred", "media", "0002-aaaaaaaaaaaa", INTERRUPTED,
                    serving="0001-bbbbbbbbbbbb")), halted_by=None)
    off = render.interrupted_lines(report, ["certfan push --cert media --host fred"],
                                   spaced=False)
    on = render.interrupted_lines(report, ["certfan push --cert media --host fred"], spaced=True)
    assert "" not in off and "" in on and [x for x in on if x] == off
    assert off[0].split()[:5] == ["HOST", "CERT", "VERSION", "SERVES", "RESULT"]
    rows = {line.split()[0]: line for line in off[1:4]}
    assert "0001-bbbbbbbbbbbb  skipped: interrupted" in rows["fred"]
    assert "esme (media): test: nginx -t: exit status 1" in off
    assert off[-1] == "    certfan push --cert media --host fred"
