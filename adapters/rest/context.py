"""The operation context of one API request: which request, for which tenant, by whom, from where."""

from __future__ import annotations

import ipaddress
import socket
from functools import cache

import falcon

from adapters.rest.auth import Identity
from domain.context import OperationContext


def client_ip(req: falcon.Request) -> str | None:
    """The first ``X-Forwarded-For`` entry when it is an address (a proxy's view of the client), else the peer."""
    forwarded = req.get_header("X-Forwarded-For")
    if forwarded:
        first = forwarded.split(",", 1)[0].strip()
        try:
            return str(ipaddress.ip_address(first))
        except ValueError:
            pass  # not an address: a client's invention, not worth recording
    return req.remote_addr


@cache
def host_ip() -> str:
    """This host's outward-facing address, as Trove's ``server_ip`` trait reports it.

    Connecting a UDP socket sends nothing; it only asks the kernel which source address it would use.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere real
            return str(probe.getsockname()[0])
    except OSError:
        pass
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def operation_context(req: falcon.Request, tenant_id: str, identity: Identity, server_ip: str) -> OperationContext:
    return OperationContext(request_id=req.context.request_id, tenant_id=tenant_id, user_id=identity.user_id,
                            client_ip=client_ip(req), server_ip=server_ip, server_type="api",
                            roles=tuple(identity.roles))
