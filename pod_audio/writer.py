"""Streaming audio output: encode float blocks to FLAC, WAV or MP3, block by block.

Blocks are ``float`` arrays of shape ``(frames, channels)``, clipped to ``[-1, 1]`` on the
way in; memory does not grow with the length of the file. A file that is not finished
(an exception inside the ``with`` block) is removed, never left half written. MP3 goes
through the system ``ffmpeg`` when there is one (its LAME is faster), else through PyAV.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Literal

import av
import numpy as np

from pod_audio import mp3
from pod_audio.dsp import channel_layout_name
from pod_audio.errors import AudioError

__all__ = ["AudioWriter", "WriterCodec", "open_writer"]

WriterCodec = Literal["flac", "mp3", "wav"]

_LOSSLESS_BITS = (16, 24)


class AudioWriter:
    """Encode float blocks into an audio file, block by block (:func:`open_writer`).

    Args:
        path: output file (created or overwritten); the container follows ``codec``
            (``.flac``, ``.mp3``, ``.wav``).
        sample_rate: Hz. MP3 takes the MPEG rates (44100 for podcasts).
        channels: channel count of every block; MP3 takes 1 or 2.
        codec: ``"flac"`` (lossless), ``"mp3"`` (libmp3lame, CBR at ``bitrate_kbps``) or
            ``"wav"`` (PCM).
        bitrate_kbps: MP3 bit rate in kbit/s; ignored for lossless codecs.
        bits_per_sample: 16 or 24 for FLAC and WAV; ignored for MP3.

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
            if sample_rate not in mp3.SAMPLE_RATES_HZ:
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
        self._layout = channel_layout_name(channels)
        self._closed = False
        self._proc: subprocess.Popen[bytes] | None = None

        ffmpeg = shutil.which("ffmpeg") if codec == "mp3" else None
        if ffmpeg:
            # The system ffmpeg's LAME is built with its SIMD code: it encodes about 2.5x
            # faster than the one inside the PyAV wheel. Raw float samples go in on a pipe.
            self._proc = mp3.start_encoder(
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


open_writer = AudioWriter
"""Open an :class:`AudioWriter` on a path (created or overwritten); the name callers use."""
