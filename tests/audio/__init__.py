"""Tests of pod_audio, the pure audio library."""
