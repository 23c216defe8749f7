"""ACME (RFC 8555) against one CA: account, order, DNS-01, finalize, ARI, revoke.

The only module importing ``acme``, ``josepy`` and ``requests``; their errors
become :class:`AcmeError` / :class:`RateLimitedError` naming what was being
done, for which domain, and what the CA said. We use ``ClientNetwork`` (JWS,
nonces, HTTP) and the messages, and drive the order ourselves: the library's
pollers sleep a fixed second per round and cannot send ``replaces`` (RFC 9773
section 5). What is kept on disk about the CA is ``acmestate``'s;
:func:`client_for` is the one way to make a client for a configuration.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
from acme import challenges, messages
from acme import errors as acme_errors
from acme.client import ClientNetwork, ClientV2
from josepy import errors as jose_errors
from josepy import json_util, jwa, jwk

from certfan import __version__
from certfan.config import AcmeConfig, Config
from certfan.errors import AcmeError, CertfanError, RateLimitedError
from certfan.issue import crypto, polling
from certfan.issue.acmestate import DIRECTORY_CACHE_TTL, CaState, choose_profile, read_secret
from certfan.issue.due import AriWindow, retry_after_seconds

if TYPE_CHECKING:  # the DNS step is handed in; its module (and dnspython) is not needed here
    from certfan.issue.dns01 import Dns01Publisher as Dns01Publisher

log = logging.getLogger(__name__)

USER_AGENT = f"certfan/{__version__}"
NETWORK_TIMEOUT = 30
ORDER_TIMEOUT = 300.0  # whole order: authorizations, finalize, download
NONCE_ATTEMPTS = 6  # badNonce is retryable (RFC 8555 section 6.5); Pebble rejects 5%
_POLL_START, _POLL_MAX = 0.1, 2.0


@dataclass(frozen=True)
class Issued:
    fullchain_pem: bytes
    order_url: str


@dataclass(frozen=True)
class _Account:
    uri: str
    key: jwk.JWK
    alg: jwa.JWASignature


class _NewOrder(messages.NewOrder):
    replaces: str | None = json_util.field("replaces", omitempty=True)  # RFC 9773 section 5


class _Network(ClientNetwork):
    """ClientNetwork that retries badNonce more than once and keeps the last response."""

    last_response: requests.Response | None = None

    def post(self, *args: Any, **kwargs: Any) -> requests.Response:
        for attempt in range(1, NONCE_ATTEMPTS + 1):
            try:
                return self._post_once(*args, **kwargs)
            except (messages.Error, acme_errors.BadNonce) as err:
                if attempt == NONCE_ATTEMPTS or getattr(err, "code", "badNonce") != "badNonce":
                    raise
                log.debug("CA rejected our nonce, retrying (%d/%d)", attempt, NONCE_ATTEMPTS)
        raise AssertionError("unreachable")

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        self.last_response = super()._send_request(method, url, *args, **kwargs)
        return self.last_response


class AcmeClient:
    """One CA and one account. Thread-safe: every order gets its own network."""

    def __init__(self, cfg: AcmeConfig, state_dir: Path, *, order_timeout: float = ORDER_TIMEOUT,
                 network_timeout: int = NETWORK_TIMEOUT, directory_cache_ttl: float = 0.0):
        self.cfg, self.state_dir = cfg, Path(state_dir)
        self.order_timeout, self.network_timeout = order_timeout, network_timeout
        self.directory_cache_ttl = directory_cache_ttl  # seconds; 0: always ask the CA
        self.ca_state = CaState(self.state_dir, cfg.directory)
        self._lock = threading.Lock()
        self._directory: messages.Directory | None = None
        self._account: _Account | None = None

    def directory(self) -> messages.Directory:
        with self._lock:
            if self._directory is None:
                net = self._network()
                with _errors(f"ACME directory {self.cfg.directory}", net, self.cfg):
                    self._directory = ClientV2.get_directory(self.cfg.directory, net)
                if self.directory_cache_ttl > 0:
                    self.ca_state.remember_ari(_url_in(self._directory, "renewalInfo"))
            return self._directory

    @property
    def supports_ari(self) -> bool:
        if self.directory_cache_ttl > 0 and self._directory is None:
            cached = self.ca_state.cached_ari(self.directory_cache_ttl)
            if cached is not None:
                return cached
        return self._url("renewalInfo") is not None

    def profiles(self) -> dict[str, str]:
        return dict(getattr(self.directory().meta, "profiles", None) or {})

    def _url(self, name: str) -> str | None:
        return _url_in(self.directory(), name)

    def _network(self, account: _Account | None = None, key: jwk.JWK | None = None,
                 alg: jwa.JWASignature = jwa.RS256) -> _Network:
        regr = messages.RegistrationResource(uri=account.uri, body=messages.Registration()) \
            if account else None
        verify = str(self.cfg.ca_bundle) if self.cfg.ca_bundle else True
        return _Network(key=account.key if account else key, account=regr,
                        alg=account.alg if account else alg, verify_ssl=verify,  # type: ignore[arg-type]
                        user_agent=USER_AGENT, timeout=self.network_timeout)

    def account_dir(self) -> Path:
        return self.ca_state.dir

    def account(self) -> _Account:
        """The account for this CA: loaded and confirmed with the CA, or created."""
        directory = self.directory()
        with self._lock:
            if self._account is None:
                self._account = self._load_or_create(directory)
            return self._account

    def _load_or_create(self, directory: messages.Directory) -> _Account:
        files = self.ca_state.load_account(self.cfg.account_key_type)
        key, alg = _jwk(crypto.load_key(files.key_pem))
        client = ClientV2(directory, self._network(key=key, alg=alg))
        uri = self._confirm(client, files.uri) if files.uri else None
        if not uri:
            uri = self._register(client, directory, key)
            self.ca_state.record_account(uri)
        return _Account(uri=uri, key=key, alg=alg)

    def _confirm(self, client: ClientV2, uri: str) -> str | None:
        regr = messages.RegistrationResource(uri=uri, body=messages.Registration())
        with _errors("ACME account lookup", client.net, self.cfg):
            try:
                found = client.query_registration(regr)
            except messages.Error as err:
                if err.code != "accountDoesNotExist":
                    raise
                log.warning("the CA no longer knows account %s; registering again", uri)
                return None
        log.info("using ACME account %s", found.uri)
        return str(found.uri)

    def _register(self, client: ClientV2, directory: messages.Directory, key: jwk.JWK) -> str:
        eab = None
        if self.cfg.eab is not None:
            eab = _eab(self.cfg, key, directory)
        elif client.external_account_required():
            raise AcmeError(f"{self.cfg.directory}: the CA requires external account binding; "
                            "set acme.eab")
        reg = messages.NewRegistration.from_data(
            email=self.cfg.email, terms_of_service_agreed=self.cfg.agree_tos,
            external_account_binding=eab)
        try:
            with _errors("ACME account registration", client.net, self.cfg):
                try:
                    regr = client.new_account(reg)
                except acme_errors.ConflictError as exc:  # this key is registered already
                    log.info("ACME account key already registered: %s", exc.location)
                    return str(exc.location)
        except AcmeError as exc:
            tos = getattr(directory.meta, "terms_of_service", None)
            if tos and not self.cfg.agree_tos:
                raise AcmeError(f"{exc} (the CA's terms are at {tos}; set acme.agree_tos = true "
                                "once you agree)") from exc
            raise
        log.info("registered ACME account %s", regr.uri)
        return str(regr.uri)

    def order(self, names: Sequence[str], csr_pem: bytes, dns: Dns01Publisher, *,
              replaces: str | None = None, cancel: threading.Event | None = None) -> Issued:
        """Order ``names``, answer DNS-01, finalize with ``csr_pem``; the fullchain."""
        account = self.account()
        net = self._network(account)
        client = ClientV2(self.directory(), net)
        what = f"order for {', '.join(names)}"
        deadline = time.monotonic() + self.order_timeout
        with _errors(what, net, self.cfg):
            order, url = self._new_order(client, names, replaces)
            log.info("%s: %s", what, url)
            authzs = [(u, messages.Authorization.from_json(_post_as_get(client, u).json()))
                      for u in order.authorizations]
            todo = [(u, a, _dns01(a)) for u, a in authzs if a.status != messages.STATUS_VALID]
            records = [(c.chall.validation_domain_name(a.identifier.value),
                        c.chall.validation(account.key)) for _, a, c in todo]
            if todo:
                with dns.published(records, cancel):
                    for _, _, challb in todo:
                        client.answer_challenge(challb, challb.chall.response(account.key))
                    for authz_url, authz, _ in todo:
                        self._wait_authorization(client, authz_url, _domain(authz), deadline,
                                                 cancel)
            fullchain = self._finalize(client, order, url, csr_pem, deadline, cancel)
        return Issued(fullchain_pem=fullchain.encode(), order_url=url)

    def _new_order(self, client: ClientV2, names: Sequence[str],
                   replaces: str | None) -> tuple[messages.Order, str]:
        identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=n) for n in names]
        profile = choose_profile(self.cfg.profile, self.profiles()) if self.cfg.profile else None
        new = _NewOrder(identifiers=identifiers, profile=profile, replaces=replaces)
        try:
            response = _post(client, client.directory["newOrder"], new)
        except (acme_errors.ConflictError, messages.Error) as exc:
            code = getattr(exc, "code", None)
            if replaces is None or code not in (None, "alreadyReplaced", "malformed", "conflict"):
                raise
            # The old certificate was already replaced (a run that crashed before
            # the flip) or the CA dislikes the field: order without it.
            log.warning("CA refused replaces=%s (%s); ordering without it", replaces, exc)
            new = _NewOrder(identifiers=identifiers, profile=profile)
            response = _post(client, client.directory["newOrder"], new)
        return messages.Order.from_json(response.json()), response.headers["Location"]

    def _wait_authorization(self, client: ClientV2, url: str, domain: str, deadline: float,
                            cancel: threading.Event | None) -> None:
        for response in _polls(client, url, deadline, cancel, f"validation of {domain}"):
            authz = messages.Authorization.from_json(response.json())
            if authz.status == messages.STATUS_VALID:
                log.info("%s: validated", domain)
                return
            if authz.status not in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
                problems = [str(_problem_text(c.error)) for c in authz.challenges if c.error]
                raise AcmeError(f"validation of {domain} failed: "
                                + ("; ".join(problems) or f"authorization {authz.status}"))

    def _finalize(self, client: ClientV2, order: messages.Order, url: str, csr_pem: bytes,
                  deadline: float, cancel: threading.Event | None) -> str:
        csr = crypto.load_csr(csr_pem)
        _post(client, order.finalize, messages.CertificateRequest(csr=csr))
        for response in _polls(client, url, deadline, cancel, f"finalizing {url}"):
            order = messages.Order.from_json(response.json())
            if order.status == messages.STATUS_VALID and order.certificate:
                return _post_as_get(client, order.certificate).text
            if order.status == messages.STATUS_INVALID:
                detail = _problem_text(order.error) if order.error else "no detail"
                raise AcmeError(f"order {url} became invalid: {detail}")
        raise AssertionError("unreachable")

    def renewal_info(self, cert_pem: bytes) -> AriWindow | None:
        """The CA's suggested renewal window (RFC 9773), None if it has no ARI."""
        base = self._url("renewalInfo")
        if base is None:
            return None
        cert_id = crypto.ari_cert_id(cert_pem)
        net = self._network()
        with _errors(f"renewal info {cert_id}", net, self.cfg):
            response = net.get(f"{base.rstrip('/')}/{cert_id}")
            info = messages.RenewalInfo.from_json(response.json())
        window = info.suggested_window
        return AriWindow(start=window.start.astimezone(UTC), end=window.end.astimezone(UTC),
                         retry_after=_retry_after(response),
                         explanation_url=response.json().get("explanationURL"))

    def revoke(self, cert_pem: bytes, reason: int = 0, *, key_pem: bytes | None = None) -> None:
        """Revoke (RFC 8555 section 7.6; reason code per RFC 5280 section 5.3.1).

        Signed with the account key, or with ``key_pem``, the certificate's own
        key: that proves possession of the key, works for a certificate another
        account ordered, and is what CAs ask for a keyCompromise revocation.
        """
        cert = crypto.load_cert(cert_pem)
        net = (self._network(self.account()) if key_pem is None
               else self._network(None, *_jwk(crypto.load_key(key_pem))))
        with _errors(f"revoking serial {cert.serial_number:x}", net, self.cfg):
            ClientV2(self.directory(), net).revoke(cert, reason)
        log.info("revoked certificate serial %x (reason %d, signed with the %s key)",
                 cert.serial_number, reason, "account" if key_pem is None else "certificate")


