"""The configuration as frozen dataclasses: what every other part of certfan reads.

Built and validated once by :func:`certfan.config.load`; nothing downstream
re-checks a value.

The file format (see ``conf/example.toml`` for a commented example)::

    state_dir = "/var/lib/certfan"

    [acme]
    directory = "https://acme.example/directory"    # required
    email = "ops@example.org"                        # optional
    agree_tos = false
    account_key_type = "ec-p256"
    profile = "tlsserver"                            # optional
    caa_identities = ["letsencrypt.org"]             # optional (doctor's CAA check)
    ca_bundle = "/etc/certfan/ca.pem"                # optional
    eab = { kid = "...", hmac_key_file = "..." }     # optional

    [dns]
    method = "rfc2136"                               # or "lexicon", "hook"
    server = "127.0.0.1"
    port = 53
    tsig_key_name = "certfan."
    tsig_algorithm = "hmac-sha256"
    tsig_secret_file = "/etc/certfan/tsig.secret"
    propagation_timeout = 120.0
    poll_interval = 0.5
    nameservers = ["192.0.2.53", "192.0.2.54:5353"]   # optional
    resolvers = ["127.0.0.1:53"]                      # optional
    ns_port = 53
    hook = "/usr/local/lib/certfan/dns-hook"          # method = "hook"
    hook_timeout = 60.0                               # method = "hook"
    propagation_check = true                          # false: skip proving propagation
    provider = "cloudflare"                           # method = "lexicon"
    provider_options = { }                            # non-secret lexicon options
    credentials_env = { auth_token = "CF_API_TOKEN" } # option -> environment variable
    credentials_file = "/etc/certfan/lexicon.toml"    # option = "secret", mode 0600

    [rollout]
    canary = 1
    concurrency = 4
    failure_budget = 0
    rollback_on_halt = true
    connect_timeout = 10.0
    command_timeout = 60.0
    verify_timeout = 20.0

    [groups]
    cdn = ["cdn-frankfurt-1", "cdn-fremont-1"]

    [[hosts]]
    name = "cdn-frankfurt-1"
    address = "203.0.113.10"
    ...

    [[certificates]]
    name = "media"
    domains = ["media.example.org"]
    deploy_to = ["cdn"]                              # host or group names
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from certfan.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/certfan/certfan.toml")
CONFIG_ENV = "CERTFAN_CONFIG"
DEFAULT_STATE_DIR = Path("/var/lib/certfan")
MAX_CONFIG_BYTES = 1 << 20  # a config is a few KiB; refuse to slurp /dev/zero

KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")
TSIG_ALGORITHMS = (
    "hmac-sha256",
    "hmac-sha384",
    "hmac-sha512",
    "hmac-sha224",
    "hmac-sha1",
    "hmac-md5",
)
DNS_METHODS = ("rfc2136", "lexicon", "hook")
NOTIFY_EVENTS = ("failed", "halted", "expiring")
NOTIFY_FORMATS = ("certfan", "slack", "matrix", "discord")


@dataclass(frozen=True)
class Endpoint:
    """An address and port (a DNS server to poll or to update)."""

    address: str
    port: int

    def __str__(self) -> str:
        return (
            f"[{self.address}]:{self.port}"
            if ":" in self.address
            else f"{self.address}:{self.port}"
        )


@dataclass(frozen=True)
class AcmeConfig:
    directory: str
    email: str | None = None
    agree_tos: bool = False
    account_key_type: str = "ec-p256"
    profile: str | None = None
    # the CA's CAA domains, for doctor, when its directory has no meta.caaIdentities
    caa_identities: tuple[str, ...] = ()
    ca_bundle: Path | None = None
    eab: ExternalAccountBinding | None = None


@dataclass(frozen=True)
class DnsConfig:
    method: str = "rfc2136"
    server: str = "127.0.0.1"
    port: int = 53
    tsig_key_name: str | None = None
    tsig_algorithm: str = "hmac-sha256"
    tsig_secret_file: Path | None = None
    propagation_timeout: float = 120.0
    poll_interval: float = 0.5
    nameservers: tuple[Endpoint, ...] = ()
    resolvers: tuple[Endpoint, ...] = ()
    ns_port: int = 53
    hook: Path | None = None
    hook_timeout: float = 60.0
    propagation_check: bool = True  # false only skips proving the values are served
    provider: str | None = None  # method = "lexicon": a dns-lexicon provider name
    provider_options: tuple[tuple[str, str], ...] = ()  # non-secret, e.g. pdns_server
    credentials_file: Path | None = None  # TOML: option = "secret", 0600
    credentials_env: tuple[tuple[str, str], ...] = ()  # option -> environment variable


@dataclass(frozen=True)
class RolloutPolicy:
    canary: int = 1
    concurrency: int = 64  # a 50-host fleet in one wave; a thread and a socket per host
    failure_budget: int | str = 0  # rejected hosts tolerated: a count, or "10%" of the hosts
    max_unreachable: int | str = "50%"  # more unreachable than this: halt (our network?)
    rollback_on_halt: bool = True
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    verify_timeout: float = 20.0


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    port: int = 22
    user: str = "root"
    identity_file: Path | None = None
    known_hosts: Path | None = None
    root: str = "/etc/certfan"
    config_test: tuple[str, ...] = ("nginx", "-t")
    reload: tuple[str, ...] = ("systemctl", "reload", "nginx")
    probe_address: str | None = None
    probe_port: int = 443

    @property
    def probe(self) -> Endpoint:
        return Endpoint(self.probe_address or self.address, self.probe_port)


@dataclass(frozen=True)
class Certificate:
    name: str
    domains: tuple[str, ...]
    key_type: str = "ec-p256"
    reuse_key: bool = False
    deploy_to: tuple[str, ...] = ()  # as written: host and group names
    hosts: tuple[str, ...] = ()  # resolved: host names, in config order
    # [certificates.rollout] merged over [rollout], key by key; None: [rollout] as is
    rollout: RolloutPolicy | None = None


@dataclass(frozen=True)
class Notifier:
    """One [[notify]] entry (see certfan.config.notify)."""

    name: str
    webhook: str | None = None  # a secret: show only notify.redact_url(webhook)
    webhook_file: Path | None = None  # a file holding the URL instead
    format: str = "certfan"
    command: tuple[str, ...] = ()
    on: tuple[str, ...] = NOTIFY_EVENTS
    timeout: float = 5.0


@dataclass(frozen=True)
class Config:
    path: Path
    state_dir: Path
    acme: AcmeConfig
    dns: DnsConfig
    rollout: RolloutPolicy
    hosts: dict[str, Host] = field(default_factory=dict)  # in file order
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    certificates: dict[str, Certificate] = field(default_factory=dict)
    notify: tuple[Notifier, ...] = ()

    def rollout_for(self, cert: str) -> RolloutPolicy:
        """The rollout policy of one certificate: its own [certificates.rollout] or [rollout]."""
        own = self.certificates[cert].rollout if cert in self.certificates else None
        return own or self.rollout

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise ConfigError(str(self.path), f"unknown host {name!r}", key="hosts") from None

    def certificate(self, name: str) -> Certificate:
        try:
            return self.certificates[name]
        except KeyError:
            raise ConfigError(
                str(self.path), f"unknown certificate {name!r}", key="certificates"
            ) from None


@dataclass(frozen=True)
class ExternalAccountBinding:
    """RFC 8555 section 7.3.4: the CA's key id and the file holding its base64url MAC key."""

    kid: str
    hmac_key_file: Path
