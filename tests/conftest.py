import pytest

pytest_plugins = [
    "tests.plugins.gcs",
    "tests.plugins.fault_proxy",
    "tests.plugins.postgres",
    "tests.plugins.pipeline",
    "tests.plugins.dagster_services",
    "tests.plugins.browser",
]


def pytest_configure(config) -> None:
    # Every SQLAlchemy pool of the test process, catalog or not, fails a checkout of a
    # connection left inside a transaction (see docs/catalog.md).
    from pod_resources.catalog import install_global_idle_checkout_guard

    install_global_idle_checkout_guard()


def pytest_unconfigure(config) -> None:
    from pod_resources.catalog import remove_global_idle_checkout_guard

    remove_global_idle_checkout_guard()


@pytest.fixture(scope="session")
def short_speech(tmp_path_factory: pytest.TempPathFactory):
    """The first 4 s of the JFK fixture as WAV: enough real speech for every step, quickly."""
    import shutil
    import subprocess

    from tests.audio_factory import jfk_path

    source = jfk_path()
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "ffmpeg is required"
    out = tmp_path_factory.mktemp("speech") / "jfk-4s.wav"
    subprocess.run(
        [ffmpeg, "-v", "error", "-nostdin", "-i", str(source), "-t", "4", str(out)], check=True
    )
    return out
