"""Bad and unusual input through the whole chain: raw_audio -> transcript -> cleaned_audio ->
final_episode, on real codecs, a real store and a real catalog.

Every upload ends ``processed`` (where it is real audio, whatever its shape) or ``error``
with a message a producer understands; the uploaded bytes are kept either way; and the
upload sensor goes on with every other upload.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import dagster as dg
import numpy as np
import pytest

from pod_assets import layout
from pod_assets.publish.chapters import chapters
from pod_assets.episodes.cleaned_audio import cleaned_audio
from pod_assets.episodes.final_episode import final_episode
from pod_assets.publish.subtitles import subtitles
from pod_assets.episodes.raw_audio import raw_audio
from pod_assets.episodes.transcript import transcript
from pod_resources.catalog import CatalogResource, EpisodeStatus
from pod_resources.storage import InvalidKeyError, LocalObjectStore
from pod_sensors.uploads import build_upload_sensor
from tests import audio_factory as af

REPO = Path(__file__).resolve().parents[2]
CHAIN = [raw_audio, transcript, cleaned_audio, final_episode, subtitles, chapters]
STEPS = ["raw_audio", "transcript", "cleaned_audio", "final_episode"]
THREE_HOURS_S = 3 * 3600.0
MEMORY_BOUND_MB = 1024


# --------------------------------------------------------------------------- inputs


@pytest.fixture(scope="session")
def speech16k(jfk_path) -> np.ndarray:
    """11 s of real speech, 16 kHz mono."""
    return af.read_audio(jfk_path, sample_rate=16000)


@pytest.fixture(scope="session")
def white_noise_30min(tmp_path_factory) -> Path:
    """Half an hour of white noise at -20 dBFS, 16 kHz mono FLAC, made once per session."""
    return af.write_audio(
        tmp_path_factory.mktemp("noise") / "white-noise-30min.flac",
        af.long_blocks(duration_s=1800.0, sample_rate=16000, level_dbfs=-20.0),
        sample_rate=16000,
    )


@pytest.fixture(scope="session")
def three_hour_episode(tmp_path_factory, speech16k) -> Path:
    """Three hours of a quiet room (-80 dBFS) with the host speaking near the end, 16 kHz
    mono FLAC: every step decodes three hours, speech recognition only gets the chunk that
    holds speech."""
    return af.write_audio(
        tmp_path_factory.mktemp("long") / "three-hour-episode.flac",
        af.long_blocks(
            duration_s=THREE_HOURS_S, sample_rate=16000, level_dbfs=-80.0,
            inserts={THREE_HOURS_S - 900.0: speech16k},
        ),
        sample_rate=16000,
    )


def _mp3(tmp_path: Path, speech16k: np.ndarray) -> Path:
    return af.write_audio(tmp_path / "source.mp3", speech16k, sample_rate=16000)


BAD_INPUTS = {
    # name: (make(tmp_path, speech16k) -> Path, words the producer reads in the error)
    "zero-byte.mp3": (lambda tmp, sp: af.write_zero_byte(tmp / "in"), ["file is empty"]),
    "show-notes.mp3": (lambda tmp, sp: af.write_text_as_audio(tmp / "in"), ["not an audio or video file"]),
    "cut-off.mp3": (
        lambda tmp, sp: af.write_truncated(tmp / "in", source=_mp3(tmp, sp), keep_ratio=0.4),
        ["truncated at"],
    ),
    "header-announces-more.wav": (
        lambda tmp, sp: af.write_lying_wav(tmp / "in", sp[: 16000 * 4], sample_rate=16000, claimed_duration_s=60.0),
        ["truncated at 4.0 s of 60.0 s"],
    ),
    "sample-rate-1hz.wav": (
        lambda tmp, sp: af.write_lying_wav(tmp / "in", sp, sample_rate=16000, claimed_sample_rate=1),
        ["sample rate of 1 hz", "header is damaged"],
    ),
    "sample-rate-0hz.wav": (
        lambda tmp, sp: af.write_lying_wav(tmp / "in", sp, sample_rate=16000, claimed_sample_rate=0),
        ["wav header is damaged", "sample rate of 0 hz"],
    ),
    "digital-silence.flac": (
        lambda tmp, sp: af.write_audio(tmp / "in.flac", af.silence(duration_s=20.0, sample_rate=44100, channels=2), sample_rate=44100),
        ["the audio is silent", "no sound at all"],
    ),
    "video-without-sound.mp4": (
        lambda tmp, sp: af.write_video(tmp / "in.mp4", duration_s=2.0),
        ["no audio stream", "only video"],
    ),
}


# --------------------------------------------------------------------------- helpers


def process(pipeline, name: str, path: Path, run_config=None):
    episode_id = pipeline.register(name, path)
    result = pipeline.materialize(CHAIN, episode_id, run_config=run_config)
    return pipeline.catalog.get_episode(episode_id), result


def assert_bytes_kept(store, episode, path: Path) -> None:
    """The upload's bytes, moved out of the landing zone, are intact."""
    raw_key = layout.raw_key(episode.episode_id, episode.source_name)
    assert store.read_bytes(raw_key) == path.read_bytes()
    assert episode.artifacts["raw_audio"] == store.uri(raw_key)


