"""The QualiCLIP weights-file layout, owned here: safe load, split, join and validation against expected shapes.

A QualiCLIP file is a flat dict of tensors: the CLIP model under ``clip_model.`` (OpenAI key names, e.g.
``clip_model.visual.conv1.weight``) and the 14 prompt feature rows under ``prompts_features`` (order: see
`prompts.PROMPTS`). Used by the scorer, the weights manager, the trainer's final file and the test helpers.
Loading never unpickles objects (``weights_only=True``).
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from qualiclip_cli.core.errors import WeightsError, first_line
from qualiclip_cli.core.paths import native_name, open_file_name

if TYPE_CHECKING:
    import torch

CLIP_PREFIX = "clip_model."
VISUAL_PREFIX = "visual."
PROMPTS_KEY = "prompts_features"


def split_weights(weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Split a QualiCLIP weights dict into the CLIP state dict (OpenAI key names) and prompts_features."""
    clip = {k[len(CLIP_PREFIX):]: v for k, v in weights.items() if k.startswith(CLIP_PREFIX)}
    return clip, weights[PROMPTS_KEY]


def visual_state_dict(clip_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image encoder's tensors of a CLIP state dict, without their ``visual.`` prefix."""
    return {k[len(VISUAL_PREFIX):]: v for k, v in clip_sd.items() if k.startswith(VISUAL_PREFIX)}


def join_weights(clip_sd: Mapping[str, object], prompts_features, visual_sd: Mapping[str, object] | None = None) -> dict:
    """The inverse of `split_weights`: a QualiCLIP weights dict from a CLIP state dict and prompts_features.

    ``visual_sd`` (keys without ``visual.``) replaces the CLIP state dict's own image encoder when given.
    """
    clip = {k: v for k, v in clip_sd.items() if visual_sd is None or not k.startswith(VISUAL_PREFIX)}
    if visual_sd is not None:
        clip.update({VISUAL_PREFIX + k: v for k, v in visual_sd.items()})
    weights = {CLIP_PREFIX + k: v for k, v in clip.items()}
    weights[PROMPTS_KEY] = prompts_features
    return weights


def load_weights_dict(path: Path, mmap: bool = True) -> dict:
    """torch.load with weights_only=True; every failure becomes a one-line WeightsError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    with native_name(path) as name:  # torch opens (and maps) the file by a UTF-8 name
        return _load(name, path, mmap)


def load_weights_file(file: BinaryIO, path: Path | str) -> dict:
    """`load_weights_dict` from a file already open (binary, at its start; ``path`` names it in messages): what
    is loaded is the open file, whatever is renamed over ``path`` meanwhile. Where the system names open files
    (Linux's /proc/self/fd), that name is memory-mapped, which opens the very same file again, so tensors the
    scorer never uses (the text tower) are not read into memory; elsewhere the open file is read."""
    name = open_file_name(file.fileno())
    if name is not None:
        return _load(name, Path(path), mmap=True)
    return _load(file, Path(path), mmap=False)


# The first bytes of PyTorch's two formats: a zip archive (torch.save since 1.6) or a pickle (the legacy format,
# whose first object is a magic number; protocol 2 in every torch that wrote it, any protocol accepted here).
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
_HEAD = 256


def _head(source) -> bytes:
    """The first bytes of ``source`` (a path, or an open binary file left at its start)."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as f:
            return f.read(_HEAD)
    head = source.read(_HEAD)
    source.seek(0)
    return head


def _what_it_is(head: bytes) -> str:
    """What a file that is not in a PyTorch format looks like, for the message that refuses it."""
    if not head:
        return "the file is empty"
    if head[:2] == b"\x1f\x8b":
        return "it is gzip-compressed: decompress it first"
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1:
        return "it is a safetensors file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        text = head[:exc.start].decode("utf-8") if exc.start >= len(head) - 3 else ""
    if text:
        start = text.lstrip().lower()
        if start.startswith(("<!doctype html", "<html", "<?xml", "<head", "<body")) or "<html" in start:
            return "it is an HTML page, e.g. a download's error page saved in its place"
        if all(ch.isprintable() or ch in "\r\n\t" for ch in text):
            words = " ".join(text.split())[:40]
            return f"it is text, starting {words!r}" if words else "it is blank text"
    return "it holds neither a zip archive nor pickled tensors"


def _format_error(source, path: Path) -> tuple[WeightsError | None, bool]:
    """(a WeightsError for a file that cannot be in one of PyTorch's formats, looked at before torch reads it, or
    None when it may be one; whether it is a zip archive)."""
    try:
        head = _head(source)
    except OSError as exc:
        return WeightsError(f"{path}: cannot read the weights file ({exc.strerror or exc})"), False
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(source) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            return WeightsError(f"{path}: corrupted or truncated zip archive, not a readable PyTorch weights file "
                                f"({first_line(exc)})"), True
        finally:
            if not isinstance(source, (str, Path)):
                source.seek(0)
        # torch.save writes every member under one folder, with the pickled object in <folder>/data.pkl.
        if not any(name.endswith("/data.pkl") and name.count("/") == 1 for name in names):
            return WeightsError(f"{path}: not a PyTorch weights file (a zip archive without PyTorch's data.pkl)"), True
        return None, True
    if head[:1] == bytes([_PICKLE_PROTO]) and len(head) > 1 and 2 <= head[1] <= 5:
        return None, False
    return WeightsError(f"{path}: not a PyTorch weights file ({_what_it_is(head)})"), False


# What torch's weights-only unpickler says about an object it refuses to build (as opposed to bytes it cannot
# read at all): only these mean the file holds Python objects beyond plain tensors.
_REFUSED_OBJECT = ("GLOBAL", "allowlisted", "unrecognized function", "must be imported")


def _load(source, path: Path, mmap: bool) -> dict:
    """torch.load(weights_only=True) of ``source``; whatever goes wrong is a one-line WeightsError naming ``path``:
    a file in no PyTorch format is refused before torch reads it, and any failure of torch's reader on the rest
    (it raises KeyError, IndexError, TypeError... on damaged bytes) means a damaged or foreign file."""
    import warnings

    import torch

    refused, is_zip = _format_error(source, path)
    if refused is not None:
        raise refused
    mmap = mmap and is_zip  # the legacy format cannot be memory-mapped
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": torch's, not the user's business
            obj = torch.load(source, map_location="cpu", weights_only=True, mmap=mmap)
    except MemoryError:
        raise
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(exc)
        if any(marker in str(exc) for marker in _REFUSED_OBJECT):
            raise WeightsError(
                f"{path}: refused to load: the file contains Python objects that would run code, "
                "not plain tensors"
            ) from None
        raise WeightsError(f"{path}: corrupted or not a PyTorch weights file ({reason})") from None
    except Exception as exc:  # torch's reader fails on damaged bytes with any exception type
        raise WeightsError(f"{path}: corrupted or not a PyTorch weights file ({_reader_reason(exc)})") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    return obj


def _reader_reason(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "the file ends early"
    if isinstance(exc, (RuntimeError, OSError, ValueError)):
        return first_line(exc)
    return f"unreadable data: {type(exc).__name__} {first_line(exc)}"


def _unpickler_reason(exc: BaseException) -> str:
    """The line of torch's weights-only error that says what went wrong, without the advice around it (to
    retry with ``weights_only=False``, which must never be followed here)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    text = text.split(marker, 1)[1] if marker in text else text
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation", "Re-running")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(boilerplate)]
    return reasons[0] if reasons else first_line(exc)


def validate_weights(weights: dict, path: Path | str, expected_shapes: Mapping[str, tuple[int, ...]] | None = None) -> None:
    """Check the QualiCLIP layout: clip_model.* visual tensors that build the trunk, prompts_features (14, D).

    With ``expected_shapes`` (a weights record's pins), also check those exact shapes (a file of the wrong model
    is refused).
    """
    import torch

    from qualiclip_cli.core.model.architecture import ModifiedResNet, VisualConfig

    if not all(isinstance(k, str) for k in weights):
        raise WeightsError(f"{path}: not a QualiCLIP weights file (its keys are not all tensor names)")
    if not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise WeightsError(f"{path}: not a QualiCLIP weights file (values are not all tensors)")
    if PROMPTS_KEY not in weights or not any(k.startswith(CLIP_PREFIX) for k in weights):
        raise WeightsError(
            f"{path}: not a QualiCLIP weights file (expected 'clip_model.*' tensors and 'prompts_features')"
        )
    for key, shape in (expected_shapes or {}).items():
        actual = tuple(weights[key].shape) if key in weights else None
        if actual != tuple(shape):
            raise WeightsError(f"{path}: {key} has shape {actual}, expected {tuple(shape)}: wrong or damaged file")
    visual = visual_state_dict(split_weights(weights)[0])
    try:
        cfg = VisualConfig.from_state_dict(visual, prefix="")
    except (KeyError, IndexError) as exc:
        raise WeightsError(f"{path}: image encoder tensors missing ({exc})") from None
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in ModifiedResNet(cfg).state_dict().items()}
    for key, shape in expected.items():
        if key not in visual:
            raise WeightsError(f"{path}: missing tensor clip_model.visual.{key}")
        if tuple(visual[key].shape) != shape:
            raise WeightsError(
                f"{path}: clip_model.visual.{key} has shape {tuple(visual[key].shape)}, expected {shape}"
            )
    prompts = weights[PROMPTS_KEY]
    if tuple(prompts.shape) != (14, cfg.output_dim):
        raise WeightsError(f"{path}: prompts_features has shape {tuple(prompts.shape)}, expected (14, {cfg.output_dim})")
    if not torch.isfinite(prompts).all():
        raise WeightsError(f"{path}: prompts_features contains NaN or infinite values")


def non_finite_tensors(weights: Mapping[str, object]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinite value (diverged or damaged weights)."""
    import torch

    return [k for k, v in weights.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def check_finite(weights: Mapping[str, object], path: Path | str) -> None:
    """Refuse weights with NaN or infinite values, naming the first such tensor (one line)."""
    bad = non_finite_tensors(weights)
    if bad:
        more = f" (and {len(bad) - 1} more tensor{'s' if len(bad) > 2 else ''})" if len(bad) > 1 else ""
        raise WeightsError(f"{path}: tensor {bad[0]} holds NaN or infinite values{more}: damaged or diverged weights")
