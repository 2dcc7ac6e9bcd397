"""Everything about weights files: what the official one is, where it lives, how it is fetched and checked.

Resolution order (first that applies): explicit path (`--weights`) > `QUALICLIP_WEIGHTS` > the cache dir
(`paths.cache_dir()`) > a download on first use (unless offline). Downloads land in a temporary file and are
renamed into place only when complete and structurally valid; the SHA-256 of the first good file is recorded
beside it and checked on every later load; the size, times and inode of the file that last passed that check are
recorded with it (`verified_record_path`), and while they are unchanged the file is not hashed again (a changed
file is hashed, and refused unless it still matches the pin). What is hashed is what is loaded: the scorer's weights file is opened
once, and both the hash and the model are read through that open file, so a file renamed over the pinned one
while a run starts is never scored under the pinned hash. Loading never unpickles objects (`weights_only=True`).
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from qualiclip_cli.core import paths
from qualiclip_cli.core.atomic import atomic_write_text, fsync_dir
from qualiclip_cli.core.errors import OfflineError, WeightsError, first_line
from qualiclip_cli.core.hashing import sha256_file, sha256_open_file
from qualiclip_cli.core.model.layout import check_finite, load_weights_dict, validate_weights

# progress(done_bytes, total_bytes or None); called from the download loop.
ProgressCallback = Callable[[int, "int | None"], None]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightsSpec:
    """One downloadable weights file (timm-style: one record per file)."""

    name: str
    url: str
    filename: str
    license: str
    citation: str
    # Exact shapes the file must have (a sample of keys that pins the architecture down); empty = any size.
    expected_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    url_env: str = "QUALICLIP_WEIGHTS_URL"  # lets users point at a mirror (and tests at 127.0.0.1)
    # check(path, origin, spec) for files that are not QualiCLIP .pth files (e.g. a CLIP safetensors file used
    # to start training); raises WeightsError. None: the QualiCLIP layout check (`validate_weights`).
    check: Callable[[Path, str, WeightsSpec], None] | None = None
    # What the errors tell a user to do, for this file: install a copy obtained elsewhere (offline, or after a
    # failed download), and replace a cached copy that no longer matches its pin. {dest}: where the file goes,
    # {record}: its SHA-256 record.
    title: str = "QualiCLIP"  # what the file is, in messages
    install: str = "run `qualiclip weights import FILE`"
    reinstall: str = "run `qualiclip weights download --force` or `qualiclip weights import FILE`"

    @property
    def download_url(self) -> str:
        return os.environ.get(self.url_env) or self.url

    def install_hint(self, dest: Path | None = None) -> str:
        """How to install a copy of this file obtained elsewhere (the remedy that works for this very file)."""
        return self._hint(self.install, dest)

    def reinstall_hint(self, dest: Path | None = None) -> str:
        """How to replace an installed copy of this file that fails its SHA-256 pin."""
        return self._hint(self.reinstall, dest)

    def _hint(self, template: str, dest: Path | None) -> str:
        dest = Path(dest) if dest is not None else cached_weights_path(self)
        return template.format(dest=dest, record=hash_record_path(dest))


QUALICLIP = WeightsSpec(
    name="qualiclip",
    url="https://github.com/miccunifi/QualiCLIP/releases/download/weights/qualiclip.pth",
    filename="qualiclip.pth",
    license="CC BY-NC 4.0 (non-commercial use only), by Agnolucci, Galteri and Bertini",
    citation=(
        "L. Agnolucci, L. Galteri, M. Bertini. Quality-Aware Image-Text Alignment for Opinion-Unaware "
        "Image Quality Assessment. arXiv:2403.11176"
    ),
    expected_shapes={
        "clip_model.visual.conv1.weight": (32, 3, 3, 3),
        "clip_model.visual.layer1.0.conv1.weight": (64, 64, 1, 1),
        "clip_model.visual.layer4.2.conv3.weight": (2048, 512, 1, 1),
        "clip_model.visual.attnpool.positional_embedding": (50, 2048),
        "clip_model.visual.attnpool.q_proj.weight": (2048, 2048),
        "clip_model.visual.attnpool.c_proj.weight": (1024, 2048),
        "clip_model.token_embedding.weight": (49408, 512),
        "clip_model.text_projection": (512, 1024),
        "clip_model.transformer.resblocks.11.attn.in_proj_weight": (1536, 512),
        "prompts_features": (14, 1024),
    },
)


class _Opened:
    """The weights file as opened by the hashing thread: the loader's handle on it, taken once."""

    def __init__(self) -> None:
        self.future: Future | None = Future()

    def take(self) -> BinaryIO | None:
        """The handle (waiting for the open), or None once taken."""
        future, self.future = self.future, None
        return None if future is None else future.result()

    def __del__(self) -> None:  # never taken (no scorer was built): close it quietly
        future = self.future
        if future is not None and future.done() and future.exception() is None:
            future.result().close()


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights file to load, its SHA-256 and where it was found.

    With ``resolve_weights(..., hash_in_background=True)`` the file is opened once and the hash (and, for the
    cache, its check against the recorded one) runs in a thread through that open file while the caller loads
    the same file (`open_for_loading`): reading `sha256` waits for it and raises its WeightsError, so read it
    before trusting anything computed from the file.
    """

    path: Path
    _sha256: str | Future  # the digest, or a Future of it
    source: str  # "argument", "environment", "cache", "download"
    _opened: _Opened | None = field(default=None, compare=False, repr=False)
    #: the `file_stamp` of the file when it last passed its pin check (a pinned file not hashed this run)
    _verified: tuple[int, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def sha256(self) -> str:
        """The file's digest; waits for a background hash (see `wait_verified`)."""
        return self.wait_verified()

    def wait_verified(self) -> str:
        """Wait for the background hash and its check against the pin, and return the digest. Raises the check's
        WeightsError for a file that is not the one pinned."""
        return self._sha256.result() if isinstance(self._sha256, Future) else self._sha256

    def open_for_loading(self) -> BinaryIO:
        """The file to load (binary, at its start), whose SHA-256 is `sha256`: the very open file the background
        hash reads (once), else the file opened now, hashed through that handle and refused (WeightsError)
        unless it still has that digest. A file renamed over `path` meanwhile changes nothing: an open file
        keeps the content that was hashed, so nothing computed from another file is credited to this hash."""
        f = self._opened.take() if self._opened is not None else None
        if f is not None:
            return f
        f = _open(self.path)
        if self._verified is not None and _fstamp(f.fileno()) == self._verified:
            return f  # the very file that passed the pin check, unchanged since (size, times, inode)
        try:
            actual, expected = _sha256_open_file(f.fileno(), self.path), self.sha256
        except BaseException:
            f.close()
            raise
        if actual != expected:
            f.close()
            raise WeightsError(
                f"{self.path}: changed after it was checked (SHA-256 {actual[:12]}… instead of {expected[:12]}…); "
                "nothing was scored"
            )
        return f


