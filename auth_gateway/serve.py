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
import socket
import subprocess
import sys
import time
from dataclasses import replace
from types import FrameType

import uvloop

from .app import RunningGateway, create_app
from .config import UNIX_PEER, GatewayConfig
from .logs import ACCESS_LINES, setup_logging
from .unixsocket import UnixSocket

__all__ = ["run_supervisor", "run_worker"]

log = logging.getLogger("auth_gateway")
# A worker that dies sooner than this after its start is not restarted: it would only die again.
_MIN_UPTIME = 5.0


async def _serve(config: GatewayConfig, reuse_port: bool, unix: socket.socket | None,
                 owner: UnixSocket | None) -> None:
    gateway = RunningGateway(create_app(config))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # A second signal (systemd and ``kill -- -PGID`` reach the supervisor and every worker)
    # must not cut the drain short, so signals only set an event.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await gateway.start(config.host, config.port, reuse_port=reuse_port, unix=unix)
        log.info("gateway listening", extra={"fields": {
            "host": config.host, "port": gateway.port, "pid": os.getpid(),
            "unix_socket": config.unix_socket if unix is not None else None,
        }})
        await stop.wait()
        log.info("draining", extra={"fields": {"pid": os.getpid()}})
        if owner is not None:
            owner.unlink()  # as the supervisor does: new connections are refused at once
    finally:
        # Stops accepting, lets in-flight requests finish (up to the shutdown timeout), then
        # runs the cleanup contexts: event consumer, sessions, Redis.
        await gateway.stop(config.shutdown_timeout)
        ACCESS_LINES.flush()


def _warn_if_untrusted(config: GatewayConfig) -> None:
    if config.unix_socket is not None and UNIX_PEER not in config.trusted_proxies:
        log.warning(
            "peers on the Unix socket are not trusted proxies (GATEWAY_TRUSTED_PROXIES does not "
            "name %r): every client of a proxy there counts as the one address %r for the limit "
            "on failed attempts", UNIX_PEER, UNIX_PEER,
        )


def run_worker(config: GatewayConfig, *, reuse_port: bool,
               unix: UnixSocket | socket.socket | None = None) -> None:
    """Serve in this process until SIGTERM / SIGINT, then drain.

    ``unix``: a listening Unix socket to serve as well: the one this process bound (whose file
    goes when the drain begins; the caller closes it), or one passed on by the supervisor.
    """
    owner = unix if isinstance(unix, UnixSocket) else None
    sock = unix.sock if isinstance(unix, UnixSocket) else unix
    setup_logging(config.log_level)
    if owner is not None:
        _warn_if_untrusted(config)
    # uvloop's C event loop and transports cost a fraction of asyncio's per request.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(config, reuse_port, sock, owner))
    log.info("gateway stopped", extra={"fields": {"pid": os.getpid()}})


def _spawn(config: GatewayConfig, unix: UnixSocket | None) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "auth_gateway", "serve", "--host", config.host,
        "--port", str(config.port), "--workers", "1", "--reuse-port",
    ]
    if unix is None:
        return subprocess.Popen(args)
    fd = unix.sock.fileno()
    return subprocess.Popen([*args, "--unix", unix.path, "--unix-fd", str(fd)], pass_fds=(fd,))


def run_supervisor(config: GatewayConfig, unix: UnixSocket | None = None) -> int:
    """Start ``config.workers`` workers on one port and supervise them; the exit status.

    ``unix``: the Unix socket every worker accepts on as well (the caller bound it and removes
    it after this returns).
    """
    setup_logging(config.log_level)
    if unix is not None:
        _warn_if_untrusted(config)
    stopping = False

    def _stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def is_stopping() -> bool:
        return stopping  # read again (a signal handler sets it at any moment)

    workers: list[subprocess.Popen[bytes]] = []
    started: list[float] = []
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    for _ in range(config.workers):
        workers.append(_spawn(replace(config, workers=1), unix))
        started.append(time.monotonic())
    status = 0
    while True:
        if stopping and unix is not None:
            # The workers stop accepting as they begin to drain: without the file, a new
            # connection is refused at once instead of waiting in a backlog nobody reads.
            # (Here, not in the signal handler, which may interrupt a worker's restart.)
            unix.unlink()
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
            workers[index] = _spawn(config, unix)
            started[index] = time.monotonic()
            if is_stopping():  # the signal came while it started: it drains with the others
                workers[index].send_signal(signal.SIGTERM)
            alive = True
        if stopping and not alive:
            return status
        time.sleep(0.2)
