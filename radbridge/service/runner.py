"""`radbridge serve`: build the service from Settings, run it until SIGTERM/SIGINT, shut down cleanly."""

from __future__ import annotations

import logging
import signal
import socket
import threading
from contextlib import ExitStack
from typing import Callable

from ..bootstrap import build_service
from ..errors import ConfigurationError
from ..settings import Settings
from .http import OpsServer
from .loop import Service

log = logging.getLogger(__name__)


def bootstrap_address(settings: Settings) -> str:
    """Where clients connect: the configured cluster, or the embedded broker's fixed local port."""
    return settings.kafka_bootstrap or f"127.0.0.1:{settings.embedded_port}"


def start_embedded_broker(settings: Settings, stack: ExitStack) -> str:
    from ..adapters.kafka.broker import EmbeddedBroker
    from ..adapters.kafka.clients import reaching

    if settings.embedded_port and not _port_free(settings.embedded_port):
        # whatever listens there is not ours: talking Kafka to it would only time out, 30 s later
        raise ConfigurationError(f"RADBRIDGE_EMBEDDED_PORT {settings.embedded_port} is already in use (another "
                                 "radbridge serve?); set RADBRIDGE_KAFKA_BOOTSTRAP or another port")
    broker = stack.enter_context(EmbeddedBroker(port=settings.embedded_port or None))
    with reaching(broker.bootstrap):
        broker.create_topics(
            [*settings.input_topics, settings.output_topic, settings.dlq_topic, settings.review_topic],
            partitions=settings.embedded_partitions,
        )
    # Loud on purpose: a site that forgot (or mistyped) RADBRIDGE_KAFKA_BOOTSTRAP must not mistake this for its cluster
    log.warning("EMBEDDED BROKER: RADBRIDGE_KAFKA_BOOTSTRAP is not set, so radbridge runs its own local broker; "
                "nothing from the site's Kafka is read (demo and tests only)", extra={"bootstrap": broker.bootstrap})
    return broker.bootstrap


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        # as the broker binds: a port held only by closed connections (TIME_WAIT) after a restart is free
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


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
        service = build_service(settings, bootstrap, drafter=drafter, fhir_store=fhir_store)  # the one wiring point
        ops = OpsServer(service.metrics, service.health, settings.metrics_host, settings.metrics_port).start()
        stack.callback(ops.stop)
        log.info("ops endpoints up", extra={"host": settings.metrics_host, "port": ops.port})
        if handle_signals:
            install_signal_handlers(service.stop)
        if on_ready is not None:
            on_ready(service, bootstrap, ops.port)
        service.run()
