"""Backups to and from storage: files, and signed URLs against a small HTTP server in a thread."""

from __future__ import annotations

import gzip
import hashlib
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from guest.backup_stream import verified_backup, write_backup
from guest.datastore.base import DatastoreError
from tests.support.url_storage import SIGNATURE, Storage, serving

DUMP = b"".join(b"INSERT INTO t VALUES (%d, 'row number %d');\n" % (n, n) for n in range(50_000))


@pytest.fixture
def storage() -> Iterator[Storage]:
    with serving() as server:
        yield server


def produce(data: bytes = DUMP):
    def write(out: BinaryIO) -> None:
        for start in range(0, len(data), 10_000):  # as a dump tool's output arrives: in pieces
            out.write(data[start:start + 10_000])
    return write


def restore_of(target: dict[str, Any], size: int, checksum: str, backup_id: str = "b-1") -> dict[str, Any]:
    return {"backup_id": backup_id, "source": target, "size": size, "checksum": checksum}


def read_back(restore: dict[str, Any], directory: Path | None = None) -> bytes:
    with verified_backup(restore, directory) as dump:
        return dump.read()


def digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


# ------------------------------------------------------------------------------------------------- file


def test_a_file_backup_is_gzip_with_the_size_and_checksum_of_the_stored_bytes(tmp_path: Path) -> None:
    location = tmp_path / "tenant" / "b-1.gz"
    target = {"kind": "file", "location": str(location), "url": None}
    size, checksum = write_backup(target, produce())
    stored = location.read_bytes()
    assert (size, checksum) == (len(stored), digest(stored))
    assert size < len(DUMP) // 4, "stored compressed"
    assert gzip.decompress(stored) == DUMP
    assert stat.S_IMODE(location.stat().st_mode) == 0o600
    assert not list(tmp_path.rglob("*.part"))
    assert read_back(restore_of(target, size, checksum)) == DUMP
    assert write_backup(target, produce()) == (size, checksum), "the same dump stores the same bytes"


def test_a_failed_dump_leaves_no_file_behind(tmp_path: Path) -> None:
    location = tmp_path / "b-1.gz"

    def failing(out: BinaryIO) -> None:
        out.write(DUMP[:100_000])
        raise DatastoreError("pg_dump failed (exit 1): no space")

    with pytest.raises(DatastoreError, match="pg_dump failed"):
        write_backup({"kind": "file", "location": str(location), "url": None}, failing)
    assert list(tmp_path.iterdir()) == []


def test_a_corrupted_byte_or_a_wrong_size_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    location = tmp_path / "b-1.gz"
    target = {"kind": "file", "location": str(location), "url": None}
    size, checksum = write_backup(target, produce())
    stored = bytearray(location.read_bytes())
    stored[len(stored) // 2] ^= 0x01
    location.write_bytes(bytes(stored))
    with pytest.raises(DatastoreError) as caught:
        read_back(restore_of(target, size, checksum))
    message = str(caught.value)
    assert message.startswith(f"Backup b-1 is corrupt: its checksum is sha256:{digest(bytes(stored))[7:23]}")
    assert f"but it was stored with {checksum[:23]}" in message
    assert message.endswith("it cannot be restored. Restore another backup or take a new one.")
    assert len(message) <= 255

    location.write_bytes(bytes(stored[:-10]))
    with pytest.raises(DatastoreError, match=f"Backup b-1 is corrupt: it is {size - 10} bytes but it was stored "
                                             f"with {size}; it cannot be restored"):
        read_back(restore_of(target, size, checksum))


def test_a_missing_file_is_not_in_backup_storage(tmp_path: Path) -> None:
    location = tmp_path / "gone.gz"
    with pytest.raises(DatastoreError) as caught:
        read_back(restore_of({"kind": "file", "location": str(location), "url": None}, 10, digest(b"x")))
    assert str(caught.value) == (f"Backup b-1 is not in backup storage ({location}): it cannot be restored. "
                                 f"Restore another backup or take a new one.")


def test_a_stored_object_that_is_not_gzip_cannot_be_restored(tmp_path: Path) -> None:
    location = tmp_path / "plain.sql"
    location.write_bytes(b"SELECT 1;\n")
    target = {"kind": "file", "location": str(location), "url": None}
    with pytest.raises(DatastoreError, match=r"Backup b-1 cannot be read .*it cannot be restored"):
        read_back(restore_of(target, 10, digest(b"SELECT 1;\n")))


# -------------------------------------------------------------------------------------------------- url


def test_a_url_backup_is_one_chunked_put_and_comes_back_by_get(storage: Storage, tmp_path: Path) -> None:
    target = {"kind": "url", "location": "swift://backups/t/b-1.gz", "url": storage.url("t/b-1.gz")}
    size, checksum = write_backup(target, produce())
    ((method, path, headers),) = storage.requests
    assert method == "PUT" and path.endswith(SIGNATURE), "the signed URL's query is sent as it is"
    assert headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in headers
    stored = storage.objects["/v1/AUTH_t/backups/t/b-1.gz"]
    assert (size, checksum) == (len(stored), digest(stored))
    assert gzip.decompress(stored) == DUMP

    restore = restore_of(target, size, checksum)
    assert read_back(restore, tmp_path / "fetching") == DUMP
    assert list((tmp_path / "fetching").iterdir()) == [], "the fetched copy is temporary"

    storage.objects["/v1/AUTH_t/backups/t/b-1.gz"] = stored[:-1] + bytes([stored[-1] ^ 0xFF])
    with pytest.raises(DatastoreError, match="Backup b-1 is corrupt: its checksum is"):
        read_back(restore)


def test_url_errors_name_the_status_and_the_location_never_the_signature(storage: Storage) -> None:
    target = {"kind": "url", "location": "swift://backups/t/b-2.gz", "url": storage.url("t/b-2.gz")}
    errors = []
    with pytest.raises(DatastoreError) as missing:
        read_back(restore_of(target, 10, digest(b"x"), backup_id="b-2"))
    assert str(missing.value) == ("Backup b-2 is not in backup storage (swift://backups/t/b-2.gz): it cannot be "
                                  "restored. Restore another backup or take a new one.")
    errors.append(missing.value)

    storage.refuse = 401
    with pytest.raises(DatastoreError, match=r"refused the backup for swift://backups/t/b-2\.gz: HTTP 401") as put:
        write_backup(target, produce())
    errors.append(put.value)
    with pytest.raises(DatastoreError, match="HTTP 401") as get:
        read_back(restore_of(target, 10, digest(b"x"), backup_id="b-2"))
    errors.append(get.value)

    port = storage.server_address[1]
    storage.shutdown()
    storage.server_close()
    nowhere = {**target, "url": f"http://127.0.0.1:{port}/v1/AUTH_t/backups/t/b-2.gz?{SIGNATURE}"}
    with pytest.raises(DatastoreError, match=r"could not store the backup at swift://backups/t/b-2\.gz") as down:
        write_backup(nowhere, produce())
    errors.append(down.value)
    for error in errors:
        assert "temp_url_sig" not in str(error) and "secret" not in str(error)
        assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__), \
            "no chained error quotes the URL"
