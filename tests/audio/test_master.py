"""Tests of pod_audio.mastering (limiter, crossfades, final render) and pod_audio.tags."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest
from mutagen.id3 import ID3

from pod_audio.errors import SilentAudioError
from pod_audio import mp3
from pod_audio.io import iter_blocks, probe
from pod_audio.loudness import TruePeakMeter, measure
from pod_audio.mastering import level
from pod_audio.mastering import render as mastering_render
from pod_audio.mastering import (
    MasterReport,
    PeakLimiter,
    crossfade,
    program_blocks,
    render_final,
)
from pod_audio.tags import EpisodeTags, read_id3, write_id3
from tests import audio_factory as af

TRUE_PEAK_LIMIT_DBTP = -1.0


def _decoded_frames(path: Path) -> tuple[int, int]:
    """(frames, sample rate) of an MP3 as av decodes it (encoder delay/padding trimmed)."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        frames = sum(frame.samples for frame in container.decode(stream))
        return frames, stream.codec_context.sample_rate


def _assert_mastered(path: Path, report: MasterReport, *, target_lufs: float) -> None:
    decoded = measure(path)
    assert abs(decoded.integrated_lufs - target_lufs) <= 0.5
    assert decoded.true_peak_dbtp <= TRUE_PEAK_LIMIT_DBTP
    assert report.lufs_out == pytest.approx(decoded.integrated_lufs, abs=1e-6)
    assert report.true_peak_dbtp == pytest.approx(decoded.true_peak_dbtp, abs=1e-6)
    assert report.size_bytes == path.stat().st_size
    if af.has_ffmpeg():  # the independent meter agrees
        ref = af.ffmpeg_ebur128(path)
        assert abs(ref.integrated_lufs - target_lufs) <= 0.5
        assert ref.true_peak_dbtp <= TRUE_PEAK_LIMIT_DBTP + 0.05


# --------------------------------------------------------------------------- limiter


def _limit(signal: np.ndarray, *, sample_rate: int, block_frames: int, **kwargs) -> tuple[np.ndarray, PeakLimiter]:
    limiter = PeakLimiter(sample_rate=sample_rate, channels=signal.shape[1], **kwargs)
    parts = [limiter.process(signal[i : i + block_frames])
             for i in range(0, signal.shape[0], block_frames)]
    parts.append(limiter.flush())
    return np.concatenate(parts), limiter


@pytest.mark.parametrize("block_frames", [100, 4096, 100000])
def test_limiter_keeps_true_peak_under_ceiling(block_frames: int) -> None:
    sample_rate = 44100
    speech = af.speech_like(duration_s=3.0, sample_rate=sample_rate, channels=2, level_dbfs=-20)
    loud = speech * 10 ** (18 / 20)  # peaks far above full scale
    out, limiter = _limit(loud, sample_rate=sample_rate, block_frames=block_frames,
                          ceiling_dbtp=-1.5)
    assert out.shape == loud.shape
    meter = TruePeakMeter(sample_rate=sample_rate, channels=2)
    meter.add(out)
    assert meter.true_peak_dbtp() <= -1.5 + 0.1
    assert limiter.max_reduction_db > 10


def test_limiter_is_transparent_below_ceiling() -> None:
    signal = af.speech_like(duration_s=2.0, sample_rate=48000, channels=1, level_dbfs=-30)
    out, limiter = _limit(signal, sample_rate=48000, block_frames=1000, ceiling_dbtp=-1.0)
    np.testing.assert_array_equal(out, signal)
    assert limiter.max_reduction_db == 0.0


