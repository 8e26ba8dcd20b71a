"""Latency and throughput of the REST API: reads through gunicorn, and create → ACTIVE on the whole stack.

Each backend measured (SQLite, what ``make run`` uses, and PostgreSQL) gets its own ``trove-es up``
in a temporary data directory, with zero-delay fake compute and unlimited quotas, and the same run
measures:

- GET instance show under a few concurrent keep-alive clients, against a baseline: a bare Falcon
  app returning the same bytes as a real show response, served by the same gunicorn options
  (``ApiServer``: gthread, the same workers and threads). The ratio is what the real read path
  (token check, store version check, view query, rendering) costs on top of gunicorn and Falcon.
  Rounds alternate between the two so that drift and background work hit both alike.
- GET show and GET list with one sequential keep-alive client, on a tenant with 5 ACTIVE
  instances, as the OpenStack Trove 26 figures in PERFORMANCE.md were taken (show 74 req/s, list
  25 req/s).
- POST create latency, one sequential client, and create → ACTIVE at 20 concurrent creates: from
  the POST being sent to the first GET that shows it ACTIVE (one observer per round polls the
  round's list every 20 ms, rather than every client its own show: that polling was the load). Each
  round is a burst on a quiet stack: it starts a few seconds after the builds before it went ACTIVE,
  once what follows a build (quota settlement, the guest's move to long fetch parks) is over.
  The event store's timestamps then split that time into the hops it went through.

Targets: show at least half the baseline's throughput; sequential show and list at least 10 times Trove's;
POST create median at most 20 ms on the embedded stack; create → ACTIVE p99 under 1 s. The report is
printed and written as JSON under ``benchmarks/results/``; the exit code is 0 whether or not the
targets are met, non-zero only when the benchmark itself fails.

Run with ``make bench``, or ``PYTHONPATH=. python benchmarks/api.py --backend sqlite`` for a quicker
look. The PostgreSQL backend needs a server (``--postgres``) where it may create and drop databases.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import falcon
import psycopg

from adapters.event_store import event_store_env
from adapters.guest_sim import SETTLE_AFTER_S
from adapters.kafka.broker import free_port
from adapters.rest.server import ApiServer
from adapters.settings import Settings, SettingsError, load_settings
from benchmarks.pipeline import (
    DEFAULT_POSTGRES,
    BenchmarkError,
    Child,
    CpuSnapshot,
    Databases,
    cpu_snapshot,
    cpu_used,
    exit_on_sigterm,
    installed_version,
    machine_info,
    postgres_pids,
    progress,
    write_report,
)
from services.application import TroveApplication

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
BACKENDS = ("sqlite", "postgresql")

READ_TENANT, CREATE_TENANT = "bench-read", "bench-create"
READ_INSTANCES = 5  # as many as the Trove 26 figures were taken with
CLIENTS = 4
SHOW_ROUNDS = 3
SEQUENTIAL_CREATES = 20
CREATE_CONCURRENCY = 20
ACTIVE_POLL_S = 0.02
QUIET_AFTER_BUILDS_S = SETTLE_AFTER_S + 1.0  # the fake guests' short-park window for new guests, and a second
CREATE_ATTEMPTS = 10  # a 409 asks the client to try again; a real client would
WARM_UP_CONNECTIONS = 8  # enough new connections that every gunicorn worker builds its app
WARM_UP_REQUESTS = 25
STACK_START_TIMEOUT_S = 120.0
ACTIVE_TIMEOUT_S = 60.0  # far beyond any healthy build; only stops a stalled stack hanging the benchmark
STOP_TIMEOUT_S = 40.0  # `up` gives its children 15 s, then the broker its own
REQUEST_TIMEOUT_S = 30.0
# gunicorn closes a keep-alive connection idle for 2 s; reopen before that rather than retry a POST.
MAX_IDLE_S = 1.0

CREATE_BODY = {"flavorRef": "2", "volume": {"size": 1}, "datastore": {"type": "postgresql"}}

TROVE_SHOW_PER_S, TROVE_LIST_PER_S, TROVE_CREATE_MEDIAN_MS = 74.0, 25.0, 100.0
TARGET_SHOW_RATIO = 0.5
TARGET_TROVE_MULTIPLE = 10.0
TARGET_CREATE_MEDIAN_MS = 20.0
TARGET_ACTIVE_P99_S = 1.0

log = logging.getLogger("benchmarks.api")


# HTTP clients ---------------------------------------------------------------------------------


class Client:
    """One keep-alive connection to 127.0.0.1, as a troveclient session would hold."""

    def __init__(self, endpoint: str, token: str) -> None:
        parts = urlsplit(endpoint)
        if parts.hostname != "127.0.0.1" or parts.port is None:
            raise BenchmarkError(f"the API endpoint {endpoint} is not on 127.0.0.1; the benchmark stays on loopback")
        self._host, self._port = parts.hostname, parts.port
        self._headers = {"X-Auth-Token": token, "Content-Type": "application/json"}
        self._connection: http.client.HTTPConnection | None = None
        self._last_used = 0.0

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        if self._connection is not None and time.monotonic() - self._last_used > MAX_IDLE_S:
            self.close()
        try:
            return self._send(method, path, data)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.close()
            if method != "GET":  # the server may have acted on it: sending it again could create twice
                raise
            return self._send(method, path, data)

    def _send(self, method: str, path: str, data: bytes | None) -> tuple[int, bytes]:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(self._host, self._port, timeout=REQUEST_TIMEOUT_S)
        self._connection.request(method, path, body=data, headers=self._headers)
        response = self._connection.getresponse()
        raw = response.read()
        self._last_used = time.monotonic()
        return response.status, raw

    def json(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        status, raw = self.call(method, path, body)
        if status != expect:
            raise BenchmarkError(f"{method} {path} answered {status}, not {expect}: {raw[:500]!r}")
        return json.loads(raw)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest rank: a value that was actually observed, never an interpolation between two."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


@dataclass(frozen=True)
class Load:
    """Requests on one or more connections: their count, the wall time they took and each one's latency."""

    requests: int
    seconds: float
    latencies_s: tuple[float, ...]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else float("inf")

    def as_json(self) -> dict[str, float]:
        return {"requests": self.requests, "seconds": round(self.seconds, 3), "requests_per_s": round(self.rate, 1),
                **latency_json(self.latencies_s)}

    @staticmethod
    def combine(loads: Sequence[Load]) -> Load:
        return Load(sum(load.requests for load in loads), sum(load.seconds for load in loads),
                    tuple(latency for load in loads for latency in load.latencies_s))


