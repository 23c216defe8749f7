"""The lexicon method: a DNS provider's HTTP API through dns-lexicon (``certfan[lexicon]``).

The only module importing dns-lexicon. certfan has already followed the
CNAME chain and found the zone by its SOA through the configured resolvers
(``dnslookup``); the provider is handed that zone. lexicon's own ``Client``
is not used: it would find the zone itself, by the system resolver or the
public suffix list (tldextract, which downloads the list on first use), and
certfan makes no request but to the configured DNS servers and the provider;
the few providers that call ``tldextract.extract`` themselves get its bundled
snapshot of the list (:func:`offline_suffix_list`), never a download.

Credentials come from ``dns.credentials_file`` (TOML, ``auth_token = "..."``,
mode 0600) and the environment variables ``dns.credentials_env`` names; they
are never logged and never part of an error (values are masked in messages
from the provider's HTTP library). Providers log requests and responses at
DEBUG, some with credentials: lexicon's loggers stay at INFO.

Provider calls have no timeout of their own (lexicon calls ``requests``
without one); each runs in a worker thread joined with ``PROVIDER_TIMEOUT``.
"""

from __future__ import annotations

import importlib
import logging
import os
import stat
import threading
import tomllib
from collections.abc import Callable

import tldextract  # dns-lexicon's own dependency; configured here, never asked by certfan
from lexicon.config import ConfigResolver
from lexicon.interfaces import Provider

from certfan.config import DnsConfig
from certfan.errors import DnsError

log = logging.getLogger(__name__)
logging.getLogger("lexicon").setLevel(logging.INFO)

PROVIDER_TIMEOUT = 60.0


def offline_suffix_list() -> None:
    """Make ``tldextract.extract`` (which some providers call) use its bundled snapshot.

    By default its first use downloads the public suffix list; with no URLs it
    never fetches (and with no cache directory it writes nothing).
    """
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(
        cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)


def read_credentials(cfg: DnsConfig) -> dict[str, str]:
    """Provider options holding secrets: the file's, then the named environment variables."""
    found: dict[str, str] = {}
    path = cfg.credentials_file
    if path is not None:
        try:
            mode = path.stat().st_mode
            doc = tomllib.loads(path.read_text())
        except OSError as exc:
            raise DnsError(f"{path}: cannot read lexicon credentials: {exc.strerror} "
                           "(dns.credentials_file)") from None
        except tomllib.TOMLDecodeError:
            raise DnsError(f"{path}: not TOML (option = \"value\" lines) "
                           "(dns.credentials_file)") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("%s: credentials file is readable by group or others (mode %o); "
                        "chmod 600", path, stat.S_IMODE(mode))
        for option, value in doc.items():
            if not isinstance(value, str):
                raise DnsError(f"{path}: {option}: expected a string (dns.credentials_file)")
            found[option] = value
    for option, env in cfg.credentials_env:
        value = os.environ.get(env, "")
        if not value:
            raise DnsError(f"environment variable {env} is not set "
                           f"(dns.credentials_env.{option})")
        found[option] = value
    return found


class LexiconDns:
    """TXT values added and removed through one lexicon provider, one zone at a time."""

    def __init__(self, cfg: DnsConfig, ttl: int = 60, timeout: float = PROVIDER_TIMEOUT):
        if not cfg.provider:
            raise DnsError('dns.method = "lexicon" needs dns.provider')
        self.name = cfg.provider
        self.ttl, self.timeout = ttl, timeout
        credentials = read_credentials(cfg)
        self._options = {**dict(cfg.provider_options), **credentials}
        self._secrets = [v for v in credentials.values() if v]
        try:
            module = importlib.import_module(f"lexicon._private.providers.{self.name}")
        except ImportError as exc:
            raise DnsError(f"lexicon provider {self.name!r} cannot be loaded ({exc.name} "
                           f"missing): pip install 'dns-lexicon[{self.name}]' (dns.provider)"
                           ) from None
        self._cls: type[Provider] = module.Provider
        offline_suffix_list()
        self._zones: dict[str, Provider] = {}
        self._lock = threading.Lock()  # providers keep per-zone state; one call at a time

    def add(self, fqdn: str, value: str, zone: str | None = None) -> None:
        self._call("add TXT", fqdn, zone,
                   lambda p: p.create_record("TXT", fqdn.rstrip("."), value))

    def remove(self, fqdn: str, value: str, zone: str | None = None) -> None:
        # With content: that one value only (lexicon's delete_record contract).
        self._call("remove TXT", fqdn, zone,
                   lambda p: p.delete_record(None, "TXT", fqdn.rstrip("."), value))

    def _provider(self, zone: str) -> Provider:
        if zone not in self._zones:
            resolver = ConfigResolver().with_dict({  # type: ignore[no-untyped-call]
                "provider_name": self.name, "domain": zone.rstrip("."), "ttl": self.ttl,
                self.name: dict(self._options)})
            provider = self._cls(resolver)
            provider.authenticate()
            self._zones[zone] = provider
        return self._zones[zone]

    def _call(self, what: str, fqdn: str, zone: str | None,
              action: Callable[[Provider], object]) -> None:
        if zone is None:
            raise DnsError(f"{what} at {fqdn}: no zone found for it")
        where = f"lexicon {self.name}, zone {zone.rstrip('.')}"

        def work() -> None:
            with self._lock:
                action(self._provider(zone))

        try:
            _with_deadline(work, self.timeout)
        except TimeoutError:
            raise DnsError(f"{what} at {fqdn}: {where}: no answer after {self.timeout:g}s"
                           ) from None
        except Exception as exc:  # providers raise anything: translate, masked, at one place
            raise DnsError(f"{what} at {fqdn}: {where}: {self._explain(exc)}") from None
        log.debug("%s at %s: %s: ok", what, fqdn, where)

    def _explain(self, exc: Exception) -> str:
        # requests.HTTPError, by duck type: requests is the ACME module's import.
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return (f"the provider refused the credentials (HTTP {status}): check "
                    "dns.credentials_file / dns.credentials_env")
        if status == 404:
            return "HTTP 404: the provider does not know this zone (or dns.provider_options)"
        return f"HTTP {status}" if status else self._mask(_text(exc))

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return text


def _with_deadline(work: Callable[[], None], timeout: float) -> None:
    """Run ``work`` in a daemon thread; its exception raised here, TimeoutError at ``timeout``."""
    box: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # handed to the caller's thread
            box.append(exc)

    thread = threading.Thread(target=run, name="certfan-lexicon", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError
    if box:
        raise box[0]


def _text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


