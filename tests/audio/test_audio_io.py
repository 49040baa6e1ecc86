"""Tests of pod_audio.io and pod_audio.writer: probe, streaming decode, streaming encode."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest

from pod_audio.errors import (
    AudioInputError,
    CorruptAudioError,
    EmptyFileError,
    NoAudioStreamError,
    TruncatedAudioError,
    UnsupportedFormatError,
)
from pod_audio.io import AudioInfo, iter_blocks, probe
from pod_audio.writer import open_writer
from tests import audio_factory as af

TONE_HZ = 440.0


def _dominant_hz(signal: np.ndarray, sample_rate: int) -> float:
    mono = signal.mean(axis=1)
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(mono.size)))
    return float(np.fft.rfftfreq(mono.size, 1 / sample_rate)[np.argmax(spectrum)])


def _decode_all(path: Path, **kwargs: object) -> np.ndarray:
    return np.concatenate(list(iter_blocks(path, **kwargs)))


# (suffix, sample rate, channels, bits) — every format, mono and stereo, 8 to 96 kHz.
DECODE_CASES = [
    (".wav", 8000, 1, None),
    (".wav", 96000, 2, 24),
    (".wav", 44100, 2, "float"),
    (".flac", 16000, 1, None),
    (".flac", 44100, 2, 24),
    (".flac", 96000, 2, None),
    (".mp3", 44100, 1, None),
    (".mp3", 48000, 2, None),
    (".mp3", 16000, 2, None),
    (".m4a", 44100, 2, None),
    (".m4a", 48000, 1, None),
    (".m4a", 8000, 1, None),
    (".ogg", 48000, 2, None),
    (".opus", 16000, 1, None),
    (".aiff", 44100, 2, None),
]
LOSSLESS = {".wav", ".flac", ".aiff"}
# Opus always decodes at 48 kHz, whatever rate it was fed.
DECODED_RATE = {".ogg": 48000, ".opus": 48000}
CODEC = {".wav": "pcm_", ".flac": "flac", ".mp3": "mp3", ".m4a": "aac", ".ogg": "opus",
         ".opus": "opus", ".aiff": "pcm_s16be"}


@pytest.mark.parametrize(("suffix", "sample_rate", "channels", "bits"), DECODE_CASES)
def test_decode_formats(tmp_path: Path, suffix: str, sample_rate: int, channels: int, bits) -> None:
    duration_s = 2.0
    signal = af.tone(duration_s=duration_s, sample_rate=sample_rate, channels=channels,
                     freq_hz=TONE_HZ, amplitude=0.5)
    path = af.write_audio(tmp_path / f"a{suffix}", signal, sample_rate=sample_rate, bits=bits)

    info = probe(path)
    rate = DECODED_RATE.get(suffix, sample_rate)
    assert isinstance(info, AudioInfo)
    assert info.sample_rate == rate
    assert info.channels == channels
    assert info.codec.startswith(CODEC[suffix])
    # AAC pads its last frame (up to 1024 samples); the others are exact.
    assert info.duration_s == pytest.approx(duration_s, abs=0.13 if suffix == ".m4a" else 1e-3)

    blocks = list(iter_blocks(path, block_frames=4096))
    assert all(b.dtype == np.float32 and b.ndim == 2 and b.shape[1] == channels for b in blocks)
    assert all(b.shape[0] == 4096 for b in blocks[:-1])
    assert 0 < blocks[-1].shape[0] <= 4096
    decoded = np.concatenate(blocks)
    assert decoded.shape[0] == pytest.approx(info.duration_s * rate, abs=1)
    assert np.max(np.abs(decoded)) <= 1.0
    assert _dominant_hz(decoded, rate) == pytest.approx(TONE_HZ, abs=3)
    if suffix in LOSSLESS:
        quantum = 0.5 / 32768 if bits in (None, 16) else 1e-6
        assert np.max(np.abs(decoded - signal)) <= quantum
    else:
        rms_db = 20 * np.log10(np.sqrt(np.mean(decoded**2)) / (0.5 / np.sqrt(2)))
        assert abs(rms_db) < 1.0


@pytest.mark.parametrize(("suffix", "sample_rate"), [(".mp3", 48000), (".m4a", 44100), (".flac", 96000)])
def test_resample_and_downmix(tmp_path: Path, suffix: str, sample_rate: int) -> None:
    signal = af.tone(duration_s=2.0, sample_rate=sample_rate, channels=2, freq_hz=TONE_HZ)
    path = af.write_audio(tmp_path / f"a{suffix}", signal, sample_rate=sample_rate)
    info = probe(path)
    decoded = _decode_all(path, sample_rate=16000, channels=1)
    assert decoded.shape[1] == 1
    assert decoded.shape[0] == pytest.approx(info.duration_s * 16000, abs=64)
    assert _dominant_hz(decoded, 16000) == pytest.approx(TONE_HZ, abs=3)


def test_six_channels_downmixed(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    sample_rate = 48000
    signal = np.stack(
        [af.tone(duration_s=1.5, sample_rate=sample_rate, freq_hz=200 * (ch + 1),
                 amplitude=0.3)[:, 0] for ch in range(6)], axis=1)
    signal += 0.01 * rng.standard_normal(signal.shape).astype(np.float32)
    path = af.write_audio(tmp_path / "surround.flac", np.clip(signal, -1, 1), sample_rate=sample_rate)
    assert probe(path).channels == 6

    stereo = _decode_all(path, channels=2)
    mono = _decode_all(path, channels=1, sample_rate=44100)
    assert stereo.shape == (72000, 2)
    assert mono.shape[1] == 1 and mono.shape[0] == pytest.approx(66150, abs=2)
    assert np.max(np.abs(stereo)) <= 1.0
    # Front left (200 Hz) lands in the left channel only, front right (400 Hz) in the right.
    left_spec = np.abs(np.fft.rfft(stereo[:, 0]))
    right_spec = np.abs(np.fft.rfft(stereo[:, 1]))
    freqs = np.fft.rfftfreq(stereo.shape[0], 1 / sample_rate)
    at = lambda hz: int(np.argmin(np.abs(freqs - hz)))  # noqa: E731
    assert left_spec[at(200)] > 100 * right_spec[at(200)]
    assert right_spec[at(400)] > 100 * left_spec[at(400)]
    # Centre (600 Hz) goes to both.
    assert left_spec[at(600)] == pytest.approx(right_spec[at(600)], rel=0.01)


def test_blocks_are_exact_and_no_empty_tail(tmp_path: Path) -> None:
    path = af.write_audio(tmp_path / "a.wav", af.noise(duration_s=1.0, sample_rate=8000, channels=2),
                          sample_rate=8000)
    shapes = [b.shape for b in iter_blocks(path, block_frames=2000)]
    assert shapes == [(2000, 2)] * 4
    shapes = [b.shape for b in iter_blocks(path, block_frames=3000)]
    assert shapes == [(3000, 2), (3000, 2), (2000, 2)]
    with pytest.raises(ValueError):
        next(iter_blocks(path, block_frames=0))


def test_blocks_are_independent_arrays(tmp_path: Path) -> None:
    path = af.write_audio(tmp_path / "a.flac", af.noise(duration_s=1.0, sample_rate=8000),
                          sample_rate=8000)
    blocks = list(iter_blocks(path, block_frames=1000))
    assert len({id(b) for b in blocks}) == len(blocks)
    assert not any(np.shares_memory(blocks[0], b) for b in blocks[1:])


def test_decode_memory_is_bounded(tmp_path: Path) -> None:
    """Decoding 2 minutes of 44.1 kHz stereo (42 MB as float32) keeps a few blocks in memory."""
    sample_rate = 44100

    def minutes():
        for seed in range(24):
            yield af.noise(duration_s=5.0, sample_rate=sample_rate, channels=2, seed=seed)

    path = af.write_audio(tmp_path / "long.flac", minutes(), sample_rate=sample_rate)
    tracemalloc.start()
    try:
        frames = 0
        for block in iter_blocks(path, block_frames=8192):
            frames += block.shape[0]
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frames == 120 * sample_rate
    assert peak_bytes < 4_000_000


def test_jfk_fixture() -> None:
    path = af.jfk_path()
    if not path.exists():
        pytest.skip(f"fixture missing: {path}")
    info = probe(path)
    assert (info.sample_rate, info.channels, info.codec, info.container) == (44100, 2, "flac", "flac")
    assert info.duration_s == pytest.approx(11.0, abs=0.01)
    frames = sum(b.shape[0] for b in iter_blocks(path, sample_rate=16000, channels=1))
    assert frames == pytest.approx(11.0 * 16000, abs=2)


# --------------------------------------------------------------------------- probe errors


@pytest.fixture(scope="module")
def good_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("good")
    speech = af.speech_like(duration_s=6.0, sample_rate=44100, channels=2)
    return {
        "mp3": af.write_audio(root / "a.mp3", speech, sample_rate=44100),
        "flac": af.write_audio(root / "a.flac", speech, sample_rate=44100),
        "wav": af.write_audio(root / "a.wav", speech, sample_rate=44100),
        "m4a": af.write_audio(root / "a.m4a", speech, sample_rate=44100),
    }


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "nope.mp3")


def test_zero_byte_file(tmp_path: Path) -> None:
    path = af.write_zero_byte(tmp_path / "empty.mp3")
    with pytest.raises(EmptyFileError, match="file is empty"):
        probe(path)
    with pytest.raises(EmptyFileError):
        next(iter_blocks(path))


def test_text_named_mp3(tmp_path: Path) -> None:
    path = af.write_text_as_audio(tmp_path / "notes.mp3")
    with pytest.raises(UnsupportedFormatError, match="not an audio or video file we can read"):
        probe(path)
    with pytest.raises(UnsupportedFormatError):
        next(iter_blocks(path))


def test_truncated_mp3(tmp_path: Path, good_files: dict[str, Path]) -> None:
    path = af.write_truncated(tmp_path / "cut.mp3", source=good_files["mp3"], keep_ratio=0.4)
    with pytest.raises(TruncatedAudioError, match=r"file is truncated at 2\.\d s of 6\.0 s"):
        probe(path)
    # Without the decode check only the header is read: it announces the full length.
    assert probe(path, decode_check=False).duration_s == pytest.approx(6.0, abs=0.05)
    # The decoder still delivers what is there.
    frames = sum(b.shape[0] for b in iter_blocks(path))
    assert 2.0 * 44100 < frames < 2.6 * 44100


@pytest.mark.parametrize("kind", ["flac", "wav"])
def test_truncated_lossless(tmp_path: Path, good_files: dict[str, Path], kind: str) -> None:
    path = af.write_truncated(tmp_path / f"cut.{kind}", source=good_files[kind], keep_ratio=0.5)
    with pytest.raises(TruncatedAudioError, match=r"of 6\.0 s"):
        probe(path)


def test_truncated_m4a_is_unreadable(tmp_path: Path, good_files: dict[str, Path]) -> None:
    # An MP4 keeps its index at the end: cut off, it cannot be opened at all.
    path = af.write_truncated(tmp_path / "cut.m4a", source=good_files["m4a"], keep_ratio=0.6)
    with pytest.raises(CorruptAudioError, match="looks like MP4/M4A .* truncated or damaged"):
        probe(path)


def test_wav_header_lies(tmp_path: Path) -> None:
    signal = af.speech_like(duration_s=1.5, sample_rate=16000)
    path = af.write_lying_wav(tmp_path / "lie.wav", signal, sample_rate=16000, claimed_duration_s=60.0)
    with pytest.raises(TruncatedAudioError, match=r"file is truncated at 1\.5 s of 60\.0 s"):
        probe(path)


@pytest.mark.parametrize("kind", ["mp3", "flac"])
def test_damaged_payload(tmp_path: Path, good_files: dict[str, Path], kind: str) -> None:
    path = af.write_corrupted(tmp_path / f"bad.{kind}", source=good_files[kind],
                              start_ratio=0.3, length_ratio=0.3)
    with pytest.raises(CorruptAudioError, match="damaged") as excinfo:
        probe(path)
    assert not isinstance(excinfo.value, TruncatedAudioError)


def test_wav_without_samples(tmp_path: Path) -> None:
    path = af.write_lying_wav(tmp_path / "nothing.wav", np.zeros((0, 1), np.float32),
                              sample_rate=16000, claimed_duration_s=0.0)
    with pytest.raises(CorruptAudioError, match="no audio samples"):
        probe(path)


def test_video_without_audio(tmp_path: Path) -> None:
    path = af.write_video(tmp_path / "silent_film.mp4", duration_s=1.0)
    with av.open(str(path)) as container:  # the fixture really is a video
        assert len(container.streams.video) == 1 and not container.streams.audio
    with pytest.raises(NoAudioStreamError, match="no audio stream"):
        probe(path)
    with pytest.raises(NoAudioStreamError):
        next(iter_blocks(path))


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_video_with_audio(tmp_path: Path, suffix: str) -> None:
    audio = af.tone(duration_s=2.0, sample_rate=44100, channels=2, freq_hz=TONE_HZ)
    path = af.write_video(tmp_path / f"talk{suffix}", duration_s=2.0, audio=audio)
    info = probe(path)
    assert (info.sample_rate, info.channels, info.codec) == (44100, 2, "aac")
    assert info.duration_s == pytest.approx(2.0, abs=0.1)
    decoded = _decode_all(path, channels=1)
    assert _dominant_hz(decoded, 44100) == pytest.approx(TONE_HZ, abs=3)


def test_errors_are_input_errors() -> None:
    for cls in (EmptyFileError, UnsupportedFormatError, NoAudioStreamError, CorruptAudioError,
                TruncatedAudioError):
        assert issubclass(cls, AudioInputError)


# --------------------------------------------------------------------------- writer


@pytest.mark.parametrize(("codec", "bits", "tolerance"), [
    # Half a quantisation step, plus float32 rounding for 24 bit.
    ("flac", 24, 1.5e-7), ("flac", 16, 0.5 / 2**15), ("wav", 16, 0.5 / 2**15), ("wav", 24, 1.5e-7),
])
def test_writer_lossless_round_trip(tmp_path: Path, codec: str, bits: int, tolerance: float) -> None:
    signal = af.noise(duration_s=1.0, sample_rate=48000, channels=2, amplitude=0.15)
    path = tmp_path / f"out.{codec}"
    with open_writer(path, sample_rate=48000, channels=2, codec=codec, bits_per_sample=bits) as writer:
        for start in range(0, signal.shape[0], 10007):  # odd block sizes
            writer.write(signal[start : start + 10007])
    assert writer.frames_written == 48000
    decoded = _decode_all(path)
    assert decoded.shape == signal.shape
    assert np.max(np.abs(decoded - signal)) <= tolerance
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        expected_fmt = {16: "s16", 24: "s32"}[bits]
        assert stream.codec_context.format.name.startswith(expected_fmt)


@pytest.mark.parametrize(("frames", "channels", "sample_rate"), [
    (44100, 2, 44100), (12345, 1, 44100), (1000, 2, 48000), (88200 + 577, 2, 44100),
])
def test_writer_mp3_exact_length(tmp_path: Path, frames: int, channels: int, sample_rate: int) -> None:
    signal = af.tone(duration_s=frames / sample_rate, sample_rate=sample_rate, channels=channels)
    path = tmp_path / "out.mp3"
    with open_writer(path, sample_rate=sample_rate, channels=channels, codec="mp3",
                     bitrate_kbps=128) as writer:
        writer.write(signal)
    # The LAME/Xing header carries the encoder delay and padding: decoders trim them.
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.bit_rate == 128000
        decoded = sum(frame.samples for frame in container.decode(stream))
    assert decoded == frames
    assert probe(path).duration_s == pytest.approx(frames / sample_rate, abs=1e-6)


def test_writer_validates(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        open_writer(tmp_path / "a.mp3", sample_rate=96000, channels=2, codec="mp3")
    with pytest.raises(ValueError):
        open_writer(tmp_path / "a.mp3", sample_rate=44100, channels=6, codec="mp3")
    with pytest.raises(ValueError):
        open_writer(tmp_path / "a.ogg", sample_rate=44100, channels=2, codec="ogg")  # type: ignore[arg-type]
    with open_writer(tmp_path / "a.flac", sample_rate=44100, channels=2, codec="flac") as writer:
        with pytest.raises(ValueError, match=r"shape \(frames, 2\)"):
            writer.write(np.zeros((10, 1), np.float32))
        writer.write(np.zeros((10, 2), np.float32))


def test_writer_removes_partial_file_on_error(tmp_path: Path) -> None:
    path = tmp_path / "a.flac"
    with pytest.raises(RuntimeError):
        with open_writer(path, sample_rate=44100, channels=1, codec="flac") as writer:
            writer.write(np.zeros((44100, 1), np.float32))
            raise RuntimeError("boom")
    assert not path.exists()


def test_writer_clips_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    with open_writer(path, sample_rate=8000, channels=1, codec="wav", bits_per_sample=16) as writer:
        writer.write(np.full((800, 1), 1.7, np.float32))
        writer.write(np.full(800, -3.0, np.float32))  # 1-D is fine for mono
    decoded = _decode_all(path)
    assert decoded.max() == pytest.approx(1.0, abs=1e-4)
    assert decoded.min() == pytest.approx(-1.0, abs=1e-4)