def assert_failed_at_raw_audio(pipeline, episode, result, words: list[str]) -> None:
    assert not result.success
    assert episode.status == EpisodeStatus.ERROR
    assert episode.error_step == "raw_audio"
    for word in words:
        assert word in episode.last_error.lower(), episode.last_error
    assert "Error:" not in episode.last_error  # no exception class names, no traceback
    # Nothing downstream ran on it.
    assert not pipeline.store.exists(layout.episode_key(episode.episode_id, layout.TRANSCRIPT))
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert started == {"raw_audio"}
    # Permanent: reported once, never retried.
    assert [e.step_key for e in result.all_events if e.event_type_value == "STEP_FAILURE"] == ["raw_audio"]
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def assert_processed(pipeline, episode) -> None:
    assert episode.status == EpisodeStatus.PROCESSED, episode.last_error
    assert episode.last_error is None
    for stage in layout.ARTIFACT_STAGES:
        if stage != "chapters":  # only with chapter marks
            assert episode.artifacts.get(stage), stage
    assert pipeline.store.exists(layout.episode_key(episode.episode_id, layout.FINAL_EPISODE))


def final_stream(pipeline, episode, tmp_path: Path) -> tuple[int, int, float]:
    """(sample rate, channels, seconds) of the stored episode.mp3, decoded."""
    local = tmp_path / f"{episode.episode_id}.mp3"
    pipeline.store.read_to_path(layout.episode_key(episode.episode_id, layout.FINAL_EPISODE), local)
    with av.open(str(local)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.codec_context.sample_rate, stream.codec_context.channels, samples / stream.codec_context.sample_rate


def recognised(pipeline, episode) -> list[str]:
    data = json.loads(pipeline.store.read_bytes(layout.episode_key(episode.episode_id, layout.TRANSCRIPT)))
    return [w["text"] for w in data["words"]]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_ends_in_error_at_raw_audio_with_its_bytes_kept(pipeline, tmp_path, speech16k, name):
    make, words = BAD_INPUTS[name]
    path = make(tmp_path, speech16k)
    episode, result = process(pipeline, name, path)
    assert_failed_at_raw_audio(pipeline, episode, result, words)
    assert_bytes_kept(pipeline.store, episode, path)
    assert not pipeline.store.exists(layout.upload_key(name))  # out of the landing zone


def test_half_an_hour_of_white_noise_fails_before_any_recognition(pipeline, white_noise_30min):
    """Nothing stands out of it: refused at raw_audio instead of half an hour of ASR."""
    name = "white-noise-30min.flac"
    path = white_noise_30min
    episode, result = process(pipeline, name, path)
    assert_failed_at_raw_audio(
        pipeline, episode, result, ["only steady noise", "30.0 min", "no speech or other sound stands out"]
    )
    assert_bytes_kept(pipeline.store, episode, path)
    assert episode.metrics["duration_s"] == pytest.approx(1800.0, abs=0.01)


def test_a_steady_tone_is_not_noise(pipeline, tmp_path):
    """The noise rule needs a flat spectrum too: a steady tone (a test signal, a jingle
    without pauses) is sound, and goes through."""
    path = af.write_audio(tmp_path / "tone.flac", af.tone(duration_s=4.0, sample_rate=16000), sample_rate=16000)
    episode_id = pipeline.register("tone.flac", path)
    assert pipeline.materialize([raw_audio], episode_id).success
    assert pipeline.catalog.get_episode(episode_id).status == EpisodeStatus.PROCESSED


# --------------------------------------------------------------------------- real audio of every shape


def _phone_call(tmp_path, speech16k, jfk_path):
    call = af.read_audio(jfk_path, sample_rate=8000)
    return af.write_audio(tmp_path / "call.wav", call, sample_rate=8000)


def _six_channels_96k(tmp_path, speech16k, jfk_path):
    speech = af.read_audio(jfk_path, sample_rate=96000)
    # Six microphones at different distances; one is barely open.
    return af.write_audio(
        tmp_path / "six.wav", af.spread_channels(speech, [0, -3, -6, -9, -12, -30]), sample_rate=96000, bits=24
    )


def _video_with_sound(tmp_path, speech16k, jfk_path):
    speech = af.read_audio(jfk_path, sample_rate=44100, channels=2)
    return af.write_video(tmp_path / "talk.mp4", duration_s=speech.shape[0] / 44100, audio=speech, sample_rate=44100)


def _header_announces_less(tmp_path, speech16k, jfk_path):
    return af.write_lying_wav(tmp_path / "grown.wav", speech16k, sample_rate=16000, claimed_duration_s=2.0)


REAL_AUDIO = {
    # name: (make, sample rate, channels the raw audio reports)
    "phone-call-8khz.wav": (_phone_call, 8000, 1),
    "studio-96khz-6ch.wav": (_six_channels_96k, 96000, 6),
    "video-with-sound.mp4": (_video_with_sound, 44100, 2),
    "header-announces-less.wav": (_header_announces_less, 16000, 1),
}


@pytest.mark.parametrize("name", list(REAL_AUDIO))
def test_real_audio_of_any_shape_is_processed(pipeline, tmp_path, speech16k, jfk_path, name):
    make, rate, channels = REAL_AUDIO[name]
    path = make(tmp_path, speech16k, jfk_path)
    episode, result = process(pipeline, name, path)
    assert result.success
    assert_processed(pipeline, episode)
    assert_bytes_kept(pipeline.store, episode, path)

    metrics = episode.metrics
    assert metrics["sample_rate"] == rate
    assert metrics["channels"] == channels
    # All eleven seconds of speech, also where the WAV header announced two.
    assert metrics["duration_s"] == pytest.approx(11.0, abs=0.1)
    words = recognised(pipeline, episode)
    assert len(words) >= 10 and {"country", "you"} & set(words), words
    # Mastered to a podcast MP3: 44.1 kHz, at most stereo (six channels downmixed).
    final_rate, final_channels, final_s = final_stream(pipeline, episode, tmp_path)
    assert final_rate == 44100
    assert final_channels == min(channels, 2)
    assert final_s == pytest.approx(metrics["final_duration_s"], abs=0.05)
    assert 5.0 < final_s <= metrics["duration_s"]


def test_header_repair_is_reported(pipeline, tmp_path, speech16k, jfk_path):
    path = _header_announces_less(tmp_path, speech16k, jfk_path)
    episode_id = pipeline.register("grown.wav", path)
    result = pipeline.materialize([raw_audio], episode_id, raise_on_error=True)
    [materialization] = result.asset_materializations_for_node("raw_audio")
    note = materialization.metadata["notes"].value
    assert "announces 2.0 s" in note and "holds 11.0 s" in note


# --------------------------------------------------------------------------- three hours

_STEP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import dagster as dg
    from pod_resources.catalog import CatalogResource
    from pod_resources.storage import LocalObjectStore
    from tests.plugins.pipeline import Pipeline
    import pod_assets

    root, episode_id, step = sys.argv[1:4]
    [asset] = [a for a in pod_assets.defs.assets if getattr(a, "key", None) == dg.AssetKey(step)]
    with dg.DagsterInstance.local_temp(tempdir=root + "/dagster") as instance:
        pipeline = Pipeline(
            instance=instance,
            store=LocalObjectStore(root=root + "/store"),
            catalog_resource=CatalogResource(database_url=f"sqlite:///{root}/catalog.db"),
        )
        result = pipeline.materialize([asset], episode_id)
    # This process's own high-water mark (VmHWM: its memory since exec, not the parent's
    # that fork/exec accounting carries into ru_maxrss), and the largest child it waited for.
    import resource
    hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"success": result.success, "peak_kb": max(hwm_kb, children_kb)}))
    """
)


def _run_step_measured(root: Path, episode_id: str, step: str) -> tuple[bool, float]:
    """Run one step in a fresh process; return (success, peak RSS in MB of that process and
    the processes it waited for: ffmpeg encoders, transcription workers), as the process
    measured it (``wait4``'s ``ru_maxrss`` would include this test process's own size, which
    the child's accounting inherits when it is forked)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _STEP_SCRIPT, str(root), episode_id, step],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    _, status, _ = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, stderr.decode(errors="replace")[-3000:]
    outcome = json.loads(stdout.decode().strip().splitlines()[-1])
    return outcome["success"], outcome["peak_kb"] / 1024


def test_three_hour_episode_is_processed_in_bounded_memory(tmp_path, three_hour_episode):
    """Each step in its own process, as on a worker: every one decodes three hours and
    stays far below the bound."""
    root = tmp_path
    (root / "dagster").mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(root / "dagster")) as instance:
        from tests.plugins.pipeline import Pipeline

        pipeline = Pipeline(
            instance=instance,
            store=LocalObjectStore(root=str(root / "store")),
            catalog_resource=CatalogResource(database_url=f"sqlite:///{root / 'catalog.db'}"),
        )
        episode_id = pipeline.register("three-hour-episode.flac", three_hour_episode)
    peaks = {}
    for step in STEPS:
        success, peaks[step] = _run_step_measured(root, episode_id, step)
        assert success, f"{step} failed: {_last_error(root, episode_id)}"
    shown = ", ".join(f"{step} {peak_mb:.0f} MB" for step, peak_mb in peaks.items())
    for step, peak_mb in peaks.items():
        assert peak_mb < MEMORY_BOUND_MB, f"{step} peaked at {peak_mb:.0f} MB (all steps: {shown})"

    catalog = CatalogResource(database_url=f"sqlite:///{root / 'catalog.db'}").get_catalog()
    episode = catalog.get_episode(episode_id)
    assert episode.status == EpisodeStatus.PROCESSED, episode.last_error
    assert episode.metrics["duration_s"] == pytest.approx(THREE_HOURS_S, abs=0.01)
    store = LocalObjectStore(root=str(root / "store"))
    assert_bytes_kept(store, episode, three_hour_episode)
    words = json.loads(store.read_bytes(layout.episode_key(episode_id, layout.TRANSCRIPT)))["words"]
    # The speech is found at its place, close to three hours in.
    assert len(words) >= 10
    assert all(THREE_HOURS_S - 901 < w["start_s"] < THREE_HOURS_S - 888 for w in words)
    # The room tone between is cut down to short pauses.
    assert episode.metrics["cleaned_duration_s"] < 60.0
    assert episode.metrics["final_duration_s"] == pytest.approx(episode.metrics["cleaned_duration_s"], abs=0.05)


