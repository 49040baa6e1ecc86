"""Tests of pod_resources: the object stores and the catalog."""
