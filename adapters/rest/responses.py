"""Response bodies as marshmallow schemas: they document the API (OpenAPI) and the tests load every
response through them, so a key the views add without documenting it fails a test."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

TIMESTAMP = validate.Regexp(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")


class Link(Schema):
    href = fields.String(required=True)
    rel = fields.String(required=True, validate=validate.OneOf(["self", "bookmark", "next"]))


class FlavorRef(Schema):
    id = fields.String(required=True)
    links = fields.List(fields.Nested(Link), required=True)


class InstanceVolume(Schema):
    size = fields.Integer(required=True)
    used = fields.Float()
    id = fields.String(allow_none=True)


class InstanceDatastore(Schema):
    type = fields.String(required=True)
    version = fields.String(required=True)
    version_number = fields.String()


class Access(Schema):
    is_public = fields.Boolean(required=True)
    allowed_cidrs = fields.List(fields.String(), required=True)


class Address(Schema):
    address = fields.String(required=True)
    type = fields.String(required=True)
    network = fields.String()
    port = fields.Integer(metadata={"description": "The datastore's port, where the compute driver chose one "
                                                   "(the local driver)."})


class InstanceSummary(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    status = fields.String(required=True)
    operating_status = fields.String(required=True, metadata={"description": "Empty unless the instance is idle."})
    links = fields.List(fields.Nested(Link), required=True)
    flavor = fields.Nested(FlavorRef, required=True)
    datastore = fields.Nested(InstanceDatastore, required=True)
    region = fields.String(required=True)
    access = fields.Nested(Access, required=True)
    volume = fields.Nested(InstanceVolume)
    ip = fields.List(fields.String(), metadata={"description": "Once known; deprecated by Trove for `addresses`."})
    addresses = fields.List(fields.Nested(Address))
    tenant_id = fields.String(metadata={"description": "Admins only."})


class InstanceFault(Schema):
    message = fields.String(required=True)
    created = fields.String(required=True, validate=TIMESTAMP,
                            metadata={"description": "When the fault was last updated, as Trove's."})
    details = fields.String(required=True, allow_none=True, metadata={"description": "Admins only; else null."})


class FaultEntry(InstanceFault):
    id = fields.String(required=True)
    operation = fields.String(required=True, metadata={"description": "The operation that failed."})
    request_id = fields.String(required=True, allow_none=True)
    resolved = fields.Boolean(required=True)
    resolved_at = fields.String(required=True, allow_none=True)
    server_type = fields.String(metadata={"description": "Admins only: the service that recorded it."})
    resolved_by = fields.String(allow_none=True, metadata={"description": "Admins only: what resolved it."})
    deleted = fields.Boolean(metadata={"description": "Admins only."})
    deleted_at = fields.String(allow_none=True, metadata={"description": "Admins only."})


class FaultList(Schema):
    faults = fields.List(fields.Nested(FaultEntry), required=True)
    links = fields.List(fields.Nested(Link))


class InstanceEvent(Schema):
    event_id = fields.String(required=True)
    occurred_at = fields.String(required=True)
    type = fields.String(required=True, metadata={"description": "The domain event, in the past tense."})
    aggregate_type = fields.String(required=True, metadata={"description": "Instance, Backup or Quota."})
    aggregate_id = fields.String(required=True)
    version = fields.Integer(required=True)
    request_id = fields.String(required=True, allow_none=True)
    user_id = fields.String(required=True, allow_none=True)
    tenant_id = fields.String(required=True, allow_none=True)
    context = fields.Dict(required=True, metadata={"description": "client_ip, server_ip, server_type."})
    changes = fields.Dict(required=True, metadata={"description": "What the event recorded."})


class InstanceEventList(Schema):
    events = fields.List(fields.Nested(InstanceEvent), required=True)
    links = fields.List(fields.Nested(Link))


class InstanceDetail(InstanceSummary):
    fault = fields.Nested(InstanceFault, metadata={"description": "The latest unresolved fault, if any."})
    created = fields.String(required=True, validate=TIMESTAMP)
    updated = fields.String(required=True, validate=TIMESTAMP)
    service_status_updated = fields.String(required=True, validate=TIMESTAMP)
    server_id = fields.String(allow_none=True, metadata={"description": "Admins only."})
    volume_id = fields.String(allow_none=True, metadata={"description": "Admins only."})


class MgmtServer(Schema):
    id = fields.String(required=True)
    status = fields.String(allow_none=True)
    tenant_id = fields.String(required=True)
    deleted = fields.Boolean(required=True)
    deleted_at = fields.String(allow_none=True)
    addresses = fields.List(fields.Nested(Address), required=True)


class GuestStatus(Schema):
    state_description = fields.String(required=True, metadata={"description": "The datastore's status, as its "
                                                                             "guest last reported it."})


class MgmtInstance(InstanceDetail):
    guest_status = fields.Nested(GuestStatus, required=True)
    deleted = fields.Boolean(required=True)
    deleted_at = fields.String(allow_none=True, required=True)
    service_status = fields.String(required=True)
    task_description = fields.String(required=True)
    server = fields.Nested(MgmtServer, allow_none=True, required=True)


class InstanceEnvelope(Schema):
    instance = fields.Nested(InstanceDetail, required=True)


class InstanceList(Schema):
    instances = fields.List(fields.Nested(InstanceSummary), required=True)
    links = fields.List(fields.Nested(Link), metadata={"description": "A `next` link when there are more."})


class InstanceDetailList(Schema):
    instances = fields.List(fields.Nested(InstanceDetail), required=True)
    links = fields.List(fields.Nested(Link))


class MgmtInstanceEnvelope(Schema):
    instance = fields.Nested(MgmtInstance, required=True)


class MgmtInstanceList(Schema):
    instances = fields.List(fields.Nested(MgmtInstance), required=True)
    links = fields.List(fields.Nested(Link))


class Flavor(Schema):
    id = fields.Integer(allow_none=True, required=True, metadata={"description": "null when not numeric"})
    str_id = fields.String(required=True)
    name = fields.String(required=True)
    ram = fields.Integer(required=True)
    vcpus = fields.Integer(required=True)
    disk = fields.Integer(required=True)
    ephemeral = fields.Integer(required=True)
    links = fields.List(fields.Nested(Link), required=True)


class FlavorEnvelope(Schema):
    flavor = fields.Nested(Flavor, required=True)


class FlavorList(Schema):
    flavors = fields.List(fields.Nested(Flavor), required=True)


class DatastoreVersion(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    version = fields.String(required=True)
    links = fields.List(fields.Nested(Link), required=True)
    active = fields.Boolean(required=True)
    image = fields.String(required=True)
    packages = fields.String(required=True)
    datastore = fields.String(metadata={"description": "The datastore's id (not inside a datastore)."})


class Datastore(Schema):
    id = fields.String(required=True)
    name = fields.String(required=True)
    links = fields.List(fields.Nested(Link), required=True)
    versions = fields.List(fields.Nested(DatastoreVersion), required=True)
    default_version = fields.String(metadata={"description": "The default version's id."})


class DatastoreEnvelope(Schema):
    datastore = fields.Nested(Datastore, required=True)


class DatastoreList(Schema):
    datastores = fields.List(fields.Nested(Datastore), required=True)


class VersionEnvelope(Schema):
    version = fields.Nested(DatastoreVersion, required=True)


class VersionList(Schema):
    versions = fields.List(fields.Nested(DatastoreVersion), required=True)


class AbsoluteLimit(Schema):
    verb = fields.String(required=True, validate=validate.Equal("ABSOLUTE"))
    max_instances = fields.Integer(required=True)
    max_volumes = fields.Integer(required=True, metadata={"description": "GB"})
    max_backups = fields.Integer(required=True)


class LimitList(Schema):
    limits = fields.List(fields.Nested(AbsoluteLimit), required=True,
                         metadata={"description": "The absolute limits; this API does not rate-limit."})


class QuotaUsage(Schema):
    resource = fields.String(required=True)
    in_use = fields.Integer(required=True)
    reserved = fields.Integer(required=True)
    limit = fields.Integer(required=True, metadata={"description": "-1: unlimited"})


class QuotaShow(Schema):
    quotas = fields.List(fields.Nested(QuotaUsage), required=True)


class QuotaUpdated(Schema):
    quotas = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)


class VersionLink(Schema):
    id = fields.String(required=True)
    status = fields.String(required=True)
    updated = fields.String(required=True)
    links = fields.List(fields.Nested(Link), required=True)


class Versions(Schema):
    versions = fields.List(fields.Nested(VersionLink), required=True)


class VersionShow(Schema):
    version = fields.Nested(VersionLink, required=True)


class Fault(Schema):
    code = fields.Integer(required=True)
    message = fields.String(required=True)


class FaultBody(Schema):
    """One key, the fault's name (``badRequest``, ``itemNotFound``, ``overLimit``, …)."""

    badRequest = fields.Nested(Fault)
    unauthorized = fields.Nested(Fault)
    forbidden = fields.Nested(Fault)
    itemNotFound = fields.Nested(Fault)
    badMethod = fields.Nested(Fault)
    conflictingRequest = fields.Nested(Fault)
    overLimit = fields.Nested(Fault)
    badMediaType = fields.Nested(Fault)
    unprocessableEntity = fields.Nested(Fault)
    instanceFault = fields.Nested(Fault)
    serviceUnavailable = fields.Nested(Fault)


