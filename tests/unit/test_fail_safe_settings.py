"""Fail-safe configuration: mistyped variables, a missing config file, kafka-python passthrough options and
SASL OAUTHBEARER are refused or applied before anything connects; each refusal is one line naming the culprit."""

from __future__ import annotations

import pytest

from radbridge.adapters.kafka.clients import (
    OAuthTokenProvider,
    consumer_config,
    producer_config,
    reaching,
    security_config,
)
from radbridge.cli import fail_line
from radbridge.errors import BrokerUnavailable, ConfigurationError
from radbridge.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.upper().startswith("RADBRIDGE_"):
            monkeypatch.delenv(name)


def test_a_mistyped_variable_is_refused_naming_it_with_a_suggestion(monkeypatch):
    monkeypatch.setenv("RADBRIDGE_KAFKA_BOOTSTRAPS", "kafka-1:9092")
    with pytest.raises(ConfigurationError) as exc:
        Settings()
    line = fail_line(exc.value)
    assert line == ("radbridge: configuration: unknown setting RADBRIDGE_KAFKA_BOOTSTRAPS "
                    "(did you mean RADBRIDGE_KAFKA_BOOTSTRAP?)")
    assert "kafka-1" not in line  # the value may be a secret: only the name is printed


def test_every_unknown_variable_is_named_and_known_ones_pass(monkeypatch):
    monkeypatch.setenv("RADBRIDGE_KAFKA_BOOTSTRAP", "k:9092")
    monkeypatch.setenv("radbridge_batch_size", "4")  # pydantic-settings reads names case-insensitively
    monkeypatch.setenv("RADBRIDGE_UPDATE_GOLDEN", "1")  # the test suite's own switch
    assert Settings().batch_size == 4
    monkeypatch.setenv("RADBRIDGE_FHIR_TOKN", "x")
    monkeypatch.setenv("RADBRIDGE_ZZZ", "x")
    with pytest.raises(ConfigurationError, match=r"unknown settings RADBRIDGE_FHIR_TOKN \(did you mean "
                                                 r"RADBRIDGE_FHIR_TOKEN\?\), RADBRIDGE_ZZZ$"):
        Settings()


def test_a_missing_config_file_is_refused_naming_it(monkeypatch, tmp_path):
    monkeypatch.setenv("RADBRIDGE_CONFIG_FILE", str(tmp_path / "radbridge.toml"))
    with pytest.raises(ConfigurationError, match="RADBRIDGE_CONFIG_FILE .*radbridge.toml does not exist"):
        Settings()
    (tmp_path / "radbridge.toml").write_text('group_id = "from-file"\n[kafka_options]\nlinger_ms = 9\n')
    s = Settings()
    assert s.group_id == "from-file" and s.kafka_options == {"linger_ms": 9}


def test_kafka_passthrough_is_typed_by_kafka_python_and_reaches_the_right_client(monkeypatch):
    for name, value in {"CLIENT_ID": "site-radbridge", "LINGER_MS": "20", "SSL_CHECK_HOSTNAME": "false",
                        "API_VERSION": "3.0", "ACKS": "all", "FETCH_MAX_BYTES": "1048576",
                        "COMPRESSION_TYPE": "gzip"}.items():
        monkeypatch.setenv(f"RADBRIDGE_KAFKA_OPT_{name}", value)
    s = Settings()
    assert s.kafka_options == {"client_id": "site-radbridge", "linger_ms": 20, "ssl_check_hostname": False,
                               "api_version": (3, 0), "acks": "all", "fetch_max_bytes": 1048576,
                               "compression_type": "gzip"}
    prod, cons = producer_config(s, "k:9092"), consumer_config(s, "k:9092")
    assert prod["linger_ms"] == 20 and prod["client_id"] == "site-radbridge" and prod["compression_type"] == "gzip"
    assert cons["client_id"] == "site-radbridge" and cons["ssl_check_hostname"] is False
    assert cons["fetch_max_bytes"] == 1048576 and "fetch_max_bytes" not in prod  # consumer-only stays there
    assert "compression_type" not in cons and "linger_ms" not in cons
    assert cons["enable_auto_commit"] is False and prod["acks"] == "all"


