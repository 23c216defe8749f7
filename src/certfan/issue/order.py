"""The issuance pipeline: getting certificates (whether they are due: ``due``).

    issue(cfg, cert, store):  key + CSR -> ACME order answered by DNS-01
                              -> store.save (on disk first) -> store.activate
    issue_many(...):          the same for several certificates at once,
                              bounded concurrency, one outcome per certificate
    adopt_unactivated, remove_dns_leftovers: what a killed run left behind

Collaborators (the ACME client, the DNS-01 publisher) are passed in so tests
can hand in lab-bound or fault-injecting ones; by default they come from the
configuration.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime

from certfan.config import Certificate, Config
from certfan.errors import AcmeError, CertfanError, Interrupted, StoreError
from certfan.issue import crypto, dns01
from certfan.issue.acme import AcmeClient, client_for
from certfan.issue.dns01 import Dns01Publisher
from certfan.issue.due import Status, note_rate_limits, renewal_status
from certfan.state import trust
from certfan.state.store import Release, Store

# Due-ness lives in ``due``; these names stay importable from here for the commands.
__all__ = ["Outcome", "Status", "adopt_unactivated", "issue", "issue_many", "make_dns",
           "note_rate_limits", "remove_dns_leftovers", "renewal_status"]

log = logging.getLogger(__name__)

MAX_CONCURRENT_ORDERS = 4
CANCEL_GRACE = 60.0  # seconds to let workers clean DNS up after Ctrl-C


@dataclass(frozen=True)
class Outcome:
    """What became of one certificate in ``issue_many``: a release or an error."""

    cert: str
    release: Release | None = None
    error: CertfanError | None = None

    @property
    def ok(self) -> bool:
        return self.release is not None


def make_dns(cfg: Config) -> dns01.Dns01:
    return dns01.Dns01(cfg.dns, pending=dns01.PendingTxt(cfg.state_dir))


def adopt_unactivated(cfg: Config, store: Store, now: datetime | None = None) -> list[Release]:
    """Make current what a run issued and stored but died before activating.

    Without this the next run would find the old version still current, and
    due, and order again: a certificate issued for nothing.
    """
    now = now or datetime.now(UTC)
    adopted = []
    for cert in cfg.certificates.values():
        release = store.unactivated(cert.name)
        if (release is None or release.order_url is None or release.key_type != cert.key_type
                or set(release.names) != {d.lower() for d in cert.domains}
                or now >= release.not_after):
            continue
        log.warning("%s: version %s was issued and stored by a run that stopped before making "
                    "it current; making it current now", cert.name, release.version)
        store.activate(release)
        adopted.append(release)
    return adopted


def remove_dns_leftovers(cfg: Config, dns: Dns01Publisher | None = None) -> None:
    """Remove the TXT values a run that died left in DNS (see dns01.PendingTxt).

    Reads a local file first: with nothing left over, no DNS server is asked.
    A failure is logged, not raised; the values stay recorded for the next run.
    """
    try:
        if not dns01.PendingTxt(cfg.state_dir).leftovers():
            return
        dns = dns or make_dns(cfg)
        left = dns.remove_leftovers() if isinstance(dns, dns01.Dns01) else 0
    except CertfanError as exc:
        log.warning("TXT values an earlier run left are still in DNS: %s", exc)
        return
    if left:
        log.warning("%d TXT value(s) an earlier run left are still in DNS; the next run "
                    "tries again", left)


# ---------------------------------------------------------------- issuing


def issue(
    cfg: Config,
    cert: Certificate | str,
    store: Store,
    *,
    acme: AcmeClient | None = None,
    dns: Dns01Publisher | None = None,
    cancel: threading.Event | None = None,
) -> Release:
    """Issue ``cert`` now, store it as a new version and make it current."""
    if isinstance(cert, str):
        cert = cfg.certificate(cert)
    acme = acme or client_for(cfg)
    dns = dns or make_dns(cfg)
    current = store.current(cert.name)
    key_pem = _key_for(cert, current)
    csr = crypto.make_csr(key_pem, cert.domains)
    replaces = _replaces(acme, current)
    log.info("%s: ordering %s (%s)%s", cert.name, ", ".join(cert.domains), cert.key_type,
             f", replacing {current.version}" if replaces and current else "")
    issued = acme.order(cert.domains, csr, dns, replaces=replaces, cancel=cancel)
    # On disk before anything else happens with it (a crash from here on
    # leaves a complete version that is simply not current yet).
    release = store.save(cert.name, key_pem, issued.fullchain_pem,
                         order_url=issued.order_url, key_type=cert.key_type,
                         names=cert.domains, anchors=trust.anchors(cfg.acme.ca_bundle))
    if set(release.names) != {d.lower() for d in cert.domains}:
        raise AcmeError(f"{cert.name}: the CA issued for {', '.join(release.names)}, not "
                        f"{', '.join(cert.domains)}; stored as {release.version}, not activated")
    store.activate(release)
    log.info("%s: issued serial %s, version %s, expires %s", cert.name, release.serial,
             release.version, release.not_after.isoformat())
    return release


def issue_many(
    cfg: Config,
    store: Store,
    certs: Sequence[str],
    *,
    acme: AcmeClient | None = None,
    dns: Dns01Publisher | None = None,
    max_workers: int = MAX_CONCURRENT_ORDERS,
    timeout: float | None = None,
) -> list[Outcome]:
    """Issue several certificates concurrently; an Outcome for every one, in order.

    Ctrl-C stops the workers at their next poll; they remove their DNS
    records before the KeyboardInterrupt is re-raised here.
    """
    if not certs:
        return []
    acme = acme or client_for(cfg)
    dns = dns or make_dns(cfg)
    try:
        acme.account()  # create (or confirm) the account once, before the fan-out
    except CertfanError as exc:
        log.error("no ACME account: %s", exc)
        return [Outcome(name, error=exc) for name in certs]
    if timeout is None:
        timeout = acme.order_timeout + cfg.dns.propagation_timeout + 60.0
    cancel = threading.Event()
    pool = ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(certs))),
                              thread_name_prefix="certfan-issue")
    futures: dict[str, Future[Release]] = {}
    try:
        for name in certs:
            futures[name] = pool.submit(issue, cfg, name, store, acme=acme, dns=dns,
                                        cancel=cancel)
        wait(futures.values(), timeout=timeout)
    except KeyboardInterrupt:
        log.warning("interrupted: stopping %d orders and cleaning up DNS", len(futures))
        cancel.set()
        wait(futures.values(), timeout=CANCEL_GRACE)
        raise
    finally:
        cancel.set()  # anything still running is past the deadline
        pool.shutdown(wait=False, cancel_futures=True)
    return [_outcome(name, futures[name], timeout) for name in certs]


def _outcome(name: str, future: Future[Release], timeout: float) -> Outcome:
    if not future.done():
        return Outcome(name, error=Interrupted(f"{name}: issuance did not finish within "
                                                f"{timeout:g}s"))
    if future.cancelled():
        return Outcome(name, error=Interrupted(f"{name}: issuance cancelled"))
    exc = future.exception()
    if exc is None:
        return Outcome(name, release=future.result())
    if isinstance(exc, CertfanError):
        log.error("%s: %s", name, exc)
        return Outcome(name, error=exc)
    log.error("%s: unexpected error: %r", name, exc, exc_info=exc)
    error = CertfanError(f"{name}: unexpected error: {exc!r}")
    error.__cause__ = exc
    return Outcome(name, error=error)


def _key_for(cert: Certificate, current: Release | None) -> bytes:
    if cert.reuse_key and current is not None and current.key_type == cert.key_type:
        try:
            return current.file("privkey.pem").read_bytes()
        except OSError as exc:
            raise StoreError(f"{current.file('privkey.pem')}: cannot reuse key: {exc}") from exc
    return crypto.new_key_pem(cert.key_type)


def _replaces(acme: AcmeClient, current: Release | None) -> str | None:
    """The ARI cert-id of the certificate this order replaces (RFC 9773 section 5)."""
    if current is None or not acme.supports_ari:
        return None
    try:
        return crypto.ari_cert_id(current.file("cert.pem").read_bytes())
    except (OSError, CertfanError) as exc:
        log.warning("%s: not sending replaces: %s", current.cert, exc)
        return None
