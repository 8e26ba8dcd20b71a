"""``trove-es api``: gunicorn serving the REST API, configured from settings rather than its own flags."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from adapters.event_store import open_application
from adapters.settings import Settings
from services.catalog import CatalogService

log = logging.getLogger(__name__)

DEFAULT_CATALOG = Path(__file__).resolve().parents[1] / "default_catalog.json"


def seed_catalog(settings: Settings) -> int:
    """Register the catalog file's datastores, versions and flavors the store lacks (idempotent)."""
    path = settings.catalog_file or DEFAULT_CATALOG
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"trove-es: cannot read the catalog file {path}: {exc}") from None
    catalog = open_application(CatalogService, settings.event_store_url)
    try:
        added = catalog.seed(entries)
    finally:
        catalog.close()  # before gunicorn forks: no store connection may be shared with the workers
    log.info("catalog %s: %d new entries", path, added)
    return added


class ApiServer(BaseApplication):
    def __init__(self, settings: Settings) -> None:
        self._options: dict[str, Any] = {
            "bind": f"{settings.api_host}:{settings.api_port}",
            "workers": settings.api_workers,
            "worker_class": "gthread",
            "threads": settings.api_threads,
            "proc_name": "trove-es-api",
            "graceful_timeout": 10,
            "timeout": 60,
            "errorlog": "-",
            "loglevel": "info",
            "preload_app": False,  # each worker builds its own app after fork (see adapters.rest.wsgi)
            # gunicorn 27 defaults its control socket to one path per user: two stacks would fight over it.
            "control_socket_disable": True,
        }
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from adapters.rest.wsgi import application

        return application


def serve(settings: Settings) -> int:
    seed_catalog(settings)
    log.info("API on http://%s:%d with %d workers", settings.api_host, settings.api_port, settings.api_workers)
    ApiServer(settings).run()
    return 0