def _last_error(root: Path, episode_id: str) -> str | None:
    episode = CatalogResource(database_url=f"sqlite:///{root / 'catalog.db'}").get_catalog().get_episode(episode_id)
    return episode.last_error if episode else None


# --------------------------------------------------------------------------- the upload sensor


def sensor_tick(pipeline, cursor: str | None = None) -> dg.SensorResult:
    """One upload-sensor tick, then each run it requests, as the daemon would launch them."""
    # Entered as a context manager: CatalogResource has a nested resource (its store).
    with dg.build_sensor_context(
        instance=pipeline.instance,
        cursor=cursor,
        resources={"store": pipeline.store, "catalog": pipeline.catalog_resource},
    ) as context:
        result = build_upload_sensor()(context)
    for request in result.dynamic_partitions_requests or []:
        pipeline.instance.add_dynamic_partitions("episodes", list(request.partition_keys))
    for request in result.run_requests:
        pipeline.materialize(CHAIN, request.partition_key)
    return result


def _speech_file(tmp_path: Path, name: str, seed: int) -> Path:
    """A few seconds of speech-like sound; each seed gives other bytes (no duplicates)."""
    return af.write_audio(
        tmp_path / name, af.speech_like(duration_s=3.0, sample_rate=16000, seed=seed), sample_rate=16000
    )


