"""status --prometheus: the report as a node_exporter textfile, written atomically.

Pure text from a :class:`certfan.commands.status.Report`; README lists the metrics.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from certfan.commands.status import Report
from certfan.errors import CertfanError
from certfan.state import fsutil


def _labels(**labels: str) -> str:
    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


def _stamp(when: datetime | None) -> str | None:
    return None if when is None else f"{when.timestamp():.3f}"


_METRICS = (
    ("certfan_served_cert_expiry_timestamp_seconds",
     "Not-after of the certificate a host serves for a name (unix time)."),
    ("certfan_served_cert_is_current",
     "1 if the host serves the store's current version for the name, else 0."),
    ("certfan_probe_success", "1 if the TLS handshake with the host for the name succeeded."),
    ("certfan_deployed_is_current",
     "1 if the host's live pointer names the current version, 0 if not; absent if unreadable."),
    ("certfan_host_readable", "1 if certfan could read the host's certificate directory."),
    ("certfan_status",
     "Monitoring state per host and certificate: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."),
    ("certfan_current_cert_expiry_timestamp_seconds",
     "Not-after of the store's current version of a certificate (unix time)."),
    ("certfan_last_renew_success_timestamp_seconds",
     "When certfan renew last finished without a failure (unix time)."),
    ("certfan_last_rollout_success_timestamp_seconds",
     "When a rollout last left every host of the certificate on its current version."),
    ("certfan_status_timestamp_seconds", "When this file was written (unix time)."),
)


def prometheus_text(report: Report) -> str:
    """The report in the Prometheus text exposition format (for node_exporter's textfile)."""
    samples: dict[str, list[str]] = {name: [] for name, _ in _METRICS}

    def add(metric: str, labels: dict[str, str], value: str | None) -> None:
        if value is not None:
            samples[metric].append(f"{metric}{_labels(**labels) if labels else ''} {value}")

    for c in report.checks:
        for s in c.served:
            where = {"host": c.host, "cert": c.cert, "name": s.name}
            add("certfan_probe_success", where, "0" if s.error else "1")
            if s.error is None:
                add("certfan_served_cert_expiry_timestamp_seconds", where, _stamp(s.not_after))
                if c.current_sha256 is not None:
                    add("certfan_served_cert_is_current", where,
                        "1" if s.sha256 == c.current_sha256 else "0")
        pair = {"host": c.host, "cert": c.cert}
        add("certfan_host_readable", pair, "0" if c.disk_error else "1")
        if c.disk_error is None and c.current is not None:
            add("certfan_deployed_is_current", pair, "1" if c.on_disk == c.current else "0")
        add("certfan_status", pair, str(c.state))
    for cert, when in sorted(report.current_expiry.items()):
        add("certfan_current_cert_expiry_timestamp_seconds", {"cert": cert}, _stamp(when))
    add("certfan_last_renew_success_timestamp_seconds", {},
        _stamp(report.history.renew_last_success) or "0")
    for cert, when in sorted(report.history.rollout_last_success.items()):
        add("certfan_last_rollout_success_timestamp_seconds", {"cert": cert}, _stamp(when))
    add("certfan_status_timestamp_seconds", {}, _stamp(report.now))
    lines = []
    for name, help_text in _METRICS:
        if samples[name]:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", *samples[name]]
    return "\n".join(lines) + "\n"


def write_prometheus(path: Path, report: Report) -> None:
    """Replace ``path`` atomically (node_exporter must never read half a file)."""
    try:
        fsutil.atomic_write(Path(path), prometheus_text(report).encode(), 0o644)
    except OSError as exc:
        raise CertfanError(f"{path}: cannot write the Prometheus textfile: "
                           f"{exc.strerror or exc}") from exc
