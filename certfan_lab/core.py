"""The Lab: Pebble, BIND9 and SSH/nginx edge nodes on this machine, for certfan's tests."""

from __future__ import annotations

import functools
import logging
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from certfan_lab import cleanup, configgen, dns, extra, nodes, pebble, pki, powerdns
from certfan_lab.faults import Faults
from certfan_lab.machine import BINARIES, local_address, preflight, tcp_open
from certfan_lab.nodes import Node
from certfan_lab.procs import Daemon, LabError, wait_until

log = logging.getLogger(__name__)

DEFAULT_DIR = Path("/tmp/certfan-lab")
DIR_ENV = "CERTFAN_LAB_DIR"
DEFAULT_NODES = ("cdn-frankfurt-1", "cdn-fremont-1", "sally", "esme")
READY_TIMEOUT = 20.0


class Lab:
    """A local ACME CA, DNS server and fleet of edge nodes, started and stopped as one.

    ``with Lab() as lab:`` starts it and always stops it; `stop()` is idempotent
    and also clears what a failed `start()` left.
    """

    tsig_key_name = dns.TSIG_KEY_NAME
    eab_kid = pebble.EAB_KID

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        extra_nodes: int = 0,
        node_names: Sequence[str] = DEFAULT_NODES,
        prefix: str = "cfl",
        subnet: int = 77,
        user: str = "certfan-lab",
        dns_port: int = 10053,
        acme_port: int = 14000,
        mgmt_port: int = 15000,
        nonce_reject: int | None = 0,
        binaries: dict[str, str] | None = None,
    ) -> None:
        self.dir = Path(base_dir or os.environ.get(DIR_ENV) or DEFAULT_DIR).absolute()
        self.default_node_names = list(node_names)
        width = max(2, len(str(extra_nodes)))
        names = self.default_node_names + [f"edge-{i:0{width}d}" for i in range(1, extra_nodes + 1)]
        self.nodes: list[Node] = nodes.plan(names, prefix, subnet, self.dir / "nodes")
        self.prefix, self.subnet, self.user = prefix, subnet, user
        self.dns_port, self.acme_port, self.mgmt_port = dns_port, acme_port, mgmt_port
        self.binaries = {**BINARIES, **(binaries or {})}
        self.latency_chain = f"{prefix.upper()}-LATENCY"
        self.pebble_mode = pebble.Mode(nonce_reject=nonce_reject)
        self.directory_url = f"https://127.0.0.1:{acme_port}/dir"
        # Paths
        self.config_path = self.dir / "certfan.toml"
        self.state_dir = self.dir / "state"
        self.ca_bundle = self.dir / "lab-ca.pem"
        self.tsig_secret_path = self.dir / "tsig.secret"
        self.eab_hmac_file = self.dir / "eab.hmac"
        self.ssh_identity = self.dir / "ssh" / "id_ed25519"
        self.known_hosts = self.dir / "ssh" / "known_hosts"
        self.authorized_keys = self.dir / "ssh" / "authorized_keys"
        self.home = self.dir / "home"
        self.run_dir, self.log_dir = self.dir / "run", self.dir / "logs"
        self.pebble_config = self.dir / "pebble" / "pebble-config.json"
        self.named_conf = self.dir / "named" / "named.conf"
        self.pdns = powerdns.Files.at(self.dir, dns_port)  # API URL, key, TSIG secret, credentials
        # Set by start()
        self.pki: pki.LabPki | None = None
        self.seed_sha256 = ""
        self._eab_key = ""
        self.uid = self.gid = -1
        self.faults = Faults(self)
        self._daemons: dict[str, Daemon] = {}
        self._state: dict[str, Any] = {}
        self.start_seconds = self.stop_seconds = 0.0

    # -- lifecycle ----------------------------------------------------------------
    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Self:
        t0 = time.monotonic()
        if self._daemons:
            raise LabError(f"the lab in {self.dir} is already started")
        problem = preflight(self.binaries)
        if problem:
            raise LabError(problem)
        cleanup.prepare(self.dir)
        try:
            self._build()
            for d in self._daemons.values():
                d.start()
            self._wait_ready(list(self._daemons))
            self.write_config(self.config_path)
        except BaseException:
            try:
                self.stop()
            except LabError as exc:  # report it, but the start failure is the news
                log.error("cleaning up after a failed start: %s", exc)
            raise
        self.start_seconds = time.monotonic() - t0
        log.info("lab up in %.2fs at %s", self.start_seconds, self.dir)
        return self

    def stop(self) -> None:
        t0 = time.monotonic()
        cleanup.refuse_if_owned_elsewhere(self.dir)
        self.faults.clear_all_latency()
        self.faults = Faults(self)
        daemons, self._daemons = list(self._daemons.values()), {}
        for d in daemons:
            d.signal_stop()
        for d in daemons:
            d.stop()
        cleanup.purge(self.dir)
        self.stop_seconds = time.monotonic() - t0

    def _save_state(self, **changes: Any) -> None:
        self._state.update(changes)
        cleanup.write_state(self.dir, self._state)

    def _build(self) -> None:
        for parent in self.dir.parents:
            if parent.exists() and not parent.stat().st_mode & 0o001:
                raise LabError(
                    f"{parent} is not searchable by others: the login user and "
                    f"nginx could not reach {self.dir}; pick another lab dir"
                )
        taken = [n.netns for n in self.nodes if (nodes.NETNS_DIR / n.netns).exists()]
        if taken:
            # Another lab with this prefix: recording these names would tear it down.
            raise LabError(
                f"network namespace(s) {', '.join(taken)} already exist: another lab uses "
                f"prefix {self.prefix!r} (pick another prefix, or `down` a crashed lab)"
            )
        used = [n.host_address for n in self.nodes if local_address(n.host_address)]
        if used:
            raise LabError(
                f"address(es) {', '.join(used)} already on this machine: another lab uses "
                f"subnet 10.{self.subnet}.0.0/16 (pick another subnet)"
            )
        self._state = {}
        self.dir.mkdir(parents=True)
        self.dir.chmod(0o755)
        # Recorded before anything else is made, for `down` after a crash.
        self._save_state(
            owner_pid=os.getpid(),
            netns=[n.netns for n in self.nodes],
            latency_chain=self.latency_chain,
            user=self.user,
            user_created=False,
            created_run_sshd=False,
        )
        for d in (
            self.run_dir,
            self.log_dir,
            self.dir / "ssh",
            self.dir / "pebble",
            self.dir / "nodes",
            self.state_dir,
        ):
            d.mkdir(mode=0o755)
        self.pki = pki.build(self.dir / "pki")
        self.seed_sha256 = self.pki.seed.sha256
        secret = dns.new_tsig_secret(self.tsig_secret_path)
        # One EAB key for the lab's life; Pebble requires it only in eab mode.
        self._eab_key = pebble.new_eab_key(self.eab_hmac_file)
        private, public = pki.ssh_keypair()
        pki.write_private(self.ssh_identity, private)
        self.ssh_identity.with_suffix(".pub").write_text(public + "\n")
        self.authorized_keys.write_text(public + "\n")
        self.uid, self.gid, created = nodes.ensure_user(self.user, self.home)
        self._save_state(user_created=created)
        if not cleanup.RUN_SSHD.is_dir():
            cleanup.RUN_SSHD.mkdir(mode=0o755)
            self._save_state(created_run_sshd=True)
        for n in self.nodes:
            nodes.write_files(
                n,
                user=self.user,
                uid=self.uid,
                gid=self.gid,
                authorized_keys=self.authorized_keys,
                nginx=self.binaries["nginx"],
            )
        self.known_hosts.write_text("".join(f"{n.address} {n.host_key}\n" for n in self.nodes))
        nodes.create_netns(self.nodes)
        for n in self.nodes:
            nodes.mount_root(n, self.uid, self.gid)
            nodes.seed(n, self.pki.seed, self.uid, self.gid)
        dns.write_named(
            self.named_conf.parent, self.dns_port, secret, [(n.name, n.address) for n in self.nodes]
        )
        self._daemons["named"] = self._daemon(
            "named", [self.binaries["named"], "-4", "-f", "-c", str(self.named_conf)]
        )
        self._daemons["pdns"] = self._daemon("pdns", powerdns.build(self.pdns, self.dns_port))
        self._daemons["pebble"] = self._pebble_daemon()
        for n in self.nodes:
            self._daemons[f"sshd-{n.name}"] = self._daemon(
                f"sshd-{n.name}", nodes.sshd_argv(n, self.binaries["sshd"])
            )
            self._daemons[f"nginx-{n.name}"] = self._daemon(
                f"nginx-{n.name}", nodes.nginx_argv(n, self.binaries["nginx"], self.uid, self.gid)
            )

    def _daemon(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Daemon:
        return Daemon(name, argv, run_dir=self.run_dir, log_dir=self.log_dir, env=env)

    def _pebble_daemon(self) -> Daemon:
        if self.pki is None:
            raise LabError("the lab is not built")
        eab_key = self._eab_key if self.pebble_mode.eab else None
        pebble.write_config(
            self.pebble_config,
            port=self.acme_port,
            mgmt_port=self.mgmt_port,
            cert=self.pki.listener_cert,
            key=self.pki.listener_key,
            eab_key=eab_key,
        )
        return self._daemon(
            "pebble",
            pebble.argv(self.binaries["pebble"], self.pebble_config, self.dns_port),
            env=pebble.environment(self.pebble_mode),
        )

    def _ready(self, name: str) -> bool:
        if name == "named":
            return dns.answers(self.dns_port)
        if name == "pdns":
            return powerdns.answers(self.dns_port)
        if name == "pebble":
            return pebble.answers(self.directory_url, self.ca_bundle)
        kind, node = name.split("-", 1)
        return tcp_open(self.node(node).address, 22 if kind == "sshd" else 443)

    def _wait_ready(self, names: list[str]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        for name in names:
            wait_until(
                functools.partial(self._ready, name),
                name,
                max(0.1, deadline - time.monotonic()),
                alive=self._daemons[name].check,
            )
        if "pebble" in names:  # certfan checks stored chains end at a root it trusts
            extra.add_to_bundle(self.ca_bundle, self.pebble_root_pem())

    # -- services -------------------------------------------------------------------
    def _restart(self, name: str, daemon: Daemon | None = None) -> None:
        old = self._daemons.get(name)
        if old is None:
            raise LabError(f"{name}: the lab is not running")
        old.stop()
        self._daemons[name] = daemon or old
        self._daemons[name].start()
        self._wait_ready([name])

    def _stop_one(self, name: str) -> None:
        if name not in self._daemons:
            raise LabError(f"{name}: the lab is not running")
        self._daemons[name].stop()

    def stop_dns(self) -> None:
        self._stop_one("named")

    def start_dns(self) -> None:
        self._restart("named")

    def stop_pebble(self) -> None:
        self._stop_one("pebble")

    def start_pebble(self) -> None:
        """(Re)start Pebble in its current mode; it makes a new issuing root."""
        self._restart("pebble", self._pebble_daemon())

    def restart_pebble(self, nonce_reject: int | None = 0, eab: bool = False) -> None:
        """Restart Pebble in a mode: nonce_reject None is Pebble's own 5%."""
        self.pebble_mode = pebble.Mode(nonce_reject=nonce_reject, eab=eab)
        self.start_pebble()

    def pebble_root_pem(self) -> str:
        """The root Pebble issues under (new on each Pebble start)."""
        url = f"https://127.0.0.1:{self.mgmt_port}/roots/0"
        return pebble.get(url, self.ca_bundle).decode()

    def restart_sshd(self, node: str | Node) -> None:
        self._restart(f"sshd-{self.node(node).name}")

    # -- helpers for tests --------------------------------------------------------------
    def node(self, node: str | Node) -> Node:
        name = node.name if isinstance(node, Node) else node
        for n in self.nodes:
            if n.name == name:
                return n
        raise LabError(f"no lab node named {name!r}")

    def run_on(
        self,
        node: str | Node,
        argv: Sequence[str],
        *,
        input: str | None = None,
        timeout: float = 30.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside the node's netns as the login user, with its PATH; never raises
        for a non-zero exit."""
        n = self.node(node)
        env = [
            "env",
            "-i",
            f"HOME={self.home}",
            f"PATH={n.path_env}",
            f"USER={self.user}",
            f"LOGNAME={self.user}",
        ]
        return subprocess.run(
            [*nodes.enter(n), *nodes.as_user(self.uid, self.gid), *env, *argv],
            check=False,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.home,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def served_leaf(self, node: str | Node, sni: str, timeout: float = 5.0) -> bytes:
        """DER of the leaf the node's nginx serves for `sni` (not verified)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        address = self.node(node).address
        with (
            socket.create_connection((address, 443), timeout=timeout) as sock,
            ctx.wrap_socket(sock, server_hostname=sni) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        if der is None:
            raise LabError(f"{self.node(node).name}: no certificate served for {sni}")
        return der

    def nginx_master_pid(self, node: str | Node) -> int:
        return int(self.node(node).nginx_pidfile.read_text().split()[0])

    def dns_query(self, name: str, rdtype: str = "A", timeout: float = 2.0) -> list[str]:
        """Ask the lab's named (recursion on: CNAMEs are followed); see dns.query."""
        return dns.query(name, rdtype, self.dns_port, timeout=timeout)

    def pdns_txt(self, name: str) -> set[str]:
        """The TXT values PowerDNS itself serves at ``name`` (no resolver, no cache)."""
        return powerdns.txt(name, self.dns_port)

    # -- certfan config -------------------------------------------------------------------
    def config_text(self, state_dir: str | Path | None = None, **overrides: Any) -> str:
        return configgen.render(self, state_dir, **overrides)

    def write_config(
        self, path: str | Path, state_dir: str | Path | None = None, **overrides: Any
    ) -> Path:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.config_text(state_dir, **overrides))
        os.replace(tmp, path)
        return path
