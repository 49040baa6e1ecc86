"""Streaming audio input: probe a file, decode it block by block.

Everything here works on bounded buffers: decoding yields fixed-size blocks, so memory
does not grow with the length of an episode. Encoding is :mod:`pod_audio.writer`; opening
files, WAV headers and packet-level decoding are :mod:`pod_audio.demux`.

Audio blocks are ``numpy.float32`` arrays of shape ``(frames, channels)`` with samples in
``[-1.0, 1.0]``. Decoding goes through PyAV (the FFmpeg libraries in its wheel); no
external ``ffmpeg`` binary is needed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.container
import numpy as np

from pod_audio import demux
from pod_audio.dsp import channel_layout_name
from pod_audio.errors import CorruptAudioError, TruncatedAudioError

__all__ = [
    "AudioInfo",
    "DEFAULT_BLOCK_FRAMES",
    "iter_blocks",
    "probe",
]

DEFAULT_BLOCK_FRAMES = 65536
"""Frames per block yielded by :func:`iter_blocks` unless asked otherwise (1.5 s at 44.1 kHz)."""

_TRUNCATION_TOLERANCE_S = 0.5
"""Decoded audio may fall short of the announced duration by this much (encoder priming,
rounding of container durations) before the file counts as truncated."""
_TRUNCATION_TOLERANCE_RATIO = 0.01
"""... or by this share of the announced duration, whichever is larger."""
_MAX_BAD_PACKET_RATIO = 0.01
"""Share of undecodable packets above which a stream counts as corrupt. A handful of bad
packets in a long file plays as a short glitch, as it does in any player."""

MIN_SAMPLE_RATE_HZ = 4000
MAX_SAMPLE_RATE_HZ = 768000
"""Sample rates outside these bounds come from a damaged header, not from a recording."""


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`probe` learns about a file's (first, best) audio stream.

    Attributes:
        duration_s: duration of the audio stream in seconds.
        sample_rate: samples per second per channel, in Hz.
        channels: number of channels.
        codec: codec name, e.g. ``"mp3"``, ``"flac"``, ``"aac"``, ``"pcm_s16le"``.
        container: FFmpeg's name of the container format, e.g. ``"mp3"``, ``"wav"``,
            ``"mov,mp4,m4a,3gp,3g2,mj2"``.
        bit_rate: bits per second of the audio stream (or the whole file), if known.
        notes: what was repaired on the way, for the producer (a WAV header announcing
            less audio than the file holds).
    """

    duration_s: float
    sample_rate: int
    channels: int
    codec: str
    container: str
    bit_rate: int | None
    notes: tuple[str, ...] = ()


# --------------------------------------------------------------------------- probe


