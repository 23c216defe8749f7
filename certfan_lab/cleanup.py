"""What a lab leaves on the machine, recorded before it is made, and its removal.

``<dir>/lab.json`` names everything outside the lab dir a lab creates (netns,
iptables chain, login user, /run/sshd); pidfiles in ``<dir>/run`` name its
processes. `purge` removes all of it and is safe to run any number of times,
from ``Lab.stop()`` or from ``python -m certfan_lab down`` after a crash.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from certfan_lab import nodes
from certfan_lab.procs import LabError, pid_alive, run

log = logging.getLogger(__name__)

STATE_FILE = "lab.json"
RUN_SSHD = Path("/run/sshd")


def write_state(base: Path, state: dict[str, Any]) -> None:
    tmp = base / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, base / STATE_FILE)


def read_state(base: Path) -> dict[str, Any]:
    try:
        return json.loads((base / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def refuse_if_owned_elsewhere(base: Path) -> None:
    """A lab run by another live process is not ours to start over or tear down."""
    owner = read_state(base).get("owner_pid")
    if owner and owner != os.getpid() and pid_alive(owner):
        raise LabError(
            f"a lab is running in {base} (pid {owner}); stop that process, "
            "or run `python -m certfan_lab down --force` if it is stuck"
        )


def prepare(base: Path) -> None:
    """Refuse to start over a live lab; clear what a dead one left."""
    refuse_if_owned_elsewhere(base)
    if base.exists():
        purge(base)


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _terminate(pids: list[int], timeout: float = 5.0) -> None:
    """Stop processes that are not our children (those are stopped by handle)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in pids:
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def kill_recorded(base: Path, netns: list[str]) -> None:
    """Processes from the lab's pidfiles (if they are the lab's) and inside its netns."""
    pids = []
    for pidfile in (base / "run").glob("*.pid"):
        try:
            pid = int(pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if pid != os.getpid() and pid_alive(pid) and str(base) in _cmdline(pid):
            pids.append(pid)
    _terminate(pids)
    inside = []
    for name in netns:
        if (nodes.NETNS_DIR / name).exists():
            out = run(["ip", "netns", "pids", name], check=False).stdout
            inside += [int(p) for p in out.split() if p.isdigit()]
    _terminate(inside)


def mounts_under(base: Path) -> list[Path]:
    found = []
    prefix = str(base).rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(prefix):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def remove_chain(chain: str) -> None:
    if run(["iptables", "-w", "-t", "nat", "-n", "-L", chain], check=False).returncode != 0:
        return
    while (
        run(["iptables", "-w", "-t", "nat", "-D", "OUTPUT", "-j", chain], check=False).returncode
        == 0
    ):
        pass
    run(["iptables", "-w", "-t", "nat", "-F", chain], check=False)
    run(["iptables", "-w", "-t", "nat", "-X", chain], check=False)


def _sshd_running() -> bool:
    """Another lab's (or the system's) sshd still needs /run/sshd."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/comm").read_text().strip() == "sshd":
                    return True
            except OSError:
                continue
    return False


def is_lab_dir(base: Path) -> bool:
    return (base / STATE_FILE).exists() or not any(base.iterdir())


def purge(base: Path) -> None:
    """Remove every trace of the lab at `base`. Never removes a dir that is not a lab's."""
    if base.exists() and not is_lab_dir(base):
        raise LabError(
            f"{base} exists and is not a lab directory (no {STATE_FILE}); not touching it"
        )
    state = read_state(base)
    netns = list(state.get("netns", []))
    kill_recorded(base, netns)
    if state.get("latency_chain"):
        remove_chain(state["latency_chain"])
    nodes.delete_netns(netns)
    for point in mounts_under(base):
        nodes.unmount(point)
    if state.get("user_created") and state.get("user"):
        nodes.delete_user(state["user"])
    if state.get("created_run_sshd") and not _sshd_running():
        with contextlib.suppress(OSError):
            RUN_SSHD.rmdir()
    if base.exists():
        left = mounts_under(base)
        if left:
            raise LabError(f"cannot remove {base}: still mounted: {', '.join(map(str, left))}")
        shutil.rmtree(base)
