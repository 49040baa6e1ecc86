"""Streaming audio input and output: probe, decode block by block, encode block by block.

Everything here works on bounded buffers: decoding yields fixed-size blocks, encoding
accepts blocks of any size, so memory does not grow with the length of an episode.

Audio blocks are ``numpy.float32`` arrays of shape ``(frames, channels)`` with samples in
``[-1.0, 1.0]``. Decoding and encoding go through PyAV (the FFmpeg libraries in its wheel);
no external ``ffmpeg`` binary is needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Literal

import av
import av.container
import numpy as np
from av.stream import Discard

from pod_audio.errors import (
    AudioError,
    CorruptAudioError,
    EmptyFileError,
    NoAudioStreamError,
    TruncatedAudioError,
    UnsupportedFormatError,
)

__all__ = [
    "AudioInfo",
    "AudioWriter",
    "DEFAULT_BLOCK_FRAMES",
    "WriterCodec",
    "iter_blocks",
    "open_writer",
    "probe",
]

DEFAULT_BLOCK_FRAMES = 65536
"""Frames per block yielded by :func:`iter_blocks` unless asked otherwise (1.5 s at 44.1 kHz)."""

WriterCodec = Literal["flac", "mp3", "wav"]

_TRUNCATION_TOLERANCE_S = 0.5
"""Decoded audio may fall short of the announced duration by this much (encoder priming,
rounding of container durations) before the file counts as truncated."""
_TRUNCATION_TOLERANCE_RATIO = 0.01
"""... or by this share of the announced duration, whichever is larger."""
_MAX_BAD_PACKET_RATIO = 0.01
"""Share of undecodable packets above which a stream counts as corrupt. A handful of bad
packets in a long file plays as a short glitch, as it does in any player."""

_ESTIMATED_DURATION_FORMATS = frozenset({"aac", "ac3", "eac3", "dts", "mp2", "adts"})
"""Raw elementary-stream formats whose duration FFmpeg can only estimate from the bit rate."""

MIN_SAMPLE_RATE_HZ = 4000
MAX_SAMPLE_RATE_HZ = 768000
"""Sample rates outside these bounds come from a damaged header, not from a recording."""

_MP3_SAMPLE_RATES_HZ = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})

# Decoder names that differ from the codec's usual name.
_CODEC_NAMES = {
    "mp3float": "mp3",
    "mp2float": "mp2",
    "aac_fixed": "aac",
    "libopus": "opus",
    "libvorbis": "vorbis",
    "ac3_fixed": "ac3",
}


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


# --------------------------------------------------------------------------- opening


def _open_input(path: str | os.PathLike[str]) -> av.container.InputContainer:
    """Open ``path`` for demuxing, turning FFmpeg's failures into producer-readable errors.

    Raises:
        FileNotFoundError: the path does not exist.
        EmptyFileError: the file has no bytes.
        UnsupportedFormatError: FFmpeg recognises no container in the bytes.
    """
    file_path = Path(path)
    size_bytes = file_path.stat().st_size  # FileNotFoundError for a missing path
    if size_bytes == 0:
        raise EmptyFileError("file is empty")
    options: dict[str, str] = {}
    layout = _wav_layout(file_path) if _is_wav(file_path) else None
    if layout is not None and layout.header_too_short:
        # The audio goes on past what the header announces: decode all of it, as a
        # player that trusts the file's length does (FFmpeg's wav ``ignore_length``).
        options["ignore_length"] = "1"
    try:
        return av.open(str(file_path), mode="r", options=options)
    except av.error.FileNotFoundError:
        raise FileNotFoundError(str(file_path)) from None
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        with file_path.open("rb") as fh:
            kind = _sniff_container(fh.read(16))
        if kind == "WAV" and layout is not None and not (layout.sample_rate and layout.block_align):
            raise CorruptAudioError(
                "the WAV header is damaged: it gives a sample rate of "
                f"{layout.sample_rate} Hz and {layout.block_align} bytes per sample frame"
            ) from exc
        if kind is not None:
            raise CorruptAudioError(
                f"the file looks like {kind} but cannot be read; it is probably truncated "
                f"or damaged ({_describe_av_error(exc)})"
            ) from exc
        raise UnsupportedFormatError(
            f"not an audio or video file we can read ({_describe_av_error(exc)})"
        ) from exc


def _is_wav(path: Path) -> bool:
    with path.open("rb") as fh:
        return _sniff_container(fh.read(16)) == "WAV"


def _sniff_container(head: bytes) -> str | None:
    """Name of the container the first bytes of a file announce, if a known one."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "WAV"
    if head[:4] == b"fLaC":
        return "FLAC"
    if head[:4] == b"OggS":
        return "Ogg"
    if head[4:8] == b"ftyp":
        return "MP4/M4A"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "Matroska/WebM"
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "MP3"
    return None


