"""Measuring an MP3 while its encoder writes it (:class:`FollowingMeter`).

The result is always a measurement of the finished file, exactly as
:func:`pod_audio.loudness.measure` with the same ``block_frames`` gives it, or ``None``:
whatever could not be confirmed against the file's LAME tag (delay, padding, frame count)
or is not the stream expected leaves the measuring to the caller.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np

from pod_audio import mp3
from pod_audio.loudness import LoudnessMeter, LoudnessReport, TruePeakMeter

__all__ = ["FollowingMeter"]

_HOLD_FRAMES = 8192
"""Decoded frames held back until the end, which the encoder's padding is cut from."""
_READ_BYTES = 1 << 20
_INFO_FRAME_BYTES = 1 << 12
_POLL_S = 0.02

_Meters = tuple[LoudnessMeter, TruePeakMeter]


class FollowingMeter:
    """Decode and measure an MP3 while its encoder writes it, on a thread of its own.

    Every complete MPEG-1 Layer III frame after the Xing/Info frame is decoded with a fresh
    decoder as it lands in the file; the first ``576 + 529`` samples (LAME's delay and the
    decoder's) are dropped and the rest is fed to the meters in blocks of ``block_frames``,
    the samples and blocks :func:`pod_audio.loudness.measure` sees when it reads the
    finished file. When the encoder is done, the LAME tag it wrote last gives the real
    delay, padding and frame count: if any of them disagrees with what was assumed or
    decoded, or the stream is anything else, :meth:`finish` returns ``None`` and the caller
    measures the file after all. So the result is always a measurement of the file.
    """

    def __init__(self, path: Path, *, channels: int, block_frames: int) -> None:
        self._path = path
        self._channels = channels
        self._block_frames = block_frames
        self._written = threading.Event()
        self._abandoned = False
        self._result: LoudnessReport | None = None
        self._thread = threading.Thread(target=self._run, name="mp3-meter", daemon=True)
        self._thread.start()

    def finish(self) -> LoudnessReport | None:
        """Call once the file is complete: the measurement, or ``None`` (measure the file)."""
        self._written.set()
        self._thread.join()
        return self._result

    def abandon(self) -> None:
        """Stop without a result (the render failed or will be repeated)."""
        self._abandoned = True
        self._written.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            self._result = self._follow()
        except Exception:  # anything unexpected: the caller measures the file instead
            self._result = None

    def _follow(self) -> LoudnessReport | None:
        if not self._wait_for_file():
            return None
        decoded = _DecodedStream(self._channels, skip=mp3.LAME_DELAY + mp3.DECODER_DELAY)
        splitter = mp3.FrameSplitter()
        meters: _Meters | None = None
        with open(self._path, "rb") as fh:
            while True:
                complete = self._written.is_set()
                if self._abandoned:
                    return None
                chunk = fh.read(_READ_BYTES)
                try:
                    decoded.decode(splitter.feed(chunk))
                except mp3.UnexpectedStreamError:
                    return None
                if meters is None and splitter.sample_rate:
                    meters = _new_meters(splitter.sample_rate, self._channels)
                if meters is not None:
                    decoded.feed_whole_blocks(meters, self._block_frames)
                if complete and not chunk:
                    break
                if not chunk:
                    self._written.wait(_POLL_S)
            decoded.flush()
            if meters is None or splitter.info_offset < 0:
                return None
            fh.seek(splitter.info_offset)
            info = fh.read(_INFO_FRAME_BYTES)
        return self._confirmed_report(decoded, meters, mp3.lame_tag(info))

    def _wait_for_file(self) -> bool:
        """Wait until the encoder has created the file; ``False`` if it never will."""
        while not self._path.exists():
            if self._written.wait(_POLL_S):
                if self._abandoned or not self._path.exists():
                    return False
        return True

    def _confirmed_report(
        self, decoded: _DecodedStream, meters: _Meters, lame_tag: tuple[int, int, int]
    ) -> LoudnessReport | None:
        """The measurement once the LAME tag confirms what was decoded and dropped; the
        encoder's padding is cut from the held-back end first."""
        delay, padding, counted = lame_tag
        if delay != mp3.LAME_DELAY or counted != decoded.audio_frames:
            return None
        pending = decoded.pending
        if decoded.frames + pending.shape[0] != decoded.audio_frames * mp3.FRAME_SAMPLES:
            return None
        keep = pending.shape[0] - (padding - mp3.DECODER_DELAY)
        if keep < 0 or padding < mp3.DECODER_DELAY:
            return None
        tail = pending[:keep]
        for start in range(0, tail.shape[0], self._block_frames):
            for meter in meters:
                meter.add(tail[start : start + self._block_frames])
        loudness, peaks = meters
        return LoudnessReport(
            integrated_lufs=loudness.integrated_lufs(),
            true_peak_dbtp=peaks.true_peak_dbtp(),
            sample_peak_dbfs=peaks.sample_peak_dbfs(),
            duration_s=loudness.duration_s,
        )


def _new_meters(sample_rate: int, channels: int) -> _Meters:
    return (
        LoudnessMeter(sample_rate=sample_rate, channels=channels),
        TruePeakMeter(sample_rate=sample_rate, channels=channels),
    )


class _DecodedStream:
    """The MP3's audio frames decoded in order: the first ``skip`` samples dropped, the rest
    :attr:`pending` until fed to the meters.

    :attr:`frames` counts the samples dropped or fed, :attr:`audio_frames` the MP3 frames
    decoded.
    """

    def __init__(self, channels: int, *, skip: int) -> None:
        self._decoder = av.CodecContext.create("mp3float", "r")
        self._skip = skip
        self.pending = np.zeros((0, channels), dtype=np.float32)
        self.frames = 0
        self.audio_frames = 0

    def decode(self, frames: list[bytes]) -> None:
        """Decode MP3 frames onto :attr:`pending`, dropping what is still to be skipped."""
        parts = [self.pending]
        for data in frames:
            self.audio_frames += 1
            for frame in self._decoder.decode(av.Packet(data)):
                parts.append(frame.to_ndarray().T)
        if len(parts) > 1:
            self.pending = np.concatenate(parts)
            if self._skip:
                drop = min(self._skip, self.pending.shape[0])
                self.pending = self.pending[drop:]
                self._skip -= drop
                self.frames += drop

    def flush(self) -> None:
        """Decode what the decoder still holds."""
        for frame in self._decoder.decode(None):
            self.pending = np.concatenate((self.pending, frame.to_ndarray().T))

    def feed_whole_blocks(self, meters: Iterable[LoudnessMeter | TruePeakMeter],
                          block_frames: int) -> None:
        """Feed the whole ``block_frames`` blocks of :attr:`pending` that leave at least
        :data:`_HOLD_FRAMES` frames behind."""
        blocks = max(0, (self.pending.shape[0] - _HOLD_FRAMES) // block_frames)
        if blocks == 0:
            return
        fed = blocks * block_frames
        for start in range(0, fed, block_frames):
            block = self.pending[start : start + block_frames]
            for meter in meters:
                meter.add(block)
        self.pending = self.pending[fed:].copy()
        self.frames += fed
