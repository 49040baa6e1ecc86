"""Synthesize test audio: signals, encoded files of any format, broken files, a baseline meter.

Signals are ``float32`` arrays of shape ``(frames, channels)`` in ``[-1, 1]``; every
generator is deterministic for a given ``seed``:

- :func:`tone`, :func:`noise`, :func:`silence`, :func:`speech_like` (band-limited noise,
  amplitude-modulated at syllable rate, with pauses), :func:`concat`;
- :func:`read_audio`: a real recording (say :func:`jfk_path`) decoded, resampled and
  remixed, to make a phone call or a multichannel studio file from real speech;
  :func:`spread_channels`: one signal on ``n`` channels at different gains;
- :func:`long_blocks`: hours of audio as a stream of blocks (steady noise at a level, with
  signals placed at given times), for files no test should hold in memory.

Files are written with PyAV (the FFmpeg libraries in its wheel), no external binary:

- :func:`write_audio` encodes a signal (or an iterable of blocks, for long files) by file
  suffix, see :data:`FORMATS`: ``.wav`` (PCM 16 bit, or 24/32 bit/float), ``.flac``,
  ``.mp3``, ``.m4a``/``.mp4`` (AAC), ``.ogg``/``.opus`` (Opus), ``.aiff``;
- :func:`write_video`: an MP4/MKV video with or without an audio track;
- broken inputs: :func:`write_zero_byte`, :func:`write_text_as_audio`,
  :func:`write_truncated` (cut-off copy of a file), :func:`write_corrupted` (payload
  overwritten), :func:`write_lying_wav` (header announces more or less than the file
  holds, or another sample rate).

:func:`ffmpeg_ebur128` runs the system ``ffmpeg`` (Debian package) as an independent
loudness/true-peak reference; check :func:`has_ffmpeg` first. :func:`jfk_path` is the
real-speech sample shipped in ``samples/``.

Typical use::

    path = write_audio(tmp_path / "a.m4a", speech_like(duration_s=3.0, sample_rate=48000,
                       channels=2), sample_rate=48000)
    bad = write_truncated(tmp_path / "cut.mp3", source=path_of_mp3, keep_ratio=0.3)
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pod_audio.dsp import channel_layout_name

__all__ = [
    "FORMATS",
    "FileFormat",
    "REPO",
    "jfk_path",
    "noise",
    "silence",
    "speech_like",
    "tone",
    "concat",
    "long_blocks",
    "read_audio",
    "spread_channels",
    "write_audio",
    "write_lying_wav",
    "write_text_as_audio",
    "write_truncated",
    "write_corrupted",
    "write_video",
    "write_zero_byte",
    "Ebur128",
    "ffmpeg_ebur128",
    "has_ffmpeg",
]

# --------------------------------------------------------------------------- fixtures


REPO = Path(__file__).resolve().parents[1]


def jfk_path() -> Path:
    """11 s of real, public-domain speech (1961 inaugural), 44.1 kHz stereo, 24 bit, shipped
    in ``samples/``."""
    return REPO / "samples" / "jfk-inaugural-excerpt.flac"


def jfk_16k() -> np.ndarray:
    """The JFK sample as the transcript step reads it: 16 kHz mono float samples, decoded and
    resampled block by block by :func:`pod_audio.io.iter_blocks`."""
    from pod_audio.io import iter_blocks

    return np.concatenate([b[:, 0] for b in iter_blocks(jfk_path(), sample_rate=16000, channels=1)])


# --------------------------------------------------------------------------- signals


def _as_channels(mono: np.ndarray, channels: int) -> np.ndarray:
    return np.repeat(mono[:, np.newaxis], channels, axis=1).astype(np.float32)


def _frames(duration_s: float, sample_rate: int) -> int:
    return int(round(duration_s * sample_rate))


def tone(
    *,
    duration_s: float,
    sample_rate: int = 44100,
    channels: int = 1,
    freq_hz: float = 1000.0,
    amplitude: float = 0.5,
    phase_step_per_channel: float = 0.0,
) -> np.ndarray:
    """Sine tone, shape ``(frames, channels)``; peak ``amplitude`` (linear, 0..1).

    ``phase_step_per_channel`` shifts each channel's phase by that many radians, to make
    channels differ.
    """
    t = np.arange(_frames(duration_s, sample_rate)) / sample_rate
    cols = [
        amplitude * np.sin(2 * np.pi * freq_hz * t + ch * phase_step_per_channel)
        for ch in range(channels)
    ]
    return np.stack(cols, axis=1).astype(np.float32)


def noise(
    *,
    duration_s: float,
    sample_rate: int = 44100,
    channels: int = 1,
    amplitude: float = 0.1,
    seed: int = 0,
    correlated: bool = False,
) -> np.ndarray:
    """Gaussian white noise with RMS ``amplitude`` clipped to [-1, 1], shape ``(frames, channels)``.

    ``correlated=True`` puts the same noise in every channel.
    """
    rng = np.random.default_rng(seed)
    frames = _frames(duration_s, sample_rate)
    if correlated:
        data = _as_channels(rng.standard_normal(frames), channels)
    else:
        data = rng.standard_normal((frames, channels))
    return np.clip(data * amplitude, -1.0, 1.0).astype(np.float32)


def tune(
    *,
    duration_s: float,
    sample_rate: int = 44100,
    note_s: float = 0.5,
    legato: bool = False,
    chord: bool = True,
    amplitude: float = 0.25,
) -> np.ndarray:
    """A tune, shape ``(frames, 1)``: a C-major scale of notes (``note_s`` each, a 50 ms
    rest after each unless ``legato``) with two overtones, over a held A-major chord.
    Every note is a steady voiced-looking sound, as a held "hmm" is."""
    t = np.arange(_frames(duration_s, sample_rate)) / sample_rate
    scale = (262.0, 294.0, 330.0, 349.0, 392.0, 440.0, 494.0, 523.0)
    out = np.zeros_like(t)
    step = round(note_s * sample_rate)
    sounding = step if legato else step - round(0.05 * sample_rate)
    for i, start in enumerate(range(0, len(t), step)):
        span = slice(start, min(start + sounding, len(t)))
        f = scale[i % len(scale)]
        out[span] = sum(g * np.sin(2 * np.pi * k * f * t[span]) for k, g in ((1, 1.0), (2, 0.5), (3, 0.3)))
    if chord:
        out += 0.3 * sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.0, 330.0))
    return (amplitude * out / max(1e-9, float(np.abs(out).max())))[:, None].astype(np.float32)


def silence(*, duration_s: float, sample_rate: int = 44100, channels: int = 1) -> np.ndarray:
    """Digital silence, shape ``(frames, channels)``."""
    return np.zeros((_frames(duration_s, sample_rate), channels), dtype=np.float32)


def speech_like(
    *,
    duration_s: float,
    sample_rate: int = 44100,
    channels: int = 1,
    level_dbfs: float = -20.0,
    syllable_hz: float = 4.0,
    pause_every_s: float | None = 2.5,
    pause_s: float = 0.4,
    seed: int = 0,
) -> np.ndarray:
    """Noise shaped like speech: band-limited, amplitude-modulated at syllable rate, with pauses.

    Pink-ish noise (energy falling above ~500 Hz) times a raised-sine syllable envelope
    with random depth, silenced for ``pause_s`` every ``pause_every_s`` seconds. The RMS of
    the voiced parts is about ``level_dbfs``. Shape ``(frames, channels)``; all channels
    carry the same signal.
    """
    rng = np.random.default_rng(seed)
    frames = _frames(duration_s, sample_rate)
    white = rng.standard_normal(frames)
    # One-pole low-pass twice: crude speech spectrum tilt.
    from scipy.signal import lfilter

    alpha = float(np.exp(-2 * np.pi * 800.0 / sample_rate))
    shaped = lfilter([1 - alpha], [1, -alpha], white)
    shaped = lfilter([1 - alpha], [1, -alpha], shaped)
    shaped += 0.05 * white  # some fricative energy
    t = np.arange(frames) / sample_rate
    jitter = rng.uniform(0.0, 2 * np.pi)
    envelope = 0.5 * (1 - np.cos(2 * np.pi * syllable_hz * t + jitter))
    depth = np.repeat(
        rng.uniform(0.3, 1.0, int(duration_s * syllable_hz) + 2),
        int(np.ceil(sample_rate / syllable_hz)),
    )[:frames]
    signal = shaped * envelope * depth
    if pause_every_s:
        pause_mask = (t % pause_every_s) > (pause_every_s - pause_s)
        signal[pause_mask] = 0.0
    voiced = signal[np.abs(signal) > 0]
    rms = float(np.sqrt(np.mean(voiced**2))) if voiced.size else 1.0
    signal *= 10 ** (level_dbfs / 20) / max(rms, 1e-12)
    return _as_channels(np.clip(signal, -1.0, 1.0), channels)


def concat(*parts: np.ndarray) -> np.ndarray:
    """Join signals of equal channel count end to end."""
    return np.concatenate(parts, axis=0).astype(np.float32)


def read_audio(
    path: str | os.PathLike[str], *, sample_rate: int, channels: int = 1
) -> np.ndarray:
    """Decode a file to float32 ``(frames, channels)``, resampled and up/downmixed by FFmpeg."""
    parts: list[np.ndarray] = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout=channel_layout_name(channels), rate=sample_rate)
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(-1, channels))
        for out in resampler.resample(None):
            parts.append(out.to_ndarray().reshape(-1, channels))
    return np.concatenate(parts).astype(np.float32)


def spread_channels(signal: np.ndarray, gains_db: Iterable[float]) -> np.ndarray:
    """Mono ``signal`` on one channel per gain (dB), e.g. six microphones at their levels."""
    mono = signal[:, 0] if signal.ndim == 2 else signal
    gains = 10.0 ** (np.asarray(list(gains_db), dtype=np.float64) / 20.0)
    return (mono[:, np.newaxis] * gains[np.newaxis, :]).astype(np.float32)


def long_blocks(
    *,
    duration_s: float,
    sample_rate: int,
    level_dbfs: float,
    inserts: dict[float, np.ndarray] | None = None,
    block_s: float = 60.0,
    seed: int = 0,
) -> Iterable[np.ndarray]:
    """Mono white noise at RMS ``level_dbfs`` for ``duration_s``, with each signal of
    ``inserts`` (``{start_s: mono signal}``, at ``sample_rate``) added at its time; yields
    blocks of ``block_s`` so hours of audio never sit in memory.

    At -20 dBFS this is 30 minutes of white noise; at -80 dBFS with speech inserted, a long
    recording that is mostly room tone.
    """
    rng = np.random.default_rng(seed)
    total = _frames(duration_s, sample_rate)
    step = max(1, _frames(block_s, sample_rate))
    amplitude = 10 ** (level_dbfs / 20)
    placed = sorted((_frames(t, sample_rate), np.asarray(sig).reshape(-1)) for t, sig in (inserts or {}).items())
    for start in range(0, total, step):
        end = min(total, start + step)
        block = rng.standard_normal(end - start).astype(np.float32) * np.float32(amplitude)
        for at, sig in placed:
            lo, hi = max(start, at), min(end, at + len(sig))
            if lo < hi:
                block[lo - start : hi - start] += sig[lo - at : hi - at]
        yield np.clip(block, -1.0, 1.0)[:, np.newaxis]


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class FileFormat:
    """How :func:`write_audio` encodes a file suffix: FFmpeg muxer, encoder, sample format."""

    muxer: str
    encoder: str
    sample_fmt: str
    fixed_rates_hz: tuple[int, ...] | None = None
    max_channels: int | None = None


FORMATS: dict[str, FileFormat] = {
    ".wav": FileFormat("wav", "pcm_s16le", "s16"),
    ".flac": FileFormat("flac", "flac", "s16"),
    ".mp3": FileFormat(
        "mp3", "libmp3lame", "fltp",
        fixed_rates_hz=(8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
        max_channels=2,
    ),
    ".m4a": FileFormat("ipod", "aac", "fltp"),
    ".mp4": FileFormat("mp4", "aac", "fltp"),
    ".ogg": FileFormat("ogg", "libopus", "flt", fixed_rates_hz=(8000, 12000, 16000, 24000, 48000)),
    ".opus": FileFormat("opus", "libopus", "flt", fixed_rates_hz=(8000, 12000, 16000, 24000, 48000)),
    ".aiff": FileFormat("aiff", "pcm_s16be", "s16"),
}
"""Suffix -> encoding used by :func:`write_audio`. Opus only takes its own rates (FFmpeg
would refuse 44.1 kHz); Opus and Ogg decoders still report 48 kHz for them."""

_PCM_ENCODERS = {
    ("wav", "s16"): ("pcm_s16le", "s16"),
    ("wav", "s24"): ("pcm_s24le", "s32"),
    ("wav", "s32"): ("pcm_s32le", "s32"),
    ("wav", "flt"): ("pcm_f32le", "flt"),
    ("flac", "s16"): ("flac", "s16"),
    ("flac", "s24"): ("flac", "s32"),
}


def _to_sample_fmt(block: np.ndarray, sample_fmt: str) -> np.ndarray:
    """``(frames, channels)`` float -> the array layout PyAV's ``from_ndarray`` wants."""
    clipped = np.clip(block, -1.0, 1.0)
    planar = sample_fmt.endswith("p")
    base = sample_fmt.rstrip("p")
    if base == "flt":
        arr = clipped.astype(np.float32)
    elif base == "s16":  # full scale 2**15 as in FFmpeg; +1.0 saturates
        arr = np.clip(np.round(clipped * 32768), -32768, 32767).astype(np.int16)
    elif base == "s32":  # 24 significant bits
        arr = np.clip(np.round(clipped.astype(np.float64) * 8388608), -8388608, 8388607)
        arr = arr.astype(np.int32) << 8
    else:
        raise ValueError(f"unsupported sample format {sample_fmt}")
    if planar:
        return np.ascontiguousarray(arr.T)
    return arr.reshape(1, -1)


