"""Whether a certificate is due: the whole answer, in one place.

In this order, the first that applies wins:

* nothing stored yet, names or key type changed in the config, expired: now;
* ACME Renewal Information (RFC 9773): the CA suggests a window; we pick one
  uniformly random moment inside it (section 4.2), *once*, and remember it
  (``RenewalState`` in ``<state>/certs/<cert>/due.json``) so that repeated
  runs agree instead of re-rolling the dice every time. We do not ask again
  before Retry-After (section 4.3.3). A window that moved (the CA wants an
  early renewal, e.g. after a mis-issuance) gets a fresh moment; a window that
  ends in the past means renew now;
* without ARI: when a third of the lifetime is left, or half of it for
  short-lived certificates (under 10 days), as Let's Encrypt recommends;
* and whatever the rule said, not before a rate limit's Retry-After has
  passed (``backoff.json``, written by :func:`note_rate_limits`).

The rules are pure functions of their inputs; :func:`renewal_status` reads
the store and asks the CA (an :class:`AriSource`) only when ARI says it is
time to.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from certfan.config import Certificate, Config
from certfan.errors import CertfanError, RateLimitedError
from certfan.state import fsutil
from certfan.state.store import Release, Store, parse_utc

if TYPE_CHECKING:
    from certfan.issue.order import Outcome

log = logging.getLogger(__name__)

SHORT_LIVED = timedelta(days=10)
DEFAULT_RETRY_AFTER = timedelta(hours=6)  # RFC 9773 section 4.3.3
MIN_RETRY_AFTER = timedelta(minutes=1)
MAX_RETRY_AFTER = timedelta(hours=24)
RENEWAL_STATE = "due.json"
BACKOFF = "backoff.json"  # a CA's rate limit: renew does not order again before "until"
BACKOFF_DEFAULT = timedelta(hours=1)  # when the CA sent no Retry-After
BACKOFF_MAX = timedelta(days=7)


@dataclass(frozen=True)
class AriWindow:
    """One renewalInfo response."""

    start: datetime
    end: datetime
    retry_after: float | None = None  # seconds, from the Retry-After header
    explanation_url: str | None = None


@dataclass(frozen=True)
class RenewalState:
    """What we remember between runs about one version's ARI window."""

    version: str
    window_start: datetime
    window_end: datetime
    renew_at: datetime  # the random moment, chosen once per window
    next_check: datetime  # do not fetch renewalInfo again before this

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "renew_at": self.renew_at.isoformat(),
            "next_check": self.next_check.isoformat(),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RenewalState:
        return cls(
            version=str(doc["version"]),
            window_start=parse_utc(doc["window_start"]),
            window_end=parse_utc(doc["window_end"]),
            renew_at=parse_utc(doc["renew_at"]),
            next_check=parse_utc(doc["next_check"]),
        )


@dataclass(frozen=True)
class Decision:
    due: bool
    at: datetime  # when it is (or was) due
    reason: str
    by_ari: bool = False


def lifetime_due_at(not_before: datetime, not_after: datetime) -> datetime:
    lifetime = not_after - not_before
    left = lifetime / 2 if lifetime < SHORT_LIVED else lifetime / 3
    return not_after - left


def by_lifetime(not_before: datetime, not_after: datetime, now: datetime) -> Decision:
    at = lifetime_due_at(not_before, not_after)
    lifetime = not_after - not_before
    share = "half" if lifetime < SHORT_LIVED else "a third"
    if now >= at:
        return Decision(True, at,
                        f"{share} of its lifetime left (expires {not_after:%Y-%m-%d %H:%M}Z)")
    return Decision(False, at,
                    f"due at {at:%Y-%m-%d %H:%M}Z, when {share} of its lifetime is left")


def choose_moment(start: datetime, end: datetime, rng: random.Random) -> datetime:
    """A uniformly random moment in [start, end] (RFC 9773 section 4.2)."""
    if end <= start:
        return start
    return start + (end - start) * rng.random()


def next_check(now: datetime, retry_after: float | None) -> datetime:
    """When to ask again: Retry-After, clamped to a sane range; 6 hours by default."""
    if retry_after is None:
        return now + DEFAULT_RETRY_AFTER
    wait = timedelta(seconds=retry_after)
    return now + min(max(wait, MIN_RETRY_AFTER), MAX_RETRY_AFTER)


def update_state(
    previous: RenewalState | None,
    version: str,
    window: AriWindow,
    now: datetime,
    rng: random.Random,
) -> RenewalState:
    """Fold a fresh renewalInfo answer into what we remember."""
    same_window = (
        previous is not None
        and previous.version == version
        and previous.window_start == window.start
        and previous.window_end == window.end
    )
    renew_at = (
        previous.renew_at
        if same_window and previous is not None
        else choose_moment(window.start, window.end, rng)
    )
    return RenewalState(
        version=version,
        window_start=window.start,
        window_end=window.end,
        renew_at=renew_at,
        next_check=next_check(now, window.retry_after),
    )


def needs_fetch(state: RenewalState | None, version: str, now: datetime) -> bool:
    """Whether to ask the CA again (no state for this version, or Retry-After passed)."""
    return state is None or state.version != version or now >= state.next_check