def test_upload_sensor_keeps_ticking_past_bad_uploads(pipeline, tmp_path, speech16k):
    store = pipeline.store
    good = {"good one.flac": _speech_file(tmp_path, "g1.flac", seed=1)}
    bad = {}
    for name in ("zero-byte.mp3", "show-notes.mp3", "digital-silence.flac", "video-without-sound.mp4"):
        folder = tmp_path / name.replace(".", "-")
        folder.mkdir()
        bad[name] = BAD_INPUTS[name][0](folder, speech16k)
    for name, path in {**good, **bad}.items():
        pipeline.upload(name, path)

    first = sensor_tick(pipeline)
    assert len(first.run_requests) == 5

    catalog = pipeline.catalog
    for name, path in good.items():
        episode = catalog.get_episode(layout.episode_id_for(name))
        assert episode.status == EpisodeStatus.PROCESSED, episode.last_error
        assert_bytes_kept(store, episode, path)
    for name, path in bad.items():
        episode = catalog.get_episode(layout.episode_id_for(name))
        assert episode.status == EpisodeStatus.ERROR
        assert episode.error_step == "raw_audio"
        assert BAD_INPUTS[name][1][0] in episode.last_error.lower(), episode.last_error
        assert_bytes_kept(store, episode, path)

    # A later tick picks up a new upload and leaves the failed ones alone.
    late = _speech_file(tmp_path, "g2.wav", seed=2)
    pipeline.upload("late arrival.wav", late)
    second = sensor_tick(pipeline, cursor=first.cursor)
    assert [r.partition_key for r in second.run_requests] == [layout.episode_id_for("late arrival.wav")]
    episode = catalog.get_episode(layout.episode_id_for("late arrival.wav"))
    assert episode.status == EpisodeStatus.PROCESSED, episode.last_error
    assert_bytes_kept(store, episode, late)
    for name in bad:
        assert catalog.get_episode(layout.episode_id_for(name)).status == EpisodeStatus.ERROR
    # And one after that has nothing left to do.
    assert not sensor_tick(pipeline, cursor=second.cursor).run_requests


