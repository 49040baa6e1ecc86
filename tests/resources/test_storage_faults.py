"""Storage faults on GCS: a proxy between the client and the emulator fails requests on purpose.

Every store call retries 503, 429, dropped connections and timeouts with the client's
exponential backoff, bounded by ``retry_deadline_s``; a retried upload lands exactly once and
never replaces a newer generation; a stalled server ends in a clear error instead of a hang;
and a pipeline step whose input object is missing fails at once, after one request.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest

from pod_assets import layout
from pod_assets.episodes.cleaned_audio import cleaned_audio
from pod_assets.episodes.transcript import transcript
from pod_resources.catalog import CatalogResource, EpisodeStatus
from pod_resources.storage import (
    GCSObjectStore,
    ObjectStoreError,
    PreconditionFailedError,
)
from tests import audio_factory as af
from tests.plugins.fault_proxy import FaultProxy, make_proxied_gcs_store
from tests.plugins.pipeline import Pipeline

pytestmark = pytest.mark.gcs

MIB = 1024 * 1024
TIMEOUT_S = 1.0
#: Long enough for several backed-off attempts, short enough that a give-up is quick.
RETRY_DEADLINE_S = 15.0

UPLOAD = r"^/upload/"
DOWNLOAD = r"^/download/"
LISTING = r"/o(\?|$)"


def _object(name: str) -> str:
    """Matches the metadata and media requests of one object, not its neighbours."""
    return rf"/o/{re.escape(name)}(\?|$)"


@pytest.fixture
def store(gcs_fault_proxy: FaultProxy) -> GCSObjectStore:
    store = make_proxied_gcs_store(
        gcs_fault_proxy, timeout_s=TIMEOUT_S, retry_deadline_s=RETRY_DEADLINE_S, list_page_size=2
    )
    gcs_fault_proxy.reset()
    return store


def _random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def _applied_uploads(proxy: FaultProxy) -> int:
    """Upload requests that made a generation (a resumable upload's last chunk counts, the
    request opening its session does not)."""
    return sum(
        1
        for r in proxy.requests
        if r.path.startswith("/upload/")
        and r.upstream_status in (200, 201)
        and not (r.method == "POST" and "uploadType=resumable" in r.query)
    )


# -- transient faults: every kind of call retries and succeeds ----------------------------------

# (name, proxy method, proxy path pattern, call): the call runs against a store holding
# "data/small" (5 bytes), "data/big" (3 MiB) and five objects under "list/"; it returns
# something to compare with the expected value computed without faults.
Operation = tuple[str, str, str, Callable[[GCSObjectStore, Path], object]]

FAULTS = ["503", "429", "reset"]


def _seed(store: GCSObjectStore, tmp_path: Path) -> dict[str, bytes]:
    big = os.urandom(3 * MIB)
    store.write_bytes("data/small", b"small")
    store.write_bytes("data/big", big)
    for i in range(5):
        store.write_bytes(f"list/{i}", str(i).encode())
    return {"small": b"small", "big": big}


def _read_to_path(store: GCSObjectStore, tmp_path: Path) -> bytes:
    store.read_to_path("data/big", tmp_path / "out.bin")
    return (tmp_path / "out.bin").read_bytes()


READS: list[Operation] = [
    ("read_bytes", "GET", DOWNLOAD, lambda s, p: s.read_bytes("data/big")),
    ("read_to_path", "GET", DOWNLOAD, _read_to_path),
    ("stat", "GET", _object("data/small"), lambda s, p: s.stat("data/small").size),
    # Page two of five objects listed two per page: the retry resumes the listing in place.
    ("list", "GET", r"/o\?.*pageToken=", lambda s, p: [i.key for i in s.list("list/")]),
]


@pytest.mark.parametrize("kind", FAULTS)
@pytest.mark.parametrize("operation", READS, ids=[op[0] for op in READS])
def test_reads_retry_transient_faults(
    store: GCSObjectStore,
    gcs_fault_proxy: FaultProxy,
    tmp_path: Path,
    operation: Operation,
    kind: str,
) -> None:
    name, method, pattern, call = operation
    _seed(store, tmp_path)
    gcs_fault_proxy.reset()
    expected = call(store, tmp_path)
    clean_requests = gcs_fault_proxy.count(method, pattern)
    gcs_fault_proxy.reset()
    gcs_fault_proxy.fail_next(kind, method=method, path=pattern, times=2)

    assert call(store, tmp_path) == expected
    assert gcs_fault_proxy.pending_faults == 0
    assert len([r for r in gcs_fault_proxy.requests if r.fault]) == 2
    # The failed request went out again (backed off) until it succeeded; nothing else did.
    assert gcs_fault_proxy.count(method, pattern) == clean_requests + 2


# (write, size, whether an older generation exists)
WRITES = [
    ("write_bytes", 5, False),
    ("write_file", 5, True),
    ("write_file_resumable", 9 * MIB, False),  # over 8 MiB: a resumable upload in two chunks
    ("write_file_resumable", 9 * MIB, True),
]


@pytest.mark.parametrize("kind", FAULTS)
@pytest.mark.parametrize(
    "write, size, overwrite",
    WRITES,
    ids=[f"{w[0]}-{'overwrite' if w[2] else 'create'}" for w in WRITES],
)
def test_writes_retry_transient_faults(
    store: GCSObjectStore,
    gcs_fault_proxy: FaultProxy,
    tmp_path: Path,
    write: str,
    size: int,
    overwrite: bool,
    kind: str,
) -> None:
    key = "data/object.bin"
    old = store.write_bytes(key, b"old") if overwrite else None
    source = _random_file(tmp_path / "source.bin", size)
    gcs_fault_proxy.reset()
    # Resumable: the session is opened by a POST, the chunks go up in PUTs; fail a chunk.
    method = "PUT" if write == "write_file_resumable" else "POST"
    gcs_fault_proxy.fail_next(kind, method=method, path=UPLOAD, times=2)

    if write == "write_bytes":
        info = store.write_bytes(key, source.read_bytes(), if_generation_match=None)
    else:
        info = store.write_file(key, source)

    assert gcs_fault_proxy.pending_faults == 0
    assert store.read_bytes(key) == source.read_bytes()
    assert store.stat(key) == info
    assert info.size == size
    if old is not None:
        assert info.generation != old.generation
    # The faults hit before the emulator saw anything: one upload made one generation.
    assert _applied_uploads(gcs_fault_proxy) == 1


@pytest.mark.parametrize("kind", FAULTS)
def test_delete_and_copy_retry_transient_faults(
    store: GCSObjectStore, gcs_fault_proxy: FaultProxy, kind: str
) -> None:
    source = store.write_bytes("uploads/a.mp3", b"audio", metadata={"title": "A"})
    gcs_fault_proxy.fail_next(kind, method="POST", path=r"/rewriteTo/", times=2)
    gcs_fault_proxy.fail_next(kind, method="DELETE", path=_object("uploads/a.mp3"), times=2)

    copied = store.copy("uploads/a.mp3", "episodes/ep/raw.mp3")
    store.delete("uploads/a.mp3", if_generation_match=source.generation)

    assert gcs_fault_proxy.pending_faults == 0
    assert store.read_bytes("episodes/ep/raw.mp3") == b"audio"
    assert store.stat("episodes/ep/raw.mp3") == copied
    assert dict(copied.metadata) == {"title": "A"}
    assert store.stat("uploads/a.mp3") is None
    assert gcs_fault_proxy.count("POST", r"/rewriteTo/") == 3
    assert gcs_fault_proxy.count("DELETE") == 3


@pytest.mark.parametrize("lost", ["reset", "503"])
def test_delete_whose_answer_was_lost_succeeds(
    store: GCSObjectStore, gcs_fault_proxy: FaultProxy, lost: str
) -> None:
    info = store.write_bytes("episodes/ep/raw.mp3", b"audio")
    gcs_fault_proxy.fail_next(lost, method="DELETE", after_forward=True)

    store.delete("episodes/ep/raw.mp3", if_generation_match=info.generation)

    deletes = [r for r in gcs_fault_proxy.requests if r.method == "DELETE"]
    # The first request deleted the object; its retry found it gone (404), which is success.
    assert [r.upstream_status in (200, 204) for r in deletes] == [True, False], deletes
    assert deletes[1].upstream_status == 404
    assert store.stat("episodes/ep/raw.mp3") is None


# -- a retried upload lands once, and never over a newer generation -----------------------------


LOST_ANSWERS = ["reset", "503", "stall"]


@pytest.mark.parametrize("lost", LOST_ANSWERS)
@pytest.mark.parametrize("if_generation_match", ["create-only", "match", "unconditional"])
def test_upload_whose_answer_was_lost_lands_exactly_once(
    store: GCSObjectStore,
    gcs_fault_proxy: FaultProxy,
    lost: str,
    if_generation_match: str,
) -> None:
    key = "episodes/ep/transcript.json"
    before = None if if_generation_match == "create-only" else store.write_bytes(key, b"v1")
    condition = {
        "create-only": 0,
        "match": before.generation if before else None,
        "unconditional": None,
    }[if_generation_match]
    gcs_fault_proxy.reset()
    # The emulator makes the new generation, then the client hears a reset, a 503, or
    # nothing until its read timeout: it retries a write that already happened.
    gcs_fault_proxy.fail_next(
        lost, method="POST", path=UPLOAD, after_forward=True, stall_s=TIMEOUT_S * 5
    )

    info = store.write_bytes(
        key, b'{"words": []}', if_generation_match=condition, metadata={"engine": "test"}
    )

    assert gcs_fault_proxy.pending_faults == 0
    uploads = [r for r in gcs_fault_proxy.requests if r.path.startswith("/upload/")]
    # The retry reached the emulator and was refused by its own precondition ...
    assert [r.upstream_status for r in uploads] == [200, 412], uploads
    # ... and the store recognised its own write: one generation, returned as the result.
    current = store.stat(key)
    assert current == info
    assert dict(info.metadata) == {"engine": "test"}
    assert store.read_bytes(key) == b'{"words": []}'
    if before is not None:
        assert info.generation != before.generation


def test_resumable_upload_whose_last_answer_was_lost_lands_once(
    store: GCSObjectStore, gcs_fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    source = _random_file(tmp_path / "cleaned.flac", 9 * MIB)
    # Let the first chunk through, drop the answer to the last one after the emulator has
    # made the object; the retried chunk finds the upload session closed.
    gcs_fault_proxy.fail_next("reset", method="PUT", path=UPLOAD, after_forward=True, skip=1)

    info = store.write_file("episodes/ep/cleaned.flac", source, if_generation_match=0)

    assert gcs_fault_proxy.pending_faults == 0
    assert store.stat("episodes/ep/cleaned.flac") == info
    store.read_to_path("episodes/ep/cleaned.flac", tmp_path / "back.flac")
    assert (tmp_path / "back.flac").read_bytes() == source.read_bytes()
    assert gcs_fault_proxy.count("POST", UPLOAD) == 1  # one session: not uploaded twice


@pytest.mark.parametrize("first_attempt", ["lost before the server", "landed, answer lost"])
def test_retried_conditional_write_never_replaces_a_newer_generation(
    store: GCSObjectStore, gcs_fault_proxy: FaultProxy, first_attempt: str
) -> None:
    key = "episodes/ep/cut_list.json"
    base = store.write_bytes(key, b"base")
    other_writer = GCSObjectStore(
        bucket=store.bucket, project="test", timeout_s=TIMEOUT_S, retry_deadline_s=5.0
    )
    newer: list[int] = []

    def another_writer_gets_in() -> None:
        newer.append(other_writer.write_bytes(key, b"newer, by someone else").generation)

    gcs_fault_proxy.fail_next(
        "reset",
        method="POST",
        path=UPLOAD,
        after_forward=first_attempt == "landed, answer lost",
        on_fault=another_writer_gets_in,
    )

    with pytest.raises(PreconditionFailedError) as raised:
        store.write_bytes(key, b"mine", if_generation_match=base.generation)

    assert raised.value.expected == base.generation
    assert raised.value.actual == newer[0]
    assert store.read_bytes(key) == b"newer, by someone else"
    assert store.stat(key).generation == newer[0]


# -- stalls: a bounded error, never a hang -----------------------------------------------------


def test_single_stall_mid_download_is_resumed(
    store: GCSObjectStore, gcs_fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    data = os.urandom(3 * MIB)
    store.write_bytes("episodes/ep/raw.flac", data)
    gcs_fault_proxy.reset()
    gcs_fault_proxy.fail_next(
        "stall", method="GET", path=DOWNLOAD, stall_s=60, stall_in_body=True
    )

    store.read_to_path("episodes/ep/raw.flac", tmp_path / "raw.flac")

    assert (tmp_path / "raw.flac").read_bytes() == data
    downloads = [r for r in gcs_fault_proxy.requests if r.path.startswith("/download/")]
    assert [r.fault for r in downloads] == ["stall", None]
    # The retry asked for the rest of the same generation, not the whole object again.
    assert "generation=" in downloads[1].query


@pytest.fixture
def impatient_store(gcs_fault_proxy: FaultProxy) -> GCSObjectStore:
    store = make_proxied_gcs_store(gcs_fault_proxy, timeout_s=TIMEOUT_S, retry_deadline_s=3.0)
    gcs_fault_proxy.reset()
    return store


def _failing(call: Callable[[], object]) -> tuple[BaseException, float]:
    """The store error ``call`` raises, and how long it took to raise it."""
    started = time.monotonic()
    with pytest.raises(ObjectStoreError) as raised:
        call()
    return raised.value, time.monotonic() - started


@pytest.mark.parametrize("where", ["before the headers", "mid-body"])
def test_stalled_download_times_out(
    impatient_store: GCSObjectStore, gcs_fault_proxy: FaultProxy, tmp_path: Path, where: str
) -> None:
    store = impatient_store
    store.write_bytes("episodes/ep/raw.flac", os.urandom(2 * MIB))
    gcs_fault_proxy.fail_next(
        "stall", method="GET", path=DOWNLOAD, times=None, stall_s=120,
        stall_in_body=where == "mid-body",
    )
    dest = tmp_path / "raw.flac"

    error, elapsed = _failing(lambda: store.read_to_path("episodes/ep/raw.flac", dest))

    # Hang detection, not a speed test: the deadline is 3 s, a hang would be 120 s.
    assert elapsed < 10 * (store.retry_deadline_s + store.timeout_s), elapsed
    assert str(error).startswith(
        f"read episodes/ep/raw.flac ({store.uri('episodes/ep/raw.flac')}) failed"
    )
    assert "timed out" in str(error).lower() or "timeout" in str(error).lower(), error
    assert not dest.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".raw.flac")]
    assert gcs_fault_proxy.count("GET", DOWNLOAD) >= 2  # it did retry before giving up


def test_stalled_listing_times_out(
    impatient_store: GCSObjectStore, gcs_fault_proxy: FaultProxy
) -> None:
    store = impatient_store
    store.write_bytes("uploads/a.mp3", b"a")
    gcs_fault_proxy.fail_next("stall", method="GET", path=LISTING, times=None, stall_s=120)

    error, elapsed = _failing(lambda: list(store.list("uploads/")))

    assert elapsed < 10 * (store.retry_deadline_s + store.timeout_s), elapsed
    assert str(error).startswith(f"list uploads/ (gs://{store.bucket}/uploads/) failed")
    assert gcs_fault_proxy.count("GET", LISTING) >= 2


def test_faults_past_the_deadline_give_a_clear_error(
    impatient_store: GCSObjectStore, gcs_fault_proxy: FaultProxy
) -> None:
    gcs_fault_proxy.fail_next("503", method="POST", path=UPLOAD, times=None)

    error, elapsed = _failing(
        lambda: impatient_store.write_bytes("k", b"x", if_generation_match=0)
    )

    assert elapsed < 10 * (impatient_store.retry_deadline_s + impatient_store.timeout_s)
    assert str(error).startswith(f"write k ({impatient_store.uri('k')}) failed")
    assert "503" in str(error)
    assert gcs_fault_proxy.count("POST", UPLOAD) >= 2
    assert impatient_store.stat("k") is None


# -- a missing intermediate fails the step at once -----------------------------------------------


@pytest.fixture
def gcs_pipeline(store: GCSObjectStore, tmp_path: Path) -> Iterator[Pipeline]:
    """The pipeline fixture's setup, on a GCS store whose requests go through the proxy."""
    with dg.instance_for_test() as instance:
        yield Pipeline(
            instance=instance,
            store=store,
            catalog_resource=CatalogResource(database_url=f"sqlite:///{tmp_path / 'catalog.db'}"),
        )