def write_audio(
    path: str | os.PathLike[str],
    signal: np.ndarray | Iterable[np.ndarray],
    *,
    sample_rate: int,
    bits: int | str | None = None,
    bitrate_kbps: int | None = None,
    block_frames: int = 16384,
) -> Path:
    """Encode ``signal`` to ``path``; the format follows the suffix (see :data:`FORMATS`).

    Args:
        signal: one ``(frames, channels)`` float array, or an iterable of such blocks (for
            long files without holding them in memory).
        sample_rate: Hz of ``signal``; must be one the format accepts.
        bits: for ``.wav``: 16, 24, 32 or ``"float"``; for ``.flac``: 16 or 24.
        bitrate_kbps: for lossy formats.
    Returns:
        ``path`` as a :class:`Path`.
    """
    path = Path(path)
    spec = FORMATS[path.suffix.lower()]
    encoder, sample_fmt = spec.encoder, spec.sample_fmt
    if bits is not None:
        key = {16: "s16", 24: "s24", 32: "s32", "float": "flt"}[bits]
        encoder, sample_fmt = _PCM_ENCODERS[(spec.muxer, key)]
    if spec.fixed_rates_hz and sample_rate not in spec.fixed_rates_hz:
        raise ValueError(f"{path.suffix} cannot hold {sample_rate} Hz")
    blocks = [signal] if isinstance(signal, np.ndarray) else signal

    with av.open(str(path), mode="w", format=spec.muxer) as container:
        stream = None
        written = 0
        for big in blocks:
            if big.ndim == 1:
                big = big[:, np.newaxis]
            if stream is None:
                channels = big.shape[1]
                if spec.max_channels and channels > spec.max_channels:
                    raise ValueError(f"{path.suffix} holds at most {spec.max_channels} channels")
                stream = container.add_stream(encoder, rate=sample_rate, layout=channel_layout_name(channels))
                stream.codec_context.format = sample_fmt
                if bitrate_kbps:
                    stream.codec_context.bit_rate = bitrate_kbps * 1000
            for start in range(0, big.shape[0], block_frames):
                block = big[start : start + block_frames]
                frame = av.AudioFrame.from_ndarray(
                    _to_sample_fmt(block, sample_fmt), format=sample_fmt, layout=channel_layout_name(block.shape[1])
                )
                frame.sample_rate = sample_rate
                frame.pts = written
                frame.time_base = Fraction(1, sample_rate)
                written += block.shape[0]
                for packet in stream.encode(frame):
                    container.mux(packet)
        if stream is None:
            raise ValueError("signal is empty")
        for packet in stream.encode(None):
            container.mux(packet)
    return path


