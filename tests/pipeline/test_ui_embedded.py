"""The newcomer's path on the embedded default, in a real browser: what ``make ui`` shows.

``make ui`` runs ``pod serve-media`` (the local store, read-only) beside ``dagster dev -w
workspace.yaml`` on the SQLite Dagster home ``$POD_HOME/dagster``. The module's fixture
processes one short upload with the real ``pod ingest`` + ``pod run`` in a fresh ``POD_HOME``,
then starts those two processes with the Makefile's environment and flags (its ``ui`` target is
checked for them), on a free port pair instead of 3000/3001; the show's ``public_base_url``
points the links at that media server, as the default ``http://127.0.0.1:3001/`` does on the
Makefile's ports. In Debian's Chromium (``tests/plugins/browser.py``) it proves that:

1. the episode's ``final_episode`` partition, reached from **Catalog**, shows the catalog's
   status, a listen link that plays (HTTP 200, ``audio/mpeg``, a Range request gets 206, the
   browser decodes the MP3) and the edit as a picture;
2. docs/operations.md's "One episode" procedure, clicked through on this UI with another
   ``max_pause_ms``, makes a run that succeeds, and the new setting shows in the partition's
   metadata and in the catalog (``pod status --json``).

Teardown stops both processes as Ctrl-C in the terminal does (SIGINT to their process group)
and fails if any process of this ``POD_HOME`` is left. Without Chromium or Playwright the tests
are skipped, or fail when ``POD_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TypeVar

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef

from tests.plugins.browser import (
    CLIP_PAUSE_S,
    UI,
    VIEWPORT,
    latest_metadata,
    launch_chromium,
    write_clip_with_a_pause,
)
from pod_pipeline.worker import processes_with_env
from tests.plugins.dagster_services import http_ok
from tests.pod_env import POD, pod_env, run_pod

REPO = Path(__file__).resolve().parents[2]
DAGSTER = Path(sys.executable).parent / "dagster"
HOST = "127.0.0.1"
DEV_ARGS = ("dev", "-w", "workspace.yaml", "-h", HOST, "-p")
"""``dagster dev`` as the Makefile's ``ui`` target runs it (the port follows)."""
DEV_WARNINGS = "ignore:Parameter `owners`,ignore:Function `dev_command`"
"""The ``PYTHONWARNINGS`` of the ``ui`` target."""
INSTANCE_CONFIG = "telemetry:\n  enabled: false\n"
"""The ``dagster.yaml`` the ``ui`` target writes when the home has none."""
EPISODE_ASSETS = ("cleaned_audio", "final_episode")
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
LEFTOVER_GRACE_S = 10.0
RUN_TIMEOUT_S = 120.0
_LOG_TAIL_CHARS = 4000
T = TypeVar("T")


@dataclass
class EmbeddedUI:
    """``make ui`` running on a processed episode."""

    url: str
    """The webserver, ``http://127.0.0.1:PORT``."""
    media_url: str
    """The media server's root, ``http://127.0.0.1:PORT/``."""
    home: Path
    env: dict[str, str]
    episode_id: str
    log_dir: Path
    processes: list[subprocess.Popen] = field(default_factory=list, repr=False)

    @property
    def final_episode_link(self) -> str:
        """Where the episode's MP3 plays (``episodes/<ep>/episode.mp3`` of the store)."""
        return f"{self.media_url}episodes/{self.episode_id}/episode.mp3"

    def logs(self) -> str:
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            text = path.read_text(errors="replace")
            parts.append(f"----- {path.name} (last {_LOG_TAIL_CHARS} chars) -----\n{text[-_LOG_TAIL_CHARS:]}")
        return "\n".join(parts)

    def fail(self, message: str) -> NoReturn:
        pytest.fail(f"{message}\n{self.logs()}", pytrace=False)

    def wait_until(self, what: str, probe: Callable[[], T | None], *, timeout_s: float) -> T:
        """Call ``probe`` every second until it returns something truthy; fail with the logs
        on timeout or when a process exits."""
        deadline = time.monotonic() + timeout_s
        while True:
            for process in self.processes:
                if process.poll() is not None:
                    self.fail(f"{process.args} exited ({process.returncode}) while waiting for {what}")
            if value := probe():
                return value
            if time.monotonic() > deadline:
                self.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
            time.sleep(1.0)

    @contextlib.contextmanager
    def instance(self) -> Iterator[dg.DagsterInstance]:
        """The Dagster instance of ``$POD_HOME/dagster`` (SQLite), opened in this process."""
        with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(self.home / "dagster"))) as instance:
            yield instance

    def catalog_row(self) -> dict:
        """The episode's row of ``pod status --json`` (the only episode)."""
        [row] = json.loads(run_pod(self.env, "status", "--json").stdout)
        assert row["episode_id"] == self.episode_id, row
        return row


def _free_port_pair() -> tuple[int, int]:
    with socket.socket() as first, socket.socket() as second:
        first.bind((HOST, 0))
        second.bind((HOST, 0))
        return first.getsockname()[1], second.getsockname()[1]


