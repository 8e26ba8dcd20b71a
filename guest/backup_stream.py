"""Backups on the wire: a datastore's logical dump, gzip-compressed, to and from backup storage.

A backup is stored as the gzip of what the datastore's dump tool wrote. Its size and ``sha256:<hex>``
checksum are those of the *stored* (compressed) bytes, so anyone holding the object (the storage, the
control plane, a restoring guest) can check it without decompressing it.

A target or source arrives as a ``BACKUP_TARGET_FIELDS`` object: ``file`` (``location`` is a path this guest
can reach) or ``url`` (a signed URL, PUT to store, GET to fetch, sealed for this guest in ``sealed_url``).
``opened`` unseals it into the ``{kind, location, url}`` the functions here take. A signed URL's query string
is its signature: no message, log or error names the URL, only the target's ``location``.

Restoring verifies before it loads: the whole object is fetched to a local file (a file source is read
where it is) and its size and checksum checked against what it was stored with; only then is it
decompressed for the datastore.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import os
import ssl
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from adapters.sealed import unseal
from guest.datastore.base import DatastoreError

CHUNK = 256 * 1024
HTTP_TIMEOUT_S = 60
_NEXT = "Restore another backup or take a new one."


def opened(target: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    """A command's target or source with its signed URL unsealed by this guest's ``key``; raises ``SealBroken``
    when the URL was sealed for another instance or changed."""
    sealed_url = target.get("sealed_url")
    return {"kind": target["kind"], "location": target["location"],
            "url": None if sealed_url is None else unseal(key, sealed_url)}


def opened_restore(restore: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    """A prepare's ``restore`` with its source ``opened``."""
    return {**restore, "source": opened(restore["source"], key)}


class _Sink:
    """Where compressed bytes go: counted and hashed as stored, and passed on in chunks."""

    def __init__(self, send: Callable[[bytes], None], on_stored: Callable[[int], None]) -> None:
        self._send = send
        self._on_stored = on_stored
        self._buffer = bytearray()
        self._digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._buffer += data
        if len(self._buffer) >= CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buffer:
            chunk = bytes(self._buffer)
            self._buffer.clear()
            self._digest.update(chunk)
            self._send(chunk)
            self.size += len(chunk)
            self._on_stored(self.size)

    @property
    def checksum(self) -> str:
        return f"sha256:{self._digest.hexdigest()}"


def write_backup(target: Mapping[str, Any], produce: Callable[[BinaryIO], None],
                 on_stored: Callable[[int], None] = lambda _size: None) -> tuple[int, str]:
    """Store what ``produce`` writes (to the binary stream it is given) at ``target``, gzip-compressed;
    the size and checksum of the stored bytes. ``on_stored`` hears the bytes sent so far, chunk by chunk."""
    opener = _file_writer if target["kind"] == "file" else _url_writer
    with opener(target) as send:
        sink = _Sink(send, on_stored)
        # mtime 0: the same dump always compresses to the same bytes.
        with gzip.GzipFile(fileobj=sink, mode="wb", mtime=0) as compressed:
            produce(compressed)
        sink.flush()
    return sink.size, sink.checksum


