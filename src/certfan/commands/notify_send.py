"""What a notification looks like on the wire, and its delivery (see certfan.commands.notify).

:func:`send` delivers one :class:`Notice` to the entries that want its event,
all at once under one deadline, and returns a :class:`Delivery` for each
channel; it never raises. A webhook URL is a secret: logs and deliveries name
it by scheme and host only (``redact_url``).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from certfan.config.model import Notifier
from certfan.config.notify import redact_url
from certfan.errors import CertfanError

log = logging.getLogger(__name__)

SCHEMA = 1
DEADLINE = 15.0  # seconds for all entries together, whatever their own timeouts
MAX_ITEMS = 50  # lines in a chat message; the certfan JSON carries all
MAX_DETAIL = 300
SEVERITY = {"failed": "critical", "halted": "critical", "expiring": "warning"}


@dataclass(frozen=True)
class Item:
    """One line of the news: a certificate, a host, what happened."""

    cert: str | None = None
    host: str | None = None
    version: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class Notice:
    event: str  # failed | halted | expiring
    command: str  # renew | push | reissue | rollback | status
    summary: str
    items: tuple[Item, ...] = ()


@dataclass(frozen=True)
class Delivery:
    notifier: str
    channel: str  # "webhook https://hooks.slack.com/…" or "command /usr/bin/mail"
    ok: bool
    error: str | None = None


# ---------------------------------------------------------------- what is sent


def payload(notice: Notice, now: datetime | None = None, origin: str | None = None
            ) -> dict[str, Any]:
    when = (now or datetime.now(UTC)).astimezone(UTC)
    return {
        "certfan": SCHEMA,
        "event": notice.event,
        "command": notice.command,
        "severity": SEVERITY.get(notice.event, "warning"),
        "summary": notice.summary,
        "origin": origin or socket.gethostname(),
        "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "items": [{"cert": i.cert, "host": i.host, "version": i.version, "detail": i.detail}
                  for i in notice.items],
    }


def text(notice: Notice, origin: str | None = None) -> str:
    lines = [f"[{SEVERITY.get(notice.event, 'warning')}] {notice.summary}"
             + (f" (on {origin})" if origin else "")]
    for i in notice.items[:MAX_ITEMS]:
        subject = "/".join(x for x in (i.cert, i.host) if x)
        lines.append(f"- {subject}: {i.detail}" if subject else f"- {i.detail}")
    if len(notice.items) > MAX_ITEMS:
        lines.append(f"- ... and {len(notice.items) - MAX_ITEMS} more")
    return "\n".join(lines)


def body(fmt: str, notice: Notice, now: datetime | None = None,
         origin: str | None = None) -> bytes:
    doc = payload(notice, now, origin)
    message = text(notice, doc["origin"])
    shaped: dict[str, Any] = {
        "certfan": doc,
        "slack": {"text": message},
        "discord": {"content": message[:2000]},  # Discord refuses longer content
        "matrix": {"text": message, "msgtype": "m.text"},
    }[fmt]
    return json.dumps(shaped).encode()


# ---------------------------------------------------------------- delivery

Post = Callable[[str, bytes, float], None]


def http_post(url: str, data: bytes, timeout: float) -> None:
    """POST JSON; any non-2xx or transport failure raises CertfanError (URL not named)."""
    import urllib.error  # here: status imports this module and rarely sends
    import urllib.request

    request = urllib.request.Request(
        url, data=data, method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "certfan"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read(65536)
    except urllib.error.HTTPError as exc:
        raise CertfanError(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CertfanError(str(reason).replace(url, redact_url(url))) from None


def _webhook_target(n: Notifier) -> str:
    if n.webhook:
        return n.webhook
    if n.webhook_file is None:
        raise CertfanError("no webhook configured")
    try:
        return n.webhook_file.read_text().strip()
    except OSError as exc:
        raise CertfanError(f"{n.webhook_file}: cannot read: {exc.strerror}") from None


def _run_command(n: Notifier, notice: Notice, data: bytes) -> None:
    env = {
        **os.environ,
        "CERTFAN_EVENT": notice.event,
        "CERTFAN_COMMAND": notice.command,
        "CERTFAN_SEVERITY": SEVERITY.get(notice.event, "warning"),
        "CERTFAN_SUMMARY": notice.summary,
    }
    try:
        done = subprocess.run(list(n.command), input=data, env=env, capture_output=True,
                              timeout=n.timeout, check=False)
    except subprocess.TimeoutExpired:
        raise CertfanError(f"no exit within {n.timeout:g}s (killed)") from None
    except OSError as exc:
        raise CertfanError(exc.strerror or str(exc)) from None
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise CertfanError(f"exit status {done.returncode}" + (f": {tail[0][:200]}"
                                                                 if tail[0] else ""))


def _jobs(n: Notifier, notice: Notice, now: datetime, origin: str,
          post: Post) -> list[tuple[str, Callable[[], None]]]:
    jobs: list[tuple[str, Callable[[], None]]] = []
    if n.webhook or n.webhook_file:
        shown = redact_url(n.webhook) if n.webhook else f"from {n.webhook_file}"
        data = body(n.format, notice, now, origin)

        def send_webhook() -> None:
            post(_webhook_target(n), data, n.timeout)

        jobs.append((f"webhook {shown}", send_webhook))
    if n.command:
        data = body("certfan", notice, now, origin)
        jobs.append((f"command {n.command[0]}", lambda: _run_command(n, notice, data)))
    return jobs


def send(notifiers: Sequence[Notifier], notice: Notice, *, post: Post = http_post,
         now: datetime | None = None, deadline: float = DEADLINE) -> list[Delivery]:
    """Deliver ``notice`` to every entry that wants its event, all at once; never raises."""
    now = now or datetime.now(UTC)
    origin = socket.gethostname()
    wanted = [n for n in notifiers if notice.event in n.on]
    results: dict[int, Delivery] = {}
    threads: list[tuple[int, str, str, threading.Thread]] = []
    lock = threading.Lock()
    for n in wanted:
        for channel, job in _jobs(n, notice, now, origin, post):
            index = len(threads)

            def work(index: int = index, n: Notifier = n, channel: str = channel,
                     job: Callable[[], None] = job) -> None:
                try:
                    job()
                    outcome = Delivery(n.name, channel, True)
                except CertfanError as exc:
                    outcome = Delivery(n.name, channel, False, str(exc))
                except Exception as exc:  # a notification never breaks the run; logged below
                    outcome = Delivery(n.name, channel, False, f"{type(exc).__name__}")
                with lock:
                    results[index] = outcome

            thread = threading.Thread(target=work, name=f"notify-{n.name}", daemon=True)
            threads.append((index, n.name, channel, thread))
            thread.start()
    end = time.monotonic() + deadline
    deliveries = []
    for index, name, channel, thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
        with lock:
            outcome = results.get(index) or Delivery(name, channel, False,
                                                    f"not done within {deadline:g}s")
        deliveries.append(outcome)
        if outcome.ok:
            log.info("notify %s: %s: sent %s", name, channel, notice.event)
        else:
            log.warning("notify %s: %s: could not deliver %s: %s", name, channel,
                        notice.event, outcome.error)
    return deliveries