def _ui_recipe() -> str:
    """The recipe of the Makefile's ``ui`` target."""
    text = (REPO / "Makefile").read_text()
    match = re.search(r"^ui: .*\n((?:\t.*\n|\n)+?)(?=\S)", text, flags=re.MULTILINE)
    assert match, "the Makefile has no ui target"
    return match.group(1)


def _check_flags_match_the_makefile() -> None:
    """The processes below start as the ``ui`` target starts them: fail when it changed."""
    recipe = _ui_recipe()
    for fact in (
        "DAGSTER_HOME=$(POD_HOME)/dagster",
        f"PYTHONWARNINGS='{DEV_WARNINGS}'",
        "env --default-signal=INT,TERM,QUIT",
        "$(BIN)/dagster " + " ".join(DEV_ARGS),
        "env --default-signal=INT,TERM $(BIN)/pod serve-media &",
        INSTANCE_CONFIG.replace("\n", "\\n"),
    ):
        assert fact in recipe, f"the Makefile's ui target no longer has {fact!r}:\n{recipe}"


def _location_loaded(url: str) -> bool:
    """Whether the webserver's code location ``pod_pipeline`` is loaded."""
    query = '{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }'
    request = urllib.request.Request(
        f"{url}/graphql", data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            entries = json.loads(response.read())["data"]["workspaceOrError"].get("locationEntries") or []
    except (urllib.error.URLError, OSError, KeyError, TypeError):
        return False
    return any(e["name"] == "pod_pipeline" and e["loadStatus"] == "LOADED" for e in entries)


def _process_one_upload(env: dict[str, str], tmp: Path) -> str:
    """``pod ingest`` + ``pod run`` of a short clip; the episode id (``pod run``'s last line
    is ``run <run id> <episode id>: success``)."""
    clip = write_clip_with_a_pause(tmp / "embedded check.flac")
    run_pod(env, "ingest", str(clip))
    output = run_pod(env, "run").stdout
    episodes = re.findall(r"^run \w+ (\S+): success$", output, flags=re.MULTILINE)
    assert len(episodes) == 1, f"pod run did not process one episode:\n{output}"
    return episodes[0]


def _start_ui(ui: EmbeddedUI, *, port: int, media_port: int) -> None:
    """The two processes of ``make ui``, in one process group as under a terminal."""
    dagster_home = ui.home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    config = dagster_home / "dagster.yaml"
    if not config.exists():
        config.write_text(INSTANCE_CONFIG)
    with open(ui.log_dir / "serve-media.log", "wb") as media_log:
        media = subprocess.Popen(
            ["env", "--default-signal=INT,TERM", str(POD), "serve-media", "--port", str(media_port)],
            cwd=REPO, env=ui.env, stdin=subprocess.DEVNULL, stdout=media_log,
            stderr=subprocess.STDOUT, process_group=0,
        )
    ui.processes.append(media)
    dev_env = {**ui.env, "DAGSTER_HOME": str(dagster_home), "PYTHONWARNINGS": DEV_WARNINGS}
    with open(ui.log_dir / "dagster-dev.log", "wb") as dev_log:
        dev = subprocess.Popen(
            ["env", "--default-signal=INT,TERM,QUIT", str(DAGSTER), *DEV_ARGS, str(port)],
            cwd=REPO, env=dev_env, stdin=subprocess.DEVNULL, stdout=dev_log,
            stderr=subprocess.STDOUT, process_group=media.pid,
        )
    ui.processes.append(dev)


def _stop_ui(ui: EmbeddedUI) -> list[str]:
    """Ctrl-C: SIGINT to the process group. What is left of this ``POD_HOME`` after
    :data:`STOP_TIMEOUT_S` (or :data:`LEFTOVER_GRACE_S` after both exited) is killed and
    returned as ``pid command`` lines."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(ui.processes[0].pid, signal.SIGINT)
    for process in ui.processes:
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    while (leftovers := processes_with_env("POD_HOME", str(ui.home))) and time.monotonic() < deadline:
        time.sleep(0.2)
    killed = []
    for pid in leftovers:
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            os.kill(pid, signal.SIGKILL)
            killed.append(f"{pid} {command}")
    return killed


@pytest.fixture(scope="module")
def browser(playwright) -> Iterator:
    """Chromium as it comes (the links are on 127.0.0.1)."""
    browser = launch_chromium(playwright)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture(scope="module")
def embedded_ui(browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedUI]:
    """``make ui`` on a fresh ``POD_HOME`` holding one processed episode."""
    _check_flags_match_the_makefile()
    root = tmp_path_factory.mktemp("embedded-ui")
    port, media_port = _free_port_pair()
    media_url = f"http://{HOST}:{media_port}/"
    show_file = root / "show.toml"
    show_file.write_text(f'title = "Embedded Check"\npublic_base_url = "{media_url}"\n')
    home = root / "pod-home"
    env = pod_env(home)
    del env["DAGSTER_HOME"]  # pod and make ui both default to $POD_HOME/dagster
    env.update(POD_SHOW_FILE=str(show_file), PYTHONUNBUFFERED="1")
    (root / "logs").mkdir()
    ui = EmbeddedUI(url=f"http://{HOST}:{port}", media_url=media_url, home=home, env=env,
                    episode_id=_process_one_upload(env, root), log_dir=root / "logs")
    try:
        _start_ui(ui, port=port, media_port=media_port)
        ui.wait_until("the media server", lambda: http_ok(ui.final_episode_link), timeout_s=START_TIMEOUT_S)
        ui.wait_until("the webserver", lambda: http_ok(f"{ui.url}/server_info"), timeout_s=START_TIMEOUT_S)
        ui.wait_until("the code location", lambda: _location_loaded(ui.url), timeout_s=START_TIMEOUT_S)
        yield ui
    finally:
        killed = _stop_ui(ui) if ui.processes else []
    if killed:
        pytest.fail("make ui did not stop cleanly; killed:\n" + "\n".join(killed) + f"\n{ui.logs()}", pytrace=False)


@pytest.mark.slow
def test_newcomer_listens_to_the_episode_and_sees_the_edit(browser, embedded_ui: EmbeddedUI, screenshots: Path):
    episode = embedded_ui.episode_id
    link = embedded_ui.final_episode_link
    context = browser.new_context(viewport=VIEWPORT)
    try:
        ui = UI(context.new_page(), embedded_ui.url, screenshots)
        ui.open("/")
        ui.open_partition("final_episode", episode)
        ui.text_once("episode_status", "processed", "final_episode_link", "edit_image", reload=True)
        assert ui.page.locator(f"a[href='{link}']").count() >= 1

        assert ui.edit_picture_size() == [1000, 300]
        ui.page.get_by_role("button", name="Close").click()

        player = context.new_page()
        response = player.goto(link, wait_until="commit")
        assert response is not None and response.status == 200
        assert response.headers["content-type"] == "audio/mpeg"
        duration_s = player.wait_for_function(
            "() => { const m = document.querySelector('video, audio');"
            " return m && m.readyState >= 1 && m.duration; }", timeout=30_000
        ).json_value()
        assert 2.0 < duration_s < 4.0
        partial = player.evaluate(
            "async url => { const r = await fetch(url, {headers: {Range: 'bytes=0-99'}});"
            " return [r.status, r.headers.get('content-range'), (await r.arrayBuffer()).byteLength]; }",
            link,
        )
        size = (embedded_ui.home / "store" / "episodes" / episode / "episode.mp3").stat().st_size
        assert partial == [206, f"bytes 0-99/{size}", 100]
    finally:
        context.close()


def _run_ids(instance: dg.DagsterInstance, episode_id: str) -> set[str]:
    records = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": episode_id}))
    return {r.dagster_run.run_id for r in records}


def _first_run_finished(instance: dg.DagsterInstance, episode_id: str, before: set[str]) -> dg.DagsterRun | None:
    """The episode's first run not in ``before``, once finished (follow-up runs come later)."""
    records = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": episode_id}))
    new = [r.dagster_run for r in records if r.dagster_run.run_id not in before]  # newest first
    return new[-1] if new and new[-1].is_finished else None


@pytest.mark.slow
def test_newcomer_reprocesses_as_docs_operations_says(browser, embedded_ui: EmbeddedUI, screenshots: Path):
    """docs/operations.md, "One episode": Catalog → select cleaned_audio and final_episode →
    Materialize selected ▾ → Open launchpad → partition → run config → Materialize."""
    episode = embedded_ui.episode_id
    context = browser.new_context(viewport=VIEWPORT)
    try:
        with embedded_ui.instance() as instance:
            cleaned = latest_metadata(instance, "cleaned_audio", episode)
            assert cleaned["pauses_removed_s"].value > 0, "the default max_pause_ms cuts the pause"
            before = _run_ids(instance, episode)
            ui = UI(context.new_page(), embedded_ui.url, screenshots)
            ui.open("/")
            ui.open_launchpad(*EPISODE_ASSETS)
            ui.pick_partition(episode)
            ui.change_setting("max_pause_ms", 700, 1500)
            ui.materialize()
            run = embedded_ui.wait_until(
                "the reprocess run", lambda: _first_run_finished(instance, episode, before), timeout_s=RUN_TIMEOUT_S
            )
        assert run.status == dg.DagsterRunStatus.SUCCESS, embedded_ui.logs()
        assert {key.path[-1] for key in run.asset_selection} == set(EPISODE_ASSETS)
        assert run.run_config["ops"]["cleaned_audio"]["config"]["max_pause_ms"] == 1500

        # The run under Runs; the partition's metadata written by it, with the new setting.
        ui.follow("Runs")
        ui.text_once(run.run_id[:8], "Success")
        ui.open_partition("cleaned_audio", episode)
        ui.text_once(run.run_id[:8], '"max_pause_ms": 1500', "pauses_removed_s")
    finally:
        context.close()
    row = embedded_ui.catalog_row()
    assert row["status"] == "processed"
    assert row["metrics"]["pauses_removed_s"] == 0, f"a {CLIP_PAUSE_S} s pause stays at 1500 ms"
