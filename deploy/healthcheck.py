"""Container health probe: exit 0 when the guard's gRPC health service answers SERVING.

Docker's HEALTHCHECK runs this inside the container (Kubernetes uses its native `grpc:`
probes instead). It reads the port from PURCHASE_GUARD_LISTEN, like the server, and asks the
overall service "" by default, which the server turns NOT_SERVING while its store is
unreachable and during graceful shutdown. Any failure (refused, timeout, unknown service)
is exit 1: a probe that cannot tell must not report healthy.

    python healthcheck.py [--target HOST:PORT] [--service NAME] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_LISTEN = "127.0.0.1:50051"


def probe_target(listen: str) -> str:
    """Where to probe for a listen address: a wildcard host is probed on loopback."""
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "[::]", "::"):  # noqa: S104 - recognising a wildcard, not binding to it
        host = "127.0.0.1"
    return f"{host}:{port}"


def check(target: str, service: str = "", timeout: float = 3.0) -> bool:
    """True when `target` answers SERVING for `service` within `timeout` seconds."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--target", default=probe_target(os.environ.get("PURCHASE_GUARD_LISTEN", DEFAULT_LISTEN))
    )
    parser.add_argument("--service", default="")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    healthy = check(args.target, args.service, args.timeout)
    print("SERVING" if healthy else f"not serving: {args.target}", file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    raise SystemExit(main())
