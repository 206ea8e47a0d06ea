"""Server factory: gRPC server with health, reflection, the error interceptor; graceful stop."""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from purchase_guard._gen.purchaseguard.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    broadcast_pb2,
    broadcast_pb2_grpc,
    guard_pb2,
    guard_pb2_grpc,
    privacy_pb2,
    privacy_pb2_grpc,
)
from purchase_guard.api.broadcast_servicer import BroadcastRegistryServicer
from purchase_guard.api.errors import ErrorInterceptor
from purchase_guard.api.gate import GateInterceptor, default_method_limits
from purchase_guard.api.privacy_servicer import HouseholdDataServicer
from purchase_guard.api.servicers import HouseholdAdminServicer, PurchaseGuardServicer
from purchase_guard.api.testing_servicer import SERVICE_NAME as TEST_CONTROL
from purchase_guard.api.testing_servicer import add_test_control
from purchase_guard.app import App
from purchase_guard.events.worker import DeliveryWorker
from purchase_guard.logs import get_logger
from purchase_guard.privacy.retention import RetentionWorker
from purchase_guard.tls import server_credentials, tls_config

log = get_logger("purchase_guard.server")

SERVICES = (
    guard_pb2.DESCRIPTOR.services_by_name["PurchaseGuard"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["HouseholdAdmin"].full_name,
    privacy_pb2.DESCRIPTOR.services_by_name["HouseholdData"].full_name,
    broadcast_pb2.DESCRIPTOR.services_by_name["BroadcastRegistry"].full_name,
)


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    app: App
    _stop_probe: threading.Event
    retention: RetentionWorker | None = None
    deliveries: DeliveryWorker | None = None

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *SERVICES):
            self.health.set(name, status)

    def stop(self, grace: float | None = None) -> None:
        """Health goes NOT_SERVING first so load balancers drain, then in-flight calls get `grace` seconds."""
        self._stop_probe.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(self.app.settings.grace_seconds if grace is None else grace).wait()
        if self.retention is not None:
            self.retention.stop()
        if self.deliveries is not None:
            self.deliveries.stop()
        self.app.store.close()
        close = getattr(self.app.verifier.encoder, "close", None)
        if callable(close):
            close()


def build_server(app: App, *, share_port: bool = False) -> RunningServer:
    """`share_port`: one of several worker processes bound to the same port (SO_REUSEPORT, the
    kernel spreads connections over them; api/processes.py). Otherwise the port is this server's
    alone: a second server started on it by mistake fails to bind instead of silently taking
    part of the traffic with state of its own."""
    settings = app.settings
    limits = (
        default_method_limits(
            evaluate_per_household_per_minute=settings.evaluate_per_household_per_minute,
            evaluate_per_device_per_minute=settings.evaluate_per_device_per_minute,
            confirm_per_household_per_minute=settings.confirm_per_household_per_minute,
            confirm_per_device_per_minute=settings.confirm_per_device_per_minute,
            enroll_per_household_per_hour=settings.enroll_per_household_per_hour,
            decisions_per_caller_per_minute=settings.decisions_per_caller_per_minute,
            decisions_per_backend_per_minute=settings.decisions_per_backend_per_minute,
        )
        if settings.rate_limits_enabled
        else {}
    )
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 1 if share_port else 0),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="guard"),
        # The gate first and outermost: parse, deadline, authenticate, scope, then rate limits.
        interceptors=[
            GateInterceptor(
                app.households,
                app.rate_limiter,
                limits,
                mtls=settings.tls_client_ca_file is not None,
            ),
            ErrorInterceptor(),
        ],
        options=options,
        maximum_concurrent_rpcs=settings.workers * 8,
    )
    guard_pb2_grpc.add_PurchaseGuardServicer_to_server(PurchaseGuardServicer(app.guard), server)
    admin_pb2_grpc.add_HouseholdAdminServicer_to_server(
        HouseholdAdminServicer(app.households, settings.event_streams), server
    )
    privacy_pb2_grpc.add_HouseholdDataServicer_to_server(HouseholdDataServicer(app.privacy), server)
    if app.clips is not None:
        registry = BroadcastRegistryServicer(app.clips)
        broadcast_pb2_grpc.add_BroadcastRegistryServicer_to_server(registry, server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    extra: tuple[str, ...] = ()
    if settings.test_mode:
        # A controllable clock for QA replays; never registered on a production server.
        add_test_control(server, app)
        extra = (TEST_CONTROL,)
    reflection.enable_server_reflection(
        (*SERVICES, *extra, reflection.SERVICE_NAME, health.SERVICE_NAME), server
    )
    tls = tls_config(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
    if tls is not None:
        port = server.add_secure_port(settings.listen, server_credentials(tls))
    else:
        port = server.add_insecure_port(settings.listen)
    if port == 0:
        raise RuntimeError(f"could not bind {settings.listen}")
    stop = threading.Event()
    retention = app.retention
    retention.start()
    deliveries = None
    if settings.webhooks_enabled:
        # Its own threads: a slow receiver holds up its own deliveries, never a decision.
        deliveries = DeliveryWorker(app.store, settings, clock=app.clock)
        deliveries.start()
    running = RunningServer(server, port, health_servicer, app, stop, retention, deliveries)
    # A server killed mid-write, or a restored or edited database, must not go back to deciding
    # silently on top of a broken record: every chain is checked, and a broken one is logged loudly.
    running.set_serving(True)
    threading.Thread(target=_probe, args=(running,), name="health-probe", daemon=True).start()
    server.start()
    log.info("server_started", port=port, encoder=app.verifier.encoder.name)
    return running


def _probe(running: RunningServer, every: float = 2.0) -> None:
    """Report NOT_SERVING while the store is unreachable, SERVING again once it answers."""
    serving = True
    while not running._stop_probe.wait(every):
        try:
            running.app.store.ping()
            ok = True
        except Exception:
            ok = False
        if ok != serving:
            serving = ok
            running.set_serving(ok)
            log.warning("health_changed", serving=ok)