@pytest.mark.parametrize("name,value,message", [
    ("LINGER_M", "5", "no setting 'linger_m' (did you mean RADBRIDGE_KAFKA_OPT_LINGER_MS?)"),
    ("LINGER_MS", "soon", "linger_ms expects int, got 'soon'"),
    ("SSL_CHECK_HOSTNAME", "maybe", "ssl_check_hostname expects bool"),
    ("ACKS", "1", "acks must stay 'all'"),
    ("ENABLE_AUTO_COMMIT", "true", "enable_auto_commit is set by nothing"),
    ("BOOTSTRAP_SERVERS", "k:1", "set by RADBRIDGE_KAFKA_BOOTSTRAP"),
    ("KEY_SERIALIZER", "str", "cannot be set from text"),
    ("PARTITION_ASSIGNMENT_STRATEGY", "x", "cannot be set from text"),
])
def test_kafka_passthrough_refusals_are_one_line(monkeypatch, name, value, message):
    monkeypatch.setenv(f"RADBRIDGE_KAFKA_OPT_{name}", value)
    with pytest.raises(Exception) as exc:
        Settings()
    line = fail_line(exc.value)
    assert line is not None and "\n" not in line and line.startswith("radbridge: invalid setting RADBRIDGE_KAFKA_OPTIONS")
    assert message in line


def test_oauthbearer_token_provider_is_a_kafka_python_provider(monkeypatch):
    from kafka.net.sasl.oauth import AbstractTokenProvider

    s = Settings(security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER", kafka_oauth_token_url="http://t/token",
                 kafka_oauth_client_id="rb", kafka_oauth_client_secret="s3cret")
    provider = security_config(s)["sasl_oauth_token_provider"]
    assert isinstance(provider, OAuthTokenProvider) and isinstance(provider, AbstractTokenProvider)
    assert provider._grant.dependency == "kafka" and "s3cret" not in str(s.public_dict())
    with pytest.raises(ConfigurationError, match="KAFKA_OAUTH_CLIENT_ID"):
        security_config(Settings(kafka_oauth_token_url="http://t/token", kafka_oauth_client_secret="s"))


def test_oauthbearer_fetches_client_credentials_tokens(monkeypatch):
    from test_auth import TokenEndpoint, issued

    tokens = TokenEndpoint(issued())
    try:
        s = Settings(kafka_oauth_token_url=tokens.url, kafka_oauth_client_id="rb", kafka_oauth_client_secret="s3cret",
                     kafka_oauth_scope="kafka")
        provider = OAuthTokenProvider(s)
        assert provider.token() == provider.token() == "tok-1"
        assert tokens.forms == [{"grant_type": "client_credentials", "scope": "kafka"}]
    finally:
        tokens.close()


def test_no_broker_is_one_line_naming_the_address():
    from kafka.errors import KafkaTimeoutError

    with pytest.raises(BrokerUnavailable) as exc, reaching("kafka-1:9092,kafka-2:9092"):
        raise KafkaTimeoutError("Unable to bootstrap from ['kafka-1:9092']")
    line = fail_line(exc.value)
    assert line == ("radbridge: broker_unavailable: no Kafka broker answered at kafka-1:9092,kafka-2:9092 "
                    "(KafkaTimeoutError); check RADBRIDGE_KAFKA_BOOTSTRAP")


@pytest.mark.parametrize("name", ["model_url", "fhir_url", "fhir_token_url", "kafka_oauth_token_url"])
@pytest.mark.parametrize("url", ["localhost:8080", "htp://tgi:8080", "http://tgi:port", "http:///no-host"])
def test_a_malformed_url_is_refused_not_retried_as_an_outage(name, url):
    with pytest.raises(Exception) as exc:
        Settings(**{name: url})
    line = fail_line(exc.value)
    assert line is not None and line.startswith(f"radbridge: invalid setting RADBRIDGE_{name.upper()}: ")
    assert url not in line  # a URL may carry credentials: never echoed
    assert Settings(**{name: " https://user:pw@host.example:8443/base "}).model_dump()[name] == (
        "https://user:pw@host.example:8443/base")


