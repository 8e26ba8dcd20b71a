from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.kafka.broker import EmbeddedBroker
from tests.conftest import fresh_database
from tests.e2e.full_stack import FullStack

# One stack for the package: starting it costs seconds, and each test works in a tenant of its own.
STACK_SETTINGS = {
    # Slow enough that a transient status (REBOOT, RESIZE) is still there when the next read comes.
    "TROVE_ES_FAKE_COMPUTE_DELAY_S": "1",
    "TROVE_ES_REPORT_INTERVAL_S": "1",
    # A build that is not healthy by then fails; normal builds take a few seconds here.
    "TROVE_ES_USAGE_TIMEOUT_S": "15",
    # The fake image needs 2 GB of disk: m1.tiny (flavor 1, 1 GB) builds a server in ERROR.
    "TROVE_ES_FAKE_IMAGE_MIN_DISK_GB": "2",
    "TROVE_ES_API_WORKERS": "2",
    # Audit periods of seconds, so a test sees several trove.instance.exists and dbaas.quota.
    "TROVE_ES_EXISTS_NOTIFICATION_INTERVAL_S": "3",
    "TROVE_ES_QUOTA_NOTIFICATION_INTERVAL_S": "3",
}


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory, broker: EmbeddedBroker,
          postgres_admin: str) -> Iterator[FullStack]:
    with fresh_database(postgres_admin) as database_url:
        running = FullStack(tmp_path_factory.mktemp("stack"), broker.bootstrap_servers, database_url,
                            **STACK_SETTINGS)
        try:
            yield running
        finally:
            code = running.stop()
        assert code == 0, f"`trove-es up` exited with {code}:\n{running.up.log()}"
