"""The tenant's absolute limits (Trove's ``GET /limits``)."""

from __future__ import annotations

from typing import ClassVar

import falcon

from adapters.rest import responses, views
from adapters.rest.resources import Operation
from services.instances import InstanceService


class LimitsResource:
    operations: ClassVar[dict[str, Operation]] = {
        "get": Operation("The tenant's absolute limits (max_instances, max_volumes in GB, max_backups)",
                         response=responses.LimitList, errors=(401, 403))}

    def __init__(self, instances: InstanceService) -> None:
        self._instances = instances

    def on_get(self, req: falcon.Request, resp: falcon.Response, tenant_id: str) -> None:
        quota = self._instances.quota(tenant_id)
        resp.media = {"limits": [views.absolute_limits(quota, self._instances.quota_defaults)]}