def test_limiter_gain_is_smooth() -> None:
    # One loud burst in a quiet tone: the gain ramps down over the look-ahead window
    # before the burst and recovers over ~release time, with no step.
    sample_rate = 48000
    tone = af.tone(duration_s=1.0, sample_rate=sample_rate, freq_hz=100, amplitude=0.1)
    tone[24000:24480] *= 9.0  # 10 ms at +19 dB
    out, _ = _limit(tone, sample_rate=sample_rate, block_frames=512, ceiling_dbtp=-6.0,
                    lookahead_ms=5.0, release_ms=50.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(np.abs(tone[:, 0]) > 0.01, out[:, 0] / tone[:, 0], np.nan)
    ramp = gain[24000 - 240 - 10 : 24000]
    ramp = ramp[~np.isnan(ramp)]
    assert np.all(np.diff(ramp) <= 1e-6)  # falls monotonically into the burst
    assert np.nanmin(gain) < 0.6
    assert np.nanmax(gain[:23000]) == pytest.approx(1.0)
    assert np.nanmean(gain[-2000:]) == pytest.approx(1.0, abs=1e-3)  # recovered
    steps = np.abs(np.diff(gain[~np.isnan(gain)]))
    assert np.max(steps) < 0.05


# --------------------------------------------------------------------------- programme


def test_crossfade_is_equal_power() -> None:
    ones = np.ones((1000, 1), np.float32)
    mixed = crossfade(ones, ones)
    # sin + cos: 1 at the ends, sqrt(2) in the middle for identical signals.
    assert mixed[0, 0] == pytest.approx(1.0, abs=0.01)
    assert mixed[500, 0] == pytest.approx(math.sqrt(2), abs=0.01)
    power = crossfade(ones, np.zeros_like(ones)) ** 2 + crossfade(np.zeros_like(ones), ones) ** 2
    np.testing.assert_allclose(power, 1.0, atol=1e-6)


@pytest.mark.parametrize(("intro_s", "outro_s", "crossfade_ms"), [
    (2.0, 1.5, 500.0),
    (0.3, None, 500.0),  # intro shorter than the crossfade: the crossfade shrinks to it
    (None, 1.0, 0.0),
])
def test_program_length(tmp_path: Path, intro_s: float | None, outro_s: float | None,
                         crossfade_ms: float) -> None:
    rate = 16000
    main = af.write_audio(tmp_path / "main.wav", af.noise(duration_s=3.0, sample_rate=rate), sample_rate=rate)
    intro = outro = None
    if intro_s:
        intro = af.write_audio(tmp_path / "intro.wav", af.tone(duration_s=intro_s, sample_rate=rate), sample_rate=rate)
    if outro_s:
        outro = af.write_audio(tmp_path / "outro.wav", af.tone(duration_s=outro_s, sample_rate=rate), sample_rate=rate)
    frames = sum(b.shape[0] for b in program_blocks(
        main_path=main, intro_path=intro, outro_path=outro, crossfade_ms=crossfade_ms,
        sample_rate=rate, channels=1, block_frames=777))
    xfade_s = crossfade_ms / 1000
    expected_s = 3.0
    if intro_s:
        expected_s += intro_s - min(intro_s, xfade_s)
    if outro_s:
        expected_s += outro_s - min(outro_s, xfade_s)
    assert frames == round(expected_s * rate)


def test_program_content_order(tmp_path: Path) -> None:
    rate = 8000
    parts = {}
    for name, level in (("intro", 0.1), ("main", 0.2), ("outro", 0.3)):
        parts[name] = af.write_audio(tmp_path / f"{name}.wav",
                                     np.full((rate, 1), level, np.float32), sample_rate=rate)
    audio = np.concatenate(list(program_blocks(
        main_path=parts["main"], intro_path=parts["intro"], outro_path=parts["outro"],
        crossfade_ms=100, sample_rate=rate, channels=1)))
    assert audio.shape[0] == 3 * rate - 2 * 800
    assert audio[100, 0] == pytest.approx(0.1, abs=1e-3)
    assert audio[rate, 0] == pytest.approx(0.2, abs=1e-3)
    assert audio[-100, 0] == pytest.approx(0.3, abs=1e-3)


# --------------------------------------------------------------------------- render_final


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    quiet_speech = af.speech_like(duration_s=8.0, sample_rate=48000, channels=2, level_dbfs=-34)
    # Occasional clicks at full scale: peaks 30 dB above the speech.
    quiet_speech[::20000] = 0.99
    loud = af.speech_like(duration_s=6.0, sample_rate=44100, channels=2, level_dbfs=-3, seed=5)
    clipped = np.clip(loud * 4.0, -1.0, 1.0)  # hard-clipped, square-ish, around 0 LUFS
    return {
        "quiet": af.write_audio(root / "quiet.flac", quiet_speech, sample_rate=48000, bits=24),
        "clipped": af.write_audio(root / "clipped.wav", clipped, sample_rate=44100),
        "mono": af.write_audio(root / "mono.m4a", af.speech_like(
            duration_s=6.0, sample_rate=44100, channels=1, level_dbfs=-26, seed=8), sample_rate=44100),
        "intro": af.write_audio(root / "intro.ogg", af.concat(
            af.tone(duration_s=2.0, sample_rate=48000, channels=2, freq_hz=330, amplitude=0.4)),
            sample_rate=48000),
        "outro": af.write_audio(root / "outro.wav", af.noise(
            duration_s=1.5, sample_rate=22050, channels=1, amplitude=0.05), sample_rate=22050),
        "silent": af.write_audio(root / "silent.wav", af.silence(duration_s=2.0, sample_rate=44100),
                                 sample_rate=44100),
    }


def test_render_quiet_peaky_speech(tmp_path: Path, sources: dict[str, Path]) -> None:
    out = tmp_path / "episode.mp3"
    said: list[str] = []
    report = render_final(main_path=sources["quiet"], out_path=out, progress=said.append)
    # Progress: every 25 % of each pass over the programme, the measurement, then each render.
    assert said[:4] == [f"measuring loudness: {p} % of 8 s" for p in (25, 50, 75, 100)]
    renders = [line for line in said if line.startswith("rendering")]
    assert renders[:4] == [f"rendering (pass 1): {p} % of 8 s" for p in (25, 50, 75, 100)]
    assert len(renders) == 4 * report.renders
    assert report.target_lufs == -16.0
    assert report.lufs_in < -30
    assert report.gain_db > 14
    assert report.limiter_max_db > 10  # the clicks were limited hard
    _assert_mastered(out, report, target_lufs=-16.0)
    frames, rate = _decoded_frames(out)
    assert rate == 44100
    assert abs(frames / rate - 8.0) <= 0.05
    assert report.duration_s == pytest.approx(frames / rate, abs=1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["episode.mp3"]  # no scratch left


def test_render_loud_clipped_input(tmp_path: Path, sources: dict[str, Path]) -> None:
    out = tmp_path / "episode.mp3"
    report = render_final(main_path=sources["clipped"], out_path=out, bitrate_kbps=96)
    assert report.lufs_in > -6
    assert report.gain_db < -8
    _assert_mastered(out, report, target_lufs=-16.0)
    with av.open(str(out)) as container:
        assert container.streams.audio[0].codec_context.bit_rate == 96000


def test_render_mono_defaults_to_minus_19(tmp_path: Path, sources: dict[str, Path]) -> None:
    out = tmp_path / "episode.mp3"
    report = render_final(main_path=sources["mono"], out_path=out)
    assert report.target_lufs == -19.0
    _assert_mastered(out, report, target_lufs=-19.0)
    assert probe(out).channels == 1


def test_render_with_intro_outro_and_tags(tmp_path: Path, sources: dict[str, Path]) -> None:
    out = tmp_path / "episode.mp3"
    tags = EpisodeTags(title="Episode 7: Streams", show="Pipe Talk", date="2026-11-29",
                       duration_s=0.0, comment="Notes: https://example.com/7")
    report = render_final(main_path=sources["quiet"], out_path=out, intro_path=sources["intro"],
                          outro_path=sources["outro"], crossfade_ms=400, tags=tags,
                          target_lufs=-18.0)
    expected_s = 2.0 + 8.0 + 1.5 - 2 * 0.4
    frames, rate = _decoded_frames(out)
    assert abs(frames / rate - expected_s) <= 0.05
    assert abs(report.duration_s - expected_s) <= 0.05
    _assert_mastered(out, report, target_lufs=-18.0)
    assert probe(out).channels == 2
    read = read_id3(out)
    assert read.title == tags.title and read.show == tags.show and read.date == tags.date
    assert read.comment == tags.comment
    assert read.duration_s == pytest.approx(report.duration_s, abs=0.001)


def test_render_jfk(tmp_path: Path) -> None:
    path = af.jfk_path()
    if not path.exists():
        pytest.skip(f"fixture missing: {path}")
    out = tmp_path / "jfk.mp3"
    report = render_final(main_path=path, out_path=out)
    _assert_mastered(out, report, target_lufs=-16.0)
    assert abs(report.duration_s - 11.0) <= 0.05


def test_render_silent_main(tmp_path: Path, sources: dict[str, Path]) -> None:
    out = tmp_path / "episode.mp3"
    with pytest.raises(SilentAudioError):
        render_final(main_path=sources["silent"], out_path=out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_render_replaces_existing_output(tmp_path: Path, sources: dict[str, Path]) -> None:
    out = tmp_path / "episode.mp3"
    out.write_bytes(b"old")
    render_final(main_path=sources["mono"], out_path=out)
    assert probe(out).codec == "mp3"


# --------------------------------------------------------------------------- tags


def _tiny_mp3(path: Path) -> Path:
    from pod_audio.writer import open_writer

    with open_writer(path, sample_rate=44100, channels=1, codec="mp3") as writer:
        writer.write(af.tone(duration_s=0.5, sample_rate=44100))
    return path


def test_tags_round_trip(tmp_path: Path) -> None:
    path = _tiny_mp3(tmp_path / "a.mp3")
    tags = EpisodeTags(title="Über Streams — Teil 2", show="Pipe Talk", date="2026-11-29",
                       duration_s=1234.5678, comment="Links: https://example.com")
    write_id3(path, tags)
    read = read_id3(path)
    assert read == EpisodeTags(title=tags.title, show=tags.show, date=tags.date,
                               duration_s=1234.568, comment=tags.comment)
    id3 = ID3(str(path))
    assert id3.version == (2, 4, 0)
    assert str(id3["TALB"]) == str(id3["TPE1"]) == "Pipe Talk"
    assert str(id3["TLEN"]) == "1234568"
    assert str(id3["TDRC"]) == "2026-11-29"
    # The audio is untouched and still decodes to its exact length.
    assert _decoded_frames(path)[0] == 22050


def test_tags_rewrite_replaces_old_frames(tmp_path: Path) -> None:
    path = _tiny_mp3(tmp_path / "a.mp3")
    write_id3(path, EpisodeTags(title="A", show="S", date="2026-01-01", duration_s=1.0, comment="x"))
    write_id3(path, EpisodeTags(title="B", show="S", date="2026-01-02", duration_s=2.0))
    read = read_id3(path)
    assert (read.title, read.date, read.duration_s, read.comment) == ("B", "2026-01-02", 2.0, None)


def test_tags_validation_and_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ISO"):
        EpisodeTags(title="A", show="S", date="29/11/2026", duration_s=1.0)
    EpisodeTags(title="A", show="S", date="2026-11-29T10:00:00", duration_s=1.0)
    plain = _tiny_mp3(tmp_path / "plain.mp3")
    ID3(str(plain)).delete()
    with pytest.raises(LookupError):
        read_id3(plain)


def test_decoded_render_is_streamable(tmp_path: Path, sources: dict[str, Path]) -> None:
    """The MP3 decodes block by block like any other input (the next step's view)."""
    out = tmp_path / "episode.mp3"
    render_final(main_path=sources["mono"], out_path=out)
    blocks = list(iter_blocks(out, block_frames=44100))
    assert sum(b.shape[0] for b in blocks) == pytest.approx(6.0 * 44100, abs=0.05 * 44100)


def test_deferred_limiter_measurement_gives_the_solver_gain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Speech whose loudest syllables the gain pushes a little over the ceiling: the first
    # render measures the limited loudness itself instead of a pass before it.
    speech = af.speech_like(duration_s=20.0, sample_rate=44100, channels=2, level_dbfs=-22, seed=11)
    source = af.write_audio(tmp_path / "speech.flac", speech, sample_rate=44100, bits=24)
    deferred: list[bool] = []
    can_defer = level.LevelSolver.can_defer

    def spy(self: level.LevelSolver, *args: object, **kwargs: object) -> bool:
        deferred.append(can_defer(self, *args, **kwargs))
        return deferred[-1]

    monkeypatch.setattr(level.LevelSolver, "can_defer", spy)
    report = render_final(main_path=source, out_path=tmp_path / "deferred.mp3", target_lufs=-17.5)
    assert deferred == [True]
    assert report.limiter_max_db > 0
    _assert_mastered(tmp_path / "deferred.mp3", report, target_lufs=-17.5)

    monkeypatch.setattr(level.LevelSolver, "can_defer", lambda self, *a, **k: False)
    solved = render_final(main_path=source, out_path=tmp_path / "solved.mp3", target_lufs=-17.5)
    assert report.gain_db == pytest.approx(solved.gain_db, abs=1e-9)
    assert report.lufs_out == pytest.approx(solved.lufs_out, abs=0.01)
    assert report.true_peak_dbtp == pytest.approx(solved.true_peak_dbtp, abs=0.01)


def test_peak_profile_sees_peaks_over_the_ceiling() -> None:
    profile = level.PeakProfile(sample_rate=44100)
    speech = af.speech_like(duration_s=10.0, sample_rate=44100, channels=2, level_dbfs=-20)
    for start in range(0, speech.shape[0], 3000):  # block edges off the 100 ms grid
        profile.add(speech[start : start + 3000])
    peak_db = 20 * math.log10(float(np.max(np.abs(speech))))
    assert profile.limiter_loss_lu(0.0, ceiling_dbtp=peak_db + 0.5) == 0.0
    small = profile.limiter_loss_lu(1.0, ceiling_dbtp=peak_db)
    large = profile.limiter_loss_lu(12.0, ceiling_dbtp=peak_db)
    assert 0.0 < small < large


def test_peak_profile_is_peak_and_mean_square_of_every_100_ms() -> None:
    speech = af.speech_like(duration_s=2.35, sample_rate=44100, channels=2, level_dbfs=-20)
    profile = level.PeakProfile(sample_rate=44100)
    for start in range(0, speech.shape[0], 3001):
        profile.add(speech[start : start + 3001])
    rows = speech[: speech.shape[0] // 4410 * 4410].reshape(-1, 4410 * 2).astype(np.float64)
    assert len(profile._peaks) == len(profile._powers) == 23  # the last 50 ms are held
    assert list(profile._peaks) == pytest.approx(np.max(np.abs(rows), axis=1), rel=1e-6)
    assert list(profile._powers) == pytest.approx(np.mean(rows**2, axis=1), rel=1e-4)


def test_codec_offset_is_the_measured_change_of_the_excerpt(tmp_path: Path) -> None:
    # The excerpt's MP3 is measured while it is encoded: the offset equals encoding the
    # same limited excerpt and measuring the finished file.
    from pod_audio.writer import open_writer
    from pod_audio.loudness import LoudnessMeter

    speech = af.speech_like(duration_s=4.0, sample_rate=44100, channels=2, level_dbfs=-20)
    blocks = [speech[start : start + 20000] for start in range(0, speech.shape[0], 20000)]
    offset = mastering_render._codec_offset_db(
        (block for block in blocks), gain_db=6.0, ceiling_dbtp=-1.5, sample_rate=44100, channels=2,
        bitrate_kbps=128, scratch_dir=tmp_path, excerpt_s=2.0,
    )
    limiter = PeakLimiter(sample_rate=44100, channels=2, ceiling_dbtp=-1.5)
    meter = LoudnessMeter(sample_rate=44100, channels=2)
    path = tmp_path / "reference.mp3"
    with open_writer(path, sample_rate=44100, channels=2, codec="mp3") as writer:
        for block in blocks:
            limited = limiter.process(block * 10 ** (6.0 / 20))
            meter.add(limited)
            writer.write(limited)
            if writer.frames_written >= 2 * 44100:
                break
    expected = measure(path).integrated_lufs - meter.integrated_lufs()
    assert offset == pytest.approx(expected, abs=1e-9)
    assert offset != 0.0
    assert [p.name for p in tmp_path.iterdir()] == ["reference.mp3"]  # no scratch file left


def _measured_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the files render_final measures by decoding them after the fact."""
    calls: list[str] = []
    real_measure = mastering_render.measure

    def spy(path: Path, **kwargs: object):
        calls.append(Path(path).name)
        return real_measure(path, **kwargs)

    monkeypatch.setattr(mastering_render, "measure", spy)
    return calls


def test_mp3_measured_while_written_equals_measuring_the_file(
    tmp_path: Path, sources: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _measured_paths(monkeypatch)
    out = tmp_path / "episode.mp3"
    report = render_final(main_path=sources["quiet"], out_path=out, block_frames=4096)
    assert not any(name.endswith(".partial.mp3") for name in calls)  # measured on the way
    after = measure(out, block_frames=4096)
    assert report.lufs_out == pytest.approx(after.integrated_lufs, abs=1e-9)
    assert report.true_peak_dbtp == pytest.approx(after.true_peak_dbtp, abs=1e-9)
    assert report.duration_s == pytest.approx(after.duration_s, abs=1e-9)


def test_mp3_measured_after_when_the_lame_tag_disagrees(
    tmp_path: Path, sources: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _measured_paths(monkeypatch)
    monkeypatch.setattr(mp3, "LAME_DELAY", 577)  # not what the encoder writes
    out = tmp_path / "episode.mp3"
    report = render_final(main_path=sources["mono"], out_path=out)
    assert any(name.endswith(".partial.mp3") for name in calls)  # fell back to the file
    _assert_mastered(out, report, target_lufs=-19.0)
    assert [p.name for p in tmp_path.iterdir()] == ["episode.mp3"]
