"""HTTP server benchmark: requests/s and p50/p99 latency through a real uvicorn server.

Run: ``python benchmarks/bench_http.py`` (``--quick`` for a smoke run; ``--rounds``,
``--seconds``, ``--connections``, ``--procs``, ``--store memory|sqlite|all``). Prints figures;
asserts nothing. Everything is measured in this one run, on this machine, with the servers
and the load generator on it:

* **the framework's floor**: the same Starlette + uvicorn stack answering a constant JSON body
  (28 bytes) to ``GET /floor`` — a bare request, no credentials;
* **the floor of a POST**: the same, to a request shaped like a redemption (``POST`` with the
  credentials and the redemption's JSON body, which Starlette reads): what HTTP alone costs
  for such a request;
* ``GET /v1/vouchers/{code}``;
* ``POST /v1/validations`` of one discount voucher with a LOCK session (each connection keeps
  its own voucher and session key: every request renews its lock, so each voucher holds one
  live session, as at a till that validates a basket again before paying);
* ``POST /v1/redemptions`` of one discount voucher (100 off a 10,000 order; each connection
  redeems its own voucher, no quantity limit);

on the in-memory store and on a SQLite file (the default ``synchronous=FULL``: every write
waits for the disk), each store in its own server process and the floors in a third, each
started as ``python -m uvicorn --factory bench_http:… --workers 1 --no-access-log``. The
target on the in-memory store (issue 13): redeem at ≥ 0.6× the floor's requests/s, with p99
under 20 ms at 32 connections.

**The load generator** is written for this: keep-alive HTTP/1.1 over asyncio's raw sockets
(:class:`asyncio.Protocol`), each connection sending pre-built request bytes and waiting for
the whole answer before the next (no pipelining); a request's latency runs from its write to
the last byte of its answer. ``--procs`` spreads the connections over that many generator
processes. Its ceiling is measured first, against a raw asyncio server that answers fixed
bytes without parsing anything; beside every figure, the CPU each side used (share of one
core): when the server is near 100 % and the generator well below, the server is what limits.

Each figure is measured ``--rounds`` times, the rounds interleaved (ceiling, floor, …,
redeem, ceiling, …) so that a burst of load from elsewhere hits them all. The summary gives
each figure's best round by requests/s and the spread of the rounds, the server's CPU time per
request (user + system; it moves much less with the load around it than requests/s), and the
load the rest of the machine put on its CPUs meanwhile (``/proc/stat``: busy cores less the
server and the generator). The ratio to the floor is given from the best rounds and per round
(redeem and floor of the same round).

The stack is what ``pip install 'vouchercore[http]'`` brings: uvicorn with its h11 HTTP parser
and asyncio's own event loop; ``--http httptools`` / ``--loop uvloop`` (uvicorn's options)
switch them when those packages are installed.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import starlette
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from vouchercore import Engine
from vouchercore.http import create_app

APP_ID = "bench-app"
APP_TOKEN = "bench-token-0123456789"
#: Vouchers per kind: more than any number of connections used, so each has its own.
VOUCHERS = 256
ORDER_AMOUNT = 10_000
#: The floor's answer: a constant JSON body.
FLOOR_BODY = b'{"object":"floor","ok":true}'
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: The names of the figures the summary compares.
CEILING = "generator ceiling (raw)"
FLOOR = "floor"
POST_FLOOR = "floor, POST"


# --- the servers (each run in its own process) --------------------------------------------------


def floor_app() -> Starlette:
    """The framework's floor: Starlette answering a constant JSON body on ``/floor`` (a
    uvicorn factory); a POST's body is read first."""

    async def floor(request: Request) -> Response:
        if request.method == "POST":
            await request.body()
        return Response(FLOOR_BODY, media_type="application/json")

    return Starlette(routes=[Route("/floor", floor, methods=["GET", "POST"])])


def voucher_app() -> Starlette:
    """vouchercore's server over the store ``BENCH_HTTP_STORE`` names, seeded with the
    benchmark's vouchers (a uvicorn factory)."""
    engine = Engine(os.environ["BENCH_HTTP_STORE"])
    discount = {"type": "AMOUNT", "amount_off": 100}
    for i in range(VOUCHERS):
        engine.create_voucher(f"GET-{i}", discount=discount, metadata={"till": i})
        engine.create_voucher(f"LOCK-{i}", discount=discount, redemption={"quantity": 10**9})
        engine.create_voucher(f"REDEEM-{i}", discount=discount)
    return create_app(engine, app_id=APP_ID, app_token=APP_TOKEN)


