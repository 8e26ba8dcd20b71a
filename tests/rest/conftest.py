from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rest.harness import Api


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    harness = Api(tmp_path)
    yield harness
    harness.close()
