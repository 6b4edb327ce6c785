"""The gateway benchmark: throughput against nginx, revocation propagation, the timing probe.

``python -m tests.bench.bench_gateway`` (``make bench`` runs it through ``python -m tests.bench``)
starts its own stack (see ``stack``), measures, prints one Markdown report and writes it to
artifacts/bench/gateway.md. Aims are reported as met or not met, never asserted: a benchmark
informs, the test suite judges correctness.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import signal
import subprocess
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from tests.support.procs import ROOT, ServiceProcess, free_port

from .admin import AdminClient, AdminError, IssuedKey
from .instructions import AUTH, OPEN, InstructionResult, measure_instructions
from .metrics import event_sources
from .nginx import (
    NginxError,
    forward_auth_server,
    proxy_server,
    upstream_server,
    verdict_server,
)
from .observer import EventObserver
from .probe import HALF_RIGHT, UNKNOWN_ID, UNKNOWN_SEEN, WRONG_SECRET, ProbeResult, run_probe
from .report import ProbeRow, Report, render
from .revocation import (
    RevocationResult,
    WaitedResult,
    measure_revocations,
    measure_waited_revocations,
)
from .stack import BenchStack, StackError
from .stats import Aim, Summary, percentile, ratio, summarize
from .throughput import LoadSettings, Measurement, Scenario, measure_all

__all__ = ["main"]

OUTPUT = ROOT / "artifacts" / "bench" / "gateway.md"

GW_AUTH = "gateway, authenticated route (valid key)"
GW_OPEN = 'gateway, unauthenticated route (auth = "none")'
GW_NO_USAGE = ("the same gateway with usage recording off (GATEWAY_USAGE_RECORDING=false), "
               "authenticated route: what noting each key's last use and count costs")
GW_PUBLIC = ("the same gateway on aiohttp's public low-level server (web.Server, web.BaseRequest) "
             "instead of its own, authenticated route: the measurement docs/architecture.md's "
             "choice of HTTP layer rests on")
# The instruction counts of the gateway on web.Server are labelled with this.
PUBLIC_PREFIX = "on aiohttp's web.Server: "
# ... and those of the gateway with usage recording off with this.
NO_USAGE_PREFIX = "usage recording off: "
NGINX = "plain nginx reverse proxy (baseline)"
NGINX_FA = ("nginx + gateway forward-auth (deploy/nginx/forward-auth.conf as shipped: verdicts "
            "over the gateway's Unix socket; the gateway as it ships, 1 worker)")
NGINX_FA_2W = ("for reference: the same forward-auth config with the 2-worker gateway of the rows "
               "above (on this host, fewer cores left to nginx)")
NGINX_FA_TCP = ("for reference: the same forward-auth config with the 1-worker gateway at a "
                "loopback TCP address instead")
UPSTREAM = "for reference: the upstream alone, no proxy"
NGINX_FA_REF = ("for reference: the same nginx + forward-auth config, verdicts from nginx's own "
                "`return 204` on a Unix socket (a verdict service that costs nothing)")
_NO_CPU = (UPSTREAM, NGINX_FA_REF)  # their servers are not among the proxies measured


@dataclass(frozen=True)
class Options:
    """How much to measure; the defaults are what ``make bench`` runs."""

    load: LoadSettings
    revocations: int
    probe_per_class: int
    probe_unknown: int
    instructions: int
    output: Path
    command: str
    # Only the revocation phase (propagation and revoke with wait), e.g. after changing it.
    revocation_only: bool = False


def _parse(argv: Sequence[str] | None, command: str | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.bench_gateway",
                                     description=__doc__)
    parser.add_argument("--duration", type=int, default=24, help="seconds measured per setup")
    parser.add_argument("--rounds", type=int, default=8,
                        help="interleaved rounds the measured seconds are split into")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per setup")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--revocations", type=int, default=100, help="keys revoked and timed")
    parser.add_argument("--probe-samples", type=int, default=3000,
                        help="timing-probe requests per compared class")
    parser.add_argument("--probe-unknown", type=int, default=500,
                        help="timing-probe requests with new unknown IDs, and as many with a few "
                             "repeated ones (information)")
    parser.add_argument("--instructions", type=int, default=1000,
                        help="requests per class counted under callgrind (0: skip that part)")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="where to write the report")
    parser.add_argument("--revocation-only", action="store_true",
                        help="measure only revocation propagation and revoke with wait")
    args = parser.parse_args(argv)
    return Options(
        load=LoadSettings(connections=args.connections, threads=args.threads,
                          duration_s=args.duration, warmup_s=args.warmup,
                          rounds=args.rounds),
        revocations=args.revocations, probe_per_class=args.probe_samples,
        probe_unknown=args.probe_unknown, instructions=args.instructions, output=args.output,
        revocation_only=args.revocation_only,
        command=command or " ".join(
            [".venv/bin/python -m tests.bench.bench_gateway",
             *(sys.argv[1:] if argv is None else argv)]),
    )


def _version(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "missing"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _machine(command: str, load_before: str) -> list[str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import aiohttp

    return [
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with `{command}` on one machine: "
        f"{os.cpu_count()} cores ({cpu}); load average (1, 5, 15 min) {load_before} before "
        f"the run and {_load()} after it; Python {platform.python_version()}, "
        f"aiohttp {aiohttp.__version__}, {_version(['nginx', '-v'])}, "
        f"{_version(['wrk', '--version']).split(' Copyright')[0]}.",
    ]


def _throughput(stack: BenchStack, options: Options, key: IssuedKey, upstream_port: int,
                verdict_socket: Path) -> tuple[dict[str, Measurement], int, list[ServiceProcess]]:
    routes = stack.write_routes(upstream_port)
    # As the forward-auth example asks: the gateway on a Unix socket nginx's workers may use.
    unix_env = {"GATEWAY_UNIX_SOCKET_MODE": "666", "GATEWAY_TRUSTED_PROXIES": "unix:"}
    started: list[ServiceProcess] = []
    try:
        gw_socket = stack.socket_dir / "gateway.sock"
        gw_port, gw_proc = stack.start_gateway(routes, workers=2, name="2-workers", extra_env={
            "GATEWAY_UNIX_SOCKET": str(gw_socket), **unix_env,
        })
        started.append(gw_proc)
        # The same again without usage recording: the cost of noting each key's last use.
        quiet_port, quiet_proc = stack.start_gateway(
            routes, workers=2, name="no-usage", extra_env={"GATEWAY_USAGE_RECORDING": "false"})
        started.append(quiet_proc)
        # Forward-auth is measured against the gateway as it ships (GATEWAY_WORKERS=1): on a
        # host it shares with nginx, nginx's workers need cores too, and one busier verdict
        # process serves more requests per wake-up than two (the 2-worker one is measured too).
        fa_socket = stack.socket_dir / "gateway-fa.sock"
        fa_gw_port, fa_proc = stack.start_gateway(
            routes, workers=1, name="forward-auth",
            extra_env={"GATEWAY_UNIX_SOCKET": str(fa_socket), **unix_env},
        )
        started.append(fa_proc)
        # The same gateway (2 workers) on aiohttp's public server, for the choice of HTTP layer.
        public_port, public_proc = stack.start_gateway(
            routes, workers=2, name="public-server", module="tests.bench.public_server")
        started.append(public_proc)
        plain_port, fa_port, fa2_port, tcp_port, ref_port = (free_port() for _ in range(5))
        front = stack.start_nginx(
            "front",
            proxy_server(plain_port, upstream_port)
            + forward_auth_server(fa_port, upstream_port, f"unix:{fa_socket}")
            + forward_auth_server(fa2_port, upstream_port, f"unix:{gw_socket}", name_suffix="_2w")
            + forward_auth_server(tcp_port, upstream_port, f"127.0.0.1:{fa_gw_port}",
                                  name_suffix="_tcp")
            + forward_auth_server(ref_port, upstream_port, f"unix:{verdict_socket}",
                                  name_suffix="_ref"),
            # Access log on, like the gateway's (always on): both proxies as they ship.
            [plain_port, fa_port, fa2_port, tcp_port, ref_port], workers=2, access_log=True,
        )
        scenarios = [
            Scenario(NGINX, f"http://127.0.0.1:{plain_port}/bench", {}),
            Scenario(GW_OPEN, f"http://127.0.0.1:{gw_port}/open/bench", {}),
            Scenario(GW_AUTH, f"http://127.0.0.1:{gw_port}/auth/bench", key.headers()),
            Scenario(GW_NO_USAGE, f"http://127.0.0.1:{quiet_port}/auth/bench", key.headers()),
            Scenario(GW_PUBLIC, f"http://127.0.0.1:{public_port}/auth/bench", key.headers()),
            Scenario(NGINX_FA, f"http://127.0.0.1:{fa_port}/bench", key.headers()),
            Scenario(NGINX_FA_2W, f"http://127.0.0.1:{fa2_port}/bench", key.headers()),
            Scenario(NGINX_FA_TCP, f"http://127.0.0.1:{tcp_port}/bench", key.headers()),
            # What nginx's auth_request costs by itself: the ceiling for any verdict service.
            Scenario(NGINX_FA_REF, f"http://127.0.0.1:{ref_port}/bench", key.headers()),
            # Shows the upstream is not what limits the proxies measured above.
            Scenario(UPSTREAM, f"http://127.0.0.1:{upstream_port}/bench", {}),
        ]
        # CPU of the proxies under test: the gateways (supervisors and workers; those a row
        # does not use are idle) and the front nginx.
        roots = [gw_proc.proc.pid, quiet_proc.proc.pid, fa_proc.proc.pid,
                 public_proc.proc.pid] + (
            [front.proc.pid] if front.proc is not None else [])
        results = measure_all(scenarios, options.load, stack.dir / "wrk", cpu_roots=roots)
    except BaseException:
        for proc in started:
            stack.stop_process(proc)  # not left running through the phases that follow
        raise
    return results, gw_port, started


def _revocations(stack: BenchStack, admin: AdminClient, options: Options,
                 upstream_port: int) -> tuple[RevocationResult, WaitedResult]:
    routes = stack.write_routes(upstream_port)
    port_a, _ = stack.start_gateway(routes, workers=1, name="a")
    port_b, _ = stack.start_gateway(routes, workers=1, name="b")
    print(f"  issuing {options.revocations} keys ...", file=sys.stderr, flush=True)
    keys = [admin.issue(f"bench revocation {i}") for i in range(options.revocations)]
    print("  revoking and polling both gateway processes ...", file=sys.stderr, flush=True)
    observer = EventObserver(stack.rabbitmq_url, stack.exchange)
    observer.start()
    try:
        result = measure_revocations(admin, keys, [port_a, port_b], observer=observer)
    finally:
        observer.close()
    for port in (port_a, port_b):
        result.event_sources[port] = event_sources(port)
    print("  revoking with ?wait= ...", file=sys.stderr, flush=True)
    waited_keys = [admin.issue(f"bench waited revocation {i}") for i in range(options.revocations)]
    waited = measure_waited_revocations(admin, waited_keys, [port_a, port_b])
    return result, waited


def _aims(results: dict[str, Measurement], revocation: Summary | None,
          probe: ProbeResult | None) -> list[Aim]:
    def rps(label: str) -> float:
        return results[label].rps if label in results else float("nan")

    def capacity(numerator: str, denominator: str) -> float:
        # The same ratio by CPU: requests one CPU-second of the proxy serves.
        if numerator not in results or denominator not in results:
            return float("nan")
        return ratio(results[denominator].cpu_us_per_request,
                     results[numerator].cpu_us_per_request)

    aims = [
        Aim("authenticated / unauthenticated (gateway requests/s)",
            ratio(rps(GW_AUTH), rps(GW_OPEN)), 0.95, by_cpu=capacity(GW_AUTH, GW_OPEN)),
        Aim("usage recording on / off (authenticated gateway requests/s)",
            ratio(rps(GW_AUTH), rps(GW_NO_USAGE)), 0.98, by_cpu=capacity(GW_AUTH, GW_NO_USAGE)),
        Aim("gateway, 2 workers, authenticated / plain nginx", ratio(rps(GW_AUTH), rps(NGINX)),
            0.25, by_cpu=capacity(GW_AUTH, NGINX)),
        Aim("nginx + forward-auth / plain nginx", ratio(rps(NGINX_FA), rps(NGINX)), 0.5,
            by_cpu=capacity(NGINX_FA, NGINX)),
        Aim("revocation propagation p99, RabbitMQ up (ms)",
            revocation.p99 if revocation else float("nan"), 100.0, at_least=False),
    ]
    if probe is not None and probe.secret_test is not None:
        aims.append(Aim("timing probe: rank-test p-value (no difference when ≥ alpha)",
                        probe.secret_test.p_value, probe.secret_test.alpha))
    return aims


def _probe_rows(probe: ProbeResult | None) -> list[ProbeRow]:
    if probe is None:
        return []
    return [ProbeRow(label, len(probe.samples[label]), percentile(probe.samples[label], 50),
                     percentile(probe.samples[label], 99))
            for label in (WRONG_SECRET, HALF_RIGHT, UNKNOWN_ID, UNKNOWN_SEEN)
            if probe.samples.get(label)]


def _ceiling_note(results: dict[str, Measurement]) -> str:
    if NGINX_FA_REF not in results or NGINX not in results or NGINX_FA not in results:
        return "The forward-auth ceiling (nginx with a free verdict service) was not measured."
    ceiling = ratio(results[NGINX_FA_REF].rps, results[NGINX].rps)
    measured = ratio(results[NGINX_FA].rps, results[NGINX].rps)
    return (
        f"Forward-auth ceiling: with verdicts that cost nothing (nginx's own `return 204` behind "
        f"the same config), nginx + auth_request reaches {ceiling:.2f} times the plain proxy in "
        f"this run; with the gateway's verdicts, {measured:.2f}. The difference is what the "
        f"gateway's verdicts cost; the rest of the gap to 1.0 is nginx's subrequest itself."
        + (f" With the 2-worker gateway instead of the 1-worker one, "
           f"{ratio(results[NGINX_FA_2W].rps, results[NGINX].rps):.2f}: on two cores that nginx "
           f"also needs, a second verdict process adds wake-ups and context switches, not capacity."
           if NGINX_FA_2W in results else "")
        + (f" Over loopback TCP instead of the gateway's Unix socket, the same config reaches "
           f"{ratio(results[NGINX_FA_TCP].rps, results[NGINX].rps):.2f}."
           if NGINX_FA_TCP in results else "")
    )


def _public_server_note(results: dict[str, Measurement],
                        instructions: InstructionResult | None) -> str:
    """The comparison the choice of HTTP layer rests on (docs/architecture.md)."""
    if GW_PUBLIC not in results or GW_AUTH not in results:
        return "The gateway on aiohttp's public low-level server was not measured."
    ours, public = results[GW_AUTH], results[GW_PUBLIC]
    counted = ""
    if instructions is not None:
        mine, theirs = (instructions.per_request.get(AUTH),
                        instructions.per_request.get(PUBLIC_PREFIX + AUTH))
        if mine and theirs:
            counted = (f"; by instructions per request (callgrind, below), {mine / theirs:.2f} "
                       f"({theirs:,.0f} against {mine:,.0f})")
    return (
        f"HTTP layer: on aiohttp's public low-level server (web.Server), the gateway's "
        f"authenticated row reaches {ratio(public.rps, ours.rps):.2f} times the requests/s of "
        f"the gateway on its own server ({public.rps:,.0f} against {ours.rps:,.0f}); by CPU per "
        f"request, {ratio(ours.cpu_us_per_request, public.cpu_us_per_request):.2f}{counted}. "
        f"Within 10 % (0.90 or more) the public server would be the better choice."
    )


def _instructions_note(result: InstructionResult | None) -> str:
    if result is None:
        return ""
    open_count, auth_count = result.per_request.get(OPEN), result.per_request.get(AUTH)
    share = (f" By this count an authenticated request costs {auth_count / open_count - 1:.1%} "
             f"more than an open one: authenticated / unauthenticated = "
             f"{open_count / auth_count:.3f}, the first aim counted rather than timed."
             if open_count and auth_count else "")
    quiet = result.per_request.get(NO_USAGE_PREFIX + AUTH)
    usage = (f" Usage recording (GATEWAY_USAGE_RECORDING) costs {auth_count - quiet:,.0f} "
             f"instructions per authenticated request, {auth_count / quiet - 1:.2%}: "
             f"on / off = {quiet / auth_count:.4f} (the row marked "
             f"\"{NO_USAGE_PREFIX.rstrip(': ')}\" is the same gateway with it off)."
             if quiet and auth_count else "")
    public = (f" The rows marked \"{PUBLIC_PREFIX.rstrip(': ')}\" come from a second gateway, "
              f"the same but served by aiohttp's public low-level server "
              f"(tests/bench/public_server.py), counted the same way."
              if any(label.startswith(PUBLIC_PREFIX) for label in result.per_request) else "")
    return (
        f"Counted by valgrind's callgrind ({result.valgrind}) in one single-worker gateway: "
        f"{result.requests:,} requests per class after a warm-up, one at a time over one "
        f"keep-alive connection, counted from zero for each class; timer-driven work (the "
        f"failure counter's shared-block read, L1 expiry) set out of the way "
        f"(GATEWAY_FAILED_AUTH_SYNC=3600, GATEWAY_L1_TTL=86400). The same requests give the "
        f"same count however busy the machine is.{share}{usage}{public}"
    )


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the stack's close(), as Ctrl-C does


def run(options: Options) -> tuple[str, bool]:
    """Measure everything; returns the Markdown and whether every part ran."""
    failures: dict[str, str] = {}
    results: dict[str, Measurement] = {}
    probe: ProbeResult | None = None
    revocation: RevocationResult | None = None
    waited: WaitedResult | None = None
    instructions: InstructionResult | None = None
    load_before = _load()
    with BenchStack() as stack:
        upstream_port = free_port()
        verdict_port = free_port()
        verdict_socket = stack.socket_dir / "verdict.sock"
        stack.start_nginx("upstream", upstream_server(upstream_port)
                          + verdict_server(verdict_port, str(verdict_socket)),
                          [upstream_port, verdict_port], workers=2)
        print("  starting key_service ...", file=sys.stderr, flush=True)
        stack.start_key_service()
        admin = stack.admin()
        try:
            key = admin.issue("bench throughput")
            gw_procs: list[ServiceProcess] = []
            try:
                if not options.revocation_only:
                    results, gw_port, gw_procs = _throughput(stack, options, key, upstream_port,
                                                            verdict_socket)
                    print("  timing probe ...", file=sys.stderr, flush=True)
                    probe = run_probe(gw_port, key, per_class=options.probe_per_class,
                                      unknown=options.probe_unknown)
            except Exception as exc:  # report what ran, name what did not
                failures["throughput / timing probe"] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            for proc in gw_procs:
                stack.stop_process(proc)  # free the cores for the next phase
            if options.instructions > 0 and not options.revocation_only:
                print("  counting instructions per request under callgrind ...",
                      file=sys.stderr, flush=True)
                try:
                    routes = stack.write_routes(upstream_port)
                    instructions = measure_instructions(stack, routes, key, options.instructions)
                    public = measure_instructions(
                        stack, routes, key, options.instructions, labels=(OPEN, AUTH),
                        module="tests.bench.public_server", prefix=PUBLIC_PREFIX)
                    instructions.per_request.update(public.per_request)
                    quiet = measure_instructions(
                        stack, routes, key, options.instructions, labels=(AUTH,),
                        prefix=NO_USAGE_PREFIX, extra_env={"GATEWAY_USAGE_RECORDING": "false"})
                    instructions.per_request.update(quiet.per_request)
                except Exception as exc:
                    failures["instructions per request"] = f"{type(exc).__name__}: {exc}"
                    traceback.print_exc()
            try:
                revocation, waited = _revocations(stack, admin, options, upstream_port)
            except Exception as exc:
                failures["revocation propagation"] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
        finally:
            admin.close()
    rev_summary = (summarize(revocation.every_process_ms)
                   if revocation and revocation.every_process_ms else None)
    rev_note = "Not measured."
    if revocation is not None:
        rev_call = percentile(revocation.revoke_call_ms, 50) if revocation.revoke_call_ms else 0.0
        rev_note = (
            f"From the moment key_service's revoke call returned until every gateway process "
            f"answered 401: {len(revocation.every_process_ms)} revocations of keys cached in "
            f"{revocation.processes} single-worker gateway processes on their own ports, each "
            f"polled over its own keep-alive connection every 2 ms (so a figure may be up to one "
            f"interval plus one round trip late); {revocation.timed_out} did not reach 401 "
            f"within 10 s. The revoke call itself took {rev_call:.1f} ms (p50)."
        )
        per = [f"process {i + 1}: p50 {percentile(v, 50):.1f} ms, p99 {percentile(v, 99):.1f} ms"
               for i, v in enumerate(revocation.per_process_ms.values()) if v]
        if per:
            rev_note += " Each process on its own: " + "; ".join(per) + "."
        if revocation.observer_ms:
            rev_note += (
                f" Of that, the event reached a plain subscriber of the exchange (key_service's "
                f"outbox relay → RabbitMQ → subscriber) after p50 "
                f"{percentile(revocation.observer_ms, 50):.1f} ms, p99 "
                f"{percentile(revocation.observer_ms, 99):.1f} ms."
            )
        if revocation.event_sources:
            counts = "; ".join(
                f"process {i + 1}: " + ", ".join(f"{n} by {src}" for src, n in sorted(c.items()))
                for i, c in enumerate(revocation.event_sources.values())
            )
            rev_note += f" Key events each process received over the phase: {counts}."
        if revocation.stopped_early:
            rev_note += (f" Stopped after {len(revocation.revoke_call_ms)} of "
                         f"{options.revocations} revocations: the phase's 90 s bound ran out.")
    wait_summary = summarize(waited.call_ms) if waited and waited.call_ms else None
    wait_note = ""
    if waited is not None:
        wait_note = (
            f"The same revocation with `?wait=10`: the call returns once every live gateway "
            f"process confirmed it in a heartbeat ({len(waited.call_ms)} calls, "
            f"{waited.processes} processes; {waited.incomplete} ran out of time). Right after "
            f"each complete receipt every process was asked once: {waited.passed_after} "
            f"requests got a 2xx (the receipt promises 0). Heartbeats every 2 s "
            f"(GATEWAY_HEARTBEAT_INTERVAL) and at once after an applied event."
        )
    load = options.load
    notes = [
        f"Load: wrk {load.threads} threads, {load.connections} connections; each setup warmed "
        f"up for {load.warmup_s} s, then measured for {load.duration_s} s in {load.rounds} "
        f"rounds whose order alternates (A B C D, D C B A) so that a change in the machine's "
        f"background load falls on every setup alike; rounds merged exactly (requests over "
        f"seconds, percentiles from the summed latency histograms). wrk runs on the same cores "
        f"as the servers. Upstream for every setup: an nginx (2 workers) returning a fixed "
        f"3-byte 200. "
        f"Gateway: 2 worker processes for its own rows; behind nginx's forward-auth, 1 (its "
        f"default), with the 2-worker gateway measured beside it; front nginx: 2 workers; "
        f"keep-alive to upstreams in both; "
        f"access logs on in both proxies, as they ship (nginx's combined format to a file, "
        f"the gateway's JSON lines to a file); off in the upstream nginx.",
        "Errors: socket errors, timeouts and responses ≥ 400 counted by wrk (should be 0).",
        _ceiling_note(results),
        _public_server_note(results, instructions),
        "Timing probe: requests of all classes shuffled into one random order, latency measured "
        "client-side per request over 4 keep-alive connections to the 2-worker gateway; "
        "GATEWAY_FAILED_AUTH_THRESHOLD raised so that the probe's failures from one address are "
        "not answered 429. New unknown IDs are IDs no key has: each costs a key_service lookup "
        "only within the budget for IDs a process does not know to exist "
        "(GATEWAY_UNKNOWN_KEY_LOOKUPS, 5 a second), and is refused without one past it; "
        "repeated ones are answered from the gateway's negative cache (its TTL, "
        "GATEWAY_NEGATIVE_TTL, is 5 s by default) when they were looked up.",
    ]
    if probe is not None and probe.reconnects:
        notes.append(f"The probe had to reconnect {probe.reconnects} times (outside the timing).")
    report = Report(
        header=_machine(options.command, load_before),
        throughput=[(label, r.rps, r.p50_ms, r.p99_ms, r.errors,
                     float("nan") if label in _NO_CPU else r.cpu_us_per_request)
                    for label, r in results.items()],
        aims=_aims(results, rev_summary, probe),
        revocation=rev_summary,
        revocation_note=rev_note,
        revocation_wait=wait_summary,
        revocation_wait_note=wait_note,
        probe_rows=_probe_rows(probe),
        secret_test=probe.secret_test if probe else None,
        info_tests=probe.info_tests if probe else {},
        notes=notes,
        failures=failures or None,
        instructions=list(instructions.per_request.items()) if instructions else (),
        instructions_note=_instructions_note(instructions),
    )
    return render(report), not failures


def main(argv: Sequence[str] | None = None, command: str | None = None) -> int:
    """Run the gateway benchmark; prints the report and writes it to ``--output``.

    ``command`` is how the run was started, as the report should name it.
    """
    options = _parse(argv, command)
    previous_term = signal.signal(signal.SIGTERM, _on_sigterm)
    # Explicitly, since a shell that starts us in the background hands SIGINT down ignored.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        markdown, complete = run(options)
    except KeyboardInterrupt:
        print("gateway benchmark interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    except (StackError, NginxError, AdminError) as exc:
        print(f"gateway benchmark could not start its stack: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(markdown)
    print(markdown)
    print(f"(written to {options.output})", file=sys.stderr)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
