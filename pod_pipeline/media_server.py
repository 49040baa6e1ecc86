"""``pod serve-media``: a read-only HTTP server for the objects of a local store.

    pod serve-media [--port 3001] [--host 127.0.0.1]

Browsers open the links of :mod:`pod_resources.media_links` with it: an episode's MP3 and
FLAC play (``Range`` requests, ``206 Partial Content``), its JSON, PNG, VTT and label files
open with their content types.

What it never does, whatever the request:

- serve a file outside the store's root: the request path is split on ``/`` *before*
  percent-decoding (an encoded slash ``%2F`` or backslash ``%5C`` is refused with 400), each
  segment must make a valid store key (:func:`~pod_resources.storage.validate_key`: no
  ``..``, no ``.``, no empty segment, no control characters), and the file's real path,
  symlinks resolved, must lie inside the root's (else 404);
- list a directory (404), serve the store's own files (``.pod-meta``, ``.pod-lock``, temp
  files: every segment starting with ``.`` is 404), or answer anything but ``GET``/``HEAD``
  (405);
- say more than the status in an error: the body is the status's reason, never a path.

It binds ``127.0.0.1`` unless told otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import mimetypes
import os
import re
import stat
import sys
from collections.abc import Mapping
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import unquote

from pod_resources.media_links import DEFAULT_MEDIA_HOST, DEFAULT_MEDIA_PORT
from pod_resources.storage import InvalidKeyError, LocalObjectStore, store_from_url, validate_key

if TYPE_CHECKING:
    from pod_pipeline.settings import Settings

CONTENT_TYPES: dict[str, str] = {
    ".mp3": "audio/mpeg",
    ".flac": "audio/flac",
    ".wav": "audio/wav",
    ".m4a": "audio/mp4",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".json": "application/json",
    ".png": "image/png",
    ".vtt": "text/vtt; charset=utf-8",
    ".srt": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".edl": "text/plain; charset=utf-8",
    ".xml": "application/xml",
    ".rss": "application/rss+xml",
}
_FALLBACK_TYPE = "application/octet-stream"
_CHUNK_BYTES = 256 * 1024
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


class BadRequestPathError(ValueError):
    """The request path cannot name an object of the store."""


def content_type_for(name: str) -> str:
    """The ``Content-Type`` of a file name: the table above, else a guess, else octet-stream."""
    suffix = Path(name).suffix.lower()
    return CONTENT_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or _FALLBACK_TYPE


def key_from_request_path(raw_path: str) -> str:
    """The store key a request path names (``/episodes/e/episode.mp3?x`` → ``episodes/e/episode.mp3``).

    Split on ``/`` first, then each segment percent-decoded, so ``%2F`` never becomes a
    separator; refused outright are encoded slashes and backslashes, and anything
    :func:`validate_key` refuses. Raises :class:`BadRequestPathError`.
    """
    path = raw_path.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        raise BadRequestPathError("not an absolute path")
    if re.search(r"%(2f|5c)", path, re.IGNORECASE) or "\\" in path:
        raise BadRequestPathError("encoded slash or backslash")
    try:
        segments = [unquote(s, errors="strict") for s in path[1:].split("/")]
        return validate_key("/".join(segments))
    except (UnicodeDecodeError, InvalidKeyError) as exc:
        raise BadRequestPathError(str(exc)) from None


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` byte positions (inclusive) of a single ``Range: bytes=…`` header.

    ``None`` when there is no header or it is not one plain byte range (the whole object is
    then sent, as RFC 9110 allows). Raises ``ValueError`` when the range is unsatisfiable.
    """
    if not header:
        return None
    match = _RANGE_RE.match(header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise ValueError("empty suffix range")
        return max(size - length, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise ValueError("range not satisfiable")
    return start, end


class MediaRequestHandler(BaseHTTPRequestHandler):
    """Answers ``GET``/``HEAD`` for files under ``server.root`` (see the module docstring)."""

    server_version = "pod-media"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    server: MediaServer

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:  # noqa: N802 - the http.server spelling
        self._serve(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(send_body=False)

    def _refuse_method(self) -> None:
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        if self.server.verbose:
            sys.stderr.write(f"media: {self.address_string()} {format % args}\n")

    def _error(self, status: HTTPStatus, *, extra: dict[str, str] | None = None) -> None:
        body = f"{status.value} {status.phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self, *, send_body: bool) -> None:
        try:
            key = key_from_request_path(self.path)
        except BadRequestPathError:
            self._error(HTTPStatus.BAD_REQUEST)
            return
        handle = self.server.open_object(key)
        if handle is None:
            self._error(HTTPStatus.NOT_FOUND)
            return
        with handle:
            info = os.fstat(handle.fileno())
            size = info.st_size
            try:
                span = parse_range(self.headers.get("Range"), size)
            except ValueError:
                self._error(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                            extra={"Content-Range": f"bytes */{size}"})
                return
            first, last = span if span else (0, size - 1)
            self.send_response(HTTPStatus.PARTIAL_CONTENT if span else HTTPStatus.OK)
            self.send_header("Content-Type", content_type_for(key))
            self.send_header("Content-Length", str(max(last - first + 1, 0)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Last-Modified", formatdate(info.st_mtime, usegmt=True))
            self.send_header("Cache-Control", "no-cache")
            self.send_header("X-Content-Type-Options", "nosniff")
            if span:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.end_headers()
            if send_body:
                _copy_span(handle, self.wfile, first=first, length=last - first + 1)


def _copy_span(source: IO[bytes], sink: IO[bytes], *, first: int, length: int) -> None:
    source.seek(first)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the player moved on
        while length > 0:
            chunk = source.read(min(_CHUNK_BYTES, length))
            if not chunk:
                break
            sink.write(chunk)
            length -= len(chunk)


class MediaServer(ThreadingHTTPServer):
    """A threading HTTP server over one store root; :meth:`open_object` is its only way in."""

    daemon_threads = True

    def __init__(self, *, root: Path, host: str = DEFAULT_MEDIA_HOST,
                 port: int = DEFAULT_MEDIA_PORT, verbose: bool = False) -> None:
        self.root = Path(os.path.realpath(root))
        self.verbose = verbose
        super().__init__((host, port), MediaRequestHandler)

    def open_object(self, key: str) -> IO[bytes] | None:
        """The open file of ``key`` when it is a regular file inside the root, else ``None``.

        The check is made on the file actually opened (``/proc/self/fd``), so a symlink
        swapped in after a check on the path cannot lead outside; ``O_NONBLOCK`` keeps a FIFO
        from hanging the request.
        """
        if any(segment.startswith(".") for segment in key.split("/")):
            return None  # the store's own files: sidecars, lock, temp files
        try:
            fd = os.open(self.root.joinpath(*key.split("/")),
                         os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return None
        real = os.readlink(f"/proc/self/fd/{fd}")
        if not real.startswith(str(self.root) + os.sep) or not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return os.fdopen(fd, "rb")

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


# -- the pod command ----------------------------------------------------------------------


def add_serve_media_parser(sub: argparse._SubParsersAction) -> None:
    """``pod serve-media [--port P] [--host H] [--verbose]``."""
    parser = sub.add_parser("serve-media", help="serve the local store's media to browsers, read-only")
    parser.add_argument("--port", type=int, default=DEFAULT_MEDIA_PORT,
                        help=f"default {DEFAULT_MEDIA_PORT}")
    parser.add_argument("--host", default=DEFAULT_MEDIA_HOST, help=f"default {DEFAULT_MEDIA_HOST}")
    parser.add_argument("--verbose", action="store_true", help="one line per request")
    parser.set_defaults(func=cmd_serve_media)


def cmd_serve_media(args: argparse.Namespace, settings: Settings) -> int:
    try:
        store = store_from_url(settings.storage_url)
    except ValueError as exc:
        print(f"pod serve-media: POD_STORAGE_URL: {exc}", file=sys.stderr)
        return 2
    if not isinstance(store, LocalObjectStore):
        print(f"pod serve-media: the store is {settings.storage_url}, not local: its links are "
              "the show's public_base_url or signed URLs (POD_SIGNED_URL_LIFETIME_S)",
              file=sys.stderr)
        return 2
    root = Path(store.root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        server = MediaServer(root=root, host=args.host, port=args.port, verbose=args.verbose)
    except OSError as exc:
        print(f"pod serve-media: cannot listen on {args.host}:{args.port}: {exc.strerror}",
              file=sys.stderr)
        return 1
    print(f"pod serve-media: {root} read-only on {server.url} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


@functools.lru_cache(maxsize=4)
def _linker_for(settings: Settings) -> tuple:
    from pod_resources import build_defs

    resources = build_defs(settings).resources
    links = resources["show"].media_links()
    if settings.signed_url_lifetime_s and not links.signed_url_lifetime_s:
        links = dataclasses.replace(links, signed_url_lifetime_s=settings.signed_url_lifetime_s)
    return resources["store"], links


def status_links(artifacts: Mapping[str, str | None]) -> dict[str, str | None]:
    """``pod status --json``'s ``links``: ``artifacts``' keys, as URLs a browser opens
    (``None`` where nothing serves them)."""
    from pod_pipeline.settings import load_settings

    store, links = _linker_for(load_settings())
    return links.artifact_links(store, artifacts)