def probe(path: str | os.PathLike[str], *, decode_check: bool = True) -> AudioInfo:
    """Describe the audio stream of ``path`` and check that it decodes.

    Args:
        path: any audio or video file FFmpeg can demux.
        decode_check: decode the whole audio stream (streaming, without resampling) to
            measure the true duration and to detect truncated or corrupt files. Without it
            only the headers are read, and the duration is what the container announces.

    Returns:
        The :class:`AudioInfo` of the file's best audio stream. With ``decode_check`` its
        ``duration_s`` is the duration of the decoded samples.

    Raises:
        FileNotFoundError: the path does not exist.
        EmptyFileError: the file has no bytes.
        UnsupportedFormatError: the bytes are not a container FFmpeg can read, or the
            audio codec has no decoder.
        NoAudioStreamError: the container has no audio stream (a video without sound).
        CorruptAudioError: the audio stream does not decode, or holds no samples.
        TruncatedAudioError: decoding stops well before the duration the container
            announces (a cut-off download, a WAV whose header lies).
    """
    notes: list[str] = []
    with demux.open_input(path) as container:
        stream = demux.audio_stream(container)
        ctx = stream.codec_context
        _check_sample_rate(int(ctx.sample_rate or 0))
        announced_s = demux.announced_duration_s(container, stream)
        if container.format.name == "wav":
            wav = demux.wav_layout(Path(path))
            announced_s = demux.wav_header_duration_s(Path(path)) or announced_s
            if wav is not None and wav.header_too_short:
                notes.append(
                    f"the WAV header announces {wav.header_duration_s:.1f} s, but the file "
                    f"holds {wav.file_duration_s:.1f} s of audio: all of it is used"
                )
        # Where FFmpeg only guessed the duration from the bit rate, a shorter decode is no
        # sign of truncation.
        trusted_s = None if demux.duration_is_estimate(container, Path(path)) else announced_s
        sample_rate = int(ctx.sample_rate or 0)
        channels = int(ctx.channels or 0)
        bit_rate = int(ctx.bit_rate or 0) or int(container.bit_rate or 0) or None
        codec = demux.codec_name(stream)
        container_name = container.format.name

        if decode_check or announced_s is None:
            decoded_s, sample_rate, channels = _decode_duration(
                container, stream, announced_s=trusted_s
            )
            duration_s = decoded_s
        else:
            duration_s = announced_s

    if sample_rate <= 0 or channels <= 0:
        raise CorruptAudioError("the audio stream has no sample rate or channel count")
    _check_sample_rate(sample_rate)
    if duration_s <= 0:
        raise CorruptAudioError("no audio samples")
    return AudioInfo(
        duration_s=duration_s,
        sample_rate=sample_rate,
        channels=channels,
        codec=codec,
        container=container_name,
        bit_rate=bit_rate,
        notes=tuple(notes),
    )


def _check_sample_rate(sample_rate: int) -> None:
    """A zero rate is checked by the caller (FFmpeg may learn it from the first frame)."""
    if sample_rate and not MIN_SAMPLE_RATE_HZ <= sample_rate <= MAX_SAMPLE_RATE_HZ:
        raise CorruptAudioError(
            f"the file's header gives a sample rate of {sample_rate} Hz, which no recording "
            f"has ({MIN_SAMPLE_RATE_HZ}-{MAX_SAMPLE_RATE_HZ} Hz); the header is damaged"
        )


def _decode_duration(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    *,
    announced_s: float | None,
) -> tuple[float, int, int]:
    """Decode all of ``stream`` and return ``(duration_s, sample_rate, channels)``.

    Raises :class:`CorruptAudioError` or :class:`TruncatedAudioError` as :func:`probe` says.
    """
    demux.only_stream(container, stream)
    duration_s = 0.0
    end_s = 0.0  # end of the last decoded frame on the stream's timeline
    sample_rate = int(stream.codec_context.sample_rate or 0)
    channels = int(stream.codec_context.channels or 0)
    packets = 0
    bad_packets = 0
    first_bad_s: float | None = None
    bad_at_end = False
    for result in demux.decode_tolerant(container, stream):
        packets += 1
        if isinstance(result, BaseException):
            bad_packets += 1
            bad_at_end = True
            if first_bad_s is None:
                first_bad_s = duration_s
            continue
        bad_at_end = False
        for frame in result:
            if not frame.sample_rate:
                continue
            sample_rate = int(frame.sample_rate)
            channels = len(frame.layout.channels) or channels
            frame_s = frame.samples / frame.sample_rate
            duration_s += frame_s
            if frame.pts is not None and frame.time_base is not None:
                end_s = max(end_s, float(frame.pts * frame.time_base) + frame_s)

    if duration_s <= 0:
        if bad_packets:
            raise CorruptAudioError(
                f"the audio stream cannot be decoded ({bad_packets} damaged packets, no samples)"
            )
        raise CorruptAudioError("no audio samples")

    if announced_s is not None:
        tolerance_s = max(_TRUNCATION_TOLERANCE_S, _TRUNCATION_TOLERANCE_RATIO * announced_s)
        if duration_s < announced_s - tolerance_s:
            start_s = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
            damaged_mid_stream = bad_packets > 0 and not bad_at_end
            if damaged_mid_stream or end_s - start_s >= announced_s - tolerance_s:
                # Decoding reached the end, but with holes: damaged data in the middle.
                raise CorruptAudioError(
                    f"the audio is damaged: {announced_s - duration_s:.1f} s of "
                    f"{announced_s:.1f} s cannot be decoded"
                    + (f" (from {first_bad_s:.1f} s on)" if first_bad_s is not None else "")
                )
            raise TruncatedAudioError(
                f"file is truncated at {duration_s:.1f} s of {announced_s:.1f} s"
            )
    if bad_packets and bad_packets > max(1.0, _MAX_BAD_PACKET_RATIO * max(packets, 1)):
        raise CorruptAudioError(
            f"the audio is damaged from {first_bad_s or 0.0:.1f} s on "
            f"({bad_packets} of {packets} packets cannot be decoded)"
        )
    return duration_s, sample_rate, channels


