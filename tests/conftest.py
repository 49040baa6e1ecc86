pytest_plugins = [
    "tests.plugins.gcs",
    "tests.plugins.postgres",
    "tests.plugins.pipeline",
    "tests.plugins.dagster_services",
]