def latency_json(samples: Sequence[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(samples, 0.5) * 1000, 2), "p99_ms": round(percentile(samples, 0.99) * 1000, 2),
            "max_ms": round(max(samples) * 1000, 2)}


def run_load(endpoint: str, token: str, path: str, clients: int, requests_per_client: int) -> Load:
    """``clients`` connections each sending ``requests_per_client`` GETs back to back; every answer must be 200."""
    ready = threading.Barrier(clients + 1)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []

    def client_loop(index: int) -> None:
        client, own = Client(endpoint, token), latencies[index]
        try:
            client.call("GET", path)  # connect before the clock starts
            ready.wait()
            for _ in range(requests_per_client):
                started = time.perf_counter()
                status, raw = client.call("GET", path)
                own.append(time.perf_counter() - started)
                if status != 200:
                    failures.append(f"GET {path} answered {status}: {raw[:300]!r}")
                    return
        except (OSError, http.client.HTTPException, threading.BrokenBarrierError) as exc:
            failures.append(f"GET {path}: {exc!r}")
            ready.abort()
        finally:
            client.close()

    # Daemon threads: Ctrl-C unwinds the main thread, which stops the servers these are talking to.
    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a client failed; its message says why
        ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise BenchmarkError(f"{len(failures)} of {clients} clients failed; first: {failures[0]}")
    return Load(clients * requests_per_client, elapsed, tuple(latency for own in latencies for latency in own))


def warm_up(endpoint: str, token: str, paths: Sequence[str]) -> None:
    for path in paths:
        run_load(endpoint, token, path, WARM_UP_CONNECTIONS, WARM_UP_REQUESTS)


# Processes ------------------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, services: Sequence[Child],
               interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        for service in services:
            service.ensure_alive()
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{what} did not happen within {timeout_s:.0f}s")
        time.sleep(interval_s)


def answers(endpoint: str) -> bool:
    """The unauthenticated versions document answers 200: gunicorn listens and a worker has built its app."""
    client = Client(endpoint, "")
    try:
        return client.call("GET", "/")[0] == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        client.close()


def _process_table() -> dict[int, tuple[int, list[str]]]:
    """pid → (parent pid, command line) of every process we may read."""
    table = {}
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            table[int(entry.name)] = (parent, (entry / "cmdline").read_bytes().decode(errors="replace").split("\0"))
    return table


def _descendants(root: int, table: Mapping[int, tuple[int, list[str]]]) -> list[int]:
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _) in table.items() if ppid == parent]
        found.extend(children)
        frontier.extend(children)
    return found


def _component(command: list[str]) -> str:
    if command and Path(command[0]).name.startswith("tansu"):
        return "broker"
    if "adapters.cli" in command:
        args = command[command.index("adapters.cli") + 1:]
        if args[:2] == ["consume", "--projection"] and len(args) > 2:
            return f"projection-{args[2]}"
        return args[0] if args else "trove-es"
    return "other"


