"""FHIR server credentials: OAuth2 client credentials (a client secret, or SMART Backend Services'
``private_key_jwt``) with the access token refreshed before it expires and once on a 401; mutual TLS.

The token is an ``httpx.Auth``, so every request of ``HttpFhirStore`` carries a fresh one without the store
knowing how it was obtained. A token endpoint that refuses us is an outage for the operator (``AuthFailed``),
never a reason to dead-letter a message.
"""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from pathlib import Path
from typing import Generator
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from ...errors import AuthFailed, ConfigurationError, StoreUnavailable

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: refresh this long before ``expires_in`` runs out, so a request never leaves with a token about to expire
REFRESH_MARGIN_S = 60.0
#: SMART Backend Services: the assertion lives at most five minutes
ASSERTION_LIFETIME_S = 300


def tls_context(ca_bundle: str | Path | None = None, client_cert: str | Path | None = None,
                client_key: str | Path | None = None, verify: bool = True) -> ssl.SSLContext | bool:
    """Server verification (system CAs or ``ca_bundle``) plus, with ``client_cert``, our certificate (mutual TLS)."""
    if ca_bundle is None and client_cert is None:
        return verify
    try:
        ctx = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if client_cert is not None:
            ctx.load_cert_chain(str(client_cert), str(client_key) if client_key else None)
    except (OSError, ssl.SSLError) as exc:
        detail = getattr(exc, "strerror", None) or exc
        raise ConfigurationError(f"FHIR TLS files cannot be loaded ({type(exc).__name__}: {detail})") from None
    return ctx


class ClientCredentials(httpx.Auth):
    """OAuth2 ``client_credentials`` grant; the client authenticates with a secret (HTTP Basic) or a signed JWT."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        *,
        client_secret: SecretStr | str | None = None,
        private_key_file: str | Path | None = None,
        key_id: str | None = None,
        scope: str | None = None,
        timeout: float = 10.0,
        verify: ssl.SSLContext | bool = True,
        transport: httpx.BaseTransport | None = None,
        dependency: str = "fhir",
    ):
        if (client_secret is None) == (private_key_file is None):
            raise ConfigurationError(f"{dependency} OAuth2: set exactly one client secret or private key file")
        self.dependency = dependency
        self.token_url = token_url
        self.client_id = client_id
        self.scope = scope
        self.key_id = key_id
        self._secret = client_secret.get_secret_value() if isinstance(client_secret, SecretStr) else client_secret
        self._key, self._alg = _load_key(private_key_file) if private_key_file is not None else (None, None)
        self._http = httpx.Client(timeout=httpx.Timeout(timeout), verify=verify, transport=transport,
                                  follow_redirects=False)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.fetches = 0  # tokens obtained (tests, logs)

    def __repr__(self) -> str:  # never shows the secret or the token
        return f"ClientCredentials({self.token_url!r}, client_id={self.client_id!r})"

    # -- httpx.Auth ------------------------------------------------------------------------------------------
    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        response = yield request
        if response.status_code == 401:  # revoked or expired early: one fresh token, one more try
            request.headers["Authorization"] = f"Bearer {self.token(force=True)}"
            yield request

    def token(self, *, force: bool = False) -> str:
        with self._lock:
            if force or self._token is None or time.monotonic() >= self._expires_at - REFRESH_MARGIN_S:
                self._fetch()
            return self._token  # type: ignore[return-value] - _fetch set it or raised

    def close(self) -> None:
        self._http.close()

    # -- the grant -------------------------------------------------------------------------------------------
    def _fetch(self) -> None:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        auth = None
        if self._key is not None:
            form["client_assertion_type"] = CLIENT_ASSERTION_TYPE
            form["client_assertion"] = self.assertion()
        else:
            # RFC 6749 2.3.1: both form-encoded before the Basic encoding
            auth = httpx.BasicAuth(quote(self.client_id, safe=""), quote(self._secret or "", safe=""))
        try:
            response = self._http.post(self.token_url, data=form, auth=auth, headers={"Accept": "application/json"})
        except httpx.TransportError as exc:
            raise self._unavailable(f"token endpoint unreachable ({type(exc).__name__})") from None
        status = response.status_code
        if status >= 500 or status in (408, 429):
            raise self._unavailable(f"token endpoint answered HTTP {status}")
        body = _json_object(response)
        if status >= 400 or not isinstance(body.get("access_token"), str):
            # invalid_client, invalid_grant, invalid_scope...: the error code, never the request's secrets
            error = body.get("error") if isinstance(body.get("error"), str) else "no access_token"
            raise AuthFailed(self.dependency, f"{self._label} token endpoint refused the client credentials "
                                              f"(HTTP {status}, {error[:60]})")
        lifetime = body.get("expires_in")
        lifetime = float(lifetime) if isinstance(lifetime, (int, float)) and lifetime > 0 else 300.0
        self._token = body["access_token"]
        self._expires_at = time.monotonic() + lifetime
        self.fetches += 1

    @property
    def _label(self) -> str:
        return {"fhir": "FHIR", "kafka": "Kafka"}.get(self.dependency, self.dependency)

    def _unavailable(self, what: str) -> StoreUnavailable:
        return StoreUnavailable(f"{self._label} {what}", dependency=self.dependency)  # whose token endpoint is down

    def assertion(self) -> str:
        """The signed client assertion (SMART Backend Services): iss = sub = client id, aud = token URL."""
        import jwt

        now = int(time.time())
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": self.token_url, "iat": now,
                  "exp": now + ASSERTION_LIFETIME_S, "jti": uuid.uuid4().hex}
        headers = {"kid": self.key_id} if self.key_id else None
        return jwt.encode(claims, self._key, algorithm=self._alg, headers=headers)


def _load_key(path: str | Path):
    """The private key and its JWT algorithm: RS384 for RSA, ES384 for EC (the two SMART requires servers to take)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"RADBRIDGE_FHIR_PRIVATE_KEY_FILE {path}: not a readable unencrypted PEM "
                                 f"private key ({type(exc).__name__})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        return key, "RS384"
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1":
        return key, "ES384"
    raise ConfigurationError(f"RADBRIDGE_FHIR_PRIVATE_KEY_FILE {path}: an RSA or P-384 EC key is needed (RS384/ES384)")


def _json_object(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
