"""Credentials refused are an outage (AuthFailed, retryable); FHIR OAuth2 client credentials against a local
token endpoint: the client_assertion JWT's claims and signature, the client secret, refresh and retry on 401."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from radbridge.adapters.fhir_server.auth import CLIENT_ASSERTION_TYPE, ClientCredentials, tls_context
from radbridge.adapters.fhir_server.store import HttpFhirStore
from radbridge.adapters.model.client import map_error
from radbridge.errors import AuthFailed, ConfigurationError, RetryableError, StoreUnavailable


class TokenEndpoint:
    """A token endpoint on 127.0.0.1: records each form it receives and answers with ``reply(form, headers)``."""

    def __init__(self, reply):
        self.forms: list[dict] = []
        self.headers: list[dict] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                form = {k: v[0] for k, v in parse_qs(body).items()}
                endpoint.forms.append(form)
                endpoint.headers.append(dict(self.headers))
                status, payload = reply(form, dict(self.headers))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/oauth/token"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    made = []

    def start(reply):
        made.append(TokenEndpoint(reply))
        return made[-1]

    yield start
    for e in made:
        e.close()


def issued(expires_in=3600):
    counter = iter(range(1, 1000))
    return lambda form, headers: (200, {"access_token": f"tok-{next(counter)}", "token_type": "bearer",
                                        "expires_in": expires_in})


def fhir(handler) -> HttpFhirStore:
    return HttpFhirStore("https://fhir.example/r4", transport=httpx.MockTransport(handler), auth=None)


def write_key(tmp_path, key, name="key.pem"):
    path = tmp_path / name
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


# -- refused credentials are an outage ------------------------------------------------------------------------

@pytest.mark.parametrize("status", [401, 403])
def test_fhir_401_403_is_a_retryable_auth_failure(status):
    store = fhir(lambda request: httpx.Response(status, json={"resourceType": "OperationOutcome"}))
    with pytest.raises(AuthFailed) as exc:
        store.transact({"resourceType": "Bundle", "type": "transaction", "entry": []})
    assert isinstance(exc.value, RetryableError) and exc.value.retryable
    assert exc.value.kind == "auth_failed" and exc.value.dependency == "fhir"
    with pytest.raises(AuthFailed):
        store.check()


@pytest.mark.parametrize("status", [401, 403])
def test_model_server_401_403_is_a_retryable_auth_failure(status):
    request = httpx.Request("POST", "http://tgi/generate")
    err = map_error(httpx.HTTPStatusError("no", request=request, response=httpx.Response(status, request=request)),
                    "tgi http://tgi")
    assert isinstance(err, AuthFailed) and err.retryable and err.dependency == "model"


@pytest.mark.parametrize("status", [404, 405])
def test_model_server_404_405_stay_configuration_errors(status):
    request = httpx.Request("POST", "http://tgi/generate")
    err = map_error(httpx.HTTPStatusError("no", request=request, response=httpx.Response(status, request=request)),
                    "tgi http://tgi")
    assert type(err) is ConfigurationError


# -- SMART Backend Services: private_key_jwt -----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_private_key_jwt_assertion_claims_and_signature(tmp_path, endpoint, kind):
    key = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP384R1())
    alg = "RS384" if kind == "rsa" else "ES384"
    tokens = endpoint(issued())
    auth = ClientCredentials(tokens.url, "radbridge-client", private_key_file=write_key(tmp_path, key),
                             key_id="kid-1", scope="system/DiagnosticReport.cu system/Provenance.c")
    seen = []
    store = fhir(lambda request: seen.append(request.headers["authorization"]) or httpx.Response(
        200, json={"resourceType": "CapabilityStatement"}))
    store._client.auth = auth
    store.check()
    assert seen == ["Bearer tok-1"]
    form = tokens.forms[0]
    assert form["grant_type"] == "client_credentials"
    assert form["scope"] == "system/DiagnosticReport.cu system/Provenance.c"
    assert form["client_assertion_type"] == CLIENT_ASSERTION_TYPE
    assert "authorization" not in {k.lower() for k in tokens.headers[0]}  # the JWT is the client's proof
    assertion = form["client_assertion"]
    header = jwt.get_unverified_header(assertion)
    assert header["alg"] == alg and header["kid"] == "kid-1"
    # the signature verifies with the public half, and only with the token URL as audience
    claims = jwt.decode(assertion, key.public_key(), algorithms=[alg], audience=tokens.url)
    assert claims["iss"] == claims["sub"] == "radbridge-client"
    assert 0 < claims["exp"] - claims["iat"] <= 300 and abs(claims["iat"] - time.time()) < 30
    assert len(claims["jti"]) >= 16
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(assertion, key.public_key(), algorithms=[alg], audience="https://elsewhere/token")
    other = rsa.generate_private_key(65537, 2048) if kind == "rsa" else ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(assertion, other.public_key(), algorithms=[alg], audience=tokens.url)
    # each fetch signs a new assertion (jti is never reused)
    auth.token(force=True)
    assert jwt.decode(tokens.forms[1]["client_assertion"], key.public_key(), algorithms=[alg],
                      audience=tokens.url)["jti"] != claims["jti"]


def test_unusable_private_keys_are_refused_naming_the_file(tmp_path):
    with pytest.raises(ConfigurationError, match="nope.pem"):
        ClientCredentials("http://t/token", "c", private_key_file=tmp_path / "nope.pem")
    p256 = write_key(tmp_path, ec.generate_private_key(ec.SECP256R1()), "p256.pem")
    with pytest.raises(ConfigurationError, match="P-384"):
        ClientCredentials("http://t/token", "c", private_key_file=p256)
    with pytest.raises(ConfigurationError, match="exactly one client secret or private key"):
        ClientCredentials("http://t/token", "c")


# -- client secret, refresh, retry on 401 --------------------------------------------------------------------

def test_client_secret_goes_as_http_basic_and_the_token_is_reused_until_near_expiry(endpoint):
    tokens = endpoint(issued(expires_in=3600))
    auth = ClientCredentials(tokens.url, "radbridge", client_secret="s3cret")
    assert auth.token() == auth.token() == "tok-1" and auth.fetches == 1
    basic = tokens.headers[0].get("Authorization")
    assert basic == "Basic " + base64.b64encode(b"radbridge:s3cret").decode()
    assert "client_secret" not in tokens.forms[0] and "s3cret" not in repr(auth)


def test_a_token_about_to_expire_is_refreshed_before_use(endpoint):
    tokens = endpoint(issued(expires_in=30))  # inside the refresh margin: never sent again
    auth = ClientCredentials(tokens.url, "radbridge", client_secret="s3cret")
    assert [auth.token(), auth.token()] == ["tok-1", "tok-2"]


def test_a_401_fetches_one_fresh_token_and_retries_once(endpoint):
    tokens = endpoint(issued())
    auth = ClientCredentials(tokens.url, "radbridge", client_secret="s3cret")
    seen = []

    def server(request):
        seen.append(request.headers["authorization"])
        ok = request.headers["authorization"] == "Bearer tok-2"  # the first token was revoked server-side
        return httpx.Response(200 if ok else 401, json={"resourceType": "CapabilityStatement"})

    store = fhir(server)
    store._client.auth = auth
    store.check()
    assert seen == ["Bearer tok-1", "Bearer tok-2"]

    refused = fhir(lambda request: seen.append(1) or httpx.Response(401))
    refused._client.auth = auth
    seen.clear()
    with pytest.raises(AuthFailed):
        refused.check()
    assert len(seen) == 2  # one retry, not a loop


def test_token_endpoint_refusal_is_auth_failed_and_its_outage_is_unavailable(endpoint):
    refusing = endpoint(lambda form, headers: (401, {"error": "invalid_client"}))
    with pytest.raises(AuthFailed, match="invalid_client"):
        ClientCredentials(refusing.url, "radbridge", client_secret="wrong").token()
    down = endpoint(lambda form, headers: (503, {}))
    with pytest.raises(StoreUnavailable):
        ClientCredentials(down.url, "radbridge", client_secret="s").token()
    gone = down.url
    down.close()
    with pytest.raises(StoreUnavailable, match="unreachable"):
        ClientCredentials(gone, "radbridge", client_secret="s", timeout=2).token()


# -- mutual TLS ----------------------------------------------------------------------------------------------

def test_client_certificate_is_loaded_into_the_tls_context(tmp_path):
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "radbridge")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_file = tmp_path / "client.crt"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file = write_key(tmp_path, key, "client.key")
    ctx = tls_context(client_cert=cert_file, client_key=key_file)
    assert ctx.verify_mode.name == "CERT_REQUIRED" and ctx.check_hostname  # still verifies the server
    with pytest.raises(ConfigurationError, match="TLS"):
        tls_context(client_cert=cert_file, client_key=tmp_path / "missing.key")
    assert tls_context() is True


def test_a_token_endpoint_outage_names_its_dependency_for_readyz(endpoint):
    from radbridge.service.loop import dependency_of

    down = endpoint(lambda form, headers: (503, {}))
    with pytest.raises(StoreUnavailable) as exc:
        ClientCredentials(down.url, "radbridge", client_secret="s").token()
    assert str(exc.value).startswith("FHIR token endpoint") and dependency_of(exc.value, "deliver") == "fhir"
    with pytest.raises(StoreUnavailable) as exc:
        ClientCredentials(down.url, "radbridge", client_secret="s", dependency="kafka").token()
    assert dependency_of(exc.value, "deliver") == "kafka"


def test_client_id_and_secret_are_form_encoded_inside_basic_auth(endpoint):
    tokens = endpoint(issued())
    ClientCredentials(tokens.url, "rb:site 1", client_secret="p@ss:w/rd").token()
    assert tokens.headers[0]["Authorization"] == "Basic " + base64.b64encode(b"rb%3Asite%201:p%40ss%3Aw%2Frd").decode()
