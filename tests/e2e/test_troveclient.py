"""python-troveclient 8.x drives an instance's whole life against the whole stack.

The client parses every response it gets; a body it cannot read fails the call, so each call here
checks the wire format as well as the behaviour.
"""

from __future__ import annotations

import uuid
import warnings
from typing import Any

import pytest
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint

from tests.e2e.full_stack import FullStack

with warnings.catch_warnings():  # osc_lib, imported by the client, warns about its own version module
    warnings.simplefilter("ignore", DeprecationWarning)
    from troveclient import exceptions as trove_exceptions
    from troveclient.v1 import client as trove_client

pytestmark = pytest.mark.integration


def _client(stack: FullStack, project: str, token: str) -> Any:
    auth = token_endpoint.Token(f"{stack.url}/v1.0/{project}", token)
    return trove_client.Client(session=ks_session.Session(auth=auth))


def _wait(stack: FullStack, trove: Any, instance_id: str, status: str) -> Any:
    stack.wait(lambda: trove.instances.get(instance_id).status == status, f"{instance_id} to be {status}")
    return trove.instances.get(instance_id)


def _gone(trove: Any, instance_id: str) -> bool:
    try:
        trove.instances.get(instance_id)
    except trove_exceptions.NotFound:
        return True
    return False


def test_troveclient_drives_an_instance_through_its_whole_life(stack: FullStack) -> None:
    project = f"tc-{uuid.uuid4().hex[:8]}"
    trove = _client(stack, project, stack.token(project, "alice"))
    assert trove.flavors.get("2").name == "m1.small"
    assert "postgresql" in {d.name for d in trove.datastores.list()}
    (absolute,) = trove.limits.list()
    assert absolute.max_instances == 5

    created = trove.instances.create("tc-db", "2", volume={"size": 1}, datastore="postgresql",
                                     databases=[{"name": "app"}],
                                     users=[{"name": "app", "password": "s3cret-pw", "databases": [{"name": "app"}]}])
    assert trove.instances.get(created.id).status == "BUILD"
    active = _wait(stack, trove, created.id, "ACTIVE")
    assert active.operating_status == "HEALTHY" and active.ip

    trove.instances.restart(created.id)
    assert trove.instances.get(created.id).status == "REBOOT"
    _wait(stack, trove, created.id, "ACTIVE")

    trove.instances.resize_volume(created.id, 2)
    assert trove.instances.get(created.id).status == "RESIZE"
    stack.wait(lambda: trove.instances.get(created.id).volume == {"size": 2}, "the volume to grow")
    _wait(stack, trove, created.id, "ACTIVE")

    trove.instances.resize_instance(created.id, "3")
    assert trove.instances.get(created.id).status == "RESIZE"
    stack.wait(lambda: trove.instances.get(created.id).flavor["id"] == "3", "the flavor to change")
    _wait(stack, trove, created.id, "ACTIVE")

    trove.instances.update(created.id, name="tc-renamed")
    assert trove.instances.get(created.id).name == "tc-renamed"
    assert [i.name for i in trove.instances.list()] == ["tc-renamed"]

    trove.instances.delete(created.id)
    stack.wait(lambda: _gone(trove, created.id), "the instance to be gone")
    assert list(trove.instances.list()) == []

    admin = _client(stack, "admin", stack.admin_token)
    usages = {q.resource: q for q in admin.quota.show(project)}
    assert (usages["instances"].in_use, usages["instances"].reserved) == (0, 0)
    # Secrets never reach a log line of any process of the stack.
    assert "s3cret-pw" not in stack.worker_logs()
