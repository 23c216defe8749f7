"""ssh.py against the lab's real sshd: strict host keys, key auth only, deadlines."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from certfan import config
from certfan.config import Host
from certfan.deploy import ssh
from certfan.errors import HostKeyError, SshError, SshTimeoutError

pytestmark = pytest.mark.lab

NODE = "cdn-fremont-1"


@pytest.fixture
def host(lab_config: Path) -> Host:
    return config.load(lab_config).hosts[NODE]


def test_run_returns_status_output_and_passes_argv_verbatim(host):
    with ssh.connect(host, timeout=5) as session:
        result = session.run(["printf", "%s|", "a b", "$(id)", "'q'", ";"], timeout=5)
        assert result == ssh.Result(0, b"a b|$(id)|'q'|;|", b"")
        echoed = session.run(["sh", "-c", "cat; echo oops >&2; exit 7"], timeout=5, stdin=b"in\n")
        assert (echoed.status, echoed.stdout, echoed.stderr) == (7, b"in\n", b"oops\n")
        assert echoed.tail() == "oops\nin"


def test_changed_host_key_is_refused_and_never_learned(lab, host):
    known = lab.known_hosts.read_bytes()
    with lab.faults.change_host_key(NODE), pytest.raises(HostKeyError) as caught:
        ssh.connect(host, timeout=5)
    message = str(caught.value)
    assert f"host key for {NODE} does not match known_hosts {lab.known_hosts}" in message
    assert "possible MITM" in message and "refusing" in message
    assert lab.known_hosts.read_bytes() == known


def test_unknown_host_key_is_refused(host, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError, match="is not in known_hosts"):
        ssh.connect(dataclasses.replace(host, known_hosts=empty), timeout=5)
    assert empty.read_text() == ""


def test_wrong_identity_is_refused(host, tmp_path):
    other = tmp_path / "id_other"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True, timeout=30
    )
    with pytest.raises(SshError, match="authentication refused") as caught:
        ssh.connect(dataclasses.replace(host, identity_file=other), timeout=5)
    assert not isinstance(caught.value, HostKeyError)


def test_hung_command_times_out_and_the_session_stays_usable(host):
    with ssh.connect(host, timeout=5) as session:
        # A started command past its deadline comes back as lost, with what it said so far.
        hung = session.run(["sh", "-c", "echo started; exec sleep 30"], timeout=1)
        assert not hung.ok and hung.status == -1 and hung.lost == "sh: timed out after 1s"
        assert hung.stdout == b"started\n"
        # Commands that keep talking are cut off by the overall deadline too.
        for chatty in ("while :; do echo x; sleep 0.05; done", "yes", "yes >&2"):
            result = session.run(["sh", "-c", chatty], timeout=1)
            assert result.lost == "sh: timed out after 1s"
        assert session.run(["true"], timeout=5).status == 0


def test_connect_to_a_cut_node_times_out(lab, host):
    # The deadline given (1 s, not a library default) is the one that ended the wait:
    # the timeout error names it, for this host.
    with lab.faults.cut(NODE), pytest.raises(SshTimeoutError) as caught:
        ssh.connect(host, timeout=1)
    assert caught.value.host == NODE
    assert str(caught.value) == (f"{NODE}: connect to {host.user}@{host.address}:{host.port} "
                                 "timed out after 1s")


def test_session_cut_mid_command_times_out(lab, host):
    with ssh.connect(host, timeout=5) as session, lab.faults.cut(NODE), \
            pytest.raises(SshTimeoutError) as caught:
        session.run(["true"], timeout=1)
    # The command's own deadline (1 s), not the connect's (5 s), ended the wait.
    assert caught.value.host == NODE
    assert str(caught.value).endswith(": timed out after 1s"), str(caught.value)