# --------------------------------------------------------------------------- broken files


def write_zero_byte(path: str | os.PathLike[str]) -> Path:
    """An empty file."""
    path = Path(path)
    path.write_bytes(b"")
    return path


def write_text_as_audio(path: str | os.PathLike[str], text: str | None = None) -> Path:
    """A text file under an audio name (``notes.mp3``): what a wrong upload looks like."""
    path = Path(path)
    body = text or (
        "Episode 12 show notes\n\nThanks to our sponsors. Links:\n"
        + "".join(f"- https://example.com/link/{i}\n" for i in range(40))
    )
    path.write_text(body, encoding="utf-8")
    return path


def write_truncated(
    path: str | os.PathLike[str], *, source: str | os.PathLike[str], keep_ratio: float
) -> Path:
    """Copy the first ``keep_ratio`` (0..1) of ``source``'s bytes: a cut-off upload.

    The container headers (WAV sizes, MP3 Xing frame count) still announce the full length.
    """
    data = Path(source).read_bytes()
    path = Path(path)
    path.write_bytes(data[: max(1, int(len(data) * keep_ratio))])
    return path


def write_corrupted(
    path: str | os.PathLike[str],
    *,
    source: str | os.PathLike[str],
    start_ratio: float = 0.3,
    length_ratio: float = 0.4,
    seed: int = 0,
) -> Path:
    """Copy ``source`` with the byte range ``[start_ratio, start_ratio + length_ratio)`` of
    its size overwritten by random bytes (headers intact, payload damaged)."""
    data = bytearray(Path(source).read_bytes())
    start = int(len(data) * start_ratio)
    length = int(len(data) * length_ratio)
    rng = np.random.default_rng(seed)
    data[start : start + length] = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
    path = Path(path)
    path.write_bytes(bytes(data))
    return path


