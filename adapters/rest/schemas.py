"""Request bodies as Trove accepts them, as marshmallow schemas: the shapes and types, not the meaning.

Trove's JSON schemas allow additional properties, so unknown keys are ignored here too. Keys that ask
for something this deployment does not do (replicas, configuration groups)
are refused with a 400 rather than silently ignored: an instance without the replica or the backup
the client asked for is worse than a clear error.
"""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

NAME_MAX = 255
# Sizes end up in SQL INTEGER columns; anything larger is a mistake, not a volume.
SIZE_MAX = 2**31 - 1
MAX_LIST = 100


class Text(fields.String):
    """A string a database can store as given: no NUL, no unpaired surrogates."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise ValidationError("Must not contain NUL characters.")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError("Must be valid Unicode text.") from None
        return text


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be blank.")


class SizeField(fields.Integer):
    """A size in GB: an integer, or a string of digits (Trove's curl examples send ``"3"``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strict=True, validate=validate.Range(min=1, max=SIZE_MAX), **kwargs)
        self.metadata.setdefault("oneOf", [{"type": "integer", "minimum": 1, "maximum": SIZE_MAX},
                                           {"type": "string", "pattern": "^[0-9]+$"}])

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, str):
            digits = value.strip()
            if not digits.isascii() or not digits.isdigit() or len(digits) > 12:
                raise ValidationError("Must be a positive integer.")
            value = int(digits)
        return super()._deserialize(value, attr, data, **kwargs)


class FlavorRefField(fields.Field):
    """``flavorRef``: ``"2"``, ``2`` or a flavor URL; the catalog resolves which flavor it names."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("metadata", {"oneOf": [{"type": "string", "minLength": 1}, {"type": "integer"}],
                                       "description": "A flavor id, or a URL ending in one."})
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | int:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValidationError("Must be a flavor id or a flavor URL.")
        if isinstance(value, str):
            value = Text()._deserialize(value, attr, data)
            if not value.strip() or len(value) > 1024:
                raise ValidationError("Must be a flavor id or a flavor URL.")
        return value


class Unsupported(fields.Raw):
    """A key Trove knows but this deployment does not act on: refused unless empty."""

    def __init__(self, feature: str, **kwargs: Any) -> None:
        kwargs.setdefault("metadata", {"description": f"Not supported: {feature}. Only null or empty is accepted."})
        super().__init__(allow_none=True, **kwargs)
        self.feature = feature

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> None:
        if value in (None, "", [], {}):
            return None
        raise ValidationError(f"Not supported by this deployment: {self.feature}.")


class _Lenient(Schema):
    class Meta:
        unknown = EXCLUDE


class VolumeRequest(_Lenient):
    size = SizeField(required=True)


class DatastoreRequest(_Lenient):
    type = Text(validate=[validate.Length(min=1, max=NAME_MAX), _not_blank])
    version = Text(validate=[validate.Length(min=1, max=NAME_MAX), _not_blank])
    # Newer clients may name the version by number; here a version's number is its name.
    version_number = Text(validate=[validate.Length(min=1, max=NAME_MAX), _not_blank])


class DatabaseRequest(_Lenient):
    name = Text(required=True, validate=[validate.Length(min=1, max=64), _not_blank])
    character_set = Text(validate=validate.Length(min=1, max=64))
    collate = Text(validate=validate.Length(min=1, max=64))


class DatabaseNameRequest(_Lenient):
    name = Text(required=True, validate=[validate.Length(min=1, max=64), _not_blank])


class UserRequest(_Lenient):
    name = Text(required=True, validate=[validate.Length(min=1, max=16), _not_blank])
    # Only checked here; it never leaves the request (no event, log or view holds a password).
    password = Text(required=True, load_only=True, validate=validate.Length(min=1, max=255))
    host = Text(validate=validate.Length(min=1, max=255))
    databases = fields.List(fields.Nested(DatabaseNameRequest), validate=validate.Length(max=MAX_LIST))


class NicRequest(_Lenient):
    net_id = Text(data_key="net-id")
    port_id = Text(data_key="port-id")
    v4_fixed_ip = Text(data_key="v4-fixed-ip")


class RestorePoint(_Lenient):
    backupRef = Text(required=True, validate=validate.Length(min=1, max=64),
                     metadata={"description": "The id of a COMPLETED backup of the same datastore to build from."})


class CreateInstance(_Lenient):
    name = Text(required=True, validate=[validate.Length(min=1, max=NAME_MAX), _not_blank])
    flavorRef = FlavorRefField(required=True)
    volume = fields.Nested(VolumeRequest, required=True,
                           error_messages={"required": "Volume size was not specified."})
    datastore = fields.Nested(DatastoreRequest)
    availability_zone = Text(validate=validate.Length(min=1, max=NAME_MAX))
    databases = fields.List(fields.Nested(DatabaseRequest), validate=validate.Length(max=MAX_LIST))
    users = fields.List(fields.Nested(UserRequest), validate=validate.Length(max=MAX_LIST))
    nics = fields.List(fields.Nested(NicRequest), validate=validate.Length(max=MAX_LIST),
                       metadata={"description": "Accepted for compatibility; the compute driver picks the network."})
    region_name = Text(validate=validate.Length(min=1, max=NAME_MAX))
    replica_count = fields.Integer(strict=True, validate=validate.Equal(1, error="Replicas are not supported."))
    restorePoint = fields.Nested(RestorePoint, allow_none=True)
    replica_of = Unsupported("Replication")
    configuration = Unsupported("Configuration groups")
    modules = Unsupported("Modules")
    locality = Unsupported("Server group locality")
    access = fields.Dict(metadata={"description": "Only the default (private, no CIDRs) is supported."})

    @validates_schema
    def _private_only(self, data: dict[str, Any], **_: Any) -> None:
        access = data.get("access") or {}
        if access.get("is_public") or access.get("allowed_cidrs"):
            raise ValidationError("Public access and allowed CIDRs are not supported.", "access")


class CreateBackup(_Lenient):
    name = Text(required=True, validate=[validate.Length(min=1, max=80), _not_blank])
    instance = Text(required=True, validate=validate.Length(min=1, max=64))
    description = Text(allow_none=True, validate=validate.Length(max=512))
    parent_id = Text(allow_none=True, validate=validate.Length(min=1, max=64))
    incremental = fields.Integer(strict=True, validate=validate.OneOf([0, 1]))
    swift_container = Unsupported("Choosing a backup's Swift container")


class CreateBackupRequest(_Lenient):
    backup = fields.Nested(CreateBackup, required=True)


class CreateInstanceRequest(_Lenient):
    instance = fields.Nested(CreateInstance, required=True)


class ResizeRequest(_Lenient):
    volume = fields.Nested(VolumeRequest)
    flavorRef = FlavorRefField()

    @validates_schema
    def _exactly_one(self, data: dict[str, Any], **_: Any) -> None:
        if ("volume" in data) == ("flavorRef" in data):
            raise ValidationError("A resize names either a new 'volume' size or a new 'flavorRef', not both.")


class EmptyAction(_Lenient):
    """``{}``: the actions that take no arguments."""


ACTIONS = ("restart", "resize", "reset_status")
UNSUPPORTED_ACTIONS = {
    "promote_to_replica_source": "Replication", "eject_replica_source": "Replication",
    "reset_password": "Resetting the root password through an action",
}


class ActionRequest(_Lenient):
    """Exactly one action key, as Trove's ``InstanceController.action`` requires."""

    restart = fields.Nested(EmptyAction)
    resize = fields.Nested(ResizeRequest)
    reset_status = fields.Nested(EmptyAction, metadata={"description": "Admin only."})

    @validates_schema(pass_original=True, skip_on_field_errors=False)
    def _one_action(self, data: dict[str, Any], original: Any, **_: Any) -> None:
        keys = list(original) if isinstance(original, dict) else []
        if len(keys) != 1:
            raise ValidationError("The action body must have exactly one key, the action's name.")
        if keys[0] in UNSUPPORTED_ACTIONS:
            raise ValidationError(f"Not supported by this deployment: {UNSUPPORTED_ACTIONS[keys[0]]}.")
        if keys[0] not in ACTIONS:
            raise ValidationError(f"Invalid instance action: {keys[0][:64]}.")