@pytest.mark.parametrize("step", ["transcript", "cleaned_audio"])
def test_step_with_missing_input_fails_at_once_naming_the_key(
    gcs_pipeline: Pipeline, gcs_fault_proxy: FaultProxy, tmp_path: Path, step: str
) -> None:
    audio = af.write_audio(
        tmp_path / "show.flac", af.tone(duration_s=1.0, sample_rate=16000), sample_rate=16000
    )
    episode_id = gcs_pipeline.register("show.flac", audio)
    raw_key = layout.raw_key(episode_id, "show.flac")
    if step == "transcript":
        asset, missing = transcript, raw_key  # raw_audio never ran
    else:
        gcs_pipeline.store.write_file(raw_key, audio)  # transcript never ran
        asset, missing = cleaned_audio, layout.episode_key(episode_id, layout.TRANSCRIPT)
    gcs_fault_proxy.reset()

    result = gcs_pipeline.materialize([asset], episode_id)

    assert not result.success
    events = [e.event_type_value for e in result.all_events]
    assert "STEP_UP_FOR_RETRY" not in events
    assert events.count("STEP_FAILURE") == 1
    episode = gcs_pipeline.catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.ERROR
    assert episode.error_step == step
    assert missing in episode.last_error, episode.last_error
    assert gcs_pipeline.store.uri(missing) in episode.last_error
    # One request for the missing object (answered 404), none to wait or poll for it.
    asked = [r for r in gcs_fault_proxy.requests if re.search(_object(missing), r.path)]
    assert len(asked) == 1, asked
    assert asked[0].upstream_status == 404
