"""The lab is real: BIND9 takes signed updates, Pebble speaks TLS, the nodes are
separate hosts with their own keys and certificates, every fault bites and heals,
and nothing is left behind."""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import http.client
import json
import os
import secrets
import socket
import ssl
import time
import tomllib
from pathlib import Path
from typing import Any

import dns.exception
import dns.query
import dns.rcode
import dns.tsig
import dns.tsigkeyring
import dns.update
import paramiko
import pytest
from cryptography import x509

from certfan_lab import DEFAULT_NODES, Lab, LabError, pebble
from certfan_lab.cleanup import mounts_under

pytestmark = pytest.mark.lab


# -- helpers ---------------------------------------------------------------------


def update(
    lab: Lab, zone: str, name: str, value: str, *, secret: str | None = None, delete: bool = False
) -> int:
    """An RFC 2136 TXT add/delete signed with the lab's key (or `secret`); the rcode."""
    secret = secret or lab.tsig_secret_path.read_text().strip()
    keyring = dns.tsigkeyring.from_text({lab.tsig_key_name: secret})
    msg = dns.update.UpdateMessage(zone, keyring=keyring, keyalgorithm=dns.tsig.HMAC_SHA256)
    if delete:
        msg.delete(name, "TXT", value)
    else:
        msg.add(name, 60, "TXT", value)
    return dns.query.tcp(msg, "127.0.0.1", port=lab.dns_port, timeout=5).rcode()