def _post(client: ClientV2, url: str, obj: Any) -> requests.Response:
    return client.net.post(url, obj, new_nonce_url=client.directory["newNonce"])


def _url_in(directory: messages.Directory, name: str) -> str | None:
    try:
        return str(directory[name])
    except KeyError:
        return None


def _post_as_get(client: ClientV2, url: str) -> requests.Response:
    return _post(client, url, None)


def _polls(client: ClientV2, url: str, deadline: float, cancel: threading.Event | None,
           what: str) -> Iterator[requests.Response]:
    """POST-as-GET ``url`` until the caller stops; short first waits, Retry-After honoured."""
    response = _post_as_get(client, url)
    yield response
    for wait, left in polling.backoff(deadline, _POLL_START, _POLL_MAX):
        hinted = _retry_after(response)
        polling.pause(min(hinted if hinted is not None else wait, left), cancel, what)
        response = _post_as_get(client, url)
        yield response
    raise AcmeError(f"{what}: no result before the order deadline")


def _dns01(authz: messages.Authorization) -> messages.ChallengeBody:
    for challb in authz.challenges:
        if isinstance(challb.chall, challenges.DNS01):
            return challb
    raise AcmeError(f"{_domain(authz)}: the CA offers no dns-01 challenge")


def _domain(authz: messages.Authorization) -> str:
    return ("*." if authz.wildcard else "") + authz.identifier.value


