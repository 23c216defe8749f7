"""The proof: the host presents the expected leaf for every name, asked all at once.

One round is every SNI of the certificate handshaken in parallel (fanout). On
a host that settled after its reload (scripts.py: the old workers no longer
hold the listener) one right round is the proof; otherwise the new leaf must
be seen in UNSETTLED_ROUNDS rounds in a row. Each handshake completes only with
the key of the leaf it presents, so a mismatched key and certificate never
passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from certfan.config import Host, RolloutPolicy
from certfan.deploy.fanout import fan_out
from certfan.deploy.model import Prober, StepFailed
from certfan.deploy.probe import sha256_hex
from certfan.errors import ProbeError

# Without a settled host (no `ss`, or another server than nginx) old workers may
# still answer right after a reload: then the new leaf must be seen twice in a row.
UNSETTLED_ROUNDS = 2
PROVE_SPACING = 0.05


@dataclass
class Prover:
    host: Host
    snis: tuple[str, ...]
    policy: RolloutPolicy
    prober: Prober
    emit: Callable[..., None]  # emit(step, status, detail="")
    log: logging.LoggerAdapter  # type: ignore[type-arg]

    def prove(self, expect: str, *, settled: bool, step: str = "prove",
              version: str | None = None, names: dict[str, str | None] | None = None) -> None:
        """Every SNI at once presents ``expect`` (twice in a row when not settled), in time."""
        self.emit(step, "start", f"sha256 {expect[:16]}...")
        deadline = time.monotonic() + self.policy.verify_timeout
        needed = 1 if settled else UNSETTLED_ROUNDS
        streak, pause, rounds, last_bad = 0, PROVE_SPACING, 0, ""
        known = {**(names or {}), **({expect: version} if version else {})}
        while True:
            rounds += 1
            bad = self.round(deadline, expect, known)
            if bad is None:
                streak += 1
                if streak >= needed:
                    break
            else:
                streak, last_bad = 0, bad
                pause = min(pause * 2, 1.0)
            if time.monotonic() + pause > deadline:
                message = f"{last_bad or 'not stable'} (for {self.policy.verify_timeout:g}s)"
                self.emit(step, "failed", message)
                raise StepFailed(step, message)
            time.sleep(pause if bad else PROVE_SPACING)  # bounded by the deadline above
        self.log.debug("%s: proven in %d round(s), settled %s", self.host.name, rounds,
                       settled, extra={"step": step})
        self.emit(step, "ok")

    def round(self, deadline: float, expect: str,
              names: dict[str, str | None] | None = None) -> str | None:
        """None when every SNI, asked at once, shows ``expect``; else what was seen,
        naming versions where they are known (``names``: sha256 -> version), not only hashes."""
        known = names or {}

        def label(sha: str) -> str:
            version = known.get(sha)
            return f"{version} (sha256 {sha[:16]}...)" if version else f"sha256 {sha[:16]}..."

        timeout = max(0.1, min(deadline - time.monotonic(), self.policy.connect_timeout))

        def ask(sni: str) -> str:
            return sha256_hex(self.prober(self.host.probe, sni, timeout))

        done = fan_out(self.snis, ask, concurrency=len(self.snis), deadline=timeout + 1)
        for sni, seen in zip(self.snis, done, strict=True):
            if isinstance(seen.error, ProbeError):
                return str(seen.error)
            if not seen.ok:
                return f"{self.host.probe} (SNI {sni}): {seen.why(timeout + 1)}"
            if seen.value != expect:
                return (f"{self.host.probe} (SNI {sni}) serves {label(seen.value or '')}, "
                        f"expected {label(expect)}")
        return None
