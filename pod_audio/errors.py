"""Exceptions raised by the audio library, and the pipeline's one "permanent" type.

Every error a producer can cause with a bad file is an :class:`AudioInputError`; its
message is written for that producer ("no audio stream", "file is truncated at 12.3 s").

:class:`PermanentError` is what every layer raises for a failure that running the same work
again cannot change: bad audio, an input object that is not there, raw media the purge
deleted. It lives here, in a module that imports nothing, so the audio library, the object
store and the catalog can all raise it without importing Dagster; the asset layer
(``pod_assets.status.episode_step``) fails such a step once and never retries it.
"""


class PermanentError(Exception):
    """A failure that retrying cannot change: the step fails once and says why."""


class AudioError(Exception):
    """Base class of every error raised by :mod:`pod_audio`."""


class AudioInputError(AudioError, PermanentError):
    """The input file is not usable audio. Permanent: retrying will not help."""


class EmptyFileError(AudioInputError):
    """The file has no bytes."""


class UnsupportedFormatError(AudioInputError):
    """The bytes are not a container or codec we can decode."""


class NoAudioStreamError(AudioInputError):
    """The container decodes, but has no audio stream (a video without sound, say)."""


class CorruptAudioError(AudioInputError):
    """The audio stream cannot be decoded."""


class TruncatedAudioError(CorruptAudioError):
    """Decoding stops before the duration the container announces."""


class SilentAudioError(AudioInputError):
    """The audio holds no signal at all (digital silence)."""


class NoiseOnlyError(AudioInputError):
    """The audio is steady broadband noise throughout: no speech or other sound stands out."""


class AudioTooLongError(AudioInputError):
    """The audio is longer than the configured maximum."""


class TranscriptionError(AudioError):
    """The speech recogniser failed."""
