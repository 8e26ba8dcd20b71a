"""A signed-URL object store for tests (a fake of Swift's temp URLs): objects by path in a thread's HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SIGNATURE = "temp_url_sig=0123456789abcdef-secret&temp_url_expires=1700000000"


class Storage(ThreadingHTTPServer):
    """Objects by path, PUT with a chunked body and fetched by GET; ``refuse`` answers every request so."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.refuse: int | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/AUTH_t/backups/{name}?{SIGNATURE}"


class Handler(BaseHTTPRequestHandler):
    server: Storage

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_PUT(self) -> None:
        self.server.requests.append(("PUT", self.path, dict(self.headers)))
        if self.server.refuse is not None:
            self.send_response(self.server.refuse)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            return
        body = bytearray()
        while True:  # http.server does not decode a chunked body itself
            size = int(self.rfile.readline().strip(), 16)
            if size == 0:
                self.rfile.readline()
                break
            body += self.rfile.read(size)
            self.rfile.readline()
        self.server.objects[self.path.split("?")[0]] = bytes(body)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path, dict(self.headers)))
        found = self.server.objects.get(self.path.split("?")[0])
        status = self.server.refuse or (200 if found is not None else 404)
        body = found if status == 200 and found is not None else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def serving() -> Iterator[Storage]:
    """A ``Storage`` answering on a free port until the block ends."""
    server = Storage()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