def ssh(lab: Lab, node: str, timeout: float = 5.0) -> paramiko.SSHClient:
    """Strict client: the lab's known_hosts, RejectPolicy, the lab key only."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(lab.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        lab.node(node).address,
        username=lab.user,
        key_filename=str(lab.ssh_identity),
        look_for_keys=False,
        allow_agent=False,
        timeout=timeout,
        banner_timeout=timeout,
        auth_timeout=timeout,
    )
    return client


def ssh_run(lab: Lab, node: str, command: str) -> tuple[int, str, str]:
    client = ssh(lab, node)
    try:
        _, out, err = client.exec_command(command, timeout=10)
        status = out.channel.recv_exit_status()
        return status, out.read().decode(), err.read().decode()
    finally:
        client.close()


def round_trip(lab: Lab, node: str) -> float:
    t0 = time.monotonic()
    status, _, _ = ssh_run(lab, node, "true")
    assert status == 0
    return time.monotonic() - t0


def leftovers(base: Path, prefix: str, user: str) -> list[str]:
    found = (
        [f"netns {n}" for n in os.listdir("/run/netns") if n.startswith(prefix + "-")]
        if os.path.isdir("/run/netns")
        else []
    )
    found += [f"mount {m}" for m in mounts_under(base)]
    found += ["dir"] if base.exists() else []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if str(base).encode() in cmdline:
            found.append(f"process {pid}")
    if any(line.split(":")[0] == user for line in Path("/etc/passwd").read_text().splitlines()):
        found.append(f"user {user}")
    return found


def zombie_children() -> list[int]:
    me, found = os.getpid(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields[0] == b"Z" and int(fields[1]) == me:
            found.append(int(pid))
    return found


# -- DNS ---------------------------------------------------------------------------


def test_signed_update_is_served_directly_and_through_cname(lab: Lab) -> None:
    token = secrets.token_hex(8)
    assert update(lab, "lab.test", "_acme-challenge.media.lab.test.", token) == dns.rcode.NOERROR
    assert update(lab, "delegated.test", "static.delegated.test.", token) == dns.rcode.NOERROR
    assert update(lab, "delegated.test", "chain.delegated.test.", token) == dns.rcode.NOERROR
    try:
        assert token in lab.dns_query("_acme-challenge.media.lab.test", "TXT")
        assert token in lab.dns_query("_acme-challenge.static.lab.test", "TXT")
        assert token in lab.dns_query("_acme-challenge.chain.lab.test", "TXT")
    finally:
        update(lab, "lab.test", "_acme-challenge.media.lab.test.", token, delete=True)
        update(lab, "delegated.test", "static.delegated.test.", token, delete=True)
        update(lab, "delegated.test", "chain.delegated.test.", token, delete=True)
    assert token not in lab.dns_query("_acme-challenge.static.lab.test", "TXT")
    assert token not in lab.dns_query("_acme-challenge.media.lab.test", "TXT")


def test_update_with_wrong_key_is_refused(lab: Lab) -> None:
    token = secrets.token_hex(8)
    wrong = "c2VjcmV0IHRoYXQgaXMgbm90IHRoZSBsYWIncyBrZXkgYXQgYWxs"
    try:
        rcode = update(lab, "lab.test", "_acme-challenge.media.lab.test.", token, secret=wrong)
    except dns.tsig.PeerError:  # BADSIG/BADKEY in an unsigned NOTAUTH answer
        rcode = dns.rcode.NOTAUTH
    assert rcode in (dns.rcode.NOTAUTH, dns.rcode.REFUSED)
    assert token not in lab.dns_query("_acme-challenge.media.lab.test", "TXT")


def test_zones_hold_the_nodes_and_certificate_names(lab: Lab) -> None:
    first = lab.nodes[0].address
    for name in ("media.lab.test", "static.lab.test", "lab.test", "chain.lab.test"):
        assert lab.dns_query(name) == [first]
    for n in lab.nodes:
        assert lab.dns_query(f"{n.name}.lab.test") == [n.address]
    assert lab.dns_query("ns1.lab.test") == ["127.0.0.1"]
    assert lab.dns_query("example.com") == []  # the local root answers; nothing leaves


def test_tsig_secret_file_is_private(lab: Lab) -> None:
    assert lab.tsig_secret_path.stat().st_mode & 0o777 == 0o600
    assert len(lab.tsig_secret_path.read_text().strip()) == 44  # 32 bytes, base64


# -- Pebble ------------------------------------------------------------------------


def test_pebble_directory_is_served_over_tls_verified_by_the_lab_ca(lab: Lab) -> None:
    directory = json.loads(pebble.get(lab.directory_url, lab.ca_bundle))
    assert {"newAccount", "newNonce", "newOrder"} <= directory.keys()
    conn = http.client.HTTPSConnection(
        "127.0.0.1", lab.acme_port, timeout=5, context=ssl.create_default_context()
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/dir")
    conn.close()
    root = x509.load_pem_x509_certificate(lab.pebble_root_pem().encode())
    assert "Pebble" in root.subject.rfc4514_string()


# -- nodes -------------------------------------------------------------------------


def test_each_node_has_its_own_host_key(lab: Lab) -> None:
    seen = set()
    for n in lab.nodes:
        client = ssh(lab, n.name)
        try:
            key = client.get_transport().get_remote_server_key()
        finally:
            client.close()
        assert f"{key.get_name()} {key.get_base64()}" == n.host_key
        seen.add(key.get_base64())
    assert len(seen) == len(lab.nodes)


@pytest.mark.parametrize("name", DEFAULT_NODES)
def test_node_runs_its_own_wrappers_over_ssh(lab: Lab, name: str) -> None:
    node = lab.node(name)
    status, out, err = ssh_run(lab, name, "command -v nginx; command -v systemctl; nginx -t")
    assert status == 0, err
    assert out.split() == [str(node.bin_dir / "nginx"), str(node.bin_dir / "systemctl")]
    assert str(node.nginx_conf) in err and "test is successful" in err
    pid = lab.nginx_master_pid(name)
    status, out, err = ssh_run(lab, name, "systemctl is-active nginx && systemctl reload nginx")
    assert (status, out.strip()) == (0, "active"), err
    assert lab.nginx_master_pid(name) == pid  # a reload, not a restart
    status, _, err = ssh_run(lab, name, "systemctl restart sshd")
    assert status == 1 and "unsupported" in err


def test_password_login_is_refused(lab: Lab) -> None:
    client = paramiko.SSHClient()
    client.load_host_keys(str(lab.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.AuthenticationException):
        client.connect(
            lab.nodes[0].address,
            username=lab.user,
            password="x",
            look_for_keys=False,
            allow_agent=False,
            timeout=5,
        )
    client.close()


@pytest.mark.parametrize("name", DEFAULT_NODES)
def test_node_serves_the_seeded_certificate(lab: Lab, name: str) -> None:
    der = lab.served_leaf(name, "media.lab.test")
    assert hashlib.sha256(der).hexdigest() == lab.seed_sha256
    left = x509.load_der_x509_certificate(der).not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=2) < left <= dt.timedelta(days=3)


def test_certificate_root_is_a_certbot_layout_on_tmpfs(lab: Lab) -> None:
    node = lab.nodes[0]
    assert node.root in mounts_under(lab.dir)
    live = node.root / "live" / "media"
    assert os.readlink(live / "fullchain.pem") == "../../archive/media/fullchain1.pem"
    assert (live / "privkey.pem").stat().st_mode & 0o777 == 0o600
    assert (live / "privkey.pem").lstat().st_uid == lab.uid
    result = lab.run_on(
        node, ["sh", "-c", "id -un; cat live/media/privkey.pem >/dev/null"], timeout=10
    )
    assert result.stdout.strip() == lab.user


# -- faults ------------------------------------------------------------------------


def test_cut_times_out_connects_and_hangs_sessions_then_heals(lab: Lab) -> None:
    established = ssh(lab, "sally")
    try:
        with lab.faults.cut("sally"):
            with pytest.raises(TimeoutError):
                socket.create_connection((lab.node("sally").address, 22), timeout=1).close()
            with pytest.raises(paramiko.SSHException):
                established.get_transport().open_session(timeout=1)
    finally:
        established.close()
    assert ssh_run(lab, "sally", "true")[0] == 0


def test_latency_slows_ssh_round_trips(lab: Lab) -> None:
    baseline = round_trip(lab, "esme")
    with lab.faults.add_latency("esme", 50):
        delayed = round_trip(lab, "esme")
        assert (
            hashlib.sha256(lab.served_leaf("esme", "media.lab.test")).hexdigest() == lab.seed_sha256
        )
    # An SSH login is several round trips, each 2 x 50 ms now; ask for one.
    assert delayed >= baseline + 0.1
    assert round_trip(lab, "esme") < delayed


def test_break_nginx_fails_config_test_without_reload(lab: Lab) -> None:
    pid = lab.nginx_master_pid("cdn-fremont-1")
    with lab.faults.break_nginx("cdn-fremont-1"):
        assert lab.run_on("cdn-fremont-1", ["nginx", "-t"]).returncode != 0
        assert lab.run_on("cdn-fremont-1", ["systemctl", "reload", "nginx"]).returncode != 0
        assert lab.served_leaf("cdn-fremont-1", "media.lab.test")  # still serving
    assert lab.run_on("cdn-fremont-1", ["nginx", "-t"]).returncode == 0
    assert lab.nginx_master_pid("cdn-fremont-1") == pid


def test_changed_host_key_is_rejected_until_restored(lab: Lab) -> None:
    with (
        lab.faults.change_host_key("cdn-frankfurt-1"),
        pytest.raises(paramiko.BadHostKeyException),
    ):
        ssh(lab, "cdn-frankfurt-1")
    ssh(lab, "cdn-frankfurt-1").close()


def test_fill_disk_gives_enospc_then_heals(lab: Lab) -> None:
    probe = lab.node("sally").root / "probe"
    with lab.faults.fill_disk("sally"):
        with pytest.raises(OSError) as failed, open(probe, "wb") as f:
            f.write(b"x" * 65536)
            f.flush()
        assert failed.value.errno == errno.ENOSPC
        result = lab.run_on("sally", ["dd", "if=/dev/zero", f"of={probe}.user", "bs=4k", "count=1"])
        assert "No space left on device" in result.stderr
    probe.write_bytes(b"x" * 65536)
    probe.unlink()
    probe.with_suffix(".user").unlink(missing_ok=True)


def test_readonly_gives_erofs_then_heals(lab: Lab) -> None:
    probe = lab.node("esme").root / "probe"
    with lab.faults.make_readonly("esme"):
        with pytest.raises(OSError) as failed:
            probe.write_bytes(b"x")
        assert failed.value.errno == errno.EROFS
        result = lab.run_on("esme", ["sh", "-c", f"echo x > {probe}"])
        assert "Read-only file system" in result.stderr
    probe.write_bytes(b"x")
    probe.unlink()


def test_dns_stops_and_starts(lab: Lab) -> None:
    with lab.faults.stop_dns(), pytest.raises((dns.exception.Timeout, OSError)):
        lab.dns_query("media.lab.test", timeout=0.3)
    assert lab.dns_query("media.lab.test") == [lab.nodes[0].address]


def test_pebble_stops_starts_and_changes_mode(lab: Lab) -> None:
    with lab.faults.stop_pebble(), pytest.raises(OSError):
        pebble.get(lab.directory_url, lab.ca_bundle, timeout=1)
    assert b"newOrder" in pebble.get(lab.directory_url, lab.ca_bundle)
    try:
        lab.restart_pebble(eab=True)
        meta = json.loads(pebble.get(lab.directory_url, lab.ca_bundle))["meta"]
        assert meta.get("externalAccountRequired") is True
        assert lab.eab_hmac_file.stat().st_mode & 0o777 == 0o600
        assert lab.eab_kid == "lab-kid"
    finally:
        lab.restart_pebble()
    meta = json.loads(pebble.get(lab.directory_url, lab.ca_bundle)).get("meta", {})
    assert not meta.get("externalAccountRequired")


# -- config ------------------------------------------------------------------------


def test_written_config_matches_the_running_lab(lab: Lab, lab_config: Path) -> None:
    assert lab_config.read_text() == lab.config_text()
    conf = tomllib.loads(lab_config.read_text())
    assert conf["groups"]["cdn"] == list(DEFAULT_NODES)
    assert [h["address"] for h in conf["hosts"]] == [n.address for n in lab.nodes]
    assert {c["name"] for c in conf["certificates"]} == {"media", "wild", "static"}


# -- teardown ----------------------------------------------------------------------

SMALL: dict[str, Any] = {
    "node_names": ["solo"],
    "prefix": "cft",
    "subnet": 197,
    "user": "certfan-lab-t",
    "dns_port": 10953,
    "acme_port": 14900,
    "mgmt_port": 15900,
}


def test_a_second_lab_starts_and_stops_without_leftovers(lab: Lab) -> None:
    base = Path("/tmp/certfan-lab-teardown")
    with Lab(base, **SMALL) as small:
        assert small.served_leaf("solo", "media.lab.test")
        assert leftovers(base, "cft", "certfan-lab-t")  # it was really there
    assert leftovers(base, "cft", "certfan-lab-t") == []
    assert zombie_children() == []


def test_failed_start_leaves_nothing(lab: Lab) -> None:
    base = Path("/tmp/certfan-lab-failed")
    broken = Lab(base, **SMALL, binaries={"nginx": "/bin/false"})
    with pytest.raises(LabError, match="nginx-solo exited"):
        broken.start()
    assert leftovers(base, "cft", "certfan-lab-t") == []
    broken.stop()  # idempotent
    assert zombie_children() == []