class Stack:
    """``trove-es up`` on a temporary data directory: the whole stack, API on a free port."""

    def __init__(self, backend: str, env: Mapping[str, str], data_dir: Path) -> None:
        self.backend = backend
        self.env = dict(env)
        self.data_dir = data_dir
        self.settings = load_settings(env)
        data_dir.mkdir(parents=True, exist_ok=True)
        self.service = Child(f"trove-es up ({backend})",
                             ["adapters.cli", "up", "--data-dir", str(data_dir), "--port", "0"], env,
                             data_dir / "up.log", stop_timeout_s=STOP_TIMEOUT_S)
        self.endpoint = ""

    def wait_until_serving(self) -> None:
        stack_file = self.data_dir / "stack.json"
        wait_until(stack_file.exists, STACK_START_TIMEOUT_S, "the stack writing stack.json", [self.service])
        self.endpoint = json.loads(stack_file.read_text())["api_endpoint"]
        try:
            wait_until(lambda: answers(self.endpoint), STACK_START_TIMEOUT_S,
                       f"the API answering on {self.endpoint}", [self.service])
        except BenchmarkError as exc:
            api_log = self.data_dir / "logs" / "api.log"
            tail = api_log.read_text(errors="replace")[-3000:] if api_log.exists() else "(no api.log)"
            raise BenchmarkError(f"{exc}; {api_log} ends:\n{tail}") from None

    def token(self, project: str) -> str:
        """Issued through the CLI on the stack's data directory, as an operator would."""
        command = [sys.executable, "-m", "adapters.cli", "token", "issue", "--data-dir", str(self.data_dir),
                   "--project", project, "--user", "bench"]
        done = subprocess.run(command, cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0 or not done.stdout.strip():
            raise BenchmarkError(f"`trove-es token issue` failed ({done.returncode}): {done.stderr[-2000:]}")
        return done.stdout.strip()

    def component_pids(self) -> dict[str, list[int]]:
        """The stack's processes by component; a gunicorn worker counts as ``api``."""
        table = _process_table()
        components: dict[str, list[int]] = {"up": [self.service.pid]}
        for child in (pid for pid, (ppid, _) in table.items() if ppid == self.service.pid):
            components.setdefault(_component(table[child][1]), []).extend([child, *_descendants(child, table)])
        if self.backend == "postgresql":
            # Every server process: other work on a shared server shows up here too.
            components["postgres"] = postgres_pids()
        return components

    def stop(self) -> None:
        self.service.stop()


# The baseline ---------------------------------------------------------------------------------


class StoredDocument:
    """Answers every show with the same stored bytes: what Falcon and gunicorn cost with nothing behind them."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def on_get(self, req: falcon.Request, resp: falcon.Response, **_params: str) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self._body


class BaselineServer(ApiServer):
    """The real ``ApiServer`` options (worker class, workers, threads, timeouts), serving the bare app."""

    def __init__(self, settings: Settings, body: bytes) -> None:
        self._body = body
        super().__init__(settings)

    def load(self) -> Any:
        app = falcon.App()
        app.add_route("/", StoredDocument(b'{"versions": []}'))
        # The real show's route template, so routing costs the same.
        app.add_route("/v1.0/{tenant_id}/instances/{instance}", StoredDocument(self._body))
        return app


def serve_baseline(body_path: Path, port: int) -> int:
    settings = load_settings().with_api_port(port)
    BaselineServer(settings, body_path.read_bytes()).run()
    return 0


def start_baseline(stack: Stack, body: bytes, work_dir: Path) -> tuple[Child, str]:
    body_path = work_dir / f"show-{stack.backend}.json"
    body_path.write_bytes(body)
    port = free_port("127.0.0.1")
    service = Child(f"baseline server ({stack.backend})",
                    ["benchmarks.api", "--serve-baseline", str(body_path), "--baseline-port", str(port)],
                    stack.env, work_dir / f"baseline-{stack.backend}.log", stop_timeout_s=STOP_TIMEOUT_S)
    endpoint = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(endpoint), STACK_START_TIMEOUT_S, f"the baseline server answering on {endpoint}",
               [service])
    return service, endpoint


# Measurements ---------------------------------------------------------------------------------


def create_instance(client: Client, tenant: str, name: str) -> tuple[str, float, int]:
    """POST one create: the new id, the latency of the answer that accepted it, and how many 409s came first."""
    for conflicts in range(CREATE_ATTEMPTS):
        started = time.perf_counter()
        status, raw = client.call("POST", f"/v1.0/{tenant}/instances", {"instance": {"name": name, **CREATE_BODY}})
        latency = time.perf_counter() - started
        if status == 200:
            return json.loads(raw)["instance"]["id"], latency, conflicts
        if status != 409:
            raise BenchmarkError(f"POST create answered {status}: {raw[:500]!r}")
        time.sleep(random.uniform(0.01, 0.05))  # a client backing off before it tries again
    raise BenchmarkError(f"POST create answered 409 {CREATE_ATTEMPTS} times in a row: {raw[:300]!r}")


def instance_status(client: Client, tenant: str, instance_id: str) -> str:
    status = client.json("GET", f"/v1.0/{tenant}/instances/{instance_id}")["instance"]["status"]
    if status == "ERROR":
        raise BenchmarkError(f"instance {instance_id} went to ERROR; see task-manager.log in the stack's logs")
    return str(status)


def wait_active_in_list(stack: Stack, client: Client, tenant: str, count: int) -> None:
    """Until the list, which reads the view alone, shows ``count`` ACTIVE instances: the view has caught up."""
    def caught_up() -> bool:
        instances = client.json("GET", f"/v1.0/{tenant}/instances?limit=100")["instances"]
        return sum(instance["status"] == "ACTIVE" for instance in instances) >= count

    wait_until(caught_up, ACTIVE_TIMEOUT_S, f"{count} ACTIVE instances in {tenant}'s list", [stack.service])


@dataclass(frozen=True)
class Reads:
    api_rounds: tuple[Load, ...]
    baseline_rounds: tuple[Load, ...]
    sequential_show: Load
    sequential_list: Load
    sequential_baseline_show: Load
    show_bytes: int
    cpu_api: dict[str, float]
    cpu_baseline: dict[str, float]


def measure_reads(stack: Stack, work_dir: Path, clients: int, requests_per_client: int,
                  sequential_requests: int) -> Reads:
    token = stack.token(READ_TENANT)
    client = Client(stack.endpoint, token)
    ids = [create_instance(client, READ_TENANT, f"read-{i}")[0] for i in range(READ_INSTANCES)]
    wait_active_in_list(stack, client, READ_TENANT, READ_INSTANCES)
    show_path, list_path = f"/v1.0/{READ_TENANT}/instances/{ids[0]}", f"/v1.0/{READ_TENANT}/instances"
    status, body = client.call("GET", show_path)
    client.close()
    if status != 200:
        raise BenchmarkError(f"GET show answered {status}: {body[:300]!r}")
    progress(f"{stack.backend}: {READ_INSTANCES} instances ACTIVE in the view; show response is {len(body)} bytes")
    baseline, baseline_endpoint = start_baseline(stack, body, work_dir)
    try:
        checker = Client(baseline_endpoint, token)
        served = checker.call("GET", show_path)
        checker.close()
        if served != (200, body):
            raise BenchmarkError(f"the baseline server does not answer the stored show document: {served[1][:200]!r}")
        warm_up(stack.endpoint, token, [show_path, list_path])
        warm_up(baseline_endpoint, token, [show_path])

        def baseline_pids() -> dict[str, list[int]]:
            return {"baseline": [baseline.pid, *_descendants(baseline.pid, _process_table())],
                    "benchmark client": [os.getpid()]}

        def api_pids() -> dict[str, list[int]]:
            return {**stack.component_pids(), "benchmark client": [os.getpid()]}

        api_rounds: list[Load] = []
        baseline_rounds: list[Load] = []
        cpu: dict[str, list[CpuSnapshot]] = {"api": [], "baseline": []}
        for round_number in range(SHOW_ROUNDS):
            # Alternate which goes first, so a trend in the machine's load does not favour one side.
            order = ("baseline", "api") if round_number % 2 == 0 else ("api", "baseline")
            for side in order:
                endpoint, rounds, pids = ((baseline_endpoint, baseline_rounds, baseline_pids) if side == "baseline"
                                          else (stack.endpoint, api_rounds, api_pids))
                before = cpu_snapshot(pids())
                measured = run_load(endpoint, token, show_path, clients, requests_per_client)
                cpu[side] += [before, cpu_snapshot(pids())]
                rounds.append(measured)
                progress(f"{stack.backend}: show, {clients} clients, {side}: {measured.rate:,.0f} req/s, "
                         f"p50 {percentile(measured.latencies_s, 0.5) * 1000:.2f} ms, "
                         f"p99 {percentile(measured.latencies_s, 0.99) * 1000:.2f} ms")
        sequential_baseline = run_load(baseline_endpoint, token, show_path, 1, sequential_requests)
    finally:
        baseline.stop()
    sequential_show = run_load(stack.endpoint, token, show_path, 1, sequential_requests)
    sequential_list = run_load(stack.endpoint, token, list_path, 1, sequential_requests // 2)
    progress(f"{stack.backend}: one sequential client: show {sequential_show.rate:,.0f} req/s, "
             f"list {sequential_list.rate:,.0f} req/s, baseline show {sequential_baseline.rate:,.0f} req/s")
    return Reads(tuple(api_rounds), tuple(baseline_rounds), sequential_show, sequential_list, sequential_baseline,
                 len(body), _sum_cpu(cpu["api"]), _sum_cpu(cpu["baseline"]))


def _sum_cpu(snapshots: list[CpuSnapshot]) -> dict[str, float]:
    total: dict[str, float] = {}
    for before, after in zip(snapshots[::2], snapshots[1::2], strict=True):
        for component, seconds in cpu_used(before, after).items():
            total[component] = round(total.get(component, 0.0) + seconds, 2)
    return total


@dataclass
class Build:
    """One create in a concurrent round, as its client saw it."""

    instance_id: str = ""
    sent_at: float = 0.0  # wall clock, to compare with the event store's timestamps
    post_s: float = 0.0
    conflicts: int = 0
    started: float = 0.0  # perf counter when the POST was sent
    active_s: float = 0.0
    active_at: float = 0.0


@dataclass(frozen=True)
class Creates:
    sequential_post: Load
    builds: tuple[Build, ...]
    list_polls_s: tuple[float, ...]  # the observer's GET list latencies during the rounds
    stages: dict[str, dict[str, float]]
    cpu_seconds: dict[str, float]
    rounds_seconds: float


def measure_creates(stack: Stack, rounds: int) -> Creates:
    token = stack.token(CREATE_TENANT)
    client = Client(stack.endpoint, token)
    latencies, seq_ids = [], []
    started = time.perf_counter()
    for i in range(SEQUENTIAL_CREATES):
        instance_id, latency, _conflicts = create_instance(client, CREATE_TENANT, f"seq-{i}")
        seq_ids.append(instance_id)
        latencies.append(latency)
    sequential = Load(SEQUENTIAL_CREATES, time.perf_counter() - started, tuple(latencies))
    progress(f"{stack.backend}: POST create, one sequential client: "
             f"p50 {percentile(latencies, 0.5) * 1000:.1f} ms")
    wait_until(lambda: all(instance_status(client, CREATE_TENANT, i) == "ACTIVE" for i in seq_ids),
               ACTIVE_TIMEOUT_S, "the sequential creates becoming ACTIVE", [stack.service], interval_s=0.2)
    client.close()

    builds: list[Build] = []
    polls: list[float] = []
    cpu: dict[str, float] = {}
    rounds_seconds = 0.0
    for round_number in range(rounds):
        # Each round is a burst on a quiet stack: the builds before it are ACTIVE, and what follows a
        # build (quota settlement; its guest moving to long fetch parks) is over too.
        time.sleep(QUIET_AFTER_BUILDS_S)
        before, started = cpu_snapshot(stack.component_pids()), time.perf_counter()
        round_builds, round_polls = run_create_round(stack, round_number)
        rounds_seconds += time.perf_counter() - started
        for component, seconds in cpu_used(before, cpu_snapshot(stack.component_pids())).items():
            cpu[component] = round(cpu.get(component, 0.0) + seconds, 2)
        builds += round_builds
        polls += round_polls
        active = [b.active_s for b in round_builds]
        progress(f"{stack.backend}: create round {round_number + 1}/{rounds}, {CREATE_CONCURRENCY} concurrent: "
                 f"ACTIVE p50 {percentile(active, 0.5):.2f} s, max {max(active):.2f} s, "
                 f"{sum(b.conflicts for b in round_builds)} conflicts (409) retried")
    return Creates(sequential, tuple(builds), tuple(polls), stage_breakdown(stack, builds), cpu, rounds_seconds)


def run_create_round(stack: Stack, round_number: int) -> tuple[list[Build], list[float]]:
    """20 clients POST a create each, together; one observer polls the round's list until all are ACTIVE.

    Each round has a tenant of its own, so the observer's page holds that round's instances only. One
    list every ``ACTIVE_POLL_S`` sees every instance as soon as a client polling its own show would,
    at a twentieth of the requests: twenty clients polling their shows that often were half the
    stack's CPU, and so most of what they measured. Returns the builds and the observer's list latencies.
    """
    tenant = f"{CREATE_TENANT}-{round_number}"
    token = stack.token(tenant)
    builds = [Build() for _ in range(CREATE_CONCURRENCY)]
    go = threading.Barrier(CREATE_CONCURRENCY + 1)
    failures: list[str] = []
    posted = threading.Event()
    remaining = [CREATE_CONCURRENCY]
    lock = threading.Lock()
    first_active: dict[str, tuple[float, float]] = {}  # id -> (wall clock, perf counter) of the first ACTIVE seen
    list_latencies: list[float] = []

    def one(index: int) -> None:
        build, client = builds[index], Client(stack.endpoint, token)
        try:
            client.call("GET", "/")  # connected before the creates start together
            go.wait()
            build.sent_at, build.started = time.time(), time.perf_counter()
            build.instance_id, build.post_s, build.conflicts = create_instance(
                client, tenant, f"round{round_number}-{index}")
        except (BenchmarkError, OSError, http.client.HTTPException, threading.BrokenBarrierError) as exc:
            failures.append(str(exc))
            go.abort()
        finally:
            client.close()
            with lock:
                remaining[0] -= 1
                if remaining[0] == 0:
                    posted.set()

    def observe() -> None:
        client = Client(stack.endpoint, token)
        try:
            client.call("GET", "/")
            go.wait()
            started = time.perf_counter()
            while not failures:
                polled = time.perf_counter()
                instances = client.json("GET", f"/v1.0/{tenant}/instances?limit=100")["instances"]
                list_latencies.append(time.perf_counter() - polled)
                wall, now = time.time(), time.perf_counter()
                for instance in instances:
                    if instance["status"] == "ERROR":
                        raise BenchmarkError(f"instance {instance['id']} went to ERROR; see task-manager.log "
                                             "in the stack's logs")
                    if instance["status"] == "ACTIVE":
                        first_active.setdefault(instance["id"], (wall, now))
                if posted.is_set() and len(first_active) >= CREATE_CONCURRENCY:
                    return
                if now - started > ACTIVE_TIMEOUT_S:
                    raise BenchmarkError(f"{CREATE_CONCURRENCY - len(first_active)} instances not ACTIVE after "
                                         f"{ACTIVE_TIMEOUT_S:.0f}s")
                time.sleep(ACTIVE_POLL_S)
        except (BenchmarkError, OSError, http.client.HTTPException, threading.BrokenBarrierError) as exc:
            failures.append(str(exc))
            go.abort()
        finally:
            client.close()

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(CREATE_CONCURRENCY)]
    threads.append(threading.Thread(target=observe, daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stack.service.ensure_alive()
    if failures:
        raise BenchmarkError(f"{len(failures)} of {CREATE_CONCURRENCY} creates failed; first: {failures[0]}")
    for build in builds:
        build.active_at, seen = first_active[build.instance_id]
        build.active_s = seen - build.started
    return builds, list_latencies


# The hops of a build, each ending at the first event of its kind (service statuses by their value); an
# event's timestamp is when the writer made it, just before saving. A hop whose event an instance does not
# have (zero-delay compute provisions a server already ACTIVE) is skipped.
MILESTONES = (
    ("POST sent -> CreateRequested (API, 409 retries)", "CreateRequested"),
    ("-> ServerProvisioned (relay, task manager, compute)", "ServerProvisioned"),
    ("-> server ACTIVE (task manager polls compute)", "ServerStatusChanged:ACTIVE"),
    ("-> PrepareSent (task manager; with ServerProvisioned when it booted at once)", "PrepareSent"),
    ("-> guest building (guest topic, fake guest, conductor)", "ServiceStatusChanged:building"),
    ("-> guest healthy (fake guest, conductor)", "ServiceStatusChanged:healthy"),
    ("-> OperationSucceeded (the conductor, with healthy)", "OperationSucceeded"),
)
STATUS_ATTRIBUTES = {"ServerStatusChanged": "server_status", "ServiceStatusChanged": "service_status"}
SEEN_ACTIVE = "-> a GET shows ACTIVE (relay, view, read-your-writes, polling)"


def stage_breakdown(stack: Stack, builds: Sequence[Build]) -> dict[str, dict[str, float]]:
    """Where create → ACTIVE went, from the event store's timestamps of each instance's events."""
    app = TroveApplication(env=event_store_env(stack.settings.event_store_url))
    durations: dict[str, list[float]] = {label: [] for label, _ in MILESTONES}
    durations[SEEN_ACTIVE] = []
    try:
        for build in builds:
            seen: dict[str, float] = {}
            for stored in app.repository.event_store.get(uuid.UUID(build.instance_id)):
                name = type(stored).__name__
                status = getattr(stored, STATUS_ATTRIBUTES.get(name, ""), None)
                seen.setdefault(f"{name}:{status}" if status else name, stored.timestamp.timestamp())
            previous = build.sent_at
            for label, name in MILESTONES:
                if name in seen:
                    durations[label].append(max(0.0, seen[name] - previous))
                    previous = seen[name]
            durations[SEEN_ACTIVE].append(max(0.0, build.active_at - previous))
    finally:
        app.close()
    return {label: {"p50_ms": round(percentile(values, 0.5) * 1000, 1),
                    "p99_ms": round(percentile(values, 0.99) * 1000, 1), "samples": len(values)}
            for label, values in durations.items() if values}


# One backend, end to end ----------------------------------------------------------------------


def stack_env(backend: str, data_dir: Path, store_url: str | None, read_url: str | None) -> dict[str, str]:
    """The caller's environment (so its API workers and threads apply), with this run's stack forced on loopback."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("TROVE_ES_EVENT_STORE_URL", "TROVE_ES_READ_MODEL_URL", "TROVE_ES_KAFKA_BOOTSTRAP_SERVERS")}
    env.update({
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "TROVE_ES_LOG_LEVEL": "INFO",
        "TROVE_ES_DATA_DIR": str(data_dir),
        "TROVE_ES_API_HOST": "127.0.0.1",
        "TROVE_ES_AUTH_MODE": "local",  # the benchmark issues its own tokens
        "TROVE_ES_COMPUTE_DRIVER": "fake",  # the control plane's speed, not the datastores' start-up
        "TROVE_ES_FAKE_COMPUTE_DELAY_S": "0",
        "TROVE_ES_QUOTA_INSTANCES": "-1",
        "TROVE_ES_QUOTA_VOLUMES": "-1",
    })
    if backend == "postgresql":
        assert store_url and read_url
        env["TROVE_ES_EVENT_STORE_URL"], env["TROVE_ES_READ_MODEL_URL"] = store_url, read_url
    return env


@dataclass
class BackendResult:
    backend: str
    settings: Settings
    reads: Reads
    creates: Creates


def run_backend(backend: str, work_dir: Path, databases: Databases | None, args: argparse.Namespace) -> BackendResult:
    store_url = read_url = None
    if backend == "postgresql":
        assert databases is not None
        store_url, read_url = databases.create("store"), databases.create("read")
    data_dir = work_dir / backend
    stack = Stack(backend, stack_env(backend, data_dir, store_url, read_url), data_dir)
    try:
        progress(f"{backend}: starting `trove-es up` in {data_dir}")
        stack.wait_until_serving()
        progress(f"{backend}: API answering on {stack.endpoint} ({stack.settings.api_workers} workers x "
                 f"{stack.settings.api_threads} threads)")
        reads = measure_reads(stack, work_dir, args.clients, args.requests, args.sequential_requests)
        creates = measure_creates(stack, args.create_rounds)
    except BenchmarkError as exc:
        raise BenchmarkError(f"{backend}: {exc}\nthe stack's logs are in {data_dir / 'logs'}") from None
    finally:
        progress(f"{backend}: stopping the stack")
        stack.stop()
        if databases is not None and store_url and read_url:
            # Best effort here: main's cleanup tries again and warns, without hiding why we got here.
            with contextlib.suppress(psycopg.Error):
                databases.drop(store_url)
                databases.drop(read_url)
    return BackendResult(backend, stack.settings, reads, creates)


# Report ---------------------------------------------------------------------------------------


def backend_report(result: BackendResult, clients: int) -> dict[str, Any]:
    reads, creates = result.reads, result.creates
    api, baseline = Load.combine(reads.api_rounds), Load.combine(reads.baseline_rounds)
    api_rate = statistics.median(load.rate for load in reads.api_rounds)
    baseline_rate = statistics.median(load.rate for load in reads.baseline_rounds)
    show_ratio = api_rate / baseline_rate
    show_vs_trove = reads.sequential_show.rate / TROVE_SHOW_PER_S
    list_vs_trove = reads.sequential_list.rate / TROVE_LIST_PER_S
    post_median_ms = percentile(creates.sequential_post.latencies_s, 0.5) * 1000
    active = [build.active_s for build in creates.builds]
    concurrent_post = [build.post_s for build in creates.builds]
    active_p99 = percentile(active, 0.99)
    polls = list(creates.list_polls_s)
    return {
        "event_store": result.settings.event_store_url.split(":", 1)[0],
        "show_concurrent": {
            "clients": clients,
            # requests_per_s is the median round's; the latencies are every round's requests together.
            "api": {**api.as_json(), "requests_per_s": round(api_rate, 1),
                    "rounds_requests_per_s": [round(load.rate, 1) for load in reads.api_rounds]},
            "baseline": {**baseline.as_json(), "requests_per_s": round(baseline_rate, 1),
                         "rounds_requests_per_s": [round(load.rate, 1) for load in reads.baseline_rounds]},
            "ratio": round(show_ratio, 3),
            "response_bytes": reads.show_bytes,
            "cpu_seconds_api_rounds": reads.cpu_api,
            "cpu_seconds_baseline_rounds": reads.cpu_baseline,
        },
        "sequential": {
            "show": reads.sequential_show.as_json(),
            "list": {**reads.sequential_list.as_json(), "instances": READ_INSTANCES},
            "baseline_show": reads.sequential_baseline_show.as_json(),
            "show_vs_trove": round(show_vs_trove, 1),
            "list_vs_trove": round(list_vs_trove, 1),
        },
        "create": {
            "post_sequential": {"creates": SEQUENTIAL_CREATES, **latency_json(creates.sequential_post.latencies_s)},
            "post_concurrent": {"creates": len(concurrent_post), **latency_json(concurrent_post)},
            "to_active": {"creates": len(active), "concurrency": CREATE_CONCURRENCY,
                          "p50_s": round(percentile(active, 0.5), 3), "p99_s": round(active_p99, 3),
                          "max_s": round(max(active), 3)},
            "conflicts_retried": sum(build.conflicts for build in creates.builds),
            # The observer's polls: a list waits, within a bound, for the view to hold the tenant's writes.
            "list_during_builds": {"requests": len(polls), **latency_json(polls)},
            "stages": creates.stages,
            "cpu_seconds_rounds": creates.cpu_seconds,
            "rounds_seconds": round(creates.rounds_seconds, 2),
        },
        "pass": {
            "show_ratio_to_baseline": show_ratio >= TARGET_SHOW_RATIO,
            "show_vs_trove": show_vs_trove >= TARGET_TROVE_MULTIPLE,
            "list_vs_trove": list_vs_trove >= TARGET_TROVE_MULTIPLE,
            # The target names the embedded stack; PostgreSQL's figure is reported, not judged.
            **({"post_create_median": post_median_ms <= TARGET_CREATE_MEDIAN_MS} if result.backend == "sqlite" else {}),
            "create_to_active_p99": active_p99 < TARGET_ACTIVE_P99_S,
        },
    }


def build_report(results: Sequence[BackendResult], args: argparse.Namespace, postgres_version: str | None,
                 load_at_start: Sequence[float]) -> dict[str, Any]:
    settings = results[0].settings
    machine = machine_info(postgres_version or "not used")
    # Anything else running on the machine (a test suite) shows here; every figure shares its cores.
    machine["load_average_at_start"] = [round(load, 2) for load in load_at_start]
    machine["packages"].update({name: installed_version(name) for name in ("falcon", "gunicorn")})
    return {
        "benchmark": "api",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {
            "backends": [result.backend for result in results],
            "gunicorn": {"worker_class": "gthread", "workers": settings.api_workers, "threads": settings.api_threads},
            "clients": args.clients,
            "requests_per_client_per_round": args.requests,
            "show_rounds": SHOW_ROUNDS,
            "sequential_requests": args.sequential_requests,
            "read_instances": READ_INSTANCES,
            "sequential_creates": SEQUENTIAL_CREATES,
            "create_concurrency": CREATE_CONCURRENCY,
            "create_rounds": args.create_rounds,
            "active_poll_interval_s": ACTIVE_POLL_S,
            "fake_compute_delay_s": 0.0,
            "read_your_writes_wait_s": settings.read_your_writes_wait_s,
        },
        "machine": machine,
        "references": {"trove_26_show_per_s": TROVE_SHOW_PER_S, "trove_26_list_per_s": TROVE_LIST_PER_S,
                       "trove_26_create_median_ms": TROVE_CREATE_MEDIAN_MS},
        "targets": {"show_ratio_to_baseline": TARGET_SHOW_RATIO, "show_and_list_vs_trove": TARGET_TROVE_MULTIPLE,
                    "post_create_median_ms_embedded": TARGET_CREATE_MEDIAN_MS,
                    "create_to_active_p99_s": TARGET_ACTIVE_P99_S},
        "backends": {result.backend: backend_report(result, args.clients) for result in results},
    }


def render(report: Mapping[str, Any]) -> str:
    machine, config = report["machine"], report["config"]
    verdict = {True: "PASS", False: "FAIL", None: ""}
    gunicorn = config["gunicorn"]
    lines = [
        f"API benchmark: gunicorn {gunicorn['worker_class']} {gunicorn['workers']} workers x {gunicorn['threads']} "
        f"threads, {machine['cpus_available']} CPUs, Python {machine['python']}, PostgreSQL {machine['postgresql']}",
        "load average at start {} / at the end {} (other work on the machine shares its cores)".format(
            *(" ".join(f"{load:.2f}" for load in machine[key]) for key in ("load_average_at_start", "load_average"))),
    ]
    for backend, figures in report["backends"].items():
        show, seq, create, passed = (figures["show_concurrent"], figures["sequential"], figures["create"],
                                     figures["pass"])
        api, base = show["api"], show["baseline"]
        active = create["to_active"]
        rows = [
            (f"show, {show['clients']} clients: req/s", f"{api['requests_per_s']:,.0f}",
             f"{base['requests_per_s']:,.0f} bare Falcon", f"{show['ratio']:.2f}x",
             f">= {TARGET_SHOW_RATIO}x", passed["show_ratio_to_baseline"]),
            (f"show, {show['clients']} clients: p50 / p99 ms", f"{api['p50_ms']:.1f} / {api['p99_ms']:.1f}",
             f"{base['p50_ms']:.1f} / {base['p99_ms']:.1f}", "", "", None),
            ("show, 1 client: req/s", f"{seq['show']['requests_per_s']:,.0f}",
             f"{TROVE_SHOW_PER_S:.0f} Trove 26", f"{seq['show_vs_trove']:.1f}x", f">= {TARGET_TROVE_MULTIPLE:.0f}x",
             passed["show_vs_trove"]),
            ("  (bare Falcon, 1 client)", f"{seq['baseline_show']['requests_per_s']:,.0f}", "", "", "", None),
            (f"list ({seq['list']['instances']} instances), 1 client: req/s", f"{seq['list']['requests_per_s']:,.0f}",
             f"{TROVE_LIST_PER_S:.0f} Trove 26", f"{seq['list_vs_trove']:.1f}x", f">= {TARGET_TROVE_MULTIPLE:.0f}x",
             passed["list_vs_trove"]),
            ("POST create, 1 client: p50 ms", f"{create['post_sequential']['p50_ms']:.1f}",
             f"{TROVE_CREATE_MEDIAN_MS:.0f} Trove 26", "", f"<= {TARGET_CREATE_MEDIAN_MS:.0f}",
             passed.get("post_create_median")),
            (f"POST create, {active['concurrency']} concurrent: p50 / p99 ms",
             f"{create['post_concurrent']['p50_ms']:.0f} / {create['post_concurrent']['p99_ms']:.0f}",
             "", "", "", None),
            ("  GET list polled meanwhile: p50 / p99 ms",
             f"{create['list_during_builds']['p50_ms']:.0f} / {create['list_during_builds']['p99_ms']:.0f}",
             "", "", "", None),
            (f"create -> ACTIVE, {active['concurrency']} concurrent: p50 / p99 s",
             f"{active['p50_s']:.2f} / {active['p99_s']:.2f}", "", "", f"p99 < {TARGET_ACTIVE_P99_S:.0f}",
             passed["create_to_active_p99"]),
        ]
        lines += ["", f"{backend} (event store and read models on {figures['event_store']})",
                  f"{'':<48}{'measured':>16}{'reference':>22}{'ratio':>8}{'target':>10}{'':>6}"]
        lines += [f"{name:<48}{value:>16}{reference:>22}{ratio:>8}{target:>10}{verdict[ok]:>6}"
                  for name, value, reference, ratio, target, ok in rows]
        lines += [f"  {active['creates']} creates in {config['create_rounds']} rounds, {create['conflicts_retried']} "
                  f"answered 409 and were retried; create -> ACTIVE by hop (p50 / p99 ms, from event timestamps):"]
        lines += [f"    {label:<64}{stage['p50_ms']:>8.0f} / {stage['p99_ms']:.0f}"
                  for label, stage in create["stages"].items()]
        lines += [f"  CPU seconds during the create rounds ({create['rounds_seconds']:.1f} s): " + ", ".join(
            f"{name} {seconds:.1f}" for name, seconds in sorted(create["cpu_seconds_rounds"].items(),
                                                                key=lambda item: -item[1]) if seconds >= 0.05)]
        lines += ["  CPU seconds during the show rounds, real API: " + ", ".join(
            f"{name} {seconds:.1f}" for name, seconds in sorted(show["cpu_seconds_api_rounds"].items(),
                                                                key=lambda item: -item[1]) if seconds >= 0.05)
                  + "; bare Falcon: " + ", ".join(f"{name} {seconds:.1f}" for name, seconds in
                                                 show["cpu_seconds_baseline_rounds"].items())]
    return "\n".join(lines)


# Command line ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both",
                        help="which event store and read models the stack runs on (default both)")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES,
                        help="a PostgreSQL server URL whose user may create databases "
                             "(default $TROVE_ES_BENCH_POSTGRES or postgres@127.0.0.1:5432)")
    parser.add_argument("--clients", type=int, default=CLIENTS, help=f"concurrent show clients (default {CLIENTS})")
    parser.add_argument("--requests", type=int, default=1000,
                        help="show requests per client per round (default 1,000)")
    parser.add_argument("--sequential-requests", type=int, default=2000,
                        help="requests of the one sequential client (default 2,000; half that for list)")
    parser.add_argument("--create-rounds", type=int, default=3,
                        help=f"rounds of {CREATE_CONCURRENCY} concurrent creates (default 3)")
    parser.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS_DIR,
                        help="where the JSON report goes (default benchmarks/results/)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the stacks' logs (kept anyway on failure)")
    # The baseline server is this module run again, in its own process, under gunicorn.
    parser.add_argument("--serve-baseline", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("clients", "requests", "sequential_requests", "create_rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.sequential_requests < 2:
        parser.error("--sequential-requests must be at least 2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_baseline:
        return serve_baseline(args.serve_baseline, args.baseline_port)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        load_settings()  # the stacks inherit the caller's TROVE_ES_* settings: refuse a bad one before starting any
    except SettingsError as exc:
        print(f"API benchmark failed: {exc}; fix or unset it.", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    load_at_start = os.getloadavg()
    run_tag = uuid.uuid4().hex[:8]
    work_dir = Path(tempfile.mkdtemp(prefix=f"trove-es-bench-api-{run_tag}-"))
    results: list[BackendResult] = []
    postgres_version = None
    try:
        databases = None
        if "postgresql" in backends:
            databases = Databases(args.postgres, f"api_{run_tag}")
            postgres_version = databases.server_version()
        with contextlib.ExitStack() as cleanup:
            if databases is not None:
                cleanup.callback(databases.drop_all)
            for backend in backends:
                results.append(run_backend(backend, work_dir, databases, args))
    except BenchmarkError as exc:
        print(f"API benchmark failed: {exc}\n"
              f"Its logs are kept in {work_dir}; remove it when done. A stack that does not start at all usually "
              "means a missing install (`make install`); one that stalls names the process whose log to read.",
              file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:
        print(f"API benchmark failed: PostgreSQL at {args.postgres} is not usable: {exc}\n"
              "Start it, point --postgres (or TROVE_ES_BENCH_POSTGRES) at a server whose user may create "
              "databases, or run with --backend sqlite.", file=sys.stderr)
        shutil.rmtree(work_dir, ignore_errors=True)
        return 1
    except (KeyboardInterrupt, SystemExit) as stop:
        # Stopped on purpose (Ctrl-C, SIGTERM): the stacks were stopped on the way here; leave nothing behind.
        if not args.keep_logs:
            shutil.rmtree(work_dir, ignore_errors=True)
        print("API benchmark interrupted; its processes are stopped and its temporary data removed", file=sys.stderr)
        if isinstance(stop, SystemExit):
            raise
        return 128 + signal.SIGINT
    except BaseException:
        print(f"API benchmark did not finish; logs kept in {work_dir}", file=sys.stderr)
        raise
    if args.keep_logs:
        print(f"logs kept in {work_dir}", file=sys.stderr)
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
    report = build_report(results, args, postgres_version, load_at_start)
    print(render(report))
    for path in write_report(report, args.results_dir, name="api"):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
