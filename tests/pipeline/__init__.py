"""Tests of pod_pipeline and of the whole: the pod command in fresh processes, the definitions, the deployment, the UI in a browser."""
