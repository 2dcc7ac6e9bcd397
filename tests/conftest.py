import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/tiny_weights.py and friends


def golden_dir() -> Path:
    """QUALICLIP_GOLDEN_DIR if set; else ../shared/golden beside the checkout (CI lays shared/ there); else, for a
    local clone (`git clone . /tmp/check`), ../shared/golden beside the checkout it was cloned from."""
    if os.environ.get("QUALICLIP_GOLDEN_DIR"):
        return Path(os.environ["QUALICLIP_GOLDEN_DIR"])
    beside = REPO.parent / "shared" / "golden"
    if not beside.is_dir():
        origin = _local_origin()
        if origin is not None and (origin.parent / "shared" / "golden").is_dir():
            return origin.parent / "shared" / "golden"
    return beside


def _local_origin() -> Path | None:
    """The checkout this one was cloned from, when that is a folder on this machine."""
    import subprocess

    try:
        url = subprocess.run(["git", "-C", str(REPO), "config", "--get", "remote.origin.url"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    path = Path(url.removeprefix("file://")) if url and "://" not in url.removeprefix("file://") else None
    return path.resolve() if path is not None and path.is_dir() else None


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
    monkeypatch.delenv("QUALICLIP_QUIET", raising=False)  # tests read the notes and summaries on stderr
    return home


@pytest.fixture(scope="session")
def tiny_weights_file(tmp_path_factory) -> Path:
    from tiny_weights import write_tiny_weights

    return write_tiny_weights(tmp_path_factory.mktemp("weights") / "tiny.pth", seed=0)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """The curation tests' state dir, tmp_path/qhome (beside the photo trees they snapshot)."""
    monkeypatch.setenv("QUALICLIP_HOME", str(tmp_path / "qhome"))
    return tmp_path / "qhome"