class UpdateInstance(_Lenient):
    name = Text(validate=[validate.Length(min=1, max=NAME_MAX), _not_blank])
    # ``configuration: null`` detaches a group; with none attachable it changes nothing, so it is accepted.
    configuration = Unsupported("Configuration groups")
    replica_of = Unsupported("Replication")
    slave_of = Unsupported("Replication")
    datastore_version = Unsupported("Datastore upgrades")
    access = fields.Dict(metadata={"description": "Only the default (private, no CIDRs) is supported."})

    @validates_schema(pass_original=True)
    def _something(self, data: dict[str, Any], original: Any, **_: Any) -> None:
        access = data.get("access") or {}
        if access.get("is_public") or access.get("allowed_cidrs"):
            raise ValidationError("Public access and allowed CIDRs are not supported.", "access")
        known = {"name", "configuration", "replica_of", "slave_of", "datastore_version", "access"}
        if not isinstance(original, dict) or not known & set(original):
            raise ValidationError("Nothing to update: give a new 'name'.")


class UpdateInstanceRequest(_Lenient):
    instance = fields.Nested(UpdateInstance, required=True)


class QuotaLimits(Schema):
    instances = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=-1, max=SIZE_MAX))
    volumes = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=-1, max=SIZE_MAX))
    backups = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=-1, max=SIZE_MAX))

    class Meta:
        unknown = "raise"  # an unknown resource is a typo worth reporting, not a key to ignore


class QuotaUpdateRequest(_Lenient):
    quotas = fields.Nested(QuotaLimits, required=True)


# Databases, users and root (Trove's extensions) ------------------------------------------------------

class DatabasesRequest(_Lenient):
    databases = fields.List(fields.Nested(DatabaseRequest), required=True,
                            validate=validate.Length(min=1, max=MAX_LIST))


class UsersRequest(_Lenient):
    users = fields.List(fields.Nested(UserRequest), required=True, validate=validate.Length(min=1, max=MAX_LIST))


class UserAttributes(_Lenient):
    name = Text(validate=[validate.Length(min=1, max=80), _not_blank])
    password = Text(load_only=True, validate=validate.Length(min=1, max=255))
    host = Text(validate=validate.Length(min=1, max=255))


class UserUpdateRequest(_Lenient):
    user = fields.Nested(UserAttributes, required=True)


class AccessRequest(_Lenient):
    databases = fields.List(fields.Nested(DatabaseNameRequest), required=True,
                            validate=validate.Length(min=1, max=MAX_LIST))


class RootRequest(_Lenient):
    password = Text(load_only=True, validate=validate.Length(min=1, max=255),
                    metadata={"description": "Root's new password; one is generated when it is left out."})
