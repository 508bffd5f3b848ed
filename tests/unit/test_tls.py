"""TLS to the FHIR and model servers on a local HTTPS server signed by a test CA: mutual TLS for FHIR,
RADBRIDGE_MODEL_CA_BUNDLE for the model server; and a model server refusing the key pauses (AuthFailed)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from radbridge.adapters.fhir_server.auth import tls_context
from radbridge.adapters.fhir_server.store import HttpFhirStore
from radbridge.adapters.model.tgi import TgiGenerator
from radbridge.domain import GenerationParams
from radbridge.errors import AuthFailed, GeneratorUnavailable, StoreUnavailable

from test_generators_remote import prompts, serve  # noqa: F401 - the fixture


def _cert(tmp_path, name, key, issuer_name, issuer_key, *, ca=False, ip=None):
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    (tmp_path / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    return cert


@pytest.fixture
def pki(tmp_path):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "site-ca")])
    _cert(tmp_path, "site-ca", ca_key, ca_name, ca_key, ca=True)
    _cert(tmp_path, "server", ec.generate_private_key(ec.SECP256R1()), ca_name, ca_key, ip="127.0.0.1")
    _cert(tmp_path, "radbridge", ec.generate_private_key(ec.SECP256R1()), ca_name, ca_key)
    return tmp_path


class TlsServer:
    """HTTPS on 127.0.0.1 with the test CA's server certificate; ``client_certs``: require one (mutual TLS)."""

    def __init__(self, pki, *, client_certs: bool):
        self.peers: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                peer = self.connection.getpeercert()
                if peer:
                    outer.peers.append(dict(x[0] for x in peer["subject"])["commonName"])
                body = {"/metadata": {"resourceType": "CapabilityStatement"}, "/info": {"model_id": "base"}}.get(
                    self.path, {})
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                return

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki / "server.crt", pki / "server.key")
        if client_certs:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(pki / "site-ca.crt")
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_fhir_mutual_tls_presents_our_certificate_and_verifies_the_server(pki):
    server = TlsServer(pki, client_certs=True)
    try:
        mtls = tls_context(pki / "site-ca.crt", pki / "radbridge.crt", pki / "radbridge.key")
        with HttpFhirStore(server.url, verify=mtls, timeout=5) as store:
            store.check()
        assert server.peers == ["radbridge"]
        with HttpFhirStore(server.url, ca_bundle=pki / "site-ca.crt", timeout=5) as store:
            with pytest.raises(StoreUnavailable):  # no client certificate: the handshake is refused
                store.check()
        with HttpFhirStore(server.url, timeout=5) as store:
            with pytest.raises(StoreUnavailable):  # the site CA is not a system CA
                store.check()
    finally:
        server.close()


def test_model_ca_bundle_verifies_the_model_server(pki):
    from huggingface_hub.utils import set_client_factory
    from huggingface_hub.utils._http import default_client_factory

    server = TlsServer(pki, client_certs=False)
    try:
        with pytest.raises(GeneratorUnavailable):  # system CAs only: the site's certificate is not trusted
            TgiGenerator(server.url, timeout=5).check()
        generator = TgiGenerator(server.url, timeout=5, ca_bundle=pki / "site-ca.crt")
        generator.check()
        assert generator.info.base_model == "base"
    finally:
        set_client_factory(default_client_factory)  # huggingface_hub's client is process-wide
        server.close()


@pytest.mark.parametrize("status", [401, 403])
def test_a_model_server_refusing_the_key_is_auth_failed_not_a_rejection(serve, status):  # noqa: F811
    srv = serve(lambda m, p, b: (status, {"error": "unauthorized"}, 0))
    with pytest.raises(AuthFailed) as exc:
        TgiGenerator(srv.url, api_key="expired").generate(prompts("x"), GenerationParams(max_new_tokens=8))
    assert exc.value.dependency == "model" and exc.value.retryable
    assert "expired" not in str(exc.value) and srv.auth == ["Bearer expired"]
