"""Every domain event type the write side can publish.

Consumers decode against this catalog, so an event type published without a consumer that knows
it is refused loudly, never skipped. Each aggregate adds its event classes to ``EVENT_CLASSES``.
"""

from __future__ import annotations

from domain.backup import BACKUP_EVENTS
from domain.datastores import CATALOG_EVENTS
from domain.instance import INSTANCE_EVENTS
from domain.public_events import EventCatalog
from domain.quota import QUOTA_EVENTS
from domain.usage_audit import USAGE_AUDIT_EVENTS

# Explicit rather than discovered: the public stream is a contract, so joining it is a decision.
EVENT_CLASSES: tuple[type, ...] = (INSTANCE_EVENTS + BACKUP_EVENTS + QUOTA_EVENTS + CATALOG_EVENTS
                                   + USAGE_AUDIT_EVENTS)


def domain_catalog() -> EventCatalog:
    return EventCatalog.of(EVENT_CLASSES)