def test_new_secrets_and_credential_urls_print_masked(monkeypatch):
    monkeypatch.setenv("RADBRIDGE_KAFKA_OPT_PROXY_URL", "http://user:hunter2@proxy.example:3128")
    s = Settings(fhir_client_secret="fhir-s3cret", kafka_oauth_client_secret="kafka-s3cret",
                 fhir_token_url="https://rb:tok-pw@auth.example/token", kafka_oauth_token_url="https://rb:kpw@idp/token")
    printed = str(s.public_dict())
    for secret in ("fhir-s3cret", "kafka-s3cret", "tok-pw", "kpw", "hunter2"):
        assert secret not in printed
    assert s.kafka_options["proxy_url"].endswith("proxy.example:3128")  # the clients still get the real value


def test_the_config_file_cannot_lower_acks_either(monkeypatch, tmp_path):
    (tmp_path / "radbridge.toml").write_text("[kafka_options]\nacks = 1\n")
    monkeypatch.setenv("RADBRIDGE_CONFIG_FILE", str(tmp_path / "radbridge.toml"))
    with pytest.raises(Exception) as exc:
        Settings()
    assert "acks must stay 'all'" in fail_line(exc.value)


def test_an_unknown_key_in_the_config_file_is_named_with_a_suggestion(monkeypatch, tmp_path):
    (tmp_path / "radbridge.toml").write_text('kafka_bootstraps = "kafka-1:9092"\n')
    monkeypatch.setenv("RADBRIDGE_CONFIG_FILE", str(tmp_path / "radbridge.toml"))
    with pytest.raises(Exception) as exc:
        Settings()
    assert fail_line(exc.value) == ("radbridge: configuration: unknown setting kafka_bootstraps in "
                                    "RADBRIDGE_CONFIG_FILE (did you mean kafka_bootstrap?)")


def test_every_variable_the_docs_and_deployment_files_name_is_a_setting():
    """serve refuses unknown RADBRIDGE_* variables, so a stale name in an example would stop a deployment."""
    import re
    from pathlib import Path

    from radbridge.settings import KAFKA_OPT_PREFIX, NOT_SETTINGS

    repo = Path(__file__).resolve().parents[2]
    files = [repo / "README.md", *(repo / "docs").glob("*.md"),
             *(p for p in (repo / "deploy").rglob("*") if p.is_file() and p.suffix not in (".json", ".png"))]
    known = {f"RADBRIDGE_{name.upper()}" for name in Settings.model_fields} | NOT_SETTINGS
    typo_example = "RADBRIDGE_KAFKA_BOOTSTRAPS"  # the documented refusal
    unknown = {
        (f.relative_to(repo).as_posix(), name)
        for f in files
        for name in re.findall(r"RADBRIDGE_[A-Z0-9_]*[A-Z0-9]", f.read_text(encoding="utf-8", errors="replace"))
        if name not in known and name != typo_example and not (name + "_").startswith(KAFKA_OPT_PREFIX)
    }
    assert not unknown, sorted(unknown)


def test_local_numerics_contradictions_are_refused_in_one_line(monkeypatch):
    from radbridge.adapters.model.local import LocalModel
    from radbridge.bootstrap import local_dtype

    from pydantic import ValidationError

    monkeypatch.setenv("RADBRIDGE_LOCAL_DTYPE", "float16")
    with pytest.raises(ValidationError) as exc:
        Settings()
    assert fail_line(exc.value) == ("radbridge: invalid setting RADBRIDGE_LOCAL_DTYPE: "
                                    "Input should be 'float32', 'bfloat16' or 'auto'")
    monkeypatch.delenv("RADBRIDGE_LOCAL_DTYPE")
    # int8 quantises float32 weights: beside it "auto" means float32, and bfloat16 is refused, not ignored
    assert local_dtype(Settings(local_quantize="int8")) == "float32"
    assert local_dtype(Settings()) == "auto"
    assert local_dtype(Settings(local_dtype="bfloat16")) == "bfloat16"
    with pytest.raises(ConfigurationError, match="cannot be combined with dtype bfloat16"):
        LocalModel(quantize="int8", dtype="bfloat16")
    with pytest.raises(ConfigurationError, match="unknown local dtype 'half'"):
        LocalModel(dtype="half")
