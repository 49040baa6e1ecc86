"""Tests of pod_sensors."""
