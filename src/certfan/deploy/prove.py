"""The proof: the host presents the expected leaf for every name, asked all at once.

One round is every SNI of the certificate handshaken in parallel (fanout). A
new version must be served whole: the handshake presents exactly the deployed
fullchain.pem, leaf and intermediates in order (many clients reject a leaf
without its intermediate). A rollback's proof asks for the old leaf only: it
goes back to what the host served, as it served it. On
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
from certfan.deploy.probe import chain_ders, leaf_and_chain, sha256_hex
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
              version: str | None = None, names: dict[str, str | None] | None = None,
              fullchain: bytes | None = None) -> None:
        """Every SNI at once presents ``expect`` (twice in a row when not settled), in time;
        with ``fullchain`` (PEM), exactly that chain."""
        self.emit(step, "start", f"sha256 {expect[:16]}...")
        deadline = time.monotonic() + self.policy.verify_timeout
        needed = 1 if settled else UNSETTLED_ROUNDS
        streak, pause, rounds, last_bad = 0, PROVE_SPACING, 0, ""
        known = {**(names or {}), **({expect: version} if version else {})}
        while True:
            rounds += 1
            bad = self.round(deadline, expect, known, fullchain)
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
              names: dict[str, str | None] | None = None,
              fullchain: bytes | None = None) -> str | None:
        """None when every SNI, asked at once, shows ``expect`` (and, given ``fullchain``,
        exactly that chain); else what was seen, naming versions where they are known
        (``names``: sha256 -> version), not only hashes."""
        known = names or {}
        whole = chain_ders(fullchain) if fullchain else ()

        def label(sha: str) -> str:
            version = known.get(sha)
            return f"{version} (sha256 {sha[:16]}...)" if version else f"sha256 {sha[:16]}..."

        timeout = max(0.1, min(deadline - time.monotonic(), self.policy.connect_timeout))

        def ask(sni: str) -> tuple[str, tuple[bytes, ...]]:
            leaf, chain = leaf_and_chain(self.prober(self.host.probe, sni, timeout))
            return sha256_hex(leaf), chain

        done = fan_out(self.snis, ask, concurrency=len(self.snis), deadline=timeout + 1)
        for sni, seen in zip(self.snis, done, strict=True):
            if isinstance(seen.error, ProbeError):
                return str(seen.error)
            if not seen.ok or seen.value is None:
                return f"{self.host.probe} (SNI {sni}): {seen.why(timeout + 1)}"
            sha, chain = seen.value
            if sha != expect:
                return (f"{self.host.probe} (SNI {sni}) serves {label(sha)}, "
                        f"expected {label(expect)}")
            # A prober that tells the leaf alone (bytes) has no chain to compare.
            if whole and chain and chain != whole:
                from certfan.issue import crypto  # only a chain that differs needs parsing

                why = crypto.same_chain(chain, fullchain or b"") or "serves another chain"
                return (f"{self.host.name} {self.host.probe} (SNI {sni}): not the deployed "
                        f"fullchain.pem of {label(expect)}: {why}")
        return None
