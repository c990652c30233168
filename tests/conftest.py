"""Shared test setup: quiet TensorFlow, locate ../shared, shared fixtures."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture
def shared_dir():
    """`../shared` beside the checkout; tests using it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (a fresh clone has no ../shared; CI has it)")
    return SHARED


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """16 training and 4 validation images of 65x65 (synthetic), once per module."""
    from deeplab_dpc.data import synthetic  # TensorFlow only for the tests using it

    path = tmp_path_factory.mktemp("data") / "synthetic"
    synthetic.generate_synthetic_dataset(
        str(path), num_train=16, num_val=4, image_size=(65, 65)
    )
    return str(path)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server for the session (tests/postgres_server.py)."""
    import postgres_server as pg

    bindir = pg.find_bindir()
    if bindir is None:
        pytest.skip(
            "no PostgreSQL server binaries (initdb, pg_ctl); install the Debian"
            " 'postgresql' package (.ci/run does)"
        )
    server = pg.PostgresServer(bindir).start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    return postgres_server.create_database()


# Modules that keep a worker busy for 15 s or more (serial seconds per module
# from `--durations=0` of the default run, g3doc/performance.md#test-suite),
# heaviest first. They are collected first and pytest-xdist's loadscope
# scheduler hands modules out in collection order (`--no-loadscope-reorder` in
# pyproject.toml; its default since 3.5 orders modules by their number of
# tests, which put these few-test heavy modules last), each to the next free
# worker: the longest start early, the small modules fill in around them, and
# the two workers finish together.
HEAVY_FIRST = (
    "test_train.py",  # 127 s
    "test_distribute.py",  # 124 s
    "test_export.py",  # 94 s
    "test_remote_paths.py",  # 42 s
    "test_search_cache_proxy.py",
    "test_search_study.py",
    "test_model.py",
    "test_backbones.py",
    "test_search_postgres.py",
    "test_export_official.py",
    "test_data_pipeline.py",
    "test_import_weights.py",
    "test_eval.py",
    "test_train_steps_per_execution.py",
    "test_device_check.py",
    "test_console_tools.py",
    "test_vis.py",
    "test_train_losses.py",  # 16 s
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable
