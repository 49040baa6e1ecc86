"""Benchmarks of the audio steps against pydub and the ffmpeg binary (``make bench``).

See ``docs/benchmarks.md`` for what is measured, how, and the latest numbers.
"""
