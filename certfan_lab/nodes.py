"""Edge nodes: a network namespace each, with sshd and nginx, and a tmpfs cert root.

Node i (from 1) is 10.<subnet>.<i>.2/24 on `eth0` inside netns `<prefix>-<i>`;
the host end of its veth pair is `<prefix>-<i>h` with 10.<subnet>.<i>.1/24.
Daemons enter the netns with ``nsenter --net`` (not ``ip netns exec``), so they
share the lab's mount namespace: a remount of a node's tmpfs is seen by its
sshd sessions at once.
"""

from __future__ import annotations

import ctypes
import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path

from certfan_lab.pki import Seed, ssh_keypair, write_private
from certfan_lab.procs import LabError, run

NETNS_DIR = Path("/run/netns")
TMPFS_SIZE = "4m"
CERT_NAME = "media"
SERVER_NAMES = "media.lab.test static.lab.test chain.lab.test lab.test *.lab.test"
MS_RDONLY, MS_REMOUNT = 1, 32

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class Node:
    name: str
    index: int
    address: str  # inside the netns, where sshd and nginx listen
    host_address: str  # the lab host's end of the veth pair
    netns: str
    veth: str  # host end
    dir: Path
    host_key: str = field(default="")  # "ssh-ed25519 AAAA..." as in known_hosts

    @property
    def root(self) -> Path:
        """The certificate root (a tmpfs), certfan's `root` for this host."""
        return self.dir / "letsencrypt"

    @property
    def bin_dir(self) -> Path:
        return self.dir / "bin"

    @property
    def nginx_prefix(self) -> Path:
        return self.dir / "nginx"

    @property
    def nginx_conf(self) -> Path:
        return self.nginx_prefix / "nginx.conf"

    @property
    def site_conf(self) -> Path:
        return self.nginx_prefix / "sites" / f"{CERT_NAME}.conf"

    @property
    def nginx_pidfile(self) -> Path:
        return self.nginx_prefix / "run" / "nginx.pid"

    @property
    def host_key_file(self) -> Path:
        return self.dir / "ssh" / "ssh_host_ed25519_key"

    @property
    def sshd_config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def path_env(self) -> str:
        return f"{self.bin_dir}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"


def plan(names: list[str], prefix: str, subnet: int, nodes_dir: Path) -> list[Node]:
    if len(names) > 254:
        raise LabError(f"at most 254 nodes, not {len(names)}")
    nodes = []
    for i, name in enumerate(names, start=1):
        netns, veth = f"{prefix}-{i}", f"{prefix}-{i}h"
        if len(veth) > 15:
            raise LabError(f"interface name {veth!r} is longer than 15 characters")
        nodes.append(
            Node(name, i, f"10.{subnet}.{i}.2", f"10.{subnet}.{i}.1", netns, veth, nodes_dir / name)
        )
    return nodes


def enter(node: Node) -> list[str]:
    """argv prefix that runs a command inside the node's network namespace."""
    return ["nsenter", f"--net={NETNS_DIR / node.netns}", "--"]


