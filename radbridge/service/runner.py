"""`radbridge serve`: build the service from Settings, run it until SIGTERM/SIGINT, shut down cleanly."""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import ExitStack
from typing import Callable

from ..errors import RetryableError
from ..retry import RetryPolicy
from ..settings import Settings
from .backoff import Backoff
from .http import OpsServer
from .loop import Health, Service
from .metrics import ServiceMetrics

log = logging.getLogger(__name__)


def bootstrap_address(settings: Settings) -> str:
    """Where clients connect: the configured cluster, or the embedded broker's fixed local port."""
    return settings.kafka_bootstrap or f"127.0.0.1:{settings.embedded_port}"


def start_embedded_broker(settings: Settings, stack: ExitStack) -> str:
    from ..adapters.kafka.broker import EmbeddedBroker

    broker = stack.enter_context(EmbeddedBroker(port=settings.embedded_port or None))
    broker.create_topics(
        [*settings.input_topics, settings.output_topic, settings.dlq_topic], partitions=settings.embedded_partitions
    )
    log.info("embedded broker ready", extra={"bootstrap": broker.bootstrap})
    return broker.bootstrap


def build_service(settings: Settings, bootstrap: str, *, drafter=None, fhir_store=None) -> Service:
    from ..formats.fhir.writer import bundle_bytes
    from ..adapters.kafka.clients import make_consumer, make_producer
    from ..bootstrap import build_drafter, build_fhir_store

    drafter = drafter or build_drafter(settings)
    try:
        drafter.generator.check()
    except RetryableError as exc:  # the model server may come up after us: the loop backs off until it does
        log.warning("model backend not reachable yet", extra={"error_type": exc.kind})
    return Service(
        consumer=make_consumer(settings, bootstrap),
        producer=make_producer(settings, bootstrap),
        drafter=drafter,
        input_topics=settings.input_topics,
        output_topic=settings.output_topic,
        dlq_topic=settings.dlq_topic,
        serialize=bundle_bytes,
        fhir_store=fhir_store if fhir_store is not None else build_fhir_store(settings),
        batch_size=settings.batch_size,
        batch_wait_ms=settings.batch_wait_ms,
        backoff=Backoff(RetryPolicy.from_settings(settings, bounded=False)),
        metrics=ServiceMetrics(),
        health=Health(),
        oru_topic=settings.oru_topic,
    )


def install_signal_handlers(stop: Callable[[], None]) -> None:
    """SIGTERM/SIGINT: finish the in-flight batch, commit, exit. Only the main thread may install handlers."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, _frame):
        log.info("stop requested", extra={"signal": signal.Signals(signum).name})
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def serve(
    settings: Settings,
    *,
    drafter=None,
    fhir_store=None,
    on_ready: Callable[[Service, str, int], None] | None = None,
    handle_signals: bool = True,
) -> None:
    """Run until stopped. ``on_ready(service, bootstrap, ops_port)`` lets the demo and tests drive it."""
    with ExitStack() as stack:
        bootstrap = settings.kafka_bootstrap or start_embedded_broker(settings, stack)
        service = build_service(settings, bootstrap, drafter=drafter, fhir_store=fhir_store)
        ops = OpsServer(service.metrics, service.health, settings.metrics_host, settings.metrics_port).start()
        stack.callback(ops.stop)
        log.info("ops endpoints up", extra={"host": settings.metrics_host, "port": ops.port})
        if handle_signals:
            install_signal_handlers(service.stop)
        if on_ready is not None:
            on_ready(service, bootstrap, ops.port)
        service.run()