def write_lying_wav(
    path: str | os.PathLike[str],
    signal: np.ndarray,
    *,
    sample_rate: int,
    claimed_duration_s: float | None = None,
    claimed_sample_rate: int | None = None,
) -> Path:
    """A 16-bit PCM WAV whose header lies about ``signal``.

    ``claimed_duration_s``: the RIFF and data sizes announce this duration while the file
    holds ``signal`` (longer: a header written before a recording was cut short; shorter: a
    header never updated after the recording grew). ``claimed_sample_rate``: the ``fmt ``
    chunk gives this rate (and the matching byte rate) for samples taken at ``sample_rate``.
    """
    if signal.ndim == 1:
        signal = signal[:, np.newaxis]
    channels = signal.shape[1]
    pcm = np.clip(np.round(signal * 32768), -32768, 32767).astype("<i2").tobytes()
    block_align = 2 * channels
    rate = sample_rate if claimed_sample_rate is None else claimed_sample_rate
    claimed_bytes = (
        len(pcm) if claimed_duration_s is None else int(claimed_duration_s * sample_rate) * block_align
    )
    header = b"RIFF" + struct.pack("<I", 36 + claimed_bytes) + b"WAVE"
    header += b"fmt " + struct.pack(
        "<IHHIIHH", 16, 1, channels, rate, rate * block_align, block_align, 16
    )
    header += b"data" + struct.pack("<I", claimed_bytes)
    path = Path(path)
    path.write_bytes(header + pcm)
    return path


