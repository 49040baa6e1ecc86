"""The object store contract, checked on the local store and on the GCS emulator."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import pytest

from pod_resources.storage import (
    GCSObjectStore,
    InvalidKeyError,
    LocalObjectStore,
    ObjectNotFoundError,
    ObjectStore,
    ObjectStoreError,
    PreconditionFailedError,
    store_from_url,
    validate_key,
    validate_object_name,
)
from tests.plugins.gcs import GCSEmulator, make_gcs_store

MIB = 1024 * 1024
HOSTILE_KEYS = [
    "../x",
    "/abs",
    "a/../b",
    "a/./b",
    "a//b",
    "a/",
    "",
    "nul\x00byte",
    "back\\slash",
    "line\nbreak",
    "uploads/.pod-meta",
    "x" * 300,
]
UNICODE_KEY = "uploads/Ünïcødé podcast 🎙 #1.mp3"


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def _random_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            f.write(os.urandom(MIB))
        f.write(os.urandom(size % MIB))
    return path


# -- round trips ---------------------------------------------------------------------------


def test_large_file_round_trip_is_streamed(any_store: ObjectStore, tmp_path: Path) -> None:
    size = 28 * MIB + 123  # a resumable upload of several chunks on GCS
    source = _random_file(tmp_path / "in.bin", size)

    tracemalloc.start()
    try:
        written = any_store.write_file("episodes/ep1/raw.flac", source)
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        read = any_store.read_to_path("episodes/ep1/raw.flac", tmp_path / "out" / "raw.flac")
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # Bounded by the transfer chunks (GCS holds about two 8 MiB upload chunks), not the size.
    assert write_peak < 20 * MIB and read_peak < 20 * MIB, (write_peak, read_peak)
    assert (tmp_path / "out" / "raw.flac").stat().st_size == size
    assert _md5(tmp_path / "out" / "raw.flac") == _md5(source) == written.md5_hex
    assert written.size == read.size == size
    assert written.generation == read.generation > 0
    assert written.updated.tzinfo is not None and written.updated.utcoffset().total_seconds() == 0
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["raw.flac"]


def test_bytes_and_json_round_trip(any_store: ObjectStore) -> None:
    any_store.write_bytes("a/b.bin", b"\x00\x01payload")
    assert any_store.read_bytes("a/b.bin") == b"\x00\x01payload"
    doc = {"words": [{"text": "héllo", "start_s": 0.5}], "ok": True}
    info = any_store.write_json("episodes/ep1/transcript.json", doc)
    assert any_store.read_json("episodes/ep1/transcript.json") == doc
    assert info.size == len(any_store.read_bytes("episodes/ep1/transcript.json"))


def test_stat_and_exists(any_store: ObjectStore) -> None:
    assert any_store.stat("nothing/here") is None
    assert not any_store.exists("nothing/here")
    info = any_store.write_bytes("some/thing", b"12345")
    assert any_store.exists("some/thing")
    assert any_store.stat("some/thing") == info
    assert not any_store.exists("some")  # a "folder" is not an object


# -- preconditions -------------------------------------------------------------------------


def test_create_only_refuses_existing_key(any_store: ObjectStore, tmp_path: Path) -> None:
    any_store.write_bytes("k", b"first", if_generation_match=0)
    with pytest.raises(PreconditionFailedError, match="expected no object"):
        any_store.write_bytes("k", b"second", if_generation_match=0)
    big = _random_file(tmp_path / "big.bin", 9 * MIB)  # resumable upload on GCS
    with pytest.raises(PreconditionFailedError):
        any_store.write_file("k", big, if_generation_match=0)
    assert any_store.read_bytes("k") == b"first"


def test_generation_match(any_store: ObjectStore) -> None:
    first = any_store.write_bytes("k", b"v1")
    second = any_store.write_bytes("k", b"v2", if_generation_match=first.generation)
    assert second.generation != first.generation
    with pytest.raises(PreconditionFailedError) as raised:
        any_store.write_bytes("k", b"v3", if_generation_match=first.generation)
    assert raised.value.actual == second.generation
    assert any_store.read_bytes("k") == b"v2"
    with pytest.raises(PreconditionFailedError):
        any_store.write_bytes("missing", b"x", if_generation_match=first.generation)
    assert not any_store.exists("missing")


def test_unconditional_write_overwrites_and_changes_generation(any_store: ObjectStore) -> None:
    generations = [any_store.write_bytes("k", str(i).encode()).generation for i in range(5)]
    assert len(set(generations)) == 5
    assert any_store.read_bytes("k") == b"4"


def test_concurrent_create_only_has_one_winner(any_store: ObjectStore) -> None:
    def attempt(i: int) -> bytes | None:
        try:
            any_store.write_bytes("race", f"writer {i}".encode(), if_generation_match=0)
        except PreconditionFailedError:
            return None
        return f"writer {i}".encode()

    with ThreadPoolExecutor(max_workers=6) as pool:
        winners = [r for r in pool.map(attempt, range(6)) if r is not None]
    assert len(winners) == 1
    assert any_store.read_bytes("race") == winners[0]


def _create_only_in_child(root: str, i: int, start: float) -> bool:
    while time.monotonic() < start:
        pass
    try:
        LocalObjectStore(root=root).write_bytes("race", str(i).encode(), if_generation_match=0)
    except PreconditionFailedError:
        return False
    return True


def test_local_create_only_is_race_safe_across_processes(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    LocalObjectStore(root=root).write_bytes("warm-up", b"")
    context = multiprocessing.get_context("fork")
    start = time.monotonic() + 0.3
    with context.Pool(4) as pool:
        results = pool.starmap(_create_only_in_child, [(root, i, start) for i in range(4)])
    assert results.count(True) == 1


# -- delete --------------------------------------------------------------------------------


def test_delete_with_stale_generation_keeps_object(any_store: ObjectStore) -> None:
    stale = any_store.write_bytes("k", b"old")
    current = any_store.write_bytes("k", b"new")
    with pytest.raises(PreconditionFailedError):
        any_store.delete("k", if_generation_match=stale.generation)
    assert any_store.read_bytes("k") == b"new"
    any_store.delete("k", if_generation_match=current.generation)
    assert not any_store.exists("k")
    with pytest.raises(ObjectNotFoundError, match="object not found: k "):
        any_store.delete("k")


def test_unconditional_delete(any_store: ObjectStore) -> None:
    any_store.write_bytes("k", b"x", metadata={"a": "b"})
    any_store.delete("k")
    assert any_store.stat("k") is None
    assert list(any_store.list("")) == []


# -- missing objects -----------------------------------------------------------------------


def test_missing_key_raises_not_found_naming_key(any_store: ObjectStore, tmp_path: Path) -> None:
    key = "uploads/x.mp3"
    for read in (
        lambda: any_store.read_to_path(key, tmp_path / "dest.mp3"),
        lambda: any_store.read_bytes(key),
        lambda: any_store.read_json(key),
    ):
        with pytest.raises(ObjectNotFoundError) as raised:
            read()
        assert str(raised.value) == f"object not found: {key} ({any_store.uri(key)})"
        assert raised.value.key == key
    assert not [p for p in tmp_path.iterdir() if p.name.startswith((".dest", "dest"))]


@pytest.mark.gcs
def test_gcs_missing_key_costs_one_request(gcs_emulator_env: GCSEmulator, tmp_path: Path) -> None:
    # The store switches off the client library's background bucket probes (one after every
    # 404 among them), so every request counted here is one the store made; the bucket was
    # created through the same client, which is what used to arm that probe.
    gcs_store = make_gcs_store(gcs_emulator_env)
    requests_made: list[str] = []
    session = gcs_store.get_client()._http
    session.hooks["response"].append(
        lambda response, *args, **kwargs: requests_made.append(
            f"{response.request.method} {response.request.url} {response.status_code}"
        )
    )
    for read in (
        lambda: gcs_store.read_to_path("uploads/x.mp3", tmp_path / "x.mp3"),
        lambda: gcs_store.read_bytes("uploads/x.mp3"),
    ):
        requests_made.clear()
        with pytest.raises(ObjectNotFoundError, match="uploads/x.mp3"):
            read()
        time.sleep(0.5)  # room for a background request to show up, were one started
        assert len(requests_made) == 1, requests_made  # no retry, no backoff, no probe
        assert requests_made[0].endswith(" 404")


# -- listing -------------------------------------------------------------------------------


def test_list_prefix_sorted_with_details(any_store: ObjectStore) -> None:
    keys = [
        "uploads/b.mp3",
        "uploads/a.mp3",
        "uploads/a b.mp3",
        "uploads/a-c.mp3",
        "uploads/a/nested.mp3",
        "uploads/é.mp3",
        "uploads-other/x.mp3",
        "episodes/ep1/raw.mp3",
    ]
    written = {key: any_store.write_bytes(key, key.encode(), metadata={"k": key}) for key in keys}

    listed = list(any_store.list("uploads/"))
    expected = sorted(k for k in keys if k.startswith("uploads/"))
    assert [info.key for info in listed] == expected
    for info in listed:
        assert info.size == len(info.key.encode())
        assert info.generation == written[info.key].generation
        assert info.updated == written[info.key].updated
        assert info.updated.tzinfo is not None and info.updated.utcoffset().total_seconds() == 0
        assert info.metadata == {"k": info.key}
        assert info.md5_hex == hashlib.md5(info.key.encode(), usedforsecurity=False).hexdigest()

    assert [i.key for i in any_store.list("uploads/a")] == [
        "uploads/a b.mp3",
        "uploads/a-c.mp3",
        "uploads/a.mp3",
        "uploads/a/nested.mp3",
    ]
    assert [i.key for i in any_store.list("")] == sorted(keys)
    assert list(any_store.list("nothing/")) == []
    with pytest.raises(InvalidKeyError):
        list(any_store.list("../"))


def test_local_list_hides_internal_files_and_foreign_names(local_store: LocalObjectStore) -> None:
    local_store.write_bytes("uploads/a.mp3", b"a", metadata={"x": "y"})
    root = Path(local_store.root)
    (root / "uploads" / ".pod-tmp-0123456789abcdef").write_bytes(b"partial")
    (root / "uploads" / "dropped.mp3").write_bytes(b"copied in by hand")
    (root / "uploads" / "bad\\name.mp3").write_bytes(b"hostile")
    (root / "uploads" / "folder").mkdir()
    assert (root / ".pod-meta").is_dir() and (root / ".pod-lock").is_file()

    listed = {info.key: info for info in local_store.list("")}
    assert sorted(listed) == ["uploads/a.mp3", "uploads/dropped.mp3"]
    assert listed["uploads/dropped.mp3"].metadata == {}
    assert listed["uploads/dropped.mp3"].md5_hex is None


def test_local_file_changed_behind_the_store_loses_stale_metadata(
    local_store: LocalObjectStore,
) -> None:
    info = local_store.write_bytes("k", b"one", metadata={"x": "y"})
    path = Path(local_store.root) / "k"
    path.write_bytes(b"changed by another program")
    os.utime(path, ns=(info.generation + 10, info.generation + 10))
    now = local_store.stat("k")
    assert now is not None and now.generation != info.generation
    assert now.metadata == {} and now.md5_hex is None


# -- metadata and copy ---------------------------------------------------------------------


def test_metadata_round_trip(any_store: ObjectStore) -> None:
    metadata = {"original-name": "Épisode 1 (final).mp3", "source": "upload"}
    info = any_store.write_bytes("k", b"x", metadata=metadata, content_type="audio/mpeg")
    assert info.metadata == metadata
    assert any_store.stat("k").metadata == metadata
    rewritten = any_store.write_bytes("k", b"y")
    assert rewritten.metadata == {}
    with pytest.raises(TypeError):
        any_store.write_bytes("k", b"z", metadata={"n": 1})  # type: ignore[dict-item]


def test_copy(any_store: ObjectStore) -> None:
    src = any_store.write_bytes("uploads/a.mp3", b"audio", metadata={"m": "1"})
    copied = any_store.copy("uploads/a.mp3", "episodes/ep/raw.mp3", if_generation_match=0)
    assert any_store.read_bytes("episodes/ep/raw.mp3") == b"audio"
    assert copied.key == "episodes/ep/raw.mp3"
    assert copied.size == src.size and copied.metadata == {"m": "1"}
    assert copied.md5_hex == src.md5_hex
    with pytest.raises(PreconditionFailedError):
        any_store.copy("uploads/a.mp3", "episodes/ep/raw.mp3", if_generation_match=0)
    again = any_store.copy(
        "uploads/a.mp3", "episodes/ep/raw.mp3", if_generation_match=copied.generation
    )
    assert again.generation != copied.generation
    with pytest.raises(ObjectNotFoundError, match="uploads/missing.mp3"):
        any_store.copy("uploads/missing.mp3", "elsewhere")
    assert not any_store.exists("elsewhere")


# -- keys and URIs -------------------------------------------------------------------------


GCS_INVALID_NAMES = {"", "/abs", "nul\x00byte", "line\nbreak"}


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=repr)
def test_hostile_keys_rejected(any_store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        validate_key(key)
    if isinstance(any_store, GCSObjectStore) and key not in GCS_INVALID_NAMES:
        # A legal GCS object name: the GCS store may read it; no local path is involved.
        assert validate_object_name(key) == key
        return
    for call in (
        lambda: any_store.write_bytes(key, b"x"),
        lambda: any_store.read_bytes(key),
        lambda: any_store.stat(key),
        lambda: any_store.delete(key),
        lambda: any_store.uri(key),
        lambda: any_store.copy("fine", key),
    ):
        with pytest.raises(InvalidKeyError):
            call()


def test_invalid_key_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        validate_key("../etc/passwd")
    with pytest.raises(InvalidKeyError):
        validate_key(b"bytes")  # type: ignore[arg-type]


def test_unicode_and_space_key_accepted(any_store: ObjectStore) -> None:
    assert validate_key(UNICODE_KEY) == UNICODE_KEY
    any_store.write_bytes(UNICODE_KEY, b"ok")
    assert any_store.read_bytes(UNICODE_KEY) == b"ok"
    assert [info.key for info in any_store.list("uploads/")] == [UNICODE_KEY]


def test_local_uri_and_symlink_escape(local_store: LocalObjectStore, tmp_path: Path) -> None:
    root = Path(local_store.root).resolve()
    assert local_store.uri("a/b.mp3") == f"file://{root}/a/b.mp3"
    assert local_store.uri("a/b c.mp3") == (root / "a" / "b c.mp3").as_uri()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InvalidKeyError, match="outside the store root"):
        local_store.write_bytes("link/x", b"escape")
    assert list(outside.iterdir()) == []


@pytest.mark.gcs
def test_gcs_uri_and_prefix(gcs_emulator_env: GCSEmulator) -> None:
    store = make_gcs_store(gcs_emulator_env, prefix="pod/prod")
    assert store.uri("uploads/a.mp3") == f"gs://{store.bucket}/pod/prod/uploads/a.mp3"
    store.write_bytes("uploads/a.mp3", b"x")
    other = make_gcs_store(gcs_emulator_env, bucket=store.bucket, prefix="pod/prodx")
    other.write_bytes("uploads/b.mp3", b"y")
    names = [b.name for b in store.get_client().list_blobs(store.bucket)]
    assert names == ["pod/prod/uploads/a.mp3", "pod/prodx/uploads/b.mp3"]
    assert [i.key for i in store.list("")] == ["uploads/a.mp3"]
    assert [i.key for i in other.list("uploads/")] == ["uploads/b.mp3"]


@pytest.mark.gcs
def test_gcs_lists_odd_but_legal_names_and_skips_folders(gcs_store: GCSObjectStore) -> None:
    bucket = gcs_store.get_client().bucket(gcs_store.bucket)
    bucket.blob("uploads/").upload_from_string(b"")  # a console "folder"
    bucket.blob("uploads/../escape.mp3").upload_from_string(b"hostile")
    long_name = "uploads/" + "x" * 300 + ".mp3"
    bucket.blob(long_name).upload_from_string(b"long")
    gcs_store.write_bytes("uploads/ok.mp3", b"ok")
    keys = [i.key for i in gcs_store.list("uploads/")]
    assert keys == sorted(["uploads/../escape.mp3", long_name, "uploads/ok.mp3"])
    assert gcs_store.read_bytes("uploads/../escape.mp3") == b"hostile"
    assert gcs_store.uri("uploads/../escape.mp3").endswith("/uploads/../escape.mp3")


# -- atomicity and timeouts ----------------------------------------------------------------


def test_local_reader_never_sees_a_partial_object(
    local_store: LocalObjectStore, tmp_path: Path
) -> None:
    size = 8 * MIB
    versions = []
    for fill in (b"A", b"B"):
        path = tmp_path / f"{fill.decode()}.bin"
        path.write_bytes(fill * size)
        versions.append(path)
    local_store.write_file("episodes/ep/cleaned.flac", versions[0])
    target = Path(local_store.root) / "episodes" / "ep" / "cleaned.flac"
    stop = threading.Event()
    seen: list[tuple[int, bytes]] = []
    listed_extra: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            data = target.read_bytes()  # what any other program would see
            seen.append((len(data), data[:1] + data[-1:]))
            keys = [i.key for i in local_store.list("episodes/")]
            if keys != ["episodes/ep/cleaned.flac"]:
                listed_extra.append(repr(keys))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(6):
            local_store.write_file("episodes/ep/cleaned.flac", versions[(i + 1) % 2])
    finally:
        stop.set()
        thread.join()
    assert seen
    assert all(entry in {(size, b"AA"), (size, b"BB")} for entry in seen), set(seen)
    assert listed_extra == []


def test_local_generations_strictly_increase(local_store: LocalObjectStore) -> None:
    generations = [local_store.write_bytes("k", b"x").generation for _ in range(50)]
    assert generations == sorted(generations) and len(set(generations)) == 50


@pytest.fixture
def stalled_endpoint() -> Iterator[str]:
    """An HTTP endpoint that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def test_gcs_stalled_server_times_out(
    stalled_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", stalled_endpoint)
    store = GCSObjectStore(bucket="b", project="test", timeout_s=0.2, retry_deadline_s=0.5)
    started = time.monotonic()
    with pytest.raises(ObjectStoreError, match=r"read k \(gs://b/k\) failed"):
        store.read_bytes("k")
    assert time.monotonic() - started < 5


# -- construction --------------------------------------------------------------------------


def test_store_from_url(tmp_path: Path) -> None:
    local = store_from_url(f"file://{tmp_path}/objects")
    assert isinstance(local, LocalObjectStore) and local.root == f"{tmp_path}/objects"
    spaced = store_from_url((tmp_path / "with space").as_uri())
    assert isinstance(spaced, LocalObjectStore) and spaced.root == f"{tmp_path}/with space"
    gcs = store_from_url("gs://my-bucket/pod/prod/", project="p", timeout_s=5)
    assert isinstance(gcs, GCSObjectStore)
    assert (gcs.bucket, gcs.prefix, gcs.project, gcs.timeout_s) == ("my-bucket", "pod/prod", "p", 5)
    assert store_from_url("gs://my-bucket").prefix == ""
    for bad in ("s3://b/p", "file://relative/dir", "gs:///nobucket", "/plain/path", "gs://b/../x"):
        with pytest.raises(ValueError):
            store_from_url(bad)


def test_gcs_client_is_created_once_and_lazily(
    stalled_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", stalled_endpoint)  # no request is made
    store = GCSObjectStore(bucket="b", project="test")
    assert store.uri("k") == "gs://b/k"  # needs no client
    assert store.get_client() is store.get_client()


def test_errors_pickle() -> None:
    for error in (
        ObjectNotFoundError("k", "gs://b/k"),
        PreconditionFailedError("k", "gs://b/k", 0, 17),
        InvalidKeyError("bad key"),
    ):
        clone = pickle.loads(pickle.dumps(error))
        assert type(clone) is type(error) and str(clone) == str(error)


def test_store_as_dagster_resource(tmp_path: Path) -> None:
    @dg.asset
    def note(store: ObjectStore) -> dg.MaterializeResult:
        info = store.write_json("notes/n.json", {"hello": "world"})
        return dg.MaterializeResult(metadata={"uri": store.uri(info.key)})

    root = tmp_path / "store"
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [note], resources={"store": LocalObjectStore(root=str(root))}, instance=instance
        )
    assert result.success
    assert LocalObjectStore(root=str(root)).read_json("notes/n.json") == {"hello": "world"}