class _RawServer(asyncio.Protocol):
    """The cheapest HTTP server: one fixed answer per request head, nothing parsed (the
    generator's requests to it have no body)."""

    ANSWER = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
        + str(len(FLOOR_BODY)).encode()
        + b"\r\n\r\n"
        + FLOOR_BODY
    )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        data = self.pending + data
        heads = data.count(b"\r\n\r\n")
        self.pending = data[data.rfind(b"\r\n\r\n") + 4 :] if heads else data
        if heads:
            self.transport.write(self.ANSWER * heads)


def serve_raw(port: int) -> None:
    """Run the raw server on 127.0.0.1:*port* until stopped."""

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_RawServer, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A server process on 127.0.0.1."""

    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it, and wait (at most 120 s) until it accepts connections."""
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode() if self.process.stderr else ""
                raise SystemExit(f"the {self.name} server did not start:\n{error}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"the {self.name} server did not start in 120 s")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down gracefully), SIGKILL after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def uvicorn_server(name: str, factory: str, store: str | None, args: argparse.Namespace) -> Server:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        f"bench_http:{factory}",
        "--app-dir",
        str(Path(__file__).resolve().parent),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
        "--http",
        args.http,
        "--loop",
        args.loop,
    ]
    env = dict(os.environ)
    if store is not None:
        env["BENCH_HTTP_STORE"] = store
    return Server(name, command, env, port)


def raw_server() -> Server:
    port = free_port()
    command = [sys.executable, str(Path(__file__).resolve()), "--raw-server", str(port)]
    return Server("raw", command, dict(os.environ), port)


# --- requests -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One figure: a server and the requests each connection sends (connection *i* sends
    ``requests[i % len(requests)]`` over and over), and what its answer must show."""

    name: str
    server: str
    requests: tuple[bytes, ...]
    expect: str = ""  # "voucher", "lock", "redemption" or "" (any 200)


def http_request(method: str, path: str, port: int, body: Any = None, auth: bool = True) -> bytes:
    """The bytes of one HTTP/1.1 keep-alive request."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if auth:
        lines += [f"X-App-Id: {APP_ID}", f"X-App-Token: {APP_TOKEN}"]
    payload = b""
    if body is not None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def _redeemables(kind: str, i: int) -> list[dict[str, Any]]:
    return [{"object": "voucher", "id": f"{kind}-{i}"}]


def _redeem_body(i: int) -> dict[str, Any]:
    return {"redeemables": _redeemables("REDEEM", i), "order": {"amount": ORDER_AMOUNT}}


def floor_workloads(port: int) -> list[Workload]:
    return [
        Workload(FLOOR, "floor", (http_request("GET", "/floor", port, auth=False),)),
        Workload(
            POST_FLOOR,
            "floor",
            tuple(http_request("POST", "/floor", port, _redeem_body(i)) for i in range(VOUCHERS)),
        ),
    ]


def voucher_workloads(server: str, port: int) -> list[Workload]:
    get = tuple(http_request("GET", f"/v1/vouchers/GET-{i}", port) for i in range(VOUCHERS))
    validate = tuple(
        http_request(
            "POST",
            "/v1/validations",
            port,
            {
                "redeemables": _redeemables("LOCK", i),
                "order": {"amount": ORDER_AMOUNT},
                "session": {"type": "LOCK", "key": f"till-{i}", "ttl": 1, "ttl_unit": "HOURS"},
            },
        )
        for i in range(VOUCHERS)
    )
    redeem = tuple(
        http_request("POST", "/v1/redemptions", port, _redeem_body(i)) for i in range(VOUCHERS)
    )
    return [
        Workload(f"{server}: get voucher", server, get, "voucher"),
        Workload(f"{server}: validate, LOCK", server, validate, "lock"),
        Workload(f"{server}: redeem", server, redeem, "redemption"),
    ]


def _content_length(head: bytes) -> int | None:
    lowered = head.lower()
    at = lowered.find(b"\ncontent-length:")
    if at < 0:
        return None
    end = lowered.find(b"\r", at + 16)
    return int(lowered[at + 16 : end if end >= 0 else None])


