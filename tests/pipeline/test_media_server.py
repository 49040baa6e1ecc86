"""``pod serve-media`` and media links: what a browser gets, and what it never gets.

The server runs in a thread on a real local store (port 0); hostile paths go through
``http.client`` byte for byte, since ``requests`` would normalise ``..`` away before sending.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from pod_pipeline.media_server import (
    BadRequestPathError,
    MediaServer,
    content_type_for,
    key_from_request_path,
    parse_range,
)
from pod_resources.media_links import (
    DEFAULT_MEDIA_BASE_URL,
    MediaLinkError,
    MediaLinks,
    key_of_uri,
    media_url,
)
from pod_resources.storage import GCSObjectStore, LocalObjectStore
from tests.pod_env import pod_env, run_pod

SECRET = b"secret outside the store 7f3a"
EP = "episodes/show-3f9a0c1b2d"
OBJECTS: dict[str, bytes] = {
    f"{EP}/episode.mp3": bytes(range(256)) * 64,
    f"{EP}/cleaned.flac": b"fLaC" + b"\x00" * 1000,
    f"{EP}/raw.wav": b"RIFF" + b"\x01" * 500,
    f"{EP}/transcript.json": b'{"words": []}',
    f"{EP}/edit.png": b"\x89PNG\r\n\x1a\n" + b"\x02" * 100,
    f"{EP}/subtitles.vtt": b"WEBVTT\n\n",
    "episodes/ünïcode name/a b.mp3": b"ID3 unicode",
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MediaServer, LocalObjectStore, Path]]:
    """A store with a few objects, symlinks out of it, and a secret file beside it."""
    base = tmp_path_factory.mktemp("media")
    store = LocalObjectStore(root=str(base / "store"))
    for key, data in OBJECTS.items():
        store.write_bytes(key, data)
    (base / "secret.txt").write_bytes(SECRET)
    root = Path(store.root)
    (root / EP / "link.mp3").symlink_to(base / "secret.txt")
    (root / "episodes" / "out").symlink_to(base)
    (root / EP / "inside.mp3").symlink_to(root / EP / "episode.mp3")
    (root / EP / ".episode.mp3.part").write_bytes(SECRET)
    server = MediaServer(root=root, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, store, base
    finally:
        server.shutdown()
        server.server_close()


def _raw_get(server: MediaServer, path: str, *, method: str = "GET", headers: dict | None = None):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_binds_loopback_by_default(served):
    server, _, _ = served
    assert server.server_address[0] == "127.0.0.1"
    assert DEFAULT_MEDIA_BASE_URL == "http://127.0.0.1:3001/"


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("episode.mp3", "audio/mpeg"),
        ("cleaned.flac", "audio/flac"),
        ("raw.wav", "audio/wav"),
        ("transcript.json", "application/json"),
        ("edit.png", "image/png"),
        ("subtitles.vtt", "text/vtt; charset=utf-8"),
    ],
)
def test_objects_come_with_their_content_type(served, name, content_type):
    server, store, _ = served
    key = f"{EP}/{name}"
    response = requests.get(media_url(key, base_url=server.url), timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == content_type
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.content == store.read_bytes(key)


def test_unicode_and_space_keys_round_trip_through_their_link(served):
    server, _, _ = served
    key = "episodes/ünïcode name/a b.mp3"
    url = media_url(key, base_url=server.url)
    assert " " not in url and "ü" not in url
    assert requests.get(url, timeout=10).content == OBJECTS[key]


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [("bytes=10-19", 10, 19), ("bytes=16000-", 16000, 16383), ("bytes=-5", 16379, 16383),
     ("bytes=16380-99999", 16380, 16383)],
)
def test_range_requests_answer_206_with_the_bytes_asked(served, header, first, last):
    server, _, _ = served
    body = OBJECTS[f"{EP}/episode.mp3"]
    status, headers, data = _raw_get(server, f"/{EP}/episode.mp3", headers={"Range": header})
    assert status == 206
    assert headers["Content-Range"] == f"bytes {first}-{last}/{len(body)}"
    assert data == body[first : last + 1]
    assert int(headers["Content-Length"]) == last - first + 1


def test_unsatisfiable_range_is_416(served):
    server, _, _ = served
    status, headers, data = _raw_get(server, f"/{EP}/episode.mp3", headers={"Range": "bytes=99999-"})
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{len(OBJECTS[f'{EP}/episode.mp3'])}"


def test_head_sends_headers_without_body(served):
    server, _, _ = served
    status, headers, data = _raw_get(server, f"/{EP}/episode.mp3", method="HEAD")
    assert (status, data) == (200, b"")
    assert int(headers["Content-Length"]) == len(OBJECTS[f"{EP}/episode.mp3"])


@pytest.mark.parametrize(
    "path",
    [
        "/episodes/../../secret.txt",
        f"/{EP}/../../../secret.txt",
        "/%2e%2e/secret.txt",
        "/episodes/%2E%2E/%2e%2e/secret.txt",
        "/episodes%2Fshow-3f9a0c1b2d%2Fepisode.mp3",
        "/episodes%2f..%2f..%2fsecret.txt",
        "/episodes/%5C..%5C..%5Csecret.txt",
        "/episodes\\..\\secret.txt",
        "/episodes//show-3f9a0c1b2d/episode.mp3",
        "/.pod-meta/episodes/show-3f9a0c1b2d/episode.mp3.json",
        "/.pod-lock",
        "/episodes/%00/x",
        "/",
    ],
)
def test_paths_that_could_leave_the_store_are_400(served, path):
    server, _, _ = served
    status, _, data = _raw_get(server, path)
    assert status == 400
    assert data == b"400 Bad Request\n"


@pytest.mark.parametrize(
    "path",
    [
        f"/{EP}/link.mp3",  # a symlink to a file outside the store
        "/episodes/out/secret.txt",  # a symlinked directory leading outside
        f"/{EP}/missing.mp3",
        f"/{EP}",  # a directory: never listed
        "/episodes",
        f"/{EP}/.episode.mp3.part",  # a temp file of a write in progress
    ],
)
def test_what_is_not_an_object_inside_the_store_is_404_and_says_nothing(served, path):
    server, store, base = served
    status, headers, data = _raw_get(server, path)
    assert status == 404
    assert data == b"404 Not Found\n"
    assert SECRET not in data and str(base).encode() not in data
    assert headers["Content-Type"] == "text/plain; charset=utf-8"


def test_symlink_inside_the_store_is_served(served):
    server, _, _ = served
    status, _, data = _raw_get(server, f"/{EP}/inside.mp3")
    assert (status, data) == (200, OBJECTS[f"{EP}/episode.mp3"])


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_only_get_and_head(served, method):
    server, store, _ = served
    status, headers, _ = _raw_get(server, f"/{EP}/episode.mp3", method=method)
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"
    assert store.read_bytes(f"{EP}/episode.mp3") == OBJECTS[f"{EP}/episode.mp3"]


def test_server_header_names_no_versions(served):
    server, _, _ = served
    _, headers, _ = _raw_get(server, f"/{EP}/episode.mp3")
    assert headers["Server"] == "pod-media"


# -- pure parts --------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["episodes/a/episode.mp3", "episodes/ü b/x#1?.json", "a/%2F/b.png"])
def test_a_link_path_names_its_key_again(key):
    path = "/" + media_url(key, base_url="http://h/").split("http://h/", 1)[1]
    assert key_from_request_path(path) == key


def test_encoded_slash_in_a_request_is_refused_even_when_it_would_make_a_valid_key():
    with pytest.raises(BadRequestPathError):
        key_from_request_path("/episodes%2Fe%2Fepisode.mp3")


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("bytes=0-0", (0, 0)), ("bytes=5-", (5, 9)), ("bytes=-3", (7, 9)),
     ("bytes=0-4,6-7", None), ("items=0-1", None), ("bytes=-", None)],
)
def test_parse_range(header, expected):
    assert parse_range(header, 10) == expected


@pytest.mark.parametrize("header", ["bytes=10-", "bytes=5-3", "bytes=-0"])
def test_parse_range_unsatisfiable(header):
    with pytest.raises(ValueError):
        parse_range(header, 10)


def test_content_type_falls_back_to_octet_stream():
    assert content_type_for("x.unknownext") == "application/octet-stream"
    assert content_type_for("EPISODE.MP3") == "audio/mpeg"


# -- links -------------------------------------------------------------------------------


def test_local_store_links_go_to_the_media_server(tmp_path):
    store = LocalObjectStore(root=str(tmp_path / "store"))
    key = f"{EP}/episode.mp3"
    assert MediaLinks().link(store, key) == f"http://127.0.0.1:3001/{key}"
    assert MediaLinks(base_url="https://cdn.example.com/pod/").link(store, key) == (
        f"https://cdn.example.com/pod/{key}"
    )
    artifacts = {"final_episode": store.uri(key), "raw_audio": None, "foreign": "file:///etc/passwd"}
    assert MediaLinks().artifact_links(store, artifacts) == {
        "final_episode": f"http://127.0.0.1:3001/{key}", "raw_audio": None, "foreign": None,
    }
    assert key_of_uri(store, store.uri("episodes/ü b/x.json")) == "episodes/ü b/x.json"


def test_gcs_store_without_base_url_or_signing_has_no_link():
    store = GCSObjectStore(bucket="b", prefix="prod")
    assert MediaLinks().link(store, f"{EP}/episode.mp3") is None
    assert key_of_uri(store, f"gs://b/prod/{EP}/episode.mp3") == f"{EP}/episode.mp3"
    assert key_of_uri(store, f"gs://other/prod/{EP}/episode.mp3") is None


@pytest.mark.parametrize("kw", [{"signed_url_lifetime_s": -1}, {"signed_url_lifetime_s": 8 * 86400},
                                {"base_url": "ftp://x/"}])
def test_link_settings_out_of_range_are_refused(kw):
    with pytest.raises(MediaLinkError):
        MediaLinks(**kw)


def _service_account_file(path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "test", "private_key_id": "k1",
        "private_key": pem, "client_email": "pod@test.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token",
    }))
    return path


def test_gcs_links_are_signed_with_the_lifetime(tmp_path, monkeypatch):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(_service_account_file(tmp_path / "sa.json")))
    store = GCSObjectStore(bucket="pod-bucket", prefix="prod", project="test")
    url = MediaLinks(signed_url_lifetime_s=900).link(store, f"{EP}/episode.mp3")
    assert url.startswith(f"https://storage.googleapis.com/pod-bucket/prod/{EP}/episode.mp3?")
    assert "X-Goog-Expires=900" in url
    assert "X-Goog-Signature=" in url


@pytest.mark.gcs
def test_gcs_public_base_url_link_is_where_the_bucket_serves_the_object(gcs_store, gcs_emulator):
    key = f"{EP}/episode.mp3"
    gcs_store.write_bytes(key, OBJECTS[key], content_type="audio/mpeg")
    link = MediaLinks(base_url=f"http://storage.googleapis.com/{gcs_store.bucket}/").link(gcs_store, key)
    # The emulator answers public-URL requests addressed to storage.googleapis.com.
    response = requests.get(link.replace("http://storage.googleapis.com", gcs_emulator.endpoint),
                            headers={"Host": "storage.googleapis.com"}, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "audio/mpeg"
    assert response.content == OBJECTS[key]


# -- the pod command -----------------------------------------------------------------------


def test_pod_serve_media_serves_the_configured_store(tmp_path):
    import socket
    import subprocess
    import time

    from tests.pod_env import POD

    env = pod_env(tmp_path / "home")
    store = LocalObjectStore(root=str(tmp_path / "home" / "store"))
    key = f"{EP}/episode.mp3"
    store.write_bytes(key, OBJECTS[key])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([str(POD), "serve-media", "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = media_url(key, base_url=f"http://127.0.0.1:{port}/")
        deadline = time.monotonic() + 60
        while True:
            try:
                response = requests.get(url, timeout=5)
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.stderr.read()
                assert time.monotonic() < deadline, "pod serve-media did not start"
                time.sleep(0.2)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "audio/mpeg"
        assert response.content == OBJECTS[key]
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_pod_serve_media_refuses_a_gcs_store_in_one_line(tmp_path, monkeypatch, capsys):
    from pod_pipeline import cli

    monkeypatch.setenv("POD_HOME", str(tmp_path))
    monkeypatch.setenv("POD_STORAGE_URL", "gs://bucket/prefix")
    assert cli.main(["serve-media"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pod serve-media: the store is gs://bucket/prefix, not local")
    assert len(err.splitlines()) == 1


def test_pod_status_json_adds_links_beside_the_artifacts(tmp_path):
    from pod_resources.catalog import Catalog

    env = pod_env(tmp_path / "home")
    store = LocalObjectStore(root=str(tmp_path / "home" / "store"))
    catalog = Catalog(f"sqlite:///{tmp_path / 'home' / 'catalog.db'}")
    episode_id = "show-3f9a0c1b2d"
    catalog.register_upload(object_name="show.mp3", generation=1, content_hash="0" * 32,
                            episode_id=episode_id, title="Show")
    final_key = f"{EP}/episode.mp3"
    catalog.record_artifacts(episode_id, {"final_episode": store.uri(final_key)})
    [row] = json.loads(run_pod(env, "status", "--json").stdout)
    assert row["artifacts"]["final_episode"] == store.uri(final_key)
    assert row["links"]["final_episode"] == f"http://127.0.0.1:3001/{final_key}"
    assert set(row["links"]) == set(row["artifacts"])
    assert row["links"]["transcript"] is None


def test_pod_status_json_signs_gcs_links_for_the_configured_lifetime(tmp_path):
    from pod_resources.catalog import Catalog

    database_url = f"sqlite:///{tmp_path / 'catalog.db'}"
    catalog = Catalog(database_url)
    catalog.register_upload(object_name="show.mp3", generation=1, content_hash="1" * 32,
                            episode_id="show-3f9a0c1b2d", title="Show")
    store = GCSObjectStore(bucket="pod-bucket", prefix="prod")
    catalog.record_artifacts("show-3f9a0c1b2d", {"final_episode": store.uri(f"{EP}/episode.mp3")})
    env = pod_env(tmp_path / "home")
    env.pop("STORAGE_EMULATOR_HOST", None)
    env.update(
        POD_STORAGE_URL="gs://pod-bucket/prod",
        POD_DATABASE_URL=database_url,
        POD_SIGNED_URL_LIFETIME_S="600",
        GOOGLE_APPLICATION_CREDENTIALS=str(_service_account_file(tmp_path / "sa.json")),
    )
    [row] = json.loads(run_pod(env, "status", "--json").stdout)
    link = row["links"]["final_episode"]
    assert link.startswith(f"https://storage.googleapis.com/pod-bucket/prod/{EP}/episode.mp3?")
    assert "X-Goog-Expires=600" in link
    assert row["links"]["transcript"] is None
