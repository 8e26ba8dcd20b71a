"""Run the stack's own processes from tests, and read what they produced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from adapters.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
COUNTER_PROJECTION = "tests.support.counter:CounterProjection"


class StackProcess:
    """One ``trove-es`` child process with its own log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, **env, "PYTHONPATH": str(REPO_ROOT), "TROVE_ES_LOG_LEVEL": "INFO"}
        with open(self.log_path, "ab") as output:
            self.process = subprocess.Popen([sys.executable, "-m", "adapters.cli", *args], cwd=REPO_ROOT,
                                            env=full_env, stdout=output, stderr=subprocess.STDOUT)

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"{self.name} ignored SIGTERM for {timeout}s; log:\n{self.log()}") from None
        return self.process.returncode

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


def relay(env: dict[str, str], log_dir: Path, name: str = "relay") -> StackProcess:
    return StackProcess(name, ["relay"], env, log_dir)


def counter_consumer(env: dict[str, str], log_dir: Path, name: str = "consumer") -> StackProcess:
    return StackProcess(name, ["consume", "--projection", COUNTER_PROJECTION], env, log_dir)


def wait_for(condition: Callable[[], bool], timeout: float, what: str,
             processes: tuple[StackProcess, ...] = (), poll_s: float = 0.1) -> None:
    """Poll until ``condition()``; on timeout, fail with the processes' logs. Not a timed assertion:
    the bound is generous and only stops a hung test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        for process in processes:
            if not process.alive():
                raise AssertionError(f"{process.name} exited with {process.process.returncode} while waiting "
                                     f"for {what}; log:\n{process.log()}")
        time.sleep(poll_s)
    logs = "\n".join(f"--- {p.name} ---\n{p.log()}" for p in processes)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs}")


def read_topic(bootstrap_servers: str, topic: str, idle_s: float = 2.0) -> list:
    """Every record currently in ``topic``, read without a consumer group."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                             allow_auto_create_topics=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not assigned:
            return []
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        records: list = []
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            batch = consumer.poll(timeout_ms=200)
            for partition_records in batch.values():
                records.extend(partition_records)
                last = time.monotonic()
        return records
    finally:
        consumer.close()


def stack_settings(tmp_path: Path, bootstrap_servers: str, store_url: str, read_model_url: str,
                  **overrides: str) -> tuple[Settings, dict[str, str]]:
    """Settings for one test, with topic names of its own, and the environment that yields them."""
    tag = uuid.uuid4().hex[:8]
    env = {
        "TROVE_ES_DATA_DIR": str(tmp_path / "data"),
        "TROVE_ES_EVENT_STORE_URL": store_url,
        "TROVE_ES_READ_MODEL_URL": read_model_url,
        "TROVE_ES_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
        "TROVE_ES_TOPIC_EVENTS": f"test-{tag}.events",
        "TROVE_ES_TOPIC_DEAD_LETTER": f"test-{tag}.dead-letter",
        "TROVE_ES_TOPIC_CONDUCTOR": f"test-{tag}.conductor",
        "TROVE_ES_TOPIC_GUEST_PREFIX": f"test-{tag}.guest.",
        "TROVE_ES_TOPIC_NOTIFICATIONS_INFO": f"test-{tag}.notifications.info",
        "TROVE_ES_TOPIC_NOTIFICATIONS_ERROR": f"test-{tag}.notifications.error",
        "TROVE_ES_CONSUMER_GROUP_PREFIX": f"test-{tag}",
        "TROVE_ES_RELAY_NAME": f"relay-{tag}",
        "TROVE_ES_EVENTS_PARTITIONS": "4",
        "TROVE_ES_COMPUTE_DRIVER": "fake",  # a test that wants real databases asks for the local driver
        **overrides,
    }
    return load_settings(env), env
