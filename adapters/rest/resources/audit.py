"""An instance's history for admins, read from the event store: ``mgmt/instances/{id}/events``."""

from __future__ import annotations

from typing import Any, ClassVar

import falcon

from adapters.rest import responses
from adapters.rest.resources import Operation, instance_id, links
from adapters.rest.resources.instances import page_parameters
from domain.errors import InvalidRequest
from services.instance_history import InstanceHistory, timeline_entry

EVENT_PAGE_QUERY = (("limit", "integer", "Page size (default 20, at most 100)."),
                    ("marker", "string", "The last event id of the previous page."))


class MgmtInstanceEventsResource:
    admin_only = True
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("Every event of an instance and of its operations (backups, quota), oldest first, from "
                         "the event store", response=responses.InstanceEventList, admin=True,
                         errors=(400, 401, 403, 404), query=EVENT_PAGE_QUERY),
    }

    def __init__(self, history: InstanceHistory) -> None:
        self._history = history

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str, instance: str) -> None:
        key = instance_id(instance)
        limit, marker = page_parameters(req)
        events = self._history.events(key)
        start = 0
        if marker is not None:
            ids = [e.event_id for e in events]
            if marker not in ids:
                raise InvalidRequest("The 'marker' parameter is not an event id from a previous page.")
            start = ids.index(marker) + 1
        page = events[start:start + limit]
        body: dict[str, Any] = {"events": [timeline_entry(e) for e in page]}
        if start + limit < len(events):
            body["links"] = links(req, tenant_id).next_page(f"mgmt/instances/{key}/events", limit,
                                                            page[-1].event_id)
        resp.media = body
