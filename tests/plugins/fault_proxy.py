"""A fault-injecting HTTP proxy between the google-cloud-storage client and the GCS emulator.

The proxy forwards every request to fake-gcs-server and counts it. A test programs faults for
the next requests that match a method and a regular expression on the request target
(percent-decoded path, then ``?`` and the raw query):

- ``"503"`` / ``"429"``: answer with that status (429 carries ``Retry-After``);
- ``"reset"``: drop the connection (TCP reset) without a response;
- ``"stall"``: hold the response for ``stall_s`` seconds, before the headers or in the middle
  of the body.

With ``after_forward=True`` the request reaches the emulator first, so the server applies a
write whose answer the client then never hears (or hears as a 503).

The emulator writes its own address into ``Location`` headers (resumable uploads) and JSON
bodies (``mediaLink``); the proxy rewrites both to its own, so follow-up requests come back
through it.

Tests request ``gcs_fault_proxy`` (``STORAGE_EMULATOR_HOST`` then points at the proxy) and
build a store with :func:`make_proxied_gcs_store`.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import re
import socket
import socketserver
import struct
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Literal
from urllib.parse import unquote, urlsplit

import pytest

from pod_resources.storage import GCSObjectStore
from tests.plugins.gcs import GCSEmulator

FaultKind = Literal["503", "429", "reset", "stall"]

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
_UPSTREAM_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ProxiedRequest:
    """One request the proxy received."""

    method: str
    path: str
    """Percent-decoded path (``/storage/v1/b/bkt/o/episodes/ep/raw.flac``)."""
    query: str
    """Raw query string, without ``?``."""
    fault: str | None
    """The fault applied to it, or ``None`` when it was forwarded untouched."""
    upstream_status: int | None = None
    """The emulator's answer, or ``None`` when the request never reached it."""

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


@dataclass
class _Fault:
    kind: FaultKind
    method: str | None
    pattern: re.Pattern[str] | None
    remaining: int | None  # None: every matching request
    after_forward: bool
    stall_s: float
    stall_in_body: bool
    skip: int
    on_fault: Callable[[], None] | None

    def matches(self, method: str, target: str) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.pattern is None or self.pattern.search(target) is not None