def exchange(port: int, request: bytes) -> tuple[int, bytes]:
    """Send one request on a fresh connection; the status and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request)
        data = b""
        while True:
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                length = _content_length(data[:head_end])
                if length is not None and len(data) >= head_end + 4 + length:
                    return int(data[9:12]), data[head_end + 4 : head_end + 4 + length]
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit(f"the server closed the connection: {data[:200]!r}")
            data += chunk


def check_answers(workloads: Sequence[Workload], ports: dict[str, int]) -> dict[str, int]:
    """Send each workload's first request once and check that its answer is what the figure
    claims to measure (a voucher, a valid validation holding its LOCK, a succeeded
    redemption); the size of each answer's body."""
    sizes: dict[str, int] = {}
    for work in workloads:
        status, body = exchange(ports[work.server], work.requests[0])
        if status != 200:
            raise SystemExit(f"{work.name}: HTTP {status}: {body[:300]!r}")
        answer = json.loads(body)
        if work.expect == "voucher":
            ok = answer["object"] == "voucher"
        elif work.expect == "lock":
            ok = answer["valid"] is True and answer["session"]["type"] == "LOCK"
        elif work.expect == "redemption":
            ok = answer["parent_redemption"]["status"] == "SUCCEEDED"
        else:
            ok = True
        if not ok:
            raise SystemExit(f"{work.name}: unexpected answer {body[:300]!r}")
        sizes[work.name] = len(body)
    return sizes


# --- the load generator -------------------------------------------------------------------------


@dataclass
class _Run:
    """What one generator process shares between its connections."""

    loop: asyncio.AbstractEventLoop
    start: float  # the measured window, on time.perf_counter (CLOCK_MONOTONIC: every process)
    end: float
    latencies: array.array[float] = field(default_factory=lambda: array.array("d"))
    errors: list[str] = field(default_factory=list)


class _Client(asyncio.Protocol):
    """One keep-alive connection: send the request, read the whole answer, keep its latency
    when it ended inside the measured window, send again until the window closes."""

    def __init__(self, shared: _Run, request: bytes) -> None:
        self.shared = shared
        self.request = request
        self.buffer = b""
        self.need = -1  # the bytes of the whole answer, once its head is read
        self.sent = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed = shared.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.sent = time.perf_counter()
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        shared = self.shared
        while True:
            if self.need < 0:
                head_end = buffer.find(b"\r\n\r\n")
                if head_end < 0:
                    break
                length = _content_length(buffer[:head_end])
                if length is None:
                    shared.errors.append(f"an answer without content-length: {buffer[:200]!r}")
                    length = 0
                self.need = head_end + 4 + length
            if len(buffer) < self.need:
                break
            now = time.perf_counter()
            if buffer[9:12] != b"200":
                shared.errors.append(buffer[: self.need][:300].decode(errors="replace"))
            if shared.start <= now <= shared.end:
                shared.latencies.append(now - self.sent)
            buffer = buffer[self.need :]
            self.need = -1
            assert self.transport is not None
            if now < shared.end and not buffer:
                self.sent = now
                self.transport.write(self.request)
            else:
                self.transport.close()
                break
        self.buffer = buffer

    def connection_lost(self, exc: Exception | None) -> None:
        if time.perf_counter() < self.shared.end:
            self.shared.errors.append(f"the server closed a connection early ({exc})")
        if not self.closed.done():
            self.closed.set_result(None)


async def _generate(
    port: int, requests: Sequence[bytes], first: int, count: int, start: float, end: float
) -> _Run:
    loop = asyncio.get_running_loop()
    shared = _Run(loop, start, end)
    clients = []
    for i in range(first, first + count):
        request = requests[i % len(requests)]
        _, client = await loop.create_connection(
            lambda request=request: _Client(shared, request),  # type: ignore[misc]
            "127.0.0.1",
            port,
        )
        clients.append(client)
    waiting = end - time.perf_counter() + 60
    await asyncio.wait_for(asyncio.gather(*(c.closed for c in clients)), waiting)
    return shared


def _generator_process(
    pipe: Connection,
    port: int,
    requests: Sequence[bytes],
    first: int,
    count: int,
    start: float,
    end: float,
) -> None:
    run = asyncio.run(_generate(port, requests, first, count, start, end))
    pipe.send((run.latencies.tobytes(), run.errors[:5], len(run.errors)))
    pipe.close()