def as_user(uid: int, gid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", "--"]


# --- network ---------------------------------------------------------------


def create_netns(nodes: list[Node]) -> None:
    host = []
    for n in nodes:
        host += [
            f"netns add {n.netns}",
            f"link add {n.veth} type veth peer name eth0 netns {n.netns}",
            f"addr add {n.host_address}/24 dev {n.veth}",
            f"link set {n.veth} up",
        ]
    run(["ip", "-batch", "-"], input="\n".join(host) + "\n")
    for n in nodes:
        run(
            ["ip", "-n", n.netns, "-batch", "-"],
            input=f"link set lo up\naddr add {n.address}/24 dev eth0\nlink set eth0 up\n",
        )
        # nginx runs as the lab user and must bind 443.
        run([*enter(n), "sysctl", "-q", "-w", "net.ipv4.ip_unprivileged_port_start=0"])


def delete_netns(names: list[str]) -> None:
    for name in names:
        if (NETNS_DIR / name).exists():
            run(["ip", "netns", "delete", name], check=False)


# --- the login user --------------------------------------------------------


def ensure_user(user: str, home: Path) -> tuple[int, int, bool]:
    """(uid, gid, created). '*' rather than the locked '!': sshd without PAM refuses
    locked accounts."""
    created = False
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        run(
            [
                "useradd",
                "--system",
                "--user-group",
                "--shell",
                "/bin/sh",
                "--home-dir",
                str(home),
                "--no-create-home",
                "--password",
                "*",
                user,
            ]
        )
        pw = pwd.getpwnam(user)
        created = True
    home.mkdir(mode=0o755, exist_ok=True)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    return pw.pw_uid, pw.pw_gid, created


def delete_user(user: str) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return
    run(["userdel", user], check=False)


# --- the certificate root ----------------------------------------------------


def mount_root(node: Node, uid: int, gid: int) -> None:
    node.root.mkdir(mode=0o755, exist_ok=True)
    opts = f"size={TMPFS_SIZE},mode=0755,uid={uid},gid={gid}".encode()
    if _libc.mount(b"tmpfs", bytes(node.root), b"tmpfs", 0, opts) != 0:
        err = ctypes.get_errno()
        raise LabError(f"mount tmpfs on {node.root}: {os.strerror(err)}")


def remount(root: Path, readonly: bool) -> None:
    """Remount the tmpfs itself (its superblock), so every view of it changes."""
    flags = MS_REMOUNT | (MS_RDONLY if readonly else 0)
    if _libc.mount(b"tmpfs", bytes(root), b"tmpfs", flags, None) != 0:
        err = ctypes.get_errno()
        raise LabError(f"remount {root} {'ro' if readonly else 'rw'}: {os.strerror(err)}")


def unmount(path: Path) -> None:
    if _libc.umount2(bytes(path), 0) != 0:
        _libc.umount2(bytes(path), 2)  # MNT_DETACH: busy, go anyway


def seed(node: Node, s: Seed, uid: int, gid: int) -> None:
    """Lay out the certificate like certbot: archive/ files, live/ relative symlinks."""
    archive, live = node.root / "archive" / CERT_NAME, node.root / "live" / CERT_NAME
    for d in (node.root / "archive", archive, node.root / "live", live):
        d.mkdir(mode=0o755)
        os.chown(d, uid, gid)
    files = {"cert": s.cert, "chain": s.chain, "fullchain": s.fullchain, "privkey": s.key}
    for stem, data in files.items():
        target = archive / f"{stem}1.pem"
        write_private(target, data, 0o600 if stem == "privkey" else 0o644)
        os.chown(target, uid, gid)
        link = live / f"{stem}.pem"
        os.symlink(f"../../archive/{CERT_NAME}/{stem}1.pem", link)
        os.lchown(link, uid, gid)


# --- sshd --------------------------------------------------------------------


def sshd_config(node: Node, user: str, authorized_keys: Path) -> str:
    return f"""# Generated by the certfan lab for node {node.name}.
ListenAddress {node.address}:22
HostKey {node.host_key_file}
PidFile {node.dir}/sshd.pid
AuthorizedKeysFile {authorized_keys}
AllowUsers {user}
StrictModes no
UsePAM no
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowAgentForwarding no
AllowTcpForwarding no
MaxStartups 200
MaxSessions 64
Subsystem sftp internal-sftp
# nginx and systemctl on this PATH are the node's wrappers (bin/).
SetEnv PATH={node.path_env}
"""


def write_host_key(node: Node) -> None:
    private, public = ssh_keypair()
    node.host_key_file.parent.mkdir(mode=0o755, exist_ok=True)
    write_private(node.host_key_file, private)
    node.host_key_file.with_suffix(".pub").write_text(public + "\n")
    node.host_key = public


def sshd_argv(node: Node, sshd: str) -> list[str]:
    return [*enter(node), sshd, "-D", "-e", "-f", str(node.sshd_config)]


# --- nginx -----------------------------------------------------------------


def nginx_conf(node: Node) -> str:
    p = node.nginx_prefix
    temps = "".join(
        f"    {kind}_temp_path {p}/tmp/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""# Generated by the certfan lab for node {node.name}.
worker_processes 1;
pid {node.nginx_pidfile};
error_log {p}/logs/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
{temps}    ssl_protocols TLSv1.2 TLSv1.3;
    include {p}/sites/*.conf;
}}
"""


def site_conf(node: Node) -> str:
    live = node.root / "live" / CERT_NAME
    return f"""server {{
    listen {node.address}:443 ssl;
    server_name {SERVER_NAMES};
    ssl_certificate {live}/fullchain.pem;
    ssl_certificate_key {live}/privkey.pem;
    location / {{ return 200 "{node.name}\\n"; }}
}}
"""


def nginx_argv(node: Node, nginx: str, uid: int, gid: int) -> list[str]:
    # The master runs as the login user too, so `nginx -s reload` over SSH may signal it.
    return [
        *enter(node),
        *as_user(uid, gid),
        nginx,
        "-c",
        str(node.nginx_conf),
        "-p",
        f"{node.nginx_prefix}/",
        "-g",
        "daemon off;",
    ]


def wrappers(node: Node, nginx: str) -> dict[str, str]:
    pidfile = node.nginx_pidfile
    return {
        "nginx": f"""#!/bin/sh
# certfan lab: this node's nginx only.
exec {nginx} -c {node.nginx_conf} -p {node.nginx_prefix}/ "$@"
""",
        "systemctl": f"""#!/bin/sh
# certfan lab stand-in for systemctl: the two verbs certfan uses, for this node's nginx.
running() {{ [ -s {pidfile} ] && kill -0 "$(cat {pidfile})" 2>/dev/null; }}
case "$1 ${{2%.service}}" in
"reload nginx")
    running || {{ echo "nginx.service is not active, cannot reload." >&2; exit 1; }}
    exec {node.bin_dir}/nginx -s reload ;;
"is-active nginx")
    if running; then echo active; exit 0; else echo inactive; exit 3; fi ;;
*)
    echo "lab systemctl: unsupported: $*" >&2; exit 1 ;;
esac
""",
    }


def write_files(
    node: Node, *, user: str, uid: int, gid: int, authorized_keys: Path, nginx: str
) -> None:
    """Everything on a node but the certificate root."""
    node.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    node.bin_dir.mkdir(mode=0o755, exist_ok=True)
    for name, text in wrappers(node, nginx).items():
        path = node.bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    write_host_key(node)
    node.sshd_config.write_text(sshd_config(node, user, authorized_keys))
    p = node.nginx_prefix
    for d in (p, p / "sites", p / "logs", p / "tmp", p / "run"):
        d.mkdir(mode=0o755, exist_ok=True)
    for d in (p / "logs", p / "tmp", p / "run"):
        os.chown(d, uid, gid)
    node.nginx_conf.write_text(nginx_conf(node))
    node.site_conf.write_text(site_conf(node))