def by_ari(state: RenewalState, now: datetime) -> Decision:
    at = f"{state.renew_at:%Y-%m-%d %H:%M}Z"
    if now >= state.renew_at:
        return Decision(True, state.renew_at,
                        f"inside the CA's renewal window (ARI, chosen {at})", by_ari=True)
    window = f"{state.window_start:%Y-%m-%d %H:%M}Z..{state.window_end:%Y-%m-%d %H:%M}Z"
    return Decision(False, state.renew_at, f"due at {at}, inside the CA's window {window} (ARI)",
                    by_ari=True)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header (seconds or an HTTP date, RFC 9110 section 10.2.3) in seconds."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


# ---------------------------------------------------------------- per certificate


class AriSource(Protocol):
    """The CA, as far as due-ness goes (``acme.AcmeClient``)."""

    @property
    def supports_ari(self) -> bool: ...

    def renewal_info(self, cert_pem: bytes) -> AriWindow | None: ...


@dataclass(frozen=True)
class Status:
    cert: str
    decision: Decision
    current: Release | None


def renewal_status(
    cfg: Config,
    store: Store,
    now: datetime | None = None,
    *,
    acme: AriSource | None = None,
    rng: random.Random | None = None,
) -> list[Status]:
    """A decision for every configured certificate, in config order.

    ``acme`` defaults to a client for the configured CA; when the CA cannot be
    reached, windows remembered from earlier runs still count, else lifetime.
    """
    now = now or datetime.now(UTC)
    rng = rng or random.Random()
    if acme is None:
        from certfan.issue.acme import client_for

        acme = client_for(cfg)
    try:
        ari: AriSource | None = acme if acme.supports_ari else None
        remembered = ari is not None
    except CertfanError as exc:
        log.warning("cannot ask the CA for renewal information (%s); using what we know", exc)
        ari, remembered = None, True
    return [_backed_off(_status(cert, store, now, ari, remembered, rng), store, now)
            for cert in cfg.certificates.values()]


def _status(cert: Certificate, store: Store, now: datetime, acme: AriSource | None,
            remembered: bool, rng: random.Random) -> Status:
    current = store.current(cert.name)
    if current is None:
        return Status(cert.name, Decision(True, now, "no certificate yet"), None)
    if set(current.names) != {d.lower() for d in cert.domains}:
        return Status(cert.name, Decision(True, now, "names changed in config"), current)
    if current.key_type != cert.key_type:
        return Status(cert.name, Decision(True, now, "key type changed in config"), current)
    if now >= current.not_after:
        return Status(cert.name, Decision(True, current.not_after, "expired"), current)
    state = _ari_state(cert, store, current, now, acme, rng) if remembered else None
    if state is not None:
        return Status(cert.name, by_ari(state, now), current)
    return Status(cert.name, by_lifetime(current.not_before, current.not_after, now), current)


def _backed_off(status: Status, store: Store, now: datetime) -> Status:
    """``status``, not due while the CA's Retry-After from an earlier rate limit runs."""
    if not status.decision.due:
        return status
    doc = fsutil.read_json(store.cert_dir(status.cert) / BACKOFF, "rate-limit back-off")
    try:
        until = datetime.fromisoformat(doc["until"]) if doc else None
    except (KeyError, TypeError, ValueError):
        until = None  # unreadable: better to ask the CA again than to stop renewing
    if until is None or now >= until:
        return status
    reason = f"{status.decision.reason}; rate limited by the CA until {until:%Y-%m-%d %H:%M}Z"
    return Status(status.cert, Decision(False, until, reason), status.current)


def note_rate_limits(store: Store, outcomes: Sequence[Outcome], now: datetime) -> None:
    """Remember each rate limit's Retry-After so the next timer run does not hammer the CA."""
    for outcome in outcomes:
        if isinstance(outcome.error, RateLimitedError):
            wait_for = (timedelta(seconds=outcome.error.retry_after)
                        if outcome.error.retry_after else BACKOFF_DEFAULT)
            until = now + min(max(wait_for, timedelta(0)), BACKOFF_MAX)
            doc = {"until": until.isoformat(), "error": str(outcome.error)}
            fsutil.ensure_dir(store.cert_dir(outcome.cert))
            fsutil.atomic_write(store.cert_dir(outcome.cert) / BACKOFF,
                                json.dumps(doc, indent=2).encode() + b"\n")
            log.warning("%s: rate limited; renew will not order again before %s",
                        outcome.cert, until.isoformat(), extra={"cert": outcome.cert})
        elif outcome.ok:
            (store.cert_dir(outcome.cert) / BACKOFF).unlink(missing_ok=True)


def _ari_state(cert: Certificate, store: Store, current: Release, now: datetime,
               acme: AriSource | None, rng: random.Random) -> RenewalState | None:
    """The remembered ARI state, refreshed from the CA (``acme``) when it is time."""
    path = store.cert_dir(cert.name) / RENEWAL_STATE
    state = _load_state(path)
    if acme is not None and needs_fetch(state, current.version, now):
        try:
            window = acme.renewal_info(current.file("cert.pem").read_bytes())
        except (OSError, CertfanError) as exc:
            log.warning("%s: no renewal information (%s); using what we know", cert.name, exc)
            window = None
        if window is not None:
            state = update_state(state, current.version, window, now, rng)
            fsutil.atomic_write(path, json.dumps(state.to_json(), indent=2).encode() + b"\n")
            log.debug("%s: ARI window %s..%s, renew at %s, next check %s", cert.name,
                      window.start, window.end, state.renew_at, state.next_check)
    if state is None or state.version != current.version:
        return None
    return state


def _load_state(path: Path) -> RenewalState | None:
    try:
        return RenewalState.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s: ignoring unreadable renewal state: %s", path, exc)
        return None
