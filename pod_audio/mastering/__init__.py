"""Mastering: intro/outro crossfades, loudness normalisation, true-peak limiting, MP3 render.

:func:`render_final` (:mod:`.render`) is the whole final step of an episode; the parts it
is made of are :mod:`.programme` (the crossfaded programme, decoded anew for every pass),
:mod:`.level` (the gain that reaches the target after the limiter), :mod:`.limiter`,
:mod:`.encoder` (the MP3 encoder fed from a thread of its own) and :mod:`.follow` (the
MP3 measured while it is written). What callers import is re-exported here.
"""

from pod_audio.mastering.limiter import PeakLimiter
from pod_audio.mastering.programme import crossfade, program_blocks
from pod_audio.mastering.render import (
    DEFAULT_TARGET_LUFS_MONO,
    DEFAULT_TARGET_LUFS_STEREO,
    MasterReport,
    default_target_lufs,
    render_final,
)

__all__ = [
    "DEFAULT_TARGET_LUFS_MONO",
    "DEFAULT_TARGET_LUFS_STEREO",
    "MasterReport",
    "PeakLimiter",
    "crossfade",
    "default_target_lufs",
    "program_blocks",
    "render_final",
]
