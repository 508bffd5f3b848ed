"""kafka-python clients built from Settings: TLS/SASL passed through, durable producer, manual-commit consumer.

Every tunable comes from ``Settings`` (typed, no defaults of its own here), so what ``radbridge settings`` prints
is what the clients use.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

try:  # kafka-python 3 moved it
    from kafka.net.sasl.oauth import AbstractTokenProvider
except ImportError:  # pragma: no cover - kafka-python 2
    from kafka.sasl.oauth import AbstractTokenProvider

from ...errors import BrokerUnavailable
from ...redact import mask_url
from ...settings import Settings

log = logging.getLogger(__name__)

# Every client gets bounded network waits (habit 9); the broker-side work is small, so these are generous.
REQUEST_TIMEOUT_MS = 30_000


def _secret(value: Any) -> str | None:
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    return getter() if getter else str(value)


def security_config(settings: Settings) -> dict:
    """The TLS/SASL part of a kafka-python config. Only set keys are passed, so kafka-python defaults stay."""
    cfg: dict[str, Any] = {}
    if settings.security_protocol:
        cfg["security_protocol"] = settings.security_protocol
    mechanism = settings.sasl_mechanism
    if mechanism:
        cfg["sasl_mechanism"] = mechanism
        username = settings.sasl_username
        password = _secret(settings.sasl_password)
        if username is not None:
            cfg["sasl_plain_username"] = username
        if password is not None:
            cfg["sasl_plain_password"] = password
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        value = getattr(settings, key)
        if value:
            cfg[key] = str(value)
    ssl_password = _secret(settings.ssl_password)
    if ssl_password:
        cfg["ssl_password"] = ssl_password
    if settings.kafka_oauth_token_url:
        cfg["sasl_oauth_token_provider"] = OAuthTokenProvider(settings)
    return cfg


def passthrough(settings: Settings, client: str | None = None) -> dict:
    """RADBRIDGE_KAFKA_OPT_* settings this kind of client knows (``consumer``, ``producer``; None: both know it)."""
    from kafka import KafkaConsumer, KafkaProducer

    known = {"consumer": set(KafkaConsumer.DEFAULT_CONFIG), "producer": set(KafkaProducer.DEFAULT_CONFIG)}
    names = known[client] if client else known["consumer"] & known["producer"]
    return {k: v for k, v in settings.kafka_options.items() if k in names}


def base_config(settings: Settings, bootstrap: str, client_id: str = "radbridge") -> dict:
    return {
        "bootstrap_servers": bootstrap.split(","),
        "client_id": client_id,
        "request_timeout_ms": REQUEST_TIMEOUT_MS,
        **security_config(settings),
        **passthrough(settings),
    }


def producer_config(settings: Settings, bootstrap: str) -> dict:
    """acks=all with one request in flight per connection: a retried send cannot overtake an earlier one."""
    return {
        **base_config(settings, bootstrap, client_id="radbridge-producer"),
        "acks": "all",
        "retries": 5,
        "max_in_flight_requests_per_connection": 1,
        "linger_ms": 5,
        # bounds send()+flush(): a broker outage becomes StoreUnavailable, not a hang
        "max_block_ms": 30_000,
        "delivery_timeout_ms": 60_000,
        **passthrough(settings, "producer"),
    }


def consumer_config(settings: Settings, bootstrap: str) -> dict:
    """Manual commits only; offsets move when the output is durable (see radbridge.service.loop)."""
    return {
        **base_config(settings, bootstrap, client_id="radbridge-consumer"),
        "group_id": settings.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": settings.auto_offset_reset,
        "max_poll_records": settings.batch_size,
        # Measured on the embedded Tansu broker: the default 500 ms put p50 end-to-end latency at ~180 ms, 100 ms
        # at ~60 ms (Kafka answers a fetch as soon as data arrives; the cost is a few empty fetches/s when idle)
        "fetch_max_wait_ms": 100,
        # The loop keeps calling poll() (partitions paused) while it backs off from an outage, so this
        # only has to cover one batch of generation, not the outage itself.
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        **passthrough(settings, "consumer"),
    }


def make_producer(settings: Settings, bootstrap: str):
    from kafka import KafkaProducer

    with reaching(bootstrap):
        return KafkaProducer(**producer_config(settings, bootstrap))


def make_consumer(settings: Settings, bootstrap: str):
    from kafka import KafkaConsumer

    with reaching(bootstrap):
        return KafkaConsumer(**consumer_config(settings, bootstrap))


@contextmanager
def reaching(bootstrap: str) -> Iterator[None]:
    """Building a client connects: no broker is one BrokerUnavailable naming the address, not kafka-python's
    dozens of reconnect log lines and a traceback."""
    from kafka.errors import KafkaError

    kafka_log = logging.getLogger("kafka")
    level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        yield
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"no Kafka broker answered at {mask_url(bootstrap)} ({type(exc).__name__}); check RADBRIDGE_KAFKA_BOOTSTRAP"
        ) from None
    finally:
        kafka_log.setLevel(level)


class OAuthTokenProvider(AbstractTokenProvider):
    """SASL OAUTHBEARER: kafka-python asks ``token()`` for a bearer token; it comes from an OAuth2 token endpoint
    (client credentials), cached and refreshed before it expires."""

    def __init__(self, settings: Settings):
        from ..fhir_server.auth import ClientCredentials

        if not settings.kafka_oauth_client_id:
            from ...errors import ConfigurationError

            raise ConfigurationError("RADBRIDGE_KAFKA_OAUTH_TOKEN_URL needs RADBRIDGE_KAFKA_OAUTH_CLIENT_ID")
        self._grant = ClientCredentials(
            settings.kafka_oauth_token_url, settings.kafka_oauth_client_id,
            client_secret=settings.kafka_oauth_client_secret, scope=settings.kafka_oauth_scope,
            timeout=settings.request_timeout_s, dependency="kafka",
        )

    def token(self) -> str:
        return self._grant.token()

    def extensions(self) -> dict:
        return {}


def ensure_topics(config: dict, names: Iterable[str], *, partitions: int = 1, replication: int = 1) -> None:
    """Create the topics that do not exist yet (embedded broker, tests). Production topics are the operator's."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    wanted = [n for n in dict.fromkeys(names) if n]
    admin = KafkaAdminClient(**{"request_timeout_ms": REQUEST_TIMEOUT_MS, **config})
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(n, partitions, replication) for n in wanted if n not in existing]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