HOLDABLE_NAMES = [
    "\u202eevil\u202c.flac",  # right-to-left override: shows as "calf.live"
    "episode \U0001f399\ufe0f 42.flac",
    "\u200fRTL mark \u05e9\u05dc\u05d5\u05dd.flac",
    "l" + "o" * 200 + "ng.flac",  # long, but a file name can hold it
]
REFUSED_NAMES = {
    "../escape.flac": "'..' segment",
    "nul\x00byte.flac": "control character",
    "x" * 300 + ".flac": "longer than 250 bytes",
}


def test_hostile_names_on_the_local_store(pipeline, tmp_path):
    """Through the upload sensor on the local store: every name a key can hold is
    processed; the others never become paths, episodes or runs."""
    store = pipeline.store
    # Names the store cannot hold are refused when they are written, before any path.
    for name, reason in REFUSED_NAMES.items():
        with pytest.raises(InvalidKeyError, match=reason):
            store.write_bytes(layout.upload_key(name), b"never stored")
    assert not list(tmp_path.rglob("escape.flac"))

    # Files a producer put into the folder by hand whose names no object key can be
    # (control characters, bytes that are not UTF-8, past the key segment limit).
    uploads_dir = Path(store.root) / "uploads"
    uploads_dir.mkdir(parents=True)
    unholdable = [
        os.fsencode("bell\x07.flac"),
        b"latin1-caf\xe9.flac",
        os.fsencode("y" * 246 + ".flac"),
    ]
    for index, raw_name in enumerate(unholdable):
        with open(os.path.join(os.fsencode(uploads_dir), raw_name), "wb") as fh:
            fh.write(_speech_file(tmp_path, f"u{index}.flac", seed=20 + index).read_bytes())

    sources = {}
    for index, name in enumerate(HOLDABLE_NAMES):
        sources[name] = _speech_file(tmp_path, f"h{index}.flac", seed=10 + index)
        store.write_file(layout.upload_key(name), sources[name])

    tick = sensor_tick(pipeline)
    assert len(tick.run_requests) == len(HOLDABLE_NAMES)

    catalog = pipeline.catalog
    episodes = catalog.list_episodes()
    assert sorted(e.source_name for e in episodes) == sorted(HOLDABLE_NAMES)
    for episode in episodes:
        assert episode.status == EpisodeStatus.PROCESSED, episode.last_error
        assert_bytes_kept(store, episode, sources[episode.source_name])
        # Keys come from the episode id, never from the name.
        assert all(ch.isascii() and (ch.isalnum() or ch == "-") for ch in episode.episode_id)
        assert "\u202e" not in episode.title and "\u200f" not in episode.title
    # The unholdable files were neither taken nor deleted: they wait for a person.
    assert sorted(os.listdir(os.fsencode(uploads_dir))) == sorted(unholdable)
    # Nothing was written outside the store's episode folders.
    assert sorted(p.name for p in Path(store.root).iterdir() if not p.name.startswith(".pod-")) == [
        "episodes", "uploads",
    ]