class UsageLine(Schema):
    tenant_id = fields.String(required=True)
    instance_id = fields.String(required=True)
    datastore = fields.String(required=True)
    flavor_id = fields.String(required=True)
    instance_type = fields.String(required=True, allow_none=True)
    instance_seconds = fields.Float(required=True)
    volume_gb_seconds = fields.Float(required=True)


class UsageTotals(Schema):
    instance_seconds = fields.Float(required=True)
    volume_gb_seconds = fields.Float(required=True)


class UsageReport(Schema):
    start = fields.String(required=True)
    end = fields.String(required=True)
    project_id = fields.String(required=True, allow_none=True)
    instances = fields.List(fields.Nested(UsageLine), required=True)
    totals = fields.Nested(UsageTotals, required=True)


class UsageShow(Schema):
    usage = fields.Nested(UsageReport, required=True)


class FaultGroup(Schema):
    datastore = fields.String(required=True, allow_none=True)
    datastore_version = fields.String(required=True, allow_none=True)
    message = fields.String(required=True)
    faults = fields.Integer(required=True)
    instances = fields.Integer(required=True)
    first = fields.String(required=True, validate=TIMESTAMP)
    last = fields.String(required=True, validate=TIMESTAMP)


class FaultReport(Schema):
    start = fields.String(required=True)
    end = fields.String(required=True)
    faults = fields.List(fields.Nested(FaultGroup), required=True)