def _cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process *pid* (all its threads) so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def _busy_seconds() -> float:
    """Busy CPU seconds of the whole machine so far, all cores (``/proc/stat``)."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS


@dataclass
class Measure:
    """One round of one figure."""

    rate: float  # requests/s
    p50: float  # seconds
    p99: float
    server_cpu: float  # share of one core
    server_user_us: float  # the server's CPU time per request, µs
    server_system_us: float
    generator_cpu: float  # share of one core (all generator processes)
    other_load: float  # cores busy with anything else

    @property
    def server_us(self) -> float:
        return self.server_user_us + self.server_system_us

    @property
    def line(self) -> str:
        return (
            f"{self.rate:8,.0f} /s  p50 {self.p50 * 1e3:6.2f} ms  p99 {self.p99 * 1e3:6.2f} ms  "
            f"server {self.server_cpu:4.0%} {self.server_us:5.0f} µs/req "
            f"({self.server_user_us:.0f} user + {self.server_system_us:.0f} sys)  "
            f"generator {self.generator_cpu:4.0%}  other load {self.other_load:4.2f} cores"
        )


def measure(
    server_pid: int,
    port: int,
    requests: Sequence[bytes],
    connections: int,
    procs: int,
    warmup: float,
    seconds: float,
) -> Measure:
    """Drive *connections* keep-alive connections for *warmup* + *seconds*; the figures of
    the last *seconds*."""
    context = multiprocessing.get_context("fork")
    start = time.perf_counter() + 0.2 + warmup  # the connections open during the warm-up
    end = start + seconds
    workers = []
    share, extra = divmod(connections, procs)
    first = 0
    for k in range(procs):
        count = share + (k < extra)
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_generator_process, args=(sender, port, requests, first, count, start, end)
        )
        process.start()
        sender.close()
        workers.append((process, receiver))
        first += count
    pids = [server_pid] + [process.pid or 0 for process, _ in workers]
    time.sleep(max(0.0, start - time.perf_counter()))
    before = [_cpu_times(pid) for pid in pids]
    busy_before = _busy_seconds()
    taken = time.perf_counter()
    time.sleep(max(0.0, end - time.perf_counter()))
    after = [_cpu_times(pid) for pid in pids]
    busy_after = _busy_seconds()
    elapsed = time.perf_counter() - taken
    latencies = array.array("d")
    errors: list[str] = []
    error_count = 0
    for process, receiver in workers:
        raw, some, count = receiver.recv()
        latencies.frombytes(raw)
        errors += some
        error_count += count
        process.join()
    if error_count:
        raise SystemExit(f"{error_count} request(s) failed, for example:\n" + "\n".join(errors))
    if not latencies:
        raise SystemExit("no request finished in the measured window")
    ordered = sorted(latencies)
    rate = len(ordered) / seconds
    user, system = (after[0][i] - before[0][i] for i in (0, 1))
    generator = sum(a[0] + a[1] - b[0] - b[1] for a, b in zip(after[1:], before[1:], strict=True))
    server_cpu = (user + system) / elapsed
    generator_cpu = generator / elapsed
    return Measure(
        rate=rate,
        p50=ordered[len(ordered) // 2],
        p99=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        server_cpu=server_cpu,
        server_user_us=user / elapsed / rate * 1e6,
        server_system_us=system / elapsed / rate * 1e6,
        generator_cpu=generator_cpu,
        # busy time of the whole machine, less what the server and the generator used
        other_load=max(0.0, (busy_after - busy_before) / elapsed - server_cpu - generator_cpu),
    )


# --- the run ------------------------------------------------------------------------------------


@contextlib.contextmanager
def running(servers: Sequence[Server]) -> Iterator[None]:
    try:
        for server in servers:
            server.start()
        yield
    finally:
        for server in servers:
            server.stop()


def summary_line(name: str, rounds: list[Measure]) -> str:
    best = max(rounds, key=lambda m: m.rate)
    rates = [m.rate for m in rounds]
    p99s = [m.p99 * 1e3 for m in rounds]
    return (
        f"  {name:<24} {best.rate:8,.0f} /s [{min(rates):6,.0f}–{max(rates):6,.0f}]  "
        f"p50 {best.p50 * 1e3:6.2f} ms  p99 {best.p99 * 1e3:6.2f} ms "
        f"[{min(p99s):6.2f}–{max(p99s):6.2f}]  "
        f"server {statistics.median(m.server_us for m in rounds):5.0f} µs/req  "
        f"other load {statistics.median(m.other_load for m in rounds):4.2f}"
    )


def ratio_lines(results: dict[str, list[Measure]], stores: Sequence[str]) -> list[str]:
    floor = results[FLOOR]
    post_floor = results[POST_FLOOR]
    best_floor = max(m.rate for m in floor)
    lines = []
    ceiling = max(m.rate for m in results[CEILING])
    lines.append(
        f"  the generator's ceiling, {ceiling:,.0f} /s, is {ceiling / best_floor:.1f}× the "
        "floor's best; it used "
        f"{max(m.generator_cpu for name in results for m in results[name] if name != CEILING):.0%}"
        " of a core at most while measuring the servers"
    )
    for store in stores:
        for what in ("get voucher", "validate, LOCK", "redeem"):
            rounds = results.get(f"{store}: {what}")
            if not rounds:
                continue
            best = max(rounds, key=lambda m: m.rate)
            per_round = [m.rate / f.rate for m, f in zip(rounds, floor, strict=True)]
            to_post = max(m.rate for m in rounds) / max(m.rate for m in post_floor)
            cpu = statistics.median(m.server_us for m in rounds)
            floor_cpu = statistics.median(m.server_us for m in floor)
            lines.append(
                f"  {store + ': ' + what:<24} / floor: {best.rate / best_floor:.2f}× best to "
                f"best, per round {min(per_round):.2f}–{max(per_round):.2f}× "
                f"(median {statistics.median(per_round):.2f}×); server CPU "
                f"{floor_cpu / cpu:.2f}×; / floor, POST: {to_post:.2f}×"
            )
    redeem = results.get("memory: redeem")
    if redeem:
        best = max(redeem, key=lambda m: m.rate)
        per_round = [m.rate / f.rate for m, f in zip(redeem, floor, strict=True)]
        ratio = best.rate / best_floor
        met = ratio >= 0.6 and best.p99 < 0.020
        lines.append(
            f"  target (memory redeem ≥ 0.6× the floor, p99 < 20 ms): {ratio:.2f}× "
            f"(rounds {min(per_round):.2f}–{max(per_round):.2f}×), p99 {best.p99 * 1e3:.2f} ms "
            f"(worst round {max(m.p99 for m in redeem) * 1e3:.2f} ms): "
            + ("met" if met else "not met")
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short measurements (a smoke run)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per figure (default 5)")
    parser.add_argument("--seconds", type=float, default=None, help="measured s (default 3)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up s (default 1)")
    parser.add_argument("--connections", type=int, default=32, help="default 32")
    parser.add_argument("--procs", type=int, default=1, help="generator processes (default 1)")
    parser.add_argument("--store", choices=("memory", "sqlite", "all"), default="all")
    parser.add_argument("--http", default="h11", help="uvicorn's --http (default h11)")
    parser.add_argument("--loop", default="asyncio", help="uvicorn's --loop (default asyncio)")
    parser.add_argument("--raw-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_server is not None:
        serve_raw(args.raw_server)
        return
    rounds = args.rounds or (1 if args.quick else 5)
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 1.0)
    folder = tempfile.mkdtemp(prefix="vouchercore-bench-http-")
    try:
        run(args, rounds, seconds, warmup, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run(args: argparse.Namespace, rounds: int, seconds: float, warmup: float, folder: str) -> None:
    raw = raw_server()
    floor = uvicorn_server("floor", "floor_app", None, args)
    servers = {"raw": raw, "floor": floor}
    stores = [name for name in ("memory", "sqlite") if args.store in (name, "all")]
    urls = {"memory": "memory://", "sqlite": f"sqlite:///{folder}/book.db"}
    for name in stores:
        servers[name] = uvicorn_server(name, "voucher_app", urls[name], args)
    workloads = [Workload(CEILING, "raw", (http_request("GET", "/", raw.port, auth=False),))]
    workloads += floor_workloads(floor.port)
    for name in stores:
        workloads += voucher_workloads(name, servers[name].port)

    print(
        f"vouchercore HTTP benchmark: {args.connections} connections, {args.procs} generator "
        f"process(es), {warmup:g} s warm-up + {seconds:g} s measured, {rounds} round(s); "
        f"{os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.2f} at the start"
    )
    print(
        f"servers: uvicorn {uvicorn.__version__} (--http {args.http}, --loop {args.loop}, "
        f"--workers 1, --no-access-log), Starlette {starlette.__version__}, "
        f"Python {sys.version.split()[0]}; SQLite synchronous=FULL",
        flush=True,
    )
    results: dict[str, list[Measure]] = {work.name: [] for work in workloads}
    with running(list(servers.values())):
        sizes = check_answers(workloads, {name: server.port for name, server in servers.items()})
        print("answer bodies: " + ", ".join(f"{n} {s:,} B" for n, s in sizes.items()), flush=True)
        for k in range(rounds):
            print(f"-- round {k + 1}/{rounds}", flush=True)
            for work in workloads:
                server = servers[work.server]
                figures = measure(
                    server.pid,
                    server.port,
                    work.requests,
                    args.connections,
                    args.procs,
                    warmup,
                    seconds,
                )
                results[work.name].append(figures)
                print(f"  {work.name:<24} {figures.line}", flush=True)
    print()
    print(
        f"== summary, {args.connections} connections: best round by requests/s [worst–best "
        "round], its p50 and p99 [p99 of every round], the server's CPU time per request and "
        "the load from elsewhere (cores; medians over the rounds)"
    )
    for work in workloads:
        print(summary_line(work.name, results[work.name]))
    for line in ratio_lines(results, stores):
        print(line)
    print(f"  load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