def _jwk(key: crypto.PrivateKey) -> tuple[jwk.JWK, jwa.JWASignature]:
    kind = crypto.key_type_of(key)
    if kind in ("ec-p256", "ec-p384"):
        return jwk.JWKEC(key=key), jwa.ES256 if kind == "ec-p256" else jwa.ES384
    if kind.startswith("rsa-"):
        return jwk.JWKRSA(key=key), jwa.RS256
    raise AcmeError(f"unsupported ACME account key type {kind}")


def _eab(cfg: AcmeConfig, key: jwk.JWK, directory: messages.Directory) -> dict[str, Any]:
    if cfg.eab is None:
        raise AcmeError("no acme.eab configured")
    path = cfg.eab.hmac_key_file
    try:
        return messages.ExternalAccountBinding.from_data(
            account_public_key=key.public_key(), kid=cfg.eab.kid,
            hmac_key=read_secret(path, "EAB HMAC key"), directory=directory)
    except (ValueError, jose_errors.Error):
        raise AcmeError(f"{path}: EAB HMAC key is not base64url") from None


def _retry_after(response: requests.Response | None) -> float | None:
    return retry_after_seconds(None if response is None else response.headers.get("Retry-After"))


def _problem_text(err: messages.Error) -> str:
    text = str(err.detail or err.description or err.typ)
    code = str(err.typ or "").removeprefix(messages.ERROR_PREFIX)
    return f"{text} ({code})" if code and code not in text else text


