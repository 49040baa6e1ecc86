"""What the pipeline knows about MP3 files: ID3v2 headers, MPEG-1 Layer III frames, the
Xing/Info frame with its LAME tag, and the encoder's command line.

Every MP3 this pipeline writes is CBR MPEG-1 Layer III from LAME with a Xing/Info frame
first: its LAME tag gives the encoder delay and padding, so decoders trim them and the
decoded length equals the samples that went in. A decoder adds :data:`DECODER_DELAY`
samples of its own before the encoder's :data:`LAME_DELAY` (FFmpeg trims both).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DECODER_DELAY",
    "FRAME_SAMPLES",
    "LAME_DELAY",
    "SAMPLE_RATES_HZ",
    "FrameHeader",
    "FrameSplitter",
    "UnexpectedStreamError",
    "frame_header",
    "has_length_header",
    "id3v2_size",
    "lame_tag",
    "start_encoder",
]

SAMPLE_RATES_HZ = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
"""Rates LAME encodes (MPEG-1, -2 and 2.5)."""
FRAME_SAMPLES = 1152
"""Samples per channel in an MPEG-1 Layer III frame."""
LAME_DELAY = 576
"""Encoder delay LAME writes into the LAME tag (MPEG-1 Layer III)."""
DECODER_DELAY = 529
"""Samples the decoder adds before the encoder delay (FFmpeg trims delay + 529)."""

_BITRATES_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG1_RATES_HZ = (44100, 48000, 32000)
_ID3_HEADER_BYTES = 10
_SPLIT_COMPACT_BYTES = 1 << 20
"""Parsed bytes :class:`FrameSplitter` keeps before dropping them from its buffer."""


class UnexpectedStreamError(ValueError):
    """The bytes are not the MPEG-1 Layer III stream with a Xing/Info frame expected."""


def id3v2_size(head: bytes | bytearray) -> int:
    """Bytes an ID3v2 tag takes (header, syncsafe body size, footer) from its 10-byte header."""
    size = 0
    for byte in head[6:10]:  # syncsafe integer
        size = (size << 7) | (byte & 0x7F)
    return _ID3_HEADER_BYTES + size + (10 if head[5] & 0x10 else 0)  # footer flag


def has_length_header(path: Path) -> bool:
    """Whether an MP3's first frame carries a Xing/Info or VBRI header (frame count)."""
    with path.open("rb") as fh:
        head = fh.read(_ID3_HEADER_BYTES)
        offset = 0
        if head[:3] == b"ID3" and len(head) == _ID3_HEADER_BYTES:
            offset = id3v2_size(head)
        fh.seek(offset)
        first = fh.read(4096)
    return any(tag in first for tag in (b"Xing", b"Info", b"VBRI"))


@dataclass(frozen=True)
class FrameHeader:
    """An MPEG-1 Layer III frame header: the frame's sample rate and length in bytes."""

    sample_rate: int
    length: int


def frame_header(header: bytes | bytearray) -> FrameHeader:
    """Parse the 4 header bytes of an MPEG-1 Layer III frame.

    Raises:
        UnexpectedStreamError: not MPEG-1 Layer III, or a free-format or reserved field.
    """
    if header[0] != 0xFF or header[1] & 0xFE != 0xFA:
        raise UnexpectedStreamError("not an MPEG-1 Layer III frame")
    rate_index = (header[2] >> 2) & 3
    bitrate = _BITRATES_KBPS[header[2] >> 4] if header[2] >> 4 < 15 else 0
    if rate_index == 3 or bitrate == 0:
        raise UnexpectedStreamError("reserved sample rate or free-format bit rate")
    sample_rate = _MPEG1_RATES_HZ[rate_index]
    return FrameHeader(sample_rate, 144000 * bitrate // sample_rate + ((header[2] >> 1) & 1))


class FrameSplitter:
    """Split an MP3 into frames as its bytes arrive (a file still being written).

    A leading ID3v2 tag is skipped; the first frame must be the Xing/Info frame, whose file
    offset and sample rate are kept in :attr:`info_offset` and :attr:`sample_rate`; every
    later complete frame is handed out by :meth:`feed`. Incomplete bytes wait for the next
    call.
    """

    def __init__(self) -> None:
        self.info_offset = -1
        """File offset of the Xing/Info frame; -1 until it is complete."""
        self.sample_rate = 0
        self._buf = bytearray()
        self._base = 0  # file offset of _buf[0]
        self._pos = 0  # parse position in _buf

    def feed(self, chunk: bytes) -> list[bytes]:
        """Take the next bytes of the file; returns the audio frames they complete.

        Raises:
            UnexpectedStreamError: the stream is not what this pipeline writes.
        """
        self._buf += chunk
        frames: list[bytes] = []
        while (frame := self._next_frame()) is not None:
            if frame:
                frames.append(frame)
        if self._pos > _SPLIT_COMPACT_BYTES:
            del self._buf[: self._pos]
            self._base += self._pos
            self._pos = 0
        return frames

    def _next_frame(self) -> bytes | None:
        """The next complete audio frame; ``b""`` for a tag or the Info frame passed over;
        ``None`` when the buffer holds no complete frame."""
        buf, pos = self._buf, self._pos
        if self.info_offset < 0:
            if len(buf) - pos < _ID3_HEADER_BYTES:
                return None
            if buf[pos : pos + 3] == b"ID3":  # the muxer's own tag
                size = id3v2_size(buf[pos : pos + _ID3_HEADER_BYTES])
                if len(buf) - pos < size:
                    return None
                self._pos += size
                return b""
        if len(buf) - pos < 4:
            return None
        header = frame_header(buf[pos : pos + 4])
        length = header.length
        if len(buf) - pos < length:
            return None
        self._pos += length
        if self.info_offset >= 0:
            return bytes(buf[pos : pos + length])
        if bytes(buf[pos + 36 : pos + 40]) not in (b"Xing", b"Info"):
            raise UnexpectedStreamError("the first frame is not a Xing/Info frame")
        self.info_offset = self._base + pos
        self.sample_rate = header.sample_rate
        return b""


def lame_tag(info_frame: bytes) -> tuple[int, int, int]:
    """(encoder delay, padding, audio frames) from a Xing/Info frame with a LAME tag;
    ``(-1, -1, -1)`` when it has none of them."""
    at = info_frame.find(b"Info")
    at = info_frame.find(b"Xing") if at < 0 else at
    if at < 0:
        return -1, -1, -1
    flags = int.from_bytes(info_frame[at + 4 : at + 8], "big")
    if not flags & 1:
        return -1, -1, -1
    frames = int.from_bytes(info_frame[at + 8 : at + 12], "big")
    tag = at + 8 + 4 * bool(flags & 1) + 4 * bool(flags & 2) + 100 * bool(flags & 4) + 4 * bool(flags & 8)
    # LAME extension: 9-byte encoder string, then 12 bytes of fields, then delay/padding.
    packed = int.from_bytes(info_frame[tag + 21 : tag + 24], "big")
    return packed >> 12, packed & 0xFFF, frames


def start_encoder(
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
