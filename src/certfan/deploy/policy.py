"""The fleet policy's rules, as pure functions (fleet.py applies them).

- Failures are classified (model.Failure). Only *rejected* hosts (the host was
  changed and refused the release: upload, config test, reload or proof) spend
  ``failure_budget``; spending it halts the rollout and, with
  ``rollback_on_halt``, moves the hosts this rollout flipped back.
- *Unreachable* hosts (connect, auth, host key, or the link lost before
  anything live changed) never roll healthy hosts back: they are reported,
  recorded in the deploy state as behind, and caught up by the next
  ``renew``/``push``. More unreachable hosts than ``max_unreachable`` halts the
  rollout without rolling back (the controller's own network is the likelier
  cause).
- Both limits are a count or a share of the rollout's hosts (``"10%"``).
- Hold forward: a healthy host is never rolled back to a version that is
  revoked or expires within status's critical window (7 days): a fleet serving
  the new certificate on its healthy hosts beats one serving an expiring one
  everywhere. The report says so for each host held.
- Retried first: hosts whose last run for the certificate failed go first, so
  one of them is the canary; the same failure on the next run then stops
  before any healthy host is touched again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from certfan.config import Host
from certfan.defaults import STATUS_CRIT_DAYS

if TYPE_CHECKING:
    from certfan.state.deploy import HostDeploy


def allowed(limit: int | str, hosts: int) -> int:
    """How many hosts ``limit`` (a count, or "p%" of ``hosts``, rounded down) tolerates."""
    if isinstance(limit, str):
        return math.floor(float(limit.rstrip("%")) * hosts / 100 + 1e-9)
    return limit


def retried_first(hosts: Sequence[Host], recorded: Mapping[str, HostDeploy]) -> tuple[Host, ...]:
    """Hosts whose last run failed first (in config order), then the others."""
    failed = [h for h in hosts if h.name in recorded and recorded[h.name].last_error]
    return (*failed, *(h for h in hosts if h not in failed))


def hold_forward_reason(
    previous: str | None,
    revoked: Mapping[str, str],
    not_after: datetime | None,
    now: datetime,
    crit_days: float = STATUS_CRIT_DAYS,
) -> str | None:
    """Why a host must not be rolled back to ``previous`` (None: it may)."""
    version = Path(previous).name if previous else None
    if version is None:
        return None
    if version in revoked:
        return f"the previous version {version} was revoked ({revoked[version]})"
    if not_after is not None:
        days = (not_after - now).total_seconds() / 86400
        if days < crit_days:
            return (f"the previous version {version} expires in {days:.1f} days "
                    f"(within {crit_days:g})")
    return None
