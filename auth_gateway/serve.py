"""Running the gateway: one process, or N processes sharing one port with SO_REUSEPORT.

Each worker is a full gateway process of its own (its own app, Redis client, sessions, event
queue); the kernel spreads connections across them. The parent only supervises: it forwards
SIGTERM / SIGINT, so every worker stops accepting and drains its in-flight requests (up to
``GATEWAY_SHUTDOWN_TIMEOUT``), and restarts a worker that dies on its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from types import FrameType

import uvloop

from .app import RunningGateway, create_app
from .config import GatewayConfig
from .logs import ACCESS_LINES, setup_logging

__all__ = ["run_supervisor", "run_worker"]

log = logging.getLogger("auth_gateway")
# A worker that dies sooner than this after its start is not restarted: it would only die again.
_MIN_UPTIME = 5.0


async def _serve(config: GatewayConfig, reuse_port: bool) -> None:
    gateway = RunningGateway(create_app(config))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # A second signal (systemd and ``kill -- -PGID`` reach the supervisor and every worker)
    # must not cut the drain short, so signals only set an event.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await gateway.start(config.host, config.port, reuse_port=reuse_port)
        log.info("gateway listening", extra={"fields": {
            "host": config.host, "port": gateway.port, "pid": os.getpid(),
        }})
        await stop.wait()
        log.info("draining", extra={"fields": {"pid": os.getpid()}})
    finally:
        # Stops accepting, lets in-flight requests finish (up to the shutdown timeout), then
        # runs the cleanup contexts: event consumer, sessions, Redis.
        await gateway.stop(config.shutdown_timeout)
        ACCESS_LINES.flush()


def run_worker(config: GatewayConfig, *, reuse_port: bool) -> None:
    """Serve in this process until SIGTERM / SIGINT, then drain."""
    setup_logging(config.log_level)
    # uvloop's C event loop and transports cost a fraction of asyncio's per request.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(config, reuse_port))
    log.info("gateway stopped", extra={"fields": {"pid": os.getpid()}})


def _spawn(config: GatewayConfig) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "auth_gateway", "serve", "--host", config.host,
        "--port", str(config.port), "--workers", "1", "--reuse-port",
    ]
    return subprocess.Popen(args)


def run_supervisor(config: GatewayConfig) -> int:
    """Start ``config.workers`` workers on one port and supervise them; the exit status."""
    setup_logging(config.log_level)
    stopping = False

    def _stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    workers: list[subprocess.Popen[bytes]] = []
    started: list[float] = []
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for _ in range(config.workers):
        workers.append(_spawn(replace(config, workers=1)))
        started.append(time.monotonic())
    status = 0
    while True:
        alive = False
        for index, proc in enumerate(workers):
            code = proc.poll()
            if code is None:
                alive = True
                continue
            if stopping:
                status = max(status, abs(code))
                continue
            if time.monotonic() - started[index] < _MIN_UPTIME:
                log.error("worker failed at start-up; stopping", extra={"fields": {"code": code}})
                status = 1
                _stop(signal.SIGTERM, None)
                alive = True
                continue
            log.warning("worker exited; restarting", extra={"fields": {"code": code}})
            workers[index] = _spawn(config)
            started[index] = time.monotonic()
            alive = True
        if stopping and not alive:
            return status
        time.sleep(0.2)