@contextlib.contextmanager
def _file_writer(target: Mapping[str, Any]) -> Iterator[Callable[[bytes], None]]:
    """Into ``<location>.part``, renamed into place once synced: a backup exists only whole."""
    final = Path(target["location"])
    partial = final.with_name(final.name + ".part")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise DatastoreError(f"cannot write the backup to {final}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle.write
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, final)
        directory = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise DatastoreError(f"writing the backup to {final} failed: {exc.strerror or exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _url_writer(target: Mapping[str, Any]) -> Iterator[Callable[[bytes], None]]:
    """One PUT with a chunked body: the dump streams through, its length unknown until it ends."""
    location, url = target["location"], target["url"]
    connection, path = _connection(url, location)
    sent = True
    try:
        try:
            connection.putrequest("PUT", path)
            connection.putheader("Transfer-Encoding", "chunked")
            connection.putheader("Content-Type", "application/gzip")
            connection.endheaders()
        except (OSError, http.client.HTTPException) as exc:
            raise _unreachable("store the backup at", location, url, exc) from None

        def send(chunk: bytes) -> None:
            try:
                connection.send(b"%X\r\n%s\r\n" % (len(chunk), chunk))
            except OSError as exc:
                raise _Refused from exc  # the storage may have answered already: its answer says why

        try:
            yield send
        except _Refused:
            sent = False
        else:
            try:
                connection.send(b"0\r\n\r\n")
            except OSError:
                sent = False
        try:
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise _unreachable("store the backup at", location, url, exc) from None
        if not 200 <= response.status < 300:
            raise DatastoreError(f"the backup storage refused the backup for {location}: HTTP {response.status} "
                                 f"{response.reason}")
        if not sent:
            raise DatastoreError(f"the backup storage for {location} closed the connection before the backup "
                                 f"was sent")
    finally:
        connection.close()


class _Refused(Exception):
    """The storage stopped reading the body."""


@contextlib.contextmanager
def verified_backup(restore: Mapping[str, Any], directory: Path | None = None) -> Iterator[BinaryIO]:
    """The decompressed dump of the backup ``restore`` (``RESTORE_FIELDS``), once its stored bytes were
    fetched (a ``url`` into a temporary file in ``directory``) and found to be the size and checksum it
    was stored with; a missing or corrupt backup raises ``DatastoreError`` before a byte is yielded."""
    backup_id, source = restore["backup_id"], restore["source"]
    opener = _file_source if source["kind"] == "file" else _url_source
    with opener(backup_id, source, directory) as (stored, size, checksum):
        if size != restore["size"]:
            raise DatastoreError(f"Backup {backup_id} is corrupt: it is {size} bytes but it was stored with "
                                 f"{restore['size']}; it cannot be restored. {_NEXT}")
        if checksum != restore["checksum"]:
            raise DatastoreError(f"Backup {backup_id} is corrupt: its checksum is {_short(checksum)} but it was "
                                 f"stored with {_short(restore['checksum'])}; it cannot be restored. {_NEXT}")
        stored.seek(0)
        try:
            with gzip.GzipFile(fileobj=stored, mode="rb") as dump:
                yield dump
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise DatastoreError(f"Backup {backup_id} cannot be read ({exc}): it is not a trove-es backup; it "
                                 f"cannot be restored. {_NEXT}") from None


Fetched = tuple[BinaryIO, int, str]  # the stored bytes (read back from the start), their size and checksum


@contextlib.contextmanager
def _file_source(backup_id: str, source: Mapping[str, Any], directory: Path | None) -> Iterator[Fetched]:
    """Read where it is: the handle that was checked is the one restored from."""
    location = source["location"]
    try:
        handle = open(location, "rb")  # noqa: SIM115 - held open across the yield
    except FileNotFoundError:
        raise _missing(backup_id, location) from None
    except OSError as exc:
        raise DatastoreError(f"cannot read backup {backup_id} at {location}: {exc.strerror or exc}") from None
    with handle:
        digest, size = hashlib.sha256(), 0
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
        yield handle, size, f"sha256:{digest.hexdigest()}"


@contextlib.contextmanager
def _url_source(backup_id: str, source: Mapping[str, Any], directory: Path | None) -> Iterator[Fetched]:
    location, url = source["location"], source["url"]
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    connection, path = _connection(url, location)
    with contextlib.closing(connection), tempfile.TemporaryFile(dir=directory, prefix="restore-") as local:
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            if response.status == 404:
                raise _missing(backup_id, location)
            if not 200 <= response.status < 300:
                raise DatastoreError(f"the backup storage refused backup {backup_id} ({location}): HTTP "
                                     f"{response.status} {response.reason}; try the restore again later")
            digest, size = hashlib.sha256(), 0
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                local.write(chunk)
        except (OSError, http.client.HTTPException) as exc:
            raise _unreachable(f"fetch backup {backup_id} from", location, url, exc) from None
        yield local, size, f"sha256:{digest.hexdigest()}"


def _connection(url: str, location: str) -> tuple[http.client.HTTPConnection, str]:
    """A connection to the URL's host and the path (with its query) to ask it for."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DatastoreError(f"the backup storage gave an unusable URL for {location} (not http or https)")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        if parts.scheme == "https":
            return http.client.HTTPSConnection(parts.hostname, parts.port, timeout=HTTP_TIMEOUT_S,
                                               context=ssl.create_default_context()), path
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=HTTP_TIMEOUT_S), path
    except ValueError:  # a port that is not a number
        raise DatastoreError(f"the backup storage gave an unusable URL for {location}") from None


def _missing(backup_id: str, location: str) -> DatastoreError:
    return DatastoreError(f"Backup {backup_id} is not in backup storage ({location}): it cannot be restored. "
                          f"{_NEXT}")


def _unreachable(what: str, location: str, url: str, exc: BaseException) -> DatastoreError:
    reason = str(exc) or exc.__class__.__name__
    query = urlsplit(url).query
    for secret in (url, query):  # an error that quotes the URL would quote its signature
        if secret:
            reason = reason.replace(secret, "…")
    return DatastoreError(f"could not {what} {location}: {reason}")


def _short(checksum: Any) -> str:
    """Enough of a checksum to tell two apart, short enough for a fault message."""
    text = str(checksum)
    return text if len(text) <= 23 else text[:23] + "…"