@contextmanager
def _errors(what: str, net: ClientNetwork | None, cfg: AcmeConfig) -> Iterator[None]:
    """Translate acme/josepy/requests errors; CertfanErrors pass through."""
    try:
        yield
    except CertfanError:
        raise
    except messages.Error as err:
        where = f" ({err.identifier.value})" if err.identifier else ""
        detail = f"{what}{where}: the CA said: {_problem_text(err)}"
        for sub in err.subproblems or ():
            detail += f"; {sub.identifier.value if sub.identifier else ''}: {_problem_text(sub)}"
        if err.code == "rateLimited":
            retry = _retry_after(getattr(net, "last_response", None))
            hint = f"; retry after {retry:.0f}s" if retry is not None else ""
            raise RateLimitedError(f"rate limited: {detail}{hint}", retry_after=retry) from err
        raise AcmeError(detail) from err
    except acme_errors.ConflictError as err:
        raise AcmeError(f"{what}: conflict at {err.location}") from err
    except acme_errors.Error as err:
        raise AcmeError(f"{what}: {err}") from err
    except requests.exceptions.SSLError as err:
        bundle = cfg.ca_bundle or "the system CA store"
        raise AcmeError(f"{what}: TLS verification of the CA failed (acme.ca_bundle: {bundle}): "
                        f"{err}") from err
    except requests.exceptions.RequestException as err:
        raise AcmeError(f"{what}: cannot reach the CA: {err}") from err
    except OSError as err:  # requests: an unreadable acme.ca_bundle
        raise AcmeError(f"{what}: {err}") from err
    except (jose_errors.Error, KeyError, ValueError) as err:
        raise AcmeError(f"{what}: unexpected answer from the CA: {err!r}") from err


def client_for(cfg: Config) -> AcmeClient:
    """The ACME client for ``cfg``'s CA (whether it offers ARI cached for a day)."""
    return AcmeClient(cfg.acme, cfg.state_dir, directory_cache_ttl=DIRECTORY_CACHE_TTL)
