"""The anchor certfan is measured against: an operator's scp + ssh runbook, scripted.

    python bench/_runbook.py {parallel|sequential} INVENTORY.json

Per node, what the incident's operator did by hand, minus the typing and the
browser: one OpenSSH ``scp`` of the version directory (privkey.pem 0600 and
fullchain.pem) into ``<root>/archive/<cert>/``, then one ``ssh`` that points
``live/<cert>`` at it (``ln -s`` under a temporary name, ``mv -T`` over the
old link: atomic), runs the node's config test and its reload. Two SSH
connections per node; no canary, no proof, no rollback. ``parallel`` starts
every node at once, ``sequential`` does one node after another.

INVENTORY.json: ``{"cert": ..., "version": ..., "local_dir": ...,
"nodes": [{"name", "address", "port", "user", "identity_file", "known_hosts",
"root", "config_test": [...], "reload": [...]}], "kex": ...}`` (kex optional: an
OpenSSH ``KexAlgorithms`` value). Strict host keys, the
lab's identity only, ``-F /dev/null`` (no user or system ssh config). Prints
one JSON document (seconds and result per node); exit 0 when every node
succeeded. Stdlib only.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/-]+$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
SAFE_KEX = re.compile(r"^[A-Za-z0-9@.,_-]+$")
COMMAND_TIMEOUT = 120.0


def ssh_options(node: dict[str, Any], kex: str = "") -> list[str]:
    """OpenSSH options for one node; `kex` pins the key exchange ("" leaves OpenSSH's)."""
    return [
        *(["-o", f"KexAlgorithms={kex}"] if kex else []),
        "-F", "/dev/null",
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={node['known_hosts']}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "IdentitiesOnly=yes",
        "-o", f"IdentityFile={node['identity_file']}",
        "-o", "ConnectTimeout=10",
        "-o", f"Port={int(node['port'])}",
    ]


def remote_command(node: dict[str, Any], cert: str, version: str) -> str:
    """One shell line for the node's login shell; every value quoted."""
    q = shlex.quote
    tmp = f".{cert}.runbook-new"
    return " && ".join([
        f"cd {q(node['root'] + '/live')}",
        f"ln -sfn {q(f'../archive/{cert}/{version}')} {q(tmp)}",
        f"mv -T {q(tmp)} {q(cert)}",
        shlex.join(node["config_test"]),
        shlex.join(node["reload"]),
    ])


def check_inventory(doc: dict[str, Any]) -> str | None:
    """Why the inventory cannot be used, or None: nothing unchecked reaches a shell."""
    for key in ("cert", "version"):
        if not SAFE_NAME.match(str(doc.get(key, ""))):
            return f"inventory: {key} {doc.get(key)!r} is not a plain name"
    if doc.get("kex") and not SAFE_KEX.match(str(doc["kex"])):
        return f"inventory: kex {doc['kex']!r} is not a list of algorithm names"
    if not Path(doc.get("local_dir", "")).is_dir():
        return f"inventory: local_dir {doc.get('local_dir')!r} is not a directory"
    for node in doc.get("nodes", []):
        where = f"inventory: node {node.get('name')!r}"
        if not SAFE_PATH.match(str(node.get("root", ""))):
            return f"{where}: root {node.get('root')!r} is not a plain path"
        if not node.get("config_test") or not node.get("reload"):
            return f"{where}: config_test and reload must be argv lists"
    return None


def deploy_one(node: dict[str, Any], cert: str, version: str, local_dir: str,
               kex: str = "") -> dict[str, Any]:
    opts = ssh_options(node, kex)
    login = f"{node['user']}@{node['address']}"
    steps = [
        ("scp", ["scp", "-q", "-r", *opts, local_dir, f"{login}:{node['root']}/archive/{cert}/"]),
        ("ssh", ["ssh", *opts, login, remote_command(node, cert, version)]),
    ]
    t0 = time.monotonic()
    for step, argv in steps:
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=COMMAND_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            return {"name": node["name"], "ok": False, "step": step, "tail": "timed out",
                    "seconds": time.monotonic() - t0}
        if done.returncode != 0:
            return {"name": node["name"], "ok": False, "step": step,
                    "tail": (done.stderr or done.stdout).strip()[-300:],
                    "seconds": time.monotonic() - t0}
    return {"name": node["name"], "ok": True, "step": None, "tail": "",
            "seconds": time.monotonic() - t0}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("parallel", "sequential"):
        print("usage: _runbook.py {parallel|sequential} INVENTORY.json", file=sys.stderr)
        return 2
    mode, inventory = args
    try:
        doc = json.loads(Path(inventory).read_text())
    except (OSError, ValueError) as exc:
        print(f"{inventory}: cannot read the inventory: {exc}", file=sys.stderr)
        return 2
    problem = check_inventory(doc)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    nodes, cert, version, kex = doc["nodes"], doc["cert"], doc["version"], doc.get("kex", "")
    local_dir = str(Path(doc["local_dir"]).absolute())
    # scp -r of local_dir creates <root>/archive/<cert>/<basename>: the version's name.
    if Path(local_dir).name != version:
        print(f"inventory: local_dir must be named {version!r}", file=sys.stderr)
        return 2
    if mode == "parallel":
        with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
            results = list(pool.map(lambda n: deploy_one(n, cert, version, local_dir, kex),
                                    nodes))
    else:
        results = [deploy_one(n, cert, version, local_dir, kex) for n in nodes]
    print(json.dumps({"mode": mode, "nodes": results}))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
