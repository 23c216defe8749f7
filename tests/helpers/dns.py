"""DNS helpers shared by the lab tests: the lab's TSIG key as BIND's key clause,
and TXT changes made the way an unrelated tool would (nsupdate, not certfan)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def bind_keyfile(lab, path: Path) -> Path:  # type: ignore[no-untyped-def]
    """The lab key as a BIND key clause at ``path`` (0600 from creation)."""
    secret = lab.tsig_secret_path.read_text().strip()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(
            f'key "{lab.tsig_key_name}" {{\n\talgorithm hmac-sha256;\n\tsecret "{secret}";\n}};\n'
        )
    return path


def nsupdate(lab, tmp_path: Path, action: str, name: str, value: str) -> None:  # type: ignore[no-untyped-def]
    """Add or delete one TXT value with nsupdate."""
    key = tmp_path / "lab.key"
    if not key.exists():
        bind_keyfile(lab, key)
    rr = f'{name}. 60 TXT "{value}"' if action == "add" else f'{name}. TXT "{value}"'
    script = f"server 127.0.0.1 {lab.dns_port}\nupdate {action} {rr}\nsend\n"
    done = subprocess.run(
        ["nsupdate", "-k", str(key)], input=script, text=True, capture_output=True,
        timeout=20, check=False,
    )
    assert done.returncode == 0, done.stderr


def txt(lab, name: str) -> set[str]:  # type: ignore[no-untyped-def]
    return set(lab.dns_query(name, "TXT"))


# ---------------------------------------------------------------- PowerDNS


def lexicon_pdns(lab, **changes: object) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """``[dns]`` overrides: lexicon's powerdns provider against the lab's PowerDNS."""
    return {
        "method": "lexicon",
        "provider": "powerdns",
        "provider_options": {"pdns_server": lab.pdns.api_url},
        "credentials_file": str(lab.pdns.credentials),
        "tsig_key_name": None,
        "tsig_secret_file": None,
        **changes,
    }


def rfc2136_pdns(lab, **changes: object) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """``[dns]`` overrides: RFC 2136 with TSIG to the lab's PowerDNS."""
    return {
        "server": "127.0.0.2",
        "tsig_key_name": "certfan-pdns.",
        "tsig_secret_file": str(lab.pdns.tsig_secret),
        **changes,
    }


def pdns_nsupdate(lab, action: str, name: str, value: str) -> None:  # type: ignore[no-untyped-def]
    """Add or delete one TXT value in PowerDNS with nsupdate (not with certfan)."""
    secret = lab.pdns.tsig_secret.read_text().strip()
    rr = f'{name}. 60 TXT "{value}"' if action == "add" else f'{name}. TXT "{value}"'
    script = (f"server 127.0.0.2 {lab.dns_port}\nzone pdns.test\n"
              f"key hmac-sha256:certfan-pdns {secret}\nupdate {action} {rr}\nsend\n")
    done = subprocess.run(["nsupdate"], input=script, text=True, capture_output=True,
                          timeout=20, check=False)
    assert done.returncode == 0, done.stderr