@dataclass(frozen=True)
class _WavLayout:
    """Where a WAV's ``fmt `` and ``data`` chunks say the audio is."""

    sample_rate: int
    block_align: int
    data_offset: int
    data_size: int | None
    """Bytes the data chunk announces; ``None`` for a streaming WAV (size 0 or 0xFFFFFFFF)."""
    file_size: int
    tail_is_chunks: bool
    """Whether the bytes after the announced data parse as RIFF chunks (``LIST``, ``id3 ``…)."""

    @property
    def header_duration_s(self) -> float | None:
        if self.data_size is None or not self.block_align or not self.sample_rate:
            return None
        return self.data_size / self.block_align / self.sample_rate

    @property
    def file_duration_s(self) -> float | None:
        """Duration of everything from the data chunk's start to the end of the file."""
        if not self.block_align or not self.sample_rate:
            return None
        return (self.file_size - self.data_offset) // self.block_align / self.sample_rate

    @property
    def header_too_short(self) -> bool:
        """The data chunk announces less than the file holds, and what follows is not
        another chunk: a header that was never updated after the recording grew."""
        if self.data_size is None or self.tail_is_chunks or not self.block_align:
            return False
        unannounced = self.file_size - self.data_offset - self.data_size
        return unannounced >= max(self.block_align, self.sample_rate * self.block_align // 10)


def _wav_layout(path: Path) -> _WavLayout | None:
    """Read a WAV's RIFF chunks up to the data chunk; ``None`` for RF64 or a header it
    cannot follow."""
    file_size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = sample_rate = 0
        for _ in range(64):
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            chunk_id, size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if chunk_id == b"fmt ":
                fmt = fh.read(size + (size & 1))
                if len(fmt) < 16:
                    return None
                sample_rate = int.from_bytes(fmt[4:8], "little")
                block_align = int.from_bytes(fmt[12:14], "little")
            elif chunk_id == b"data":
                offset = fh.tell()
                if size in (0, 0xFFFFFFFF):
                    return _WavLayout(sample_rate, block_align, offset, None, file_size, True)
                end = offset + size + (size & 1)
                return _WavLayout(
                    sample_rate, block_align, offset, size, file_size,
                    tail_is_chunks=end >= file_size or _are_chunks(fh, end, file_size),
                )
            else:
                fh.seek(size + (size & 1), os.SEEK_CUR)
    return None


def _are_chunks(fh, start: int, file_size: int) -> bool:
    """Whether ``[start, file_size)`` is a sequence of RIFF chunks with printable ids."""
    pos = start
    for _ in range(64):
        if pos >= file_size - 1:  # at most one pad byte left
            return True
        fh.seek(pos)
        chunk = fh.read(8)
        if len(chunk) < 8 or not all(0x20 <= byte < 0x7F for byte in chunk[:4]):
            return False
        size = int.from_bytes(chunk[4:], "little")
        pos += 8 + size + (size & 1)
        if pos > file_size + 1:
            return False
    return False


def _wav_header_duration_s(path: Path) -> float | None:
    """Duration the RIFF header of a WAV file announces (data chunk size), in seconds.

    FFmpeg clamps a WAV's duration to the bytes present, which hides a header that
    announces more audio than the file holds; this reads the header itself. ``None`` for
    streaming WAVs (size 0 or 0xFFFFFFFF), RF64, or a header it cannot follow. For a header
    that announces *less* than the file holds (see :attr:`_WavLayout.header_too_short`) the
    whole file is decoded, so that is the duration announced.
    """
    layout = _wav_layout(path)
    if layout is None:
        return None
    if layout.header_too_short:
        return layout.file_duration_s
    return layout.header_duration_s


def _duration_is_estimate(container: av.container.InputContainer, path: Path) -> bool:
    """Whether FFmpeg estimated the duration from the bit rate rather than read it."""
    name = container.format.name
    if name in _ESTIMATED_DURATION_FORMATS:
        return True
    return name == "mp3" and not _mp3_has_length_header(path)


def _mp3_has_length_header(path: Path) -> bool:
    """Whether an MP3's first frame carries a Xing/Info or VBRI header (frame count)."""
    with path.open("rb") as fh:
        head = fh.read(10)
        offset = 0
        if head[:3] == b"ID3" and len(head) == 10:
            size = 0
            for byte in head[6:10]:  # syncsafe integer
                size = (size << 7) | (byte & 0x7F)
            offset = 10 + size + (10 if head[5] & 0x10 else 0)  # footer flag
        fh.seek(offset)
        first = fh.read(4096)
    return any(tag in first for tag in (b"Xing", b"Info", b"VBRI"))


def _describe_av_error(exc: BaseException) -> str:
    """A short reason from an FFmpeg error, without the file path PyAV appends."""
    strerror = getattr(exc, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror.lower()
    return str(exc) or type(exc).__name__


def _audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream:
    """The audio stream FFmpeg would pick (its "best" stream), or :class:`NoAudioStreamError`."""
    if not container.streams.audio:
        kinds = sorted({stream.type for stream in container.streams})
        what = f"the file holds only {', '.join(kinds)}" if kinds else "the file holds no streams"
        raise NoAudioStreamError(f"no audio stream ({what})")
    try:
        best = container.streams.best("audio")
    except (AttributeError, av.FFmpegError):
        best = None
    return best if best is not None else container.streams.audio[0]


def _only_stream(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream
) -> None:
    """Let the demuxer drop packets of every other stream; decode with threads if it can."""
    stream.thread_type = "AUTO"
    for other in container.streams:
        if other.index != stream.index:
            other.discard = Discard.all


def _codec_name(stream: av.audio.stream.AudioStream) -> str:
    name = stream.codec_context.codec.name
    return _CODEC_NAMES.get(name, name)


def _announced_duration_s(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream
) -> float | None:
    """Duration the container's headers announce for ``stream``, in seconds, if any."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


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
    with _open_input(path) as container:
        stream = _audio_stream(container)
        ctx = stream.codec_context
        _check_sample_rate(int(ctx.sample_rate or 0))
        announced_s = _announced_duration_s(container, stream)
        if container.format.name == "wav":
            wav = _wav_layout(Path(path))
            announced_s = _wav_header_duration_s(Path(path)) or announced_s
            if wav is not None and wav.header_too_short:
                notes.append(
                    f"the WAV header announces {wav.header_duration_s:.1f} s, but the file "
                    f"holds {wav.file_duration_s:.1f} s of audio: all of it is used"
                )
        # Where FFmpeg only guessed the duration from the bit rate, a shorter decode is no
        # sign of truncation.
        trusted_s = None if _duration_is_estimate(container, Path(path)) else announced_s
        sample_rate = int(ctx.sample_rate or 0)
        channels = int(ctx.channels or 0)
        bit_rate = int(ctx.bit_rate or 0) or int(container.bit_rate or 0) or None
        codec = _codec_name(stream)
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
    _only_stream(container, stream)
    duration_s = 0.0
    end_s = 0.0  # end of the last decoded frame on the stream's timeline
    sample_rate = int(stream.codec_context.sample_rate or 0)
    channels = int(stream.codec_context.channels or 0)
    packets = 0
    bad_packets = 0
    first_bad_s: float | None = None
    bad_at_end = False
    for result in _decode_tolerant(container, stream):
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


def _decode_tolerant(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream
) -> Iterator[list[av.AudioFrame] | BaseException]:
    """Decode ``stream`` packet by packet without raising on damaged data.

    Yields, per packet, the list of frames it decoded to (possibly empty), or the FFmpeg
    error it raised. A demuxing error ends the stream (after yielding it). The final
    flush of the decoder yields its remaining frames like a packet.
    """
    demuxer = container.demux(stream)
    while True:
        try:
            packet = next(demuxer)
        except (StopIteration, av.error.EOFError):
            return
        except (av.FFmpegError, UnicodeDecodeError) as exc:
            yield exc
            packet = None
        try:
            # A None packet (or the empty packet demux ends with) drains the decoder.
            frames = stream.decode(packet)
        except av.error.DecoderNotFoundError as exc:
            raise UnsupportedFormatError(
                f"not an audio or video file we can read (no decoder for {_codec_name(stream)})"
            ) from exc
        except av.error.EOFError:
            return
        except av.FFmpegError as exc:
            yield exc
            continue
        if packet is None:
            yield frames
            return
        yield frames


# --------------------------------------------------------------------------- decode


def _layout_name(channels: int) -> str:
    if channels == 1:
        return "mono"
    if channels == 2:
        return "stereo"
    return f"{channels}c"


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
    with _open_input(path) as container:
        stream = _audio_stream(container)
        _only_stream(container, stream)
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
    resampler: av.AudioResampler | None = None
    resampler_key: tuple[str, int] | None = None
    out_channels: int | None = channels
    buffer: np.ndarray | None = None
    filled = 0
    packets = 0
    bad_packets = 0
    decoded_s = 0.0

    def converted(frames: list[av.AudioFrame]) -> Iterator[np.ndarray]:
        for frame in frames:
            if frame.samples == 0:
                continue
            data = frame.to_ndarray()  # packed float: shape (1, samples * channels)
            yield data.reshape(frame.samples, -1)

    def push(chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        nonlocal buffer, filled
        for chunk in chunks:
            if buffer is None:
                buffer = np.empty((block_frames, chunk.shape[1]), dtype=np.float32)
            pos = 0
            while pos < chunk.shape[0]:
                take = min(block_frames - filled, chunk.shape[0] - pos)
                buffer[filled : filled + take] = chunk[pos : pos + take]
                filled += take
                pos += take
                if filled == block_frames:
                    if clip:
                        np.clip(buffer, -1.0, 1.0, out=buffer)
                    yield buffer
                    buffer = np.empty_like(buffer)
                    filled = 0

    for result in _decode_tolerant(container, stream):
        packets += 1
        if isinstance(result, BaseException):
            bad_packets += 1
            if bad_packets > max(8.0, _MAX_BAD_PACKET_RATIO * packets):
                raise CorruptAudioError(
                    f"the audio is damaged at {decoded_s:.1f} s "
                    f"({_describe_av_error(result)})"
                ) from result
            continue
        for frame in result:
            if frame.samples == 0 or not frame.sample_rate:
                continue
            decoded_s += frame.samples / frame.sample_rate
            if out_channels is None:
                out_channels = len(frame.layout.channels)
            key = (frame.layout.name, int(frame.sample_rate))
            if resampler is None or key != resampler_key:
                if resampler is not None:
                    yield from push(converted(resampler.resample(None)))
                # A resampler's input format is fixed; a new one handles a stream whose
                # layout or rate changes part way (rare, but legal in MP3 and ADTS).
                resampler = av.AudioResampler(
                    format="flt",
                    layout=_layout_name(out_channels),
                    rate=int(sample_rate or frame.sample_rate),
                )
                resampler_key = key
            try:
                yield from push(converted(resampler.resample(frame)))
            except av.FFmpegError as exc:
                raise CorruptAudioError(
                    f"the audio cannot be converted at {decoded_s:.1f} s "
                    f"({_describe_av_error(exc)})"
                ) from exc

    if resampler is not None:
        yield from push(converted(resampler.resample(None)))
    if buffer is not None and filled:
        tail = buffer[:filled]
        if clip:
            np.clip(tail, -1.0, 1.0, out=tail)
        yield tail
    elif buffer is None and bad_packets:
        raise CorruptAudioError(
            f"the audio stream cannot be decoded ({bad_packets} damaged packets)"
        )


# --------------------------------------------------------------------------- encode

_LOSSLESS_BITS = (16, 24)


class AudioWriter:
    """Encode float blocks into an audio file, block by block. Use via :func:`open_writer`.

    A context manager: leaving the ``with`` block flushes the encoder and finalises the
    file (for MP3 this writes the LAME/Xing header with encoder delay and padding, so
    decoders trim them and the decoded length equals :attr:`frames_written`). If the block
    exits with an exception the partial file is removed.

    Attributes:
        path: the output file.
        sample_rate: Hz.
        channels: channel count every block must have.
        codec: ``"flac"``, ``"mp3"`` or ``"wav"``.
        frames_written: frames accepted so far (per channel).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sample_rate: int,
        channels: int,
        codec: WriterCodec,
        bitrate_kbps: int = 128,
        bits_per_sample: int = 24,
    ) -> None:
        if codec not in ("flac", "mp3", "wav"):
            raise ValueError(f"codec must be 'flac', 'mp3' or 'wav', got {codec!r}")
        if channels <= 0:
            raise ValueError(f"channels must be positive, got {channels}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if codec == "mp3":
            if sample_rate not in _MP3_SAMPLE_RATES_HZ:
                raise ValueError(f"MP3 cannot be encoded at {sample_rate} Hz")
            if channels > 2:
                raise ValueError(f"MP3 holds at most 2 channels, got {channels}")
        elif bits_per_sample not in _LOSSLESS_BITS:
            raise ValueError(f"bits_per_sample must be 16 or 24, got {bits_per_sample}")
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.channels = channels
        self.codec: WriterCodec = codec
        self.bitrate_kbps = bitrate_kbps
        self.bits_per_sample = bits_per_sample
        self.frames_written = 0
        self._layout = _layout_name(channels)
        self._closed = False
        self._proc: subprocess.Popen[bytes] | None = None

        ffmpeg = shutil.which("ffmpeg") if codec == "mp3" else None
        if ffmpeg:
            # The system ffmpeg's LAME is built with its SIMD code: it encodes about 2.5x
            # faster than the one inside the PyAV wheel. Raw float samples go in on a pipe.
            self._proc = _start_mp3_encoder(
                ffmpeg, self.path, sample_rate=sample_rate, channels=channels, bitrate_kbps=bitrate_kbps
            )
            return
        if codec == "mp3":
            encoder, self._sample_fmt, format_name = "libmp3lame", "fltp", "mp3"
        elif codec == "flac":
            encoder, format_name = "flac", "flac"
            self._sample_fmt = "s16" if bits_per_sample == 16 else "s32"
        else:
            format_name = "wav"
            encoder = "pcm_s16le" if bits_per_sample == 16 else "pcm_s24le"
            self._sample_fmt = "s16" if bits_per_sample == 16 else "s32"

        self._container = av.open(str(self.path), mode="w", format=format_name)
        try:
            self._stream = self._container.add_stream(
                encoder, rate=sample_rate, layout=self._layout
            )
            ctx = self._stream.codec_context
            ctx.format = self._sample_fmt
            if codec == "mp3":
                ctx.bit_rate = bitrate_kbps * 1000
        except Exception:
            self._container.close()
            self.path.unlink(missing_ok=True)
            raise

    def write(self, block: np.ndarray) -> None:
        """Encode ``block``: ``float32`` (or any float) array of shape ``(frames, channels)``.

        Samples outside ``[-1, 1]`` are clipped. A 1-D array is accepted for mono.
        """
        if self._closed:
            raise AudioError("the writer is closed")
        data = np.asarray(block)
        if data.ndim == 1 and self.channels == 1:
            data = data[:, np.newaxis]
        if data.ndim != 2 or data.shape[1] != self.channels:
            raise ValueError(
                f"block must have shape (frames, {self.channels}), got {data.shape}"
            )
        frames = data.shape[0]
        if frames == 0:
            return
        clipped = np.clip(data, -1.0, 1.0)
        if self._proc is not None:
            try:
                self._proc.stdin.write(np.ascontiguousarray(clipped, dtype="<f4").tobytes())  # type: ignore[union-attr]
            except BrokenPipeError:
                self._finish_encoder()  # raises with ffmpeg's own message
            self.frames_written += frames
            return
        if self._sample_fmt == "fltp":
            array = np.ascontiguousarray(clipped.T, dtype=np.float32)
        elif self._sample_fmt == "s16":
            # Full scale is 2**15, as FFmpeg converts s16 <-> float; +1.0 saturates.
            ints = np.clip(np.round(clipped * 32768.0), -32768, 32767)
            array = ints.astype(np.int16).reshape(1, -1)
        else:  # s32 carrying 24 significant bits, full scale 2**23
            ints = np.clip(np.round(clipped.astype(np.float64) * 8388608.0), -8388608, 8388607)
            array = (ints.astype(np.int32) << 8).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(array, format=self._sample_fmt, layout=self._layout)
        frame.sample_rate = self.sample_rate
        frame.pts = self.frames_written
        frame.time_base = Fraction(1, self.sample_rate)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += frames

    @property
    def duration_s(self) -> float:
        """Seconds of audio written so far."""
        return self.frames_written / self.sample_rate

    def close(self) -> None:
        """Flush the encoder and finalise the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._proc is not None:
            self._finish_encoder()
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()

    def abort(self) -> None:
        """Close without flushing and remove the partial file."""
        if not self._closed:
            self._closed = True
            if self._proc is not None:
                self._proc.kill()
                self._proc.wait()
            else:
                try:
                    self._container.close()
                except av.FFmpegError:
                    pass
        self.path.unlink(missing_ok=True)

    def _finish_encoder(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stderr is not None
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        errors = proc.stderr.read().decode(errors="replace").strip()
        if proc.wait() != 0:
            self._closed = True
            self.path.unlink(missing_ok=True)
            raise AudioError(f"MP3 encoding failed: {errors or f'ffmpeg exited with {proc.returncode}'}")

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _start_mp3_encoder(
    ffmpeg: str, path: Path, *, sample_rate: int, channels: int, bitrate_kbps: int
) -> subprocess.Popen[bytes]:
    """``ffmpeg`` reading interleaved float32 from stdin, writing a CBR MP3 with the LAME/Xing
    header (encoder delay and padding, so decoders trim them)."""
    return subprocess.Popen(
        [
            ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error",
            "-f", "f32le", "-ar", str(sample_rate), "-ac", str(channels), "-i", "pipe:0",
            "-c:a", "libmp3lame", "-b:a", f"{bitrate_kbps}k", "-write_xing", "1",
            "-f", "mp3", "-y", str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def open_writer(
    path: str | os.PathLike[str],
    *,
    sample_rate: int,
    channels: int,
    codec: WriterCodec,
    bitrate_kbps: int = 128,
    bits_per_sample: int = 24,
) -> AudioWriter:
    """Open an :class:`AudioWriter` on ``path`` (created or overwritten).

    Args:
        path: output file; the container follows ``codec`` (``.flac``, ``.mp3``, ``.wav``).
        sample_rate: Hz. MP3 takes the MPEG rates (44100 for podcasts).
        channels: channel count of every block; MP3 takes 1 or 2.
        codec: ``"flac"`` (lossless), ``"mp3"`` (libmp3lame, CBR at ``bitrate_kbps``) or
            ``"wav"`` (PCM).
        bitrate_kbps: MP3 bit rate in kbit/s; ignored for lossless codecs.
        bits_per_sample: 16 or 24 for FLAC and WAV; ignored for MP3.
    """
    return AudioWriter(
        path,
        sample_rate=sample_rate,
        channels=channels,
        codec=codec,
        bitrate_kbps=bitrate_kbps,
        bits_per_sample=bits_per_sample,
    )

