"""Instance statuses: the task, the Nova server and the guest's datastore, and what users see.

The codes follow Trove's ``InstanceTasks`` and ``ServiceStatuses`` so operators recognise them, with
one fix: Trove gives UPGRADING and RESTARTING the same code (0x22), which makes a stored UPGRADING
read back as RESTARTING. Here every code is unique, and a test says so.

``visible_status`` and ``operating_status`` are Trove's current (Wallaby and later) rules as pure
functions, so the API, the instance view and the action checks cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class TaskStatus(Enum):
    # name = (code, action, description, is_error)
    NONE = (0x01, "NONE", "No tasks for the instance.", False)
    DELETING = (0x02, "DELETING", "Deleting the instance.", False)
    REBOOTING = (0x03, "REBOOTING", "Rebooting the instance.", False)
    RESIZING = (0x04, "RESIZING", "Resizing the instance.", False)
    BUILDING = (0x05, "BUILDING", "The instance is building.", False)
    MIGRATING = (0x06, "MIGRATING", "Migrating the instance.", False)
    RESTART_REQUIRED = (0x07, "RESTART_REQUIRED", "Instance requires a restart.", False)
    PROMOTING = (0x08, "PROMOTING", "Promoting the instance to replica source.", False)
    EJECTING = (0x09, "EJECTING", "Ejecting the replica source.", False)
    LOGGING = (0x0A, "LOGGING", "Transferring guest logs.", False)
    DETACHING = (0x0B, "DETACHING", "Detaching the instance from replica source.", False)
    UPDATING = (0x0C, "UPDATING", "Updating the instance.", False)
    BUILDING_ERROR_DNS = (0x50, "BUILDING", "Build error: DNS.", True)
    BUILDING_ERROR_SERVER = (0x51, "BUILDING", "Build error: Server.", True)
    BUILDING_ERROR_VOLUME = (0x52, "BUILDING", "Build error: Volume.", True)
    BUILDING_ERROR_SEC_GROUP = (0x53, "BUILDING", "Build error: Secgroup or rule.", True)
    BUILDING_ERROR_REPLICA = (0x54, "BUILDING", "Build error: Replica.", True)
    PROMOTION_ERROR = (0x55, "PROMOTING", "Replica Promotion Error.", True)
    EJECTION_ERROR = (0x56, "EJECTING", "Replica Source Ejection Error.", True)
    GROWING_ERROR = (0x57, "GROWING", "Growing Cluster Error.", True)
    SHRINKING_ERROR = (0x58, "SHRINKING", "Shrinking Cluster Error.", True)
    UPGRADING = (0x59, "UPGRADING", "Upgrading the instance.", False)
    UPGRADING_ERROR = (0x5A, "UPGRADING", "Upgrading Cluster Error.", True)
    BUILDING_ERROR_TIMEOUT_GA = (0x5B, "ERROR", "Build error: guestagent timeout.", True)
    BUILDING_ERROR_PORT = (0x5C, "BUILDING", "Build error: Port.", True)
    UPDATING_ERROR_ACCESS = (0x5D, "UPDATING", "Update error: Access.", True)

    def __init__(self, code: int, action: str, description: str, is_error: bool) -> None:
        self.code = code
        self.action = action
        self.description = description
        self.is_error = is_error


class ServiceStatus(Enum):
    # name = (code, description as the guest reports it, api_status)
    RUNNING = (0x01, "running", "ACTIVE")
    BLOCKED = (0x02, "blocked", "BLOCKED")
    PAUSED = (0x03, "paused", "SHUTDOWN")
    SHUTDOWN = (0x04, "shutdown", "SHUTDOWN")
    DELETED = (0x05, "deleted", "DELETED")
    CRASHED = (0x06, "crashed", "SHUTDOWN")
    FAILED = (0x08, "failed to spawn", "FAILED")
    BUILDING = (0x09, "building", "BUILD")
    PROMOTING = (0x10, "promoting replica", "PROMOTE")
    EJECTING = (0x11, "ejecting replica source", "EJECT")
    LOGGING = (0x12, "transferring guest logs", "LOGGING")
    UNKNOWN = (0x16, "unknown", "ERROR")
    NEW = (0x17, "new", "NEW")
    FAILED_TIMEOUT_GUESTAGENT = (0x18, "guestagent error", "ERROR")
    INSTANCE_READY = (0x19, "instance ready", "BUILD")
    RESTART_REQUIRED = (0x20, "restart required", "RESTART_REQUIRED")
    HEALTHY = (0x21, "healthy", "HEALTHY")
    UPGRADING = (0x22, "upgrading", "UPGRADING")
    RESTARTING = (0x23, "restarting", "RESTARTING")  # Trove: 0x22, colliding with UPGRADING

    def __init__(self, code: int, description: str, api_status: str) -> None:
        self.code = code
        self.description = description
        self.api_status = api_status

    @classmethod
    def from_description(cls, description: str) -> ServiceStatus:
        try:
            return _SERVICE_BY_DESCRIPTION[description]
        except KeyError:
            raise ValueError(f"unknown service status {description!r}") from None

    @property
    def action_is_allowed(self) -> bool:
        return self in _ACTION_ALLOWED

    @property
    def build_outcome(self) -> bool | None:
        """True when a fresh build may finish, False when it has failed, None to keep waiting."""
        if self in (ServiceStatus.RUNNING, ServiceStatus.INSTANCE_READY, ServiceStatus.HEALTHY):
            return True
        if self in (ServiceStatus.NEW, ServiceStatus.BUILDING, ServiceStatus.UNKNOWN, ServiceStatus.DELETED):
            return None
        return False


_SERVICE_BY_DESCRIPTION = {status.description: status for status in ServiceStatus}

_ACTION_ALLOWED = frozenset({ServiceStatus.RUNNING, ServiceStatus.SHUTDOWN, ServiceStatus.CRASHED,
                             ServiceStatus.BLOCKED, ServiceStatus.HEALTHY, ServiceStatus.RESTART_REQUIRED})

# Nova server statuses this product produces or passes through.
SERVER_BUILD, SERVER_ACTIVE, SERVER_ERROR, SERVER_SHUTDOWN = "BUILD", "ACTIVE", "ERROR", "SHUTDOWN"
SERVER_REBOOT, SERVER_RESIZE, SERVER_VERIFY_RESIZE, SERVER_DELETED = "REBOOT", "RESIZE", "VERIFY_RESIZE", "DELETED"

_TASK_STATUS_DISPLAY = {
    "REBOOTING": "REBOOT", "RESIZING": "RESIZE", "UPGRADING": "UPGRADE", "RESTART_REQUIRED": "RESTART_REQUIRED",
    "PROMOTING": "PROMOTE", "EJECTING": "EJECT", "LOGGING": "LOGGING", "DETACHING": "DETACH",
}
_SERVER_STATUS_PASSED = frozenset({"BUILD", "ERROR", "REBOOT", "RESIZE", "ACTIVE", "SHUTDOWN"})


def visible_status(task: TaskStatus, server_status: str | None, backup_running: bool = False) -> str:
    """The instance ``status`` field (Trove ``SimpleInstance.status`` since Wallaby).

    The server status while building is BUILD whatever Nova says, and SHUTDOWN once the server is
    gone, as Trove's loaders fake it. Trove's LOGGING task would raise AttributeError; it shows LOGGING.
    """
    if task.is_error:
        return "ERROR"
    if task.action == "BUILDING":
        return "ERROR" if server_status == SERVER_ERROR else "BUILD"
    if task.action in _TASK_STATUS_DISPLAY:
        return _TASK_STATUS_DISPLAY[task.action]
    if task.action == "DELETING":
        return "SHUTDOWN" if server_status in ("ACTIVE", "SHUTDOWN", "DELETED") else "ERROR"
    if backup_running:
        return "BACKUP"
    if server_status in _SERVER_STATUS_PASSED:
        return server_status
    if server_status == SERVER_VERIFY_RESIZE:
        return "RESIZE"
    return "UNKNOWN"


def operating_status(task: TaskStatus, server_status: str | None, service: ServiceStatus,
                     heartbeat_expired: bool = False) -> str:
    """The ``operating_status`` field: the datastore's health once nothing else is going on.

    A guest whose last heartbeat is older than ``agent_heartbeat_expiry`` counts as
    FAILED_TIMEOUT_GUESTAGENT (ERROR), except while a restart is required, as in Trove.
    """
    if task is not TaskStatus.NONE or server_status != SERVER_ACTIVE:
        return ""
    if heartbeat_expired and service is not ServiceStatus.RESTART_REQUIRED:
        service = ServiceStatus.FAILED_TIMEOUT_GUESTAGENT
    return service.api_status


def action_refusal(task: TaskStatus, server_status: str | None, service: ServiceStatus,
                   backup_running: bool = False) -> tuple[str, str] | None:
    """Why an action may not run now, as Trove's ``validate_can_perform_action``: ``(status_type, status)``.

    None when the action may run.
    """
    if server_status not in ("ACTIVE", "HEALTHY"):
        return ("instance", server_status or "UNKNOWN")
    if task not in (TaskStatus.NONE, TaskStatus.RESTART_REQUIRED):
        return ("task", task.action)
    if not service.action_is_allowed:
        return ("datastore", service.api_status)
    if backup_running:
        return ("instance", "BACKUP")
    return None


# The server statuses the compute drivers report; anything else shows as ``visible_status`` decides for it.
KNOWN_SERVER_STATUSES = (SERVER_BUILD, SERVER_ACTIVE, SERVER_ERROR, SERVER_SHUTDOWN, SERVER_REBOOT, SERVER_RESIZE,
                         SERVER_VERIFY_RESIZE, SERVER_DELETED, "SHUTOFF")


@dataclass(frozen=True)
class ShowingStatus:
    """The stored (task, server status) pairs a visible status comes from, for one task: the known server
    statuses that show it, and whether no server status (``None``) and unknown ones do too."""

    task: TaskStatus
    server_statuses: tuple[str, ...]
    without_server: bool
    unknown_servers: bool


def showing(status: str) -> list[ShowingStatus]:
    """Where a filter on the visible ``status`` must look: ``visible_status`` inverted over every task and
    server status, so a read model can filter stored columns and use its indexes."""
    found = []
    for task in TaskStatus:
        servers = tuple(s for s in KNOWN_SERVER_STATUSES if visible_status(task, s) == status)
        without = visible_status(task, None) == status
        unknown = visible_status(task, "\0not-a-server-status") == status
        if servers or without or unknown:
            found.append(ShowingStatus(task, servers, without, unknown))
    return found


# Every visible status there is: what a filter on ``status`` may ask for.
VISIBLE_STATUSES = frozenset({visible_status(task, server, backup) for task in TaskStatus
                              for server in (*KNOWN_SERVER_STATUSES, None, "\0not-a-server-status")
                              for backup in (False, True)})
