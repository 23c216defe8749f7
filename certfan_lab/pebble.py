"""Pebble, the lab's ACME CA, and the modes it can be restarted in."""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from certfan_lab.pki import write_private

EAB_KID = "lab-kid"


@dataclass(frozen=True)
class Mode:
    """How Pebble runs: nonce_reject None is Pebble's default (5% bad nonces)."""

    nonce_reject: int | None = 0
    eab: bool = False


def new_eab_key(path: Path) -> str:
    """An EAB MAC key, base64url as ACME clients take it, in a 0600 file."""
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    write_private(path, (key + "\n").encode())
    return key


def write_config(
    path: Path, *, port: int, mgmt_port: int, cert: Path, key: Path, eab_key: str | None
) -> None:
    conf: dict[str, object] = {
        "listenAddress": f"127.0.0.1:{port}",
        "managementListenAddress": f"127.0.0.1:{mgmt_port}",
        "certificate": str(cert),
        "privateKey": str(key),
        # Ports Pebble would dial for http-01 / tls-alpn-01; the lab only does dns-01.
        "httpPort": 5002,
        "tlsPort": 5001,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": eab_key is not None,
    }
    if eab_key is not None:
        conf["externalAccountMACKeys"] = {EAB_KID: eab_key}
    path.write_text(json.dumps({"pebble": conf}, indent=2) + "\n")


def environment(mode: Mode) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEBBLE_")}
    env["PEBBLE_VA_NOSLEEP"] = "1"
    env["PEBBLE_AUTHZREUSE"] = "0"
    if mode.nonce_reject is not None:
        env["PEBBLE_WFE_NONCEREJECT"] = str(mode.nonce_reject)
    return env


def argv(binary: str, config: Path, dns_port: int) -> list[str]:
    return [binary, "-config", str(config), "-dnsserver", f"127.0.0.1:{dns_port}"]


def get(url: str, ca_file: Path, timeout: float = 5.0) -> bytes:
    """GET over TLS verified with the lab CA (http.client: no proxy from the environment)."""
    parts = urllib.parse.urlsplit(url)
    ctx = ssl.create_default_context(cafile=str(ca_file))
    conn = http.client.HTTPSConnection(
        parts.hostname or "", parts.port, timeout=timeout, context=ctx
    )
    try:
        conn.request("GET", parts.path or "/")
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise OSError(f"GET {url}: HTTP {resp.status}")
    return body


def answers(directory_url: str, ca_file: Path) -> bool:
    """Readiness: the ACME directory answers over verified TLS."""
    try:
        return b"newOrder" in get(directory_url, ca_file, timeout=0.5)
    except (OSError, http.client.HTTPException):
        return False
