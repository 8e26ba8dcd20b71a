"""The Trove-compatible REST API: Falcon resources, marshmallow schemas, auth, errors, OpenAPI."""