# --------------------------------------------------------------------------- decode


def iter_blocks(
    path: str | os.PathLike[str],
    *,
    sample_rate: int | None = None,
    channels: int | None = None,
    block_frames: int = DEFAULT_BLOCK_FRAMES,
    clip: bool = True,
) -> Iterator[np.ndarray]:
    """Decode ``path`` block by block.

    Args:
        path: any file :func:`probe` accepts.
        sample_rate: resample to this rate in Hz; ``None`` keeps the file's rate.
        channels: up- or downmix to this many channels (FFmpeg's standard matrix, e.g. 5.1
            to stereo folds centre and surrounds in); ``None`` keeps the file's count.
        block_frames: frames per yielded block.
        clip: clip samples to ``[-1, 1]``. Lossy decoders can overshoot full scale; a
            meter measuring peaks passes ``False`` to see the overshoot.

    Yields:
        ``float32`` arrays of shape ``(block_frames, channels)`` with samples in
        ``[-1, 1]``; the last block holds the remaining ``1..block_frames`` frames. A file
        whose length is a multiple of ``block_frames`` yields no short block.

    Raises:
        The errors of :func:`probe` that can be seen without reading the whole file up
        front: :class:`EmptyFileError`, :class:`UnsupportedFormatError`,
        :class:`NoAudioStreamError`; :class:`CorruptAudioError` if decoding fails for good
        part way (isolated damaged packets are skipped, as players do).
    """
    if block_frames <= 0:
        raise ValueError(f"block_frames must be positive, got {block_frames}")
    if sample_rate is not None and sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if channels is not None and channels <= 0:
        raise ValueError(f"channels must be positive, got {channels}")
    with demux.open_input(path) as container:
        stream = demux.audio_stream(container)
        demux.only_stream(container, stream)
        yield from _iter_stream_blocks(
            container,
            stream,
            sample_rate=sample_rate,
            channels=channels,
            block_frames=block_frames,
            clip=clip,
        )


def _iter_stream_blocks(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    *,
    sample_rate: int | None,
    channels: int | None,
    block_frames: int,
    clip: bool,
) -> Iterator[np.ndarray]:
    """Decode, resample and cut ``stream`` into blocks (see :func:`iter_blocks`)."""
    resampling = _Resampling(sample_rate=sample_rate, channels=channels)
    blocks = _BlockBuffer(block_frames, clip=clip)
    packets = 0
    bad_packets = 0
    decoded_s = 0.0
    for result in demux.decode_tolerant(container, stream):
        packets += 1
        if isinstance(result, BaseException):
            bad_packets += 1
            if bad_packets > max(8.0, _MAX_BAD_PACKET_RATIO * packets):
                raise CorruptAudioError(
                    f"the audio is damaged at {decoded_s:.1f} s "
                    f"({demux.describe_av_error(result)})"
                ) from result
            continue
        for frame in result:
            if frame.samples == 0 or not frame.sample_rate:
                continue
            decoded_s += frame.samples / frame.sample_rate
            yield from _frame_blocks(frame, resampling, blocks, decoded_s=decoded_s)

    yield from blocks.push(resampling.flush())
    tail = blocks.tail()
    if tail is not None:
        yield tail
    elif not blocks.started and bad_packets:
        raise CorruptAudioError(
            f"the audio stream cannot be decoded ({bad_packets} damaged packets)"
        )