def write_video(
    path: str | os.PathLike[str],
    *,
    duration_s: float = 1.0,
    fps: int = 10,
    size: tuple[int, int] = (64, 48),
    audio: np.ndarray | None = None,
    sample_rate: int = 44100,
) -> Path:
    """An MP4 (``.mp4``) or Matroska (``.mkv``) video of moving gradients, with an AAC
    audio track if ``audio`` (``(frames, channels)`` float) is given, else none."""
    path = Path(path)
    width, height = size
    with av.open(str(path), mode="w") as container:
        vstream = container.add_stream("mpeg4", rate=fps)
        vstream.width, vstream.height = width, height
        vstream.pix_fmt = "yuv420p"
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=sample_rate, layout=channel_layout_name(audio.shape[1]))
        frames = max(1, int(round(duration_s * fps)))
        yy, xx = np.mgrid[0:height, 0:width]
        for i in range(frames):
            img = np.stack(
                [(xx * 4 + i * 8) % 256, (yy * 4) % 256, np.full_like(xx, (i * 20) % 256)], axis=2
            ).astype(np.uint8)
            vframe = av.VideoFrame.from_ndarray(img, format="rgb24")
            vframe.pts = i
            vframe.time_base = Fraction(1, fps)
            for packet in vstream.encode(vframe):
                container.mux(packet)
        for packet in vstream.encode(None):
            container.mux(packet)
        if astream is not None and audio is not None:
            written = 0
            for start in range(0, audio.shape[0], 4096):
                block = audio[start : start + 4096]
                aframe = av.AudioFrame.from_ndarray(
                    _to_sample_fmt(block, "fltp"), format="fltp", layout=channel_layout_name(block.shape[1])
                )
                aframe.sample_rate = sample_rate
                aframe.pts = written
                aframe.time_base = Fraction(1, sample_rate)
                written += block.shape[0]
                for packet in astream.encode(aframe):
                    container.mux(packet)
            for packet in astream.encode(None):
                container.mux(packet)
    return path


