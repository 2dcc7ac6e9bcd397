import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/tiny_weights.py and friends


def golden_dir() -> Path:
    """../shared/golden beside the checkout (CI lays shared/ there); QUALICLIP_GOLDEN_DIR overrides."""
    return Path(os.environ.get("QUALICLIP_GOLDEN_DIR") or REPO.parent / "shared" / "golden")


@pytest.fixture(scope="session")
def golden() -> Path:
    path = golden_dir()
    if not (path / "golden.json").is_file() or not (path / "tiny_qualiclip.pth").is_file():
        pytest.fail(
            f"golden reference files not found in {path}: the equivalence tests need ../shared/golden "
            "(golden.json, tiny_qualiclip.pth, images/) beside the checkout, or QUALICLIP_GOLDEN_DIR",
            pytrace=False,
        )
    return path


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets its own cache/state dir and offline mode: nothing leaks, nothing reaches the network."""
    home = tmp_path / "qualiclip-home"
    monkeypatch.setenv("QUALICLIP_HOME", str(home))
    monkeypatch.setenv("QUALICLIP_OFFLINE", "1")
    monkeypatch.delenv("QUALICLIP_WEIGHTS", raising=False)
    monkeypatch.delenv("QUALICLIP_WEIGHTS_URL", raising=False)
    return home


@pytest.fixture(scope="session")
def tiny_weights_file(tmp_path_factory) -> Path:
    from tiny_weights import write_tiny_weights

    return write_tiny_weights(tmp_path_factory.mktemp("weights") / "tiny.pth", seed=0)