class OperationLatency(Schema):
    operation = fields.String(required=True)
    count = fields.Integer(required=True)
    failed = fields.Integer(required=True)
    p50_s = fields.Float(required=True)
    p95_s = fields.Float(required=True)
    max_s = fields.Float(required=True)


class LatencyReport(Schema):
    start = fields.String(required=True)
    end = fields.String(required=True)
    operations = fields.List(fields.Nested(OperationLatency), required=True)


class DatabaseName(Schema):
    name = fields.String(required=True)


class DatabaseList(Schema):
    databases = fields.List(fields.Nested(DatabaseName), required=True)
    links = fields.List(fields.Dict())


class DatastoreUser(Schema):
    name = fields.String(required=True)
    host = fields.String(required=True)
    databases = fields.List(fields.Nested(DatabaseName), required=True)


class UserList(Schema):
    users = fields.List(fields.Nested(DatastoreUser), required=True)
    links = fields.List(fields.Dict())


class UserShow(Schema):
    user = fields.Nested(DatastoreUser, required=True)


class RootEnabled(Schema):
    rootEnabled = fields.Boolean(required=True)


class RootUser(Schema):
    name = fields.String(required=True)
    password = fields.String(required=True, metadata={"description": "Shown once, here; kept nowhere."})


class RootCreated(Schema):
    user = fields.Nested(RootUser, required=True)


class BackupDatastore(Schema):
    type = fields.String()
    version = fields.String()
    version_id = fields.String()


class Backup(Schema):
    id = fields.String()
    name = fields.String()
    description = fields.String(allow_none=True)
    locationRef = fields.String(allow_none=True)
    instance_id = fields.String()
    project_id = fields.String()
    created = fields.String()
    updated = fields.String()
    size = fields.Float(allow_none=True, metadata={"description": "GB stored, as Trove reports it"})
    status = fields.String(metadata={"enum": ["NEW", "BUILDING", "COMPLETED", "FAILED", "DELETE_FAILED"]})
    parent_id = fields.String(allow_none=True)
    datastore = fields.Nested(BackupDatastore)


class BackupEnvelope(Schema):
    backup = fields.Nested(Backup)


class BackupList(Schema):
    backups = fields.List(fields.Nested(Backup))
    links = fields.List(fields.Nested(Link))
