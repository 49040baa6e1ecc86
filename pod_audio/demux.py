"""Opening audio inputs: what a file's first bytes say it is, what its WAV header
announces, which stream is its audio, and decoding that stream packet by packet.

FFmpeg's failures become producer-readable :mod:`pod_audio.errors`; a damaged packet is
handed to the caller as a value (:func:`decode_tolerant`), never raised, so the caller
decides how many a file may have.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.container
from av.stream import Discard

from pod_audio import mp3
from pod_audio.errors import (
    CorruptAudioError,
    EmptyFileError,
    NoAudioStreamError,
    UnsupportedFormatError,
)

__all__ = [
    "WavLayout",
    "announced_duration_s",
    "audio_stream",
    "codec_name",
    "decode_tolerant",
    "describe_av_error",
    "duration_is_estimate",
    "only_stream",
    "open_input",
    "sniff_container",
    "wav_header_duration_s",
    "wav_layout",
]

_ESTIMATED_DURATION_FORMATS = frozenset({"aac", "ac3", "eac3", "dts", "mp2", "adts"})
"""Raw elementary-stream formats whose duration FFmpeg can only estimate from the bit rate."""


# Decoder names that differ from the codec's usual name.
_CODEC_NAMES = {
    "mp3float": "mp3",
    "mp2float": "mp2",
    "aac_fixed": "aac",
    "libopus": "opus",
    "libvorbis": "vorbis",
    "ac3_fixed": "ac3",
}


def open_input(path: str | os.PathLike[str]) -> av.container.InputContainer:
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
    layout = wav_layout(file_path) if _is_wav(file_path) else None
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
            kind = sniff_container(fh.read(16))
        if kind == "WAV" and layout is not None and not (layout.sample_rate and layout.block_align):
            raise CorruptAudioError(
                "the WAV header is damaged: it gives a sample rate of "
                f"{layout.sample_rate} Hz and {layout.block_align} bytes per sample frame"
            ) from exc
        if kind is not None:
            raise CorruptAudioError(
                f"the file looks like {kind} but cannot be read; it is probably truncated "
                f"or damaged ({describe_av_error(exc)})"
            ) from exc
        raise UnsupportedFormatError(
            f"not an audio or video file we can read ({describe_av_error(exc)})"
        ) from exc


def _is_wav(path: Path) -> bool:
    with path.open("rb") as fh:
        return sniff_container(fh.read(16)) == "WAV"


def sniff_container(head: bytes) -> str | None:
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
class WavLayout:
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


def wav_layout(path: Path) -> WavLayout | None:
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
                    return WavLayout(sample_rate, block_align, offset, None, file_size, True)
                end = offset + size + (size & 1)
                return WavLayout(
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


def wav_header_duration_s(path: Path) -> float | None:
    """Duration the RIFF header of a WAV file announces (data chunk size), in seconds.

    FFmpeg clamps a WAV's duration to the bytes present, which hides a header that
    announces more audio than the file holds; this reads the header itself. ``None`` for
    streaming WAVs (size 0 or 0xFFFFFFFF), RF64, or a header it cannot follow. For a header
    that announces *less* than the file holds (see :attr:`WavLayout.header_too_short`) the
    whole file is decoded, so that is the duration announced.
    """
    layout = wav_layout(path)
    if layout is None:
        return None
    if layout.header_too_short:
        return layout.file_duration_s
    return layout.header_duration_s


def duration_is_estimate(container: av.container.InputContainer, path: Path) -> bool:
    """Whether FFmpeg estimated the duration from the bit rate rather than read it."""
    name = container.format.name
    if name in _ESTIMATED_DURATION_FORMATS:
        return True
    return name == "mp3" and not mp3.has_length_header(path)


def describe_av_error(exc: BaseException) -> str:
    """A short reason from an FFmpeg error, without the file path PyAV appends."""
    strerror = getattr(exc, "strerror", None)
    if isinstance(strerror, str) and strerror:
        return strerror.lower()
    return str(exc) or type(exc).__name__


def audio_stream(container: av.container.InputContainer) -> av.audio.stream.AudioStream:
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


def only_stream(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream
) -> None:
    """Let the demuxer drop packets of every other stream; decode with threads if it can."""
    stream.thread_type = "AUTO"
    for other in container.streams:
        if other.index != stream.index:
            other.discard = Discard.all


def codec_name(stream: av.audio.stream.AudioStream) -> str:
    name = stream.codec_context.codec.name
    return _CODEC_NAMES.get(name, name)


def announced_duration_s(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream
) -> float | None:
    """Duration the container's headers announce for ``stream``, in seconds, if any."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def decode_tolerant(
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
                f"not an audio or video file we can read (no decoder for {codec_name(stream)})"
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