class FaultProxy:
    """A running proxy; see the module docstring."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = upstream.rstrip("/")
        self._upstream_host = parts.hostname or "127.0.0.1"
        self._upstream_port = parts.port or 80
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._requests: list[ProxiedRequest] = []
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="gcs-fault-proxy", daemon=True
        )

    # -- control -----------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stopping.set()  # releases stalled handlers
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def fail_next(
        self,
        kind: FaultKind,
        *,
        method: str | None = None,
        path: str | None = None,
        times: int | None = 1,
        after_forward: bool = False,
        stall_s: float = 0.0,
        stall_in_body: bool = False,
        skip: int = 0,
        on_fault: Callable[[], None] | None = None,
    ) -> None:
        """Apply ``kind`` to the next ``times`` requests matching ``method`` and ``path``,
        after letting the first ``skip`` of them through.

        ``path`` is a regular expression searched in the decoded target (path, ``?``, query);
        ``times=None`` applies the fault to every matching request until :meth:`reset`.
        ``after_forward``: forward the request upstream first, then fail the response.
        ``stall_s`` / ``stall_in_body`` only apply to ``"stall"``: hold the response that long,
        before its headers or after half of its body. ``on_fault`` is called (in the proxy's
        thread) each time the fault is applied, before the client hears anything: another
        writer can act between two attempts of a request.
        """
        if kind not in ("503", "429", "reset", "stall"):
            raise ValueError(f"unknown fault {kind!r}")
        if kind == "stall" and stall_s <= 0:
            raise ValueError("a stall needs stall_s > 0")
        fault = _Fault(
            kind=kind,
            method=method.upper() if method else None,
            pattern=re.compile(path) if path is not None else None,
            remaining=times,
            after_forward=after_forward or kind == "stall",
            stall_s=stall_s,
            stall_in_body=stall_in_body,
            skip=skip,
            on_fault=on_fault,
        )
        with self._lock:
            self._faults.append(fault)

    def reset(self) -> None:
        """Forget every programmed fault and every counted request."""
        with self._lock:
            self._faults.clear()
            self._requests.clear()

    @property
    def pending_faults(self) -> int:
        """Faults programmed but not applied yet (``times=None`` faults count as one)."""
        with self._lock:
            return sum(1 if f.remaining is None else f.remaining for f in self._faults)

    @property
    def requests(self) -> list[ProxiedRequest]:
        """Every request received since the start or the last :meth:`reset`, in order."""
        with self._lock:
            return list(self._requests)

    def count(self, method: str | None = None, path: str | None = None) -> int:
        """How many received requests match ``method`` and the ``path`` regular expression."""
        pattern = re.compile(path) if path is not None else None
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (pattern is None or pattern.search(r.target))
        )

    # -- used by the handler -------------------------------------------------------------------

    def _take_fault(self, method: str, path: str, query: str) -> tuple[_Fault | None, int]:
        """The fault to apply to this request, and the request's index in :attr:`requests`."""
        target = f"{path}?{query}" if query else path
        with self._lock:
            fault = next((f for f in self._faults if f.matches(method, target)), None)
            if fault is not None and fault.skip > 0:
                fault.skip -= 1
                fault = None
            elif fault is not None and fault.remaining is not None:
                fault.remaining -= 1
            self._requests.append(
                ProxiedRequest(method, path, query, None if fault is None else fault.kind)
            )
            return fault, len(self._requests) - 1

    def _record_status(self, index: int, status: int) -> None:
        with self._lock:
            if index < len(self._requests):  # not forgotten by reset() meanwhile
                self._requests[index] = dataclasses.replace(
                    self._requests[index], upstream_status=status
                )

    def _forward(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(
            self._upstream_host, self._upstream_port, timeout=_UPSTREAM_TIMEOUT_S
        )
        try:
            connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            data = response.read()
            return response.status, response.reason, response.getheaders(), data
        finally:
            connection.close()

    def _rewrite(self, value: bytes) -> bytes:
        return value.replace(self.upstream.encode(), self.endpoint.encode())


class _Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FaultProxy

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients that time out or drop connections are the point of this server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # quiet: tests read the request list instead

    def do_GET(self) -> None:  # noqa: N802
        self._handle()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_GET

    def finish(self) -> None:
        try:
            super().finish()
        except (OSError, ValueError):
            pass  # the socket was reset on purpose

    # -- one request -----------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()  # always whole, so the connection stays in step
        parts = urlsplit(self.path)
        fault, index = proxy._take_fault(self.command, unquote(parts.path), parts.query)
        if fault is not None and not fault.after_forward:
            self._fail(fault)
            return
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP]
        try:
            status, reason, upstream_headers, data = proxy._forward(
                self.command, self.path, headers, body
            )
        except OSError as e:
            self._send(502, "Bad Gateway", [("Content-Type", "text/plain")], str(e).encode())
            return
        proxy._record_status(index, status)
        response_headers = []
        for name, value in upstream_headers:
            lower = name.lower()
            if lower in _HOP_BY_HOP:
                continue
            if lower == "location":
                value = proxy._rewrite(value.encode("latin-1")).decode("latin-1")
            if lower == "content-type" and "json" in value.lower():
                data = proxy._rewrite(data)
            response_headers.append((name, value))
        if fault is not None:
            if fault.on_fault is not None:
                fault.on_fault()
            if fault.kind == "stall":
                self._send(
                    status, reason, response_headers, data,
                    stall_s=fault.stall_s, stall_in_body=fault.stall_in_body,
                )
            else:
                self._fail(fault)
            return
        self._send(status, reason, response_headers, data)

    def _fail(self, fault: _Fault) -> None:
        if fault.on_fault is not None and not fault.after_forward:
            fault.on_fault()
        if fault.kind == "reset":
            # SO_LINGER 0: close() sends RST instead of FIN, as a dropped connection does.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        status = int(fault.kind)
        reason = http.client.responses[status]
        headers = [("Content-Type", "application/json")]
        if status == 429:
            headers.append(("Retry-After", "1"))
        message = f'{{"error": {{"code": {status}, "message": "injected {reason}"}}}}'
        self._send(status, reason, headers, message.encode())

    def _send(
        self,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        data: bytes,
        *,
        stall_s: float = 0.0,
        stall_in_body: bool = False,
    ) -> None:
        stopping = self.server.proxy._stopping
        try:
            if stall_s and not stall_in_body:
                stopping.wait(stall_s)
                self.close_connection = True
            self.send_response(status, reason)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if stall_s and stall_in_body:
                half = len(data) // 2
                self.wfile.write(data[:half])
                self.wfile.flush()
                stopping.wait(stall_s)
                self.close_connection = True
                self.wfile.write(data[half:])
            else:
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client gave up (timeout) or went away


def make_proxied_gcs_store(
    proxy: FaultProxy,
    *,
    bucket: str | None = None,
    prefix: str = "",
    timeout_s: float = 2.0,
    retry_deadline_s: float = 15.0,
    **kw: object,
) -> GCSObjectStore:
    """A :class:`GCSObjectStore` whose requests go through ``proxy``; the bucket is created.

    ``STORAGE_EMULATOR_HOST`` must point at the proxy (request ``gcs_fault_proxy``). Short
    timeouts keep fault tests fast; the client retries with its usual exponential backoff.
    """
    if os.environ.get("STORAGE_EMULATOR_HOST") != proxy.endpoint:
        raise RuntimeError(
            "STORAGE_EMULATOR_HOST does not point at the proxy: request gcs_fault_proxy"
        )
    name = bucket or f"faults-{uuid.uuid4().hex[:20]}"
    store = GCSObjectStore(
        bucket=name,
        prefix=prefix,
        project="test",
        timeout_s=timeout_s,
        retry_deadline_s=retry_deadline_s,
        **kw,
    )
    client = store.get_client()
    if client.lookup_bucket(name) is None:
        client.create_bucket(name)
    return store


@pytest.fixture
def gcs_fault_proxy(
    gcs_emulator: GCSEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FaultProxy]:
    """A fault proxy in front of the session's emulator; ``STORAGE_EMULATOR_HOST`` points at it.

    The store switches off the client library's background bucket probes, so every request
    the proxy sees (and every fault it applies) belongs to a store call.
    """
    proxy = FaultProxy(gcs_emulator.endpoint).start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.endpoint)
    try:
        yield proxy
    finally:
        proxy.close()
