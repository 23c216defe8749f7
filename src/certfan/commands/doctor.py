"""doctor: prove the whole path online before a rollout needs it; change nothing that serves.

Per host (in parallel, with the rollout deadlines): SSH with the strict host
key and login; the remote root writable (a temporary file made and removed
there, never under ``live/``); the config test runs; the reload command is
there and may run (``sudo -n -l`` for a sudo rule), without running it; and
nginx's full configuration (``nginx -T``, run like the config test) points
``ssl_certificate``/``ssl_certificate_key`` of each certificate's names at
``<root>/live/<cert>/fullchain.pem`` and ``privkey.pem``.

Per certificate: the zone of each ``_acme-challenge`` name (CNAMEs followed),
a test TXT value added and removed through the configured DNS method and seen
on every authoritative server, and CAA (RFC 8659) allowing the CA. The CA:
the directory over the configured trust, the account, the terms.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from certfan.commands import nginxconf
from certfan.commands.status import CRITICAL, OK, UNKNOWN, WARNING, worst
from certfan.config import Certificate, Config, Host, preflight
from certfan.deploy import fanout
from certfan.deploy.model import Connect, Session, default_connect
from certfan.errors import CertfanError, HostKeyError

if TYPE_CHECKING:
    from certfan.issue.acme import AcmeClient

log = logging.getLogger(__name__)

# A directory must exist and take a new file; the file goes at once. The path is an
# argument, never spliced into the script.
_ROOT_WRITABLE = r"""d=$1
[ -d "$d" ] || { echo "$d: no such directory" >&2; exit 3; }
f=$(mktemp "$d/.certfan-doctor.XXXXXX") || exit 4
rm -f -- "$f"
"""


@dataclass(frozen=True)
class Finding:
    subject: str  # a host name, a certificate name, or "CA"
    check: str
    state: int  # OK, WARNING, CRITICAL, UNKNOWN
    reason: str
    fix: str = ""


@dataclass(frozen=True)
class Report:
    hosts: tuple[Finding, ...]
    certs: tuple[Finding, ...]
    ca: tuple[Finding, ...]

    @property
    def findings(self) -> tuple[Finding, ...]:
        return self.hosts + self.certs + self.ca

    @property
    def state(self) -> int:
        return worst([f.state for f in self.findings] or [OK])


def doctor(cfg: Config, *, hosts: Sequence[str] = (), certs: Sequence[str] = (),
           connect: Connect = default_connect) -> Report:
    chosen_certs = [cfg.certificate(c) for c in certs] if certs else list(cfg.certificates.values())
    # --host: those; --cert alone: the hosts those certificates go to (maybe none); else all
    wanted = set(hosts) if hosts else ({h for c in chosen_certs for h in c.hosts} if certs
                                       else set(cfg.hosts))
    targets = [h for h in cfg.hosts.values() if h.name in wanted]
    policy = cfg.rollout
    budget = policy.connect_timeout + 4 * policy.command_timeout
    host_done = fanout.fan_out(targets, lambda h: _host(cfg, h, chosen_certs, connect),
                               concurrency=policy.concurrency, deadline=budget,
                               name=lambda h: h.name)
    host_findings = [f for h, d in zip(targets, host_done, strict=True)
                     for f in _value_or(d, h.name, "host", budget)]
    client = _acme_client(cfg)
    ca = list(_ca(cfg, client))
    identities = _caa_identities(cfg, client)
    dns_budget = cfg.dns.propagation_timeout + 4 * policy.command_timeout
    cert_done = fanout.fan_out(chosen_certs, lambda c: _certificate(cfg, c, identities),
                               concurrency=max(1, len(chosen_certs)), deadline=dns_budget,
                               name=lambda c: c.name)
    cert_findings = [f for c, d in zip(chosen_certs, cert_done, strict=True)
                     for f in _value_or(d, c.name, "dns", dns_budget)]
    return Report(tuple(host_findings), tuple(cert_findings), tuple(ca))


def _value_or(done: fanout.Done[list[Finding]], subject: str, check: str,
              deadline: float) -> list[Finding]:
    if done.ok and done.value is not None:
        return done.value
    return [Finding(subject, check, UNKNOWN, done.why(deadline))]


# ---------------------------------------------------------------- hosts


def _host(cfg: Config, host: Host, certs: Sequence[Certificate],
          connect: Connect) -> list[Finding]:
    def found(check: str, state: int, reason: str, fix: str = "") -> Finding:
        return Finding(host.name, check, state, reason, fix)

    try:
        session = connect(host, timeout=cfg.rollout.connect_timeout)
    except HostKeyError as exc:
        return [found("ssh", CRITICAL, str(exc), _keyscan_fix(host))]
    except CertfanError as exc:
        return [found("ssh", CRITICAL, str(exc),
                      f"check {host.user}@{host.address}:{host.port} and identity_file")]
    findings = [found("ssh", OK, f"logged in as {host.user}, host key matches known_hosts")]
    try:
        findings += _on_host(cfg, host, session, certs, found)
    finally:
        session.close()
    return findings


def _keyscan_fix(host: Host) -> str:
    port = f" -p {host.port}" if host.port != 22 else ""
    return (f"ssh-keyscan{port} {host.address} >> {host.known_hosts or 'KNOWN_HOSTS'}, "
            "then verify the fingerprint out of band")


def _on_host(cfg: Config, host: Host, session: Session, certs: Sequence[Certificate],
             found: Callable[..., Finding]) -> Iterator[Finding]:
    timeout = cfg.rollout.command_timeout
    root = session.run(["sh", "-c", _ROOT_WRITABLE, "sh", host.root], timeout=timeout)
    if root.ok:
        yield found("root writable", OK, f"{host.root}: a file can be made there")
    else:
        yield found("root writable", CRITICAL, f"{host.root}: {root.lost or root.tail(lines=2)}",
                    f"create {host.root}, writable by {host.user}")
    test = session.run(host.config_test, timeout=timeout)
    command = " ".join(host.config_test)
    if test.ok:
        yield found("config test", OK, f"{command} passes")
    else:
        yield found("config test", CRITICAL, f"{command}: {test.lost or test.tail(lines=2)}",
                    "fix nginx's configuration until the config test passes")
    yield _reload(host, session, timeout, found)
    dump = session.run(nginxconf.dump_argv(host.config_test), timeout=timeout)
    if not dump.ok:
        yield found("nginx -T", CRITICAL, dump.lost or dump.tail(lines=2),
                    "nginx -T must run the way the config test does")
        return
    blocks = nginxconf.server_blocks(dump.stdout.decode("utf-8", "replace"))
    for cert in certs:
        if host.name in cert.hosts:
            yield from _points_at(host, cert, blocks, found)


def _reload(host: Host, session: Session, timeout: float,
            found: Callable[..., Finding]) -> Finding:
    argv = list(host.reload)
    command = " ".join(argv)
    if argv[0] == "sudo":
        rest = argv[1:]
        while rest and rest[0].startswith("-"):
            rest = rest[1:]
        if not rest:
            return found("reload", CRITICAL, f"{command}: no command after sudo", "")
        allowed = session.run(["sudo", "-n", "-l", *rest], timeout=timeout)
        if allowed.ok:
            return found("reload", OK, f"sudo allows {' '.join(rest)} (not run)")
        return found("reload", CRITICAL,
                     f"sudo -n does not allow {' '.join(rest)} for {host.user}: "
                     f"{allowed.lost or allowed.tail(lines=1)}",
                     f"a sudoers rule: {host.user} ALL=(root) NOPASSWD: {' '.join(rest)}")
    where = session.run(["sh", "-c", 'command -v "$1"', "sh", argv[0]], timeout=timeout)
    if where.ok:
        path = where.stdout.decode("utf-8", "replace").strip()
        return found("reload", OK, f"{argv[0]} found at {path} (not run)")
    return found("reload", CRITICAL, f"{argv[0]}: not found on the login PATH",
                 f"install it or give hosts.reload a full path ({command})")


def server_for(blocks: Sequence[nginxconf.ServerBlock],
               name: str) -> nginxconf.ServerBlock | None:
    """The TLS server block nginx picks for ``name``: an exact server_name first, then
    the longest wildcard (``*.example.org`` or ``.example.org``)."""
    name = name.lower()
    tls = [b for b in blocks if b.tls]
    for b in tls:
        if name in (n.lower() for n in b.names):
            return b
    best: tuple[int, nginxconf.ServerBlock] | None = None
    for b in tls:
        for pattern in (n.lower() for n in b.names):
            suffix = pattern[1:] if pattern.startswith(("*.", ".")) else None
            if suffix is None:
                continue
            covers = name.endswith(suffix) or (pattern.startswith(".") and name == suffix[1:])
            if name.startswith("*."):
                covers = pattern in (name, name[1:])
            if covers and (best is None or len(suffix) > best[0]):
                best = (len(suffix), b)
    return best[1] if best else None


def _points_at(host: Host, cert: Certificate, blocks: Sequence[nginxconf.ServerBlock],
               found: Callable[..., Finding]) -> Iterator[Finding]:
    live = f"{host.root.rstrip('/')}/live/{cert.name}"
    want = (f"{live}/fullchain.pem", f"{live}/privkey.pem")
    fix = f"ssl_certificate {want[0]}; ssl_certificate_key {want[1]};"
    for name in cert.domains:
        check = f"nginx {cert.name} {name}"
        block = server_for(blocks, name)
        if block is None:
            yield found(check, CRITICAL, f"no TLS server block has server_name {name}",
                        f"add a server block for {name} with {fix}")
            continue
        where = f"{block.file}:{block.line}"
        pairs = list(zip(block.certificates, block.keys, strict=False))
        if want in pairs:
            yield found(check, OK, f"{where} uses {live}/")
        else:
            got = ", ".join(f"{c} / {k}" for c, k in pairs) or "no certificate"
            yield found(check, CRITICAL, f"{where} serves {name} from {got}, not {live}/",
                        f"in {where}: {fix}")


# ---------------------------------------------------------------- certificates and CA


def _acme_client(cfg: Config) -> AcmeClient:
    from certfan.issue.acme import client_for

    return client_for(cfg)


def _caa_identities(cfg: Config, client: AcmeClient) -> tuple[str, ...]:
    if cfg.acme.caa_identities:
        return cfg.acme.caa_identities
    try:
        meta = getattr(client.directory(), "meta", None)
    except CertfanError:
        return ()
    return tuple(str(i) for i in getattr(meta, "caa_identities", None) or ())


def _ca(cfg: Config, client: AcmeClient) -> Iterator[Finding]:
    trust = f"acme.ca_bundle {cfg.acme.ca_bundle}" if cfg.acme.ca_bundle else "the system store"
    try:
        directory = client.directory()
    except CertfanError as exc:
        yield Finding("CA", "directory", CRITICAL, str(exc),
                      f"check acme.directory and that {trust} verifies the CA")
        return
    yield Finding("CA", "directory", OK, f"{cfg.acme.directory} answers over {trust}")
    meta = getattr(directory, "meta", None)
    tos = getattr(meta, "terms_of_service", None)
    registered = preflight.account_registered(cfg)
    if tos and not cfg.acme.agree_tos and not registered:
        yield Finding("CA", "terms", CRITICAL, f"the CA's terms ({tos}) are not agreed",
                      "read them, then set acme.agree_tos = true")
    else:
        yield Finding("CA", "terms", OK, "agreed" if tos else "the CA has no terms to agree")
    if registered:
        try:
            account = client.account()
        except CertfanError as exc:
            yield Finding("CA", "account", CRITICAL, str(exc), "")
            return
        yield Finding("CA", "account", OK, f"account {account.uri} known to the CA")
    elif getattr(meta, "external_account_required", False) and cfg.acme.eab is None:
        yield Finding("CA", "account", CRITICAL, "the CA requires external account binding",
                      "set acme.eab with the key id and MAC key the CA gave you")
    else:
        yield Finding("CA", "account", OK, "none yet: the first issue creates it")


def _certificate(cfg: Config, cert: Certificate, identities: Sequence[str]) -> list[Finding]:
    from certfan.issue import dns01caa, order

    dns = order.make_dns(cfg)
    findings: list[Finding] = []
    bases = list(dict.fromkeys(d[2:] if d.startswith("*.") else d for d in cert.domains))
    records = [(f"_acme-challenge.{b}", f"certfan-doctor-{secrets.token_hex(8)}") for b in bases]
    try:
        for (challenge, value) in records:
            item = dns.plan(challenge, value)
            via = f" -> {item.target}" if item.target.rstrip(".") != challenge else ""
            findings.append(Finding(cert.name, "dns zone", OK,
                                    f"{challenge}{via}: zone {item.zone}"))
        with dns.published(records):
            pass
        findings.append(Finding(cert.name, "dns txt", OK,
                                f"a test TXT value for {len(records)} name(s) added through "
                                f"dns.method = {cfg.dns.method}, seen on every authoritative "
                                "server, removed"))
    except CertfanError as exc:
        findings.append(Finding(cert.name, "dns txt", CRITICAL, str(exc),
                                "check the [dns] settings (server, key, secret, zone)"))
    for name in cert.domains:
        try:
            allowed, why = dns01caa.caa_verdict(dns01caa.relevant_caa(dns.lookup, name),
                                                identities)
        except CertfanError as exc:
            findings.append(Finding(cert.name, f"caa {name}", UNKNOWN, str(exc)))
            continue
        state = OK if allowed else (WARNING if allowed is None else CRITICAL)
        fix = "" if allowed else "add a CAA issue record for this CA at the name or a parent"
        findings.append(Finding(cert.name, f"caa {name}", state, why, fix))
    return findings