# --------------------------------------------------------------------------- ffmpeg baseline


def has_ffmpeg() -> bool:
    """Whether the system ``ffmpeg`` binary (the measurement baseline) is on PATH."""
    return shutil.which("ffmpeg") is not None


@dataclass(frozen=True)
class Ebur128:
    """What ffmpeg's ``ebur128`` filter measures for a file.

    ``integrated_lufs`` and ``true_peak_dbtp`` come from the filter's per-frame metadata
    (three decimals; the last frame carries the values over the whole file when its length
    is a multiple of 100 ms); ``summary_*`` are the one-decimal values of its summary.
    ffmpeg resamples the input to 48 kHz for this filter and oversamples that to 192 kHz
    for the true peak.
    """

    integrated_lufs: float
    true_peak_dbtp: float
    summary_integrated_lufs: float
    summary_true_peak_dbtp: float


def ffmpeg_ebur128(path: str | os.PathLike[str]) -> Ebur128:
    """Run the system ``ffmpeg -af ebur128=peak=true`` on ``path`` and parse its results."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        meta_path = Path(tmp) / "meta.txt"
        proc = subprocess.run(
            ["ffmpeg", "-nostats", "-hide_banner", "-nostdin", "-i", str(path), "-af",
             f"ebur128=peak=true:metadata=1,ametadata=mode=print:file={meta_path}",
             "-f", "null", "-"],
            capture_output=True, text=True, check=True, timeout=120,
        )
        meta = meta_path.read_text()
    last: dict[str, str] = {}
    for line in meta.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("lavfi.r128."):
            last[key.removeprefix("lavfi.r128.")] = value
    summary = proc.stderr[proc.stderr.rfind("Summary:"):]
    summary_i = summary_peak = None
    for line in summary.splitlines():
        line = line.strip()
        if line.startswith("I:"):
            summary_i = float(line.split()[1])
        elif line.startswith("Peak:"):
            summary_peak = float(line.split()[1])
    if summary_i is None or summary_peak is None or "I" not in last:
        raise RuntimeError(f"cannot parse ebur128 output:\n{summary}")
    peak_linear = float(last["true_peak"])
    return Ebur128(
        integrated_lufs=float(last["I"]),
        true_peak_dbtp=20 * np.log10(peak_linear) if peak_linear > 0 else float("-inf"),
        summary_integrated_lufs=summary_i,
        summary_true_peak_dbtp=summary_peak,
    )
