"""`ScoreRecord`: one file's scoring outcome, what every command and output format is built from."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Names of the seven sub-scores, one per prompt pair of `model.prompts.PROMPT_PAIRS`, in the same order.
PAIR_NAMES: tuple[str, ...] = ("overall", "sharpness", "edges", "resolution", "noise", "quality", "picture")

STATUS_OK = "ok"
STATUS_ERROR = "error"

# Field order of the machine formats (commands/formats.py). Changing it is a breaking change: document it in
# the README.
BASE_FIELDS = ("path", "score", "status", "error", "width", "height")
#: Fields added since, written after everything else (machine formats only ever add fields at the end).
LATER_FIELDS = ("source",)


@dataclass
class ScoreRecord:
    """One file's outcome. `score` is in [0, 1], higher is better; None when status is "error".

    width/height are the size actually scored (after EXIF orientation and the resolution policy).
    source says where the scored pixels came from: "file" (the file's own picture), "raw-preview" (a RAW's
    embedded preview), "raw-demosaic" (LibRaw's half-size development of a RAW); None on error.
    pairs maps each of the 7 pair names to its positive-prompt probability (None on error).
    """

    path: str
    score: float | None
    status: str = STATUS_OK
    error: str | None = None
    width: int | None = None
    height: int | None = None
    source: str | None = None
    pairs: dict[str, float] | None = field(default=None)
    cached: bool = field(default=False, compare=False)
    # An error row whose file itself is broken (empty, truncated, undecodable): see errors.ImageError.damaged.
    damaged: bool = field(default=False, compare=False)
    # What grouping needs (capture time, camera, embedding), when known: see `Signals`.
    signals: Signals | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    @classmethod
    def failure(cls, path: str, reason: str, damaged: bool = False) -> ScoreRecord:
        return cls(path=path, score=None, status=STATUS_ERROR, error=reason, damaged=damaged)

    def to_dict(self, details: bool = False) -> dict:
        """The documented fields, in order, `LATER_FIELDS` last; `pairs` is null without ``details`` (present
        either way, so every row has the same keys)."""
        row = {
            "path": self.path,
            "score": self.score,
            "status": self.status,
            "error": self.error,
            "width": self.width,
            "height": self.height,
        }
        row["pairs"] = dict(self.pairs) if details and self.pairs is not None else None
        row["source"] = self.source
        return row


TIME_SOURCES = ("exif", "mtime")


@dataclass(frozen=True)
class Signals:
    """What `group` needs of one scored photo, cached with its score so grouping decodes nothing.

    capture_time: seconds, the sort key within one camera's stream (UTC when the EXIF time has an offset, or
    from the file's mtime; the camera's wall clock read as UTC otherwise). capture_text: the same instant in
    ISO 8601 as written in the machine formats. time_source: "exif" or "mtime". camera: "serial:<body serial>",
    else "<make> <model>", else "" (unknown). exposure_bias: EXIF ExposureBiasValue in EV, None when absent.
    embedding: the L2-normalised image embedding as little-endian float16 bytes.
    """

    capture_time: float
    capture_text: str
    time_source: str
    camera: str
    exposure_bias: float | None
    embedding: bytes