Verify = Callable[[str, "tuple[int, ...] | None"], str]


def _open_and_hash(path: Path, verify: Verify) -> tuple[_Opened, Future]:
    """Open ``path`` once in a daemon thread and hand that handle to the loader; then hash the same open file
    (through a duplicate descriptor, with positional reads that leave the loader's offset alone) and return
    ``verify(digest, stamp)``, ``stamp`` being the file's `file_stamp` when it did not change while it was
    hashed (else None). hashlib releases the GIL: the hash overlaps the load."""
    opened = _Opened()
    handle, digest = opened.future, Future()

    def run() -> None:
        try:
            f = _open(path)
            try:
                fd = os.dup(f.fileno())  # the loader closes its handle whenever it is done
            except OSError as exc:
                f.close()
                raise WeightsError(f"{path}: cannot read the weights file ({exc.strerror or exc})") from None
        except BaseException as exc:  # delivered to whoever opens the file or reads the digest
            handle.set_exception(exc)
            digest.set_exception(exc)
            return
        handle.set_result(f)
        try:
            before = _fstamp(fd)
            actual = _sha256_open_file(fd, path)
            digest.set_result(verify(actual, before if _fstamp(fd) == before else None))
        except BaseException as exc:
            digest.set_exception(exc)
        finally:
            os.close(fd)

    threading.Thread(target=run, name="weights-sha256", daemon=True).start()
    return opened, digest


