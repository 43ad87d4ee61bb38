import pytest

from simulator import SimConfig, generate


@pytest.fixture(scope="session")
def tiny_cfg() -> SimConfig:
    return SimConfig.preset("tiny", seed=3)


@pytest.fixture(scope="session")
def tiny_landing(tmp_path_factory, tiny_cfg) -> str:
    path = str(tmp_path_factory.mktemp("landing_tiny"))
    generate(tiny_cfg, path, log=None)
    return path


@pytest.fixture(scope="session")
def modest_cfg() -> SimConfig:
    """A modest platform: big enough for the realism figures, small enough to run in seconds."""
    return SimConfig(
        seed=7,
        days=28,
        n_users_initial=2500,
        new_users_per_day=4,
        n_instructors=30,
        n_classes_initial=400,
        new_classes_per_day=24,
    )