def _frame_blocks(
    frame: av.AudioFrame, resampling: _Resampling, blocks: _BlockBuffer, *, decoded_s: float
) -> Iterator[np.ndarray]:
    """The blocks one decoded frame completes, converted to the output format."""
    if resampling.needs_restart(frame):
        yield from blocks.push(resampling.flush())
        resampling.restart(frame)
    try:
        yield from blocks.push(resampling.resample(frame))
    except av.FFmpegError as exc:
        raise CorruptAudioError(
            f"the audio cannot be converted at {decoded_s:.1f} s "
            f"({demux.describe_av_error(exc)})"
        ) from exc


def _frame_arrays(frames: list[av.AudioFrame]) -> Iterator[np.ndarray]:
    """Packed float frames as ``(samples, channels)`` arrays, empty frames left out."""
    for frame in frames:
        if frame.samples == 0:
            continue
        data = frame.to_ndarray()  # packed float: shape (1, samples * channels)
        yield data.reshape(frame.samples, -1)


class _Resampling:
    """Converts decoded frames to packed float at the output rate and channel count.

    A resampler's input format is fixed; a new one handles a stream whose layout or rate
    changes part way (rare, but legal in MP3 and ADTS), after the old one is flushed.
    """

    def __init__(self, *, sample_rate: int | None, channels: int | None) -> None:
        self._sample_rate = sample_rate
        self._channels = channels  # the first frame's count when None
        self._resampler: av.AudioResampler | None = None
        self._key: tuple[str, int] | None = None

    def needs_restart(self, frame: av.AudioFrame) -> bool:
        """Whether ``frame`` needs a new resampler (the first frame, or a format change)."""
        return self._resampler is None or self._key != (frame.layout.name, int(frame.sample_rate))

    def restart(self, frame: av.AudioFrame) -> None:
        """Start a resampler for ``frame``'s layout and rate."""
        if self._channels is None:
            self._channels = len(frame.layout.channels)
        self._resampler = av.AudioResampler(
            format="flt",
            layout=channel_layout_name(self._channels),
            rate=int(self._sample_rate or frame.sample_rate),
        )
        self._key = (frame.layout.name, int(frame.sample_rate))

    def resample(self, frame: av.AudioFrame) -> Iterator[np.ndarray]:
        """``frame`` converted; raises :class:`av.FFmpegError` if it cannot be."""
        assert self._resampler is not None
        return _frame_arrays(self._resampler.resample(frame))

    def flush(self) -> Iterator[np.ndarray]:
        """What the current resampler still holds (nothing before the first frame)."""
        if self._resampler is None:
            return iter(())
        return _frame_arrays(self._resampler.resample(None))


class _BlockBuffer:
    """Cuts arrays of any length into ``(block_frames, channels)`` blocks, clipped to
    ``[-1, 1]`` if asked. Every block handed out is a fresh array."""

    def __init__(self, block_frames: int, *, clip: bool) -> None:
        self._block_frames = block_frames
        self._clip = clip
        self._buffer: np.ndarray | None = None
        self._filled = 0

    @property
    def started(self) -> bool:
        """Whether any audio came in."""
        return self._buffer is not None

    def push(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Take ``chunks`` in; yields every block they complete."""
        for chunk in chunks:
            if self._buffer is None:
                self._buffer = np.empty((self._block_frames, chunk.shape[1]), dtype=np.float32)
            pos = 0
            while pos < chunk.shape[0]:
                take = min(self._block_frames - self._filled, chunk.shape[0] - pos)
                self._buffer[self._filled : self._filled + take] = chunk[pos : pos + take]
                self._filled += take
                pos += take
                if self._filled == self._block_frames:
                    if self._clip:
                        np.clip(self._buffer, -1.0, 1.0, out=self._buffer)
                    yield self._buffer
                    self._buffer = np.empty_like(self._buffer)
                    self._filled = 0

    def tail(self) -> np.ndarray | None:
        """The last, short block, or ``None`` if nothing is left over."""
        if self._buffer is None or not self._filled:
            return None
        tail = self._buffer[: self._filled]
        if self._clip:
            np.clip(tail, -1.0, 1.0, out=tail)
        return tail