def _open(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read the weights file ({exc.strerror or exc})") from None


# --------------------------------------------------------------------------------------------- hashing

def _sha256_open_file(fd: int, path: Path) -> str:
    if not hasattr(os, "pread"):  # Windows: a file held open cannot be replaced, so the path is the same file
        return sha256_file(path)
    try:
        return sha256_open_file(fd)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read the weights file ({exc.strerror or exc})") from None


def hash_record_path(weights_path: Path) -> Path:
    return weights_path.with_name(weights_path.name + ".sha256")


def read_recorded_hash(weights_path: Path) -> str | None:
    record = hash_record_path(weights_path)
    if not record.exists():
        return None
    text = record.read_text(encoding="utf-8").split()
    return text[0].lower() if text else None


def record_hash(weights_path: Path, sha256: str) -> None:
    atomic_write_text(hash_record_path(weights_path), f"{sha256}  {weights_path.name}\n")


def verified_record_path(weights_path: Path) -> Path:
    """Where the `file_stamp` of the file that last passed its pin check is kept, with its digest."""
    return weights_path.with_name(weights_path.name + ".verified")


def _stamp(st: os.stat_result) -> tuple[int, ...]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


def file_stamp(path: Path) -> tuple[int, ...] | None:
    """(size, mtime, ctime, inode, device) of ``path``: any write, replacement, rename or copy changes it; None
    when it cannot be read."""
    try:
        return _stamp(os.stat(path))
    except OSError:
        return None


def _fstamp(fd: int) -> tuple[int, ...] | None:
    try:
        return _stamp(os.fstat(fd))
    except OSError:
        return None


def _record_verified(weights_path: Path, sha256: str, stamp: tuple[int, ...] | None) -> None:
    """Remember that the file with this stamp matched its pin (best effort: without it, the next run hashes)."""
    if stamp is None:
        return
    try:
        atomic_write_text(verified_record_path(weights_path), " ".join([sha256, *map(str, stamp)]) + "\n")
    except OSError:
        pass


def verified_unchanged(weights_path: Path) -> tuple[str, tuple[int, ...]] | None:
    """(digest, stamp) when ``weights_path`` passed its pin check before and its stamp is unchanged since, so it
    need not be hashed again; None when it must be hashed (never checked, changed, or the pin changed)."""
    try:
        fields = verified_record_path(weights_path).read_text(encoding="utf-8").split()
        recorded = read_recorded_hash(weights_path)
    except (OSError, UnicodeDecodeError):
        return None
    if len(fields) != 6 or recorded is None or fields[0] != recorded:
        return None
    try:
        stamp = tuple(int(v) for v in fields[1:])
    except ValueError:
        return None
    return (recorded, stamp) if file_stamp(weights_path) == stamp else None


# --------------------------------------------------------------------------------------------- loading

def check_weights_file(path: Path, origin: str, spec: WeightsSpec = QUALICLIP) -> None:
    """Structural check of a downloaded or hand-placed file, in the spec's format."""
    if spec.check is not None:
        spec.check(Path(path), origin, spec)
    else:
        _check_loaded(load_weights_dict(path), origin, spec)


def _check_loaded(weights: dict, origin: str, spec: WeightsSpec) -> None:
    validate_weights(weights, origin, spec.expected_shapes)
    check_finite(weights, origin)


# --------------------------------------------------------------------------------------------- resolution

def cached_weights_path(spec: WeightsSpec = QUALICLIP) -> Path:
    return paths.cache_dir() / spec.filename


def offline_requested(flag: bool = False) -> bool:
    return flag or os.environ.get("QUALICLIP_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_weights(
    explicit: Path | str | None = None,
    offline: bool = False,
    progress: ProgressCallback | None = None,
    spec: WeightsSpec = QUALICLIP,
    hash_in_background: bool = False,
    on_download_start: Callable[[Path, str], None] | None = None,
    file_option: str | None = "--weights",
) -> ResolvedWeights:
    """Find (or fetch) the weights file to use. Never touches the network when offline.

    ``file_option``: the caller's option that takes a weights file, named in the offline error (None: none).

    ``hash_in_background``: open an existing file once and hash (and verify) it in a thread, for the caller to
    load the same open file (`ResolvedWeights.open_for_loading`).
    ``on_download_start(cache_dir, url)``: called when no file was found and a download is about to start.
    """
    def found(path: Path, source: str, verify: Verify) -> ResolvedWeights:
        if hash_in_background:
            opened, digest = _open_and_hash(path, verify)
            return ResolvedWeights(path, digest, source, opened)
        before = file_stamp(path)
        actual = sha256_file(path)
        return ResolvedWeights(path, verify(actual, before if file_stamp(path) == before else None), source)

    if explicit:
        path = _existing(Path(explicit).expanduser(), "--weights")
        return found(path, "argument", lambda digest, stamp: digest)
    env = os.environ.get("QUALICLIP_WEIGHTS")
    if env:
        path = _existing(Path(env).expanduser(), "QUALICLIP_WEIGHTS")
        return found(path, "environment", lambda digest, stamp: digest)
    cached = cached_weights_path(spec)
    if cached.exists():
        unchanged = verified_unchanged(cached)
        if unchanged is not None:  # checked against its pin before, and not touched since: no hash needed
            return ResolvedWeights(cached, unchanged[0], "cache", _verified=unchanged[1])
        return found(cached, "cache", lambda digest, stamp: _verify_pin(cached, digest, spec, stamp))
    if offline_requested(offline):
        raise OfflineError(
            f"no {spec.title} weights in {cached.parent} and offline mode is on: download {spec.download_url} "
            f"on a connected machine, then {spec.install_hint(cached)}"
            + (f" (or pass {file_option} FILE)" if file_option else "")
        )
    if on_download_start:
        on_download_start(cached.parent, spec.download_url)
    return downloaded(download_weights(spec=spec, progress=progress))


def downloaded(path: Path) -> ResolvedWeights:
    """The ResolvedWeights of a file `download_weights` returned (its hash was recorded when it was installed)."""
    return ResolvedWeights(path, read_recorded_hash(path) or sha256_file(path), "download")


def verify_recorded_hash(path: Path, spec: WeightsSpec = QUALICLIP) -> str:
    """Return the file's SHA-256, refusing a file that differs from the one recorded when it was fetched."""
    return _verify_pin(path, sha256_file(path), spec)


def _verify_pin(path: Path, actual: str, spec: WeightsSpec, stamp: tuple[int, ...] | None = None) -> str:
    """``actual``, the file's digest, checked against the one recorded when it was installed; ``stamp``: the
    hashed file's `file_stamp`, recorded once it passes (None: the file changed while it was hashed)."""
    recorded = read_recorded_hash(path)
    if recorded is None:
        # Placed by hand: accept it once it is structurally valid, and pin it from now on.
        check_weights_file(path, str(path), spec)
        record_hash(path, actual)
    elif recorded != actual:
        raise WeightsError(
            f"{path}: SHA-256 {actual[:12]}… does not match {recorded[:12]}… recorded when it was installed "
            f"(corrupted or replaced); {spec.reinstall_hint(path)}"
        )
    _record_verified(path, actual, stamp)
    return actual


def _existing(path: Path, origin: str) -> Path:
    if not path.is_file():
        raise WeightsError(f"{path}: weights file given by {origin} does not exist")
    return path


# --------------------------------------------------------------------------------------------- install

def download_weights(
    spec: WeightsSpec = QUALICLIP,
    dest_dir: Path | None = None,
    progress: ProgressCallback | None = None,
    force: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download into a temporary file beside the destination; rename only when complete and valid."""
    import urllib.error
    import urllib.request

    dest_dir = Path(dest_dir) if dest_dir else paths.cache_dir()
    dest = dest_dir / spec.filename
    if dest.exists() and not force:
        verify_recorded_hash(dest, spec)
        return dest
    dest_dir.mkdir(parents=True, exist_ok=True)
    url = spec.download_url
    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{spec.filename}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    total = response.headers.get("Content-Length")
                    total_bytes = int(total) if total and total.isdigit() else None
                    done = 0
                    while chunk := response.read(_CHUNK):
                        out.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total_bytes)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise WeightsError(
                    f"download of {url} failed ({first_line(getattr(exc, 'reason', exc))}); nothing was saved. "
                    f"Retry, or download the file elsewhere and {spec.install_hint(dest)}"
                ) from None
            if total_bytes is not None and done != total_bytes:
                raise WeightsError(
                    f"download of {url} stopped after {done} of {total_bytes} bytes; nothing was saved. "
                    f"Retry, or download the file elsewhere and {spec.install_hint(dest)}"
                )
            out.flush()
            os.fsync(out.fileno())
        _install_checked(tmp, dest, spec, origin=url)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def import_weights(source: Path | str, spec: WeightsSpec = QUALICLIP, force: bool = False) -> Path:
    """Copy a weights file obtained elsewhere into the cache dir, after the same checks as a download.

    The file's structure is checked before anything is copied (a wrong file costs no copy of its size and no
    disk space); the copy is checked again before it is renamed into place. A failed copy (e.g. a full disk)
    leaves nothing behind.
    """
    import shutil

    source = Path(source).expanduser()
    if not source.is_file():
        raise WeightsError(f"{source}: no such file")
    dest = cached_weights_path(spec)
    if dest.exists() and not force:
        digest = sha256_file(dest)
        if digest == sha256_file(source):
            record_hash(dest, digest)
            return dest
        raise WeightsError(f"{dest} already exists and differs from {source}; pass --force to replace it")
    try:
        check_weights_file(source, str(source), spec)
    except WeightsError as exc:
        raise WeightsError(f"{exc}; nothing was installed") from None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{spec.filename}.", suffix=".part")
    except OSError as exc:
        raise WeightsError(f"cannot write in {dest.parent} ({exc.strerror or exc}); nothing was installed") from None
    tmp = Path(tmp_name)
    try:
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                shutil.copyfileobj(src, out, _CHUNK)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise WeightsError(
                f"could not copy {source} into {dest.parent} ({exc.strerror or exc}); nothing was installed"
            ) from None
        _install_checked(tmp, dest, spec, origin=str(source))
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _install_checked(tmp: Path, dest: Path, spec: WeightsSpec, origin: str) -> None:
    try:
        check_weights_file(tmp, origin, spec)
    except WeightsError as exc:
        raise WeightsError(f"{exc}; nothing was installed") from None
    digest = sha256_file(tmp)
    try:
        os.replace(tmp, dest)
    except OSError as exc:
        raise WeightsError(f"could not install {dest} ({exc.strerror or exc}); nothing was installed") from None
    fsync_dir(dest.parent)
    try:
        record_hash(dest, digest)
    except OSError as exc:
        raise WeightsError(
            f"{dest}: installed, but its SHA-256 could not be recorded ({exc.strerror or exc}); it is checked and "
            "pinned when it is first used"
        ) from None
