"""When a certificate is due: pure functions, no I/O.

Two rules, the first that applies wins:

* ACME Renewal Information (RFC 9773): the CA suggests a window; we pick one
  uniformly random moment inside it (section 4.2), *once*, and remember it
  (``RenewalState``) so that repeated runs agree instead of re-rolling the dice
  every time. We do not ask again before Retry-After (section 4.3.3). A window
  that moved (the CA wants an early renewal, e.g. after a mis-issuance) gets a
  fresh moment; a window that ends in the past means renew now.
* Without ARI: renew when a third of the lifetime is left, or half of it for
  short-lived certificates (under 10 days), as Let's Encrypt recommends.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

SHORT_LIVED = timedelta(days=10)
DEFAULT_RETRY_AFTER = timedelta(hours=6)  # RFC 9773 section 4.3.3
MIN_RETRY_AFTER = timedelta(minutes=1)
MAX_RETRY_AFTER = timedelta(hours=24)


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
            window_start=_utc(doc["window_start"]),
            window_end=_utc(doc["window_end"]),
            renew_at=_utc(doc["renew_at"]),
            next_check=_utc(doc["next_check"]),
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
        return Decision(True, at, f"{share} of its lifetime left (expires {not_after:%Y-%m-%d %H:%M}Z)")
    return Decision(False, at, f"due at {at:%Y-%m-%d %H:%M}Z, when {share} of its lifetime is left")


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
    if now >= state.renew_at:
        return Decision(True, state.renew_at,
                        f"inside the CA's renewal window (ARI, chosen {state.renew_at:%Y-%m-%d %H:%M}Z)",
                        by_ari=True)
    return Decision(False, state.renew_at,
                    f"due at {state.renew_at:%Y-%m-%d %H:%M}Z, inside the CA's window "
                    f"{state.window_start:%Y-%m-%d %H:%M}Z..{state.window_end:%Y-%m-%d %H:%M}Z (ARI)",
                    by_ari=True)


def _utc(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"timestamp without timezone: {text!r}")
    return value.astimezone(UTC)
