"""ScoreStream hands each record out as soon as it and every record before it are scored (the progress bar moves
one photo at a time), in input order, whatever the decode threads and the buckets do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from qualiclip_cli.core.images.discovery import Found
from qualiclip_cli.core.pipeline import stream as S
from qualiclip_cli.core.pipeline.options import ScoreOptions
from qualiclip_cli.core.records import ScoreRecord


class _SlowFuture:
    """A decode that is never finished before someone waits for it (a slow disk, a big photo): deterministic."""

    def __init__(self, fn, args):
        self.fn, self.args, self.ran = fn, args, False

    def done(self) -> bool:
        return self.ran

    def result(self):
        self.ran = True
        return self.fn(*self.args)


class _SlowPool:
    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, *args):
        return _SlowFuture(fn, args)


@dataclass
class _Decoded:
    pixels: object
    width: int
    height: int
    source: str = "file"


class _FakeScorer:
    """Shapes by file name (`wide_*` is another shape); notes, at each forward pass, whether a finished record
    that could be handed out was waiting meanwhile."""

    decoder = "pillow"
    runtime = None

    def __init__(self, workers: int, batch_size: int):
        self.options = ScoreOptions()
        self.workers, self.batch_size = workers, batch_size
        self.stream: S.ScoreStream | None = None
        self.held_back: list[int] = []  # record indexes kept waiting during a forward pass

    def load(self, path: Path):
        width = 48 if Path(path).name.startswith("wide_") else 32
        return _Decoded(None, width, 32)

    def decode_cpu(self, path: Path):
        return self.load(path)

    def load_with_capture(self, path, ident):
        return self.load(path), None

    def score_bucket(self, items):
        if self.stream.next_out in self.stream.reorder:
            self.held_back.append(self.stream.next_out)
        return [(item, ScoreRecord(path=item.display, score=0.5, width=item.width, height=item.height))
                for item in items]


def _files(tmp_path: Path, names: list[str]) -> list[Found]:
    found = []
    for name in names:
        (tmp_path / name).write_bytes(b"x")
        found.append(Found(tmp_path / name))
    return found


def _run(scorer, found, pulled: list[int] | None = None):
    stream = S.ScoreStream(scorer)
    scorer.stream = stream

    def source():
        for index, entry in enumerate(found):
            if pulled is not None:
                pulled.append(index)
            yield entry

    handed = []
    for record in stream.run(source()):
        handed.append((record.path, len(pulled) if pulled is not None else None))
    return handed


@pytest.mark.parametrize("workers", [2, 0], ids=["decode threads", "inline"])
def test_no_finished_record_waits_while_the_model_runs(tmp_path, monkeypatch, workers):
    monkeypatch.setattr(S, "ThreadPoolExecutor", _SlowPool)
    found = _files(tmp_path, [f"IMG_{i}.jpg" for i in range(12)])
    scorer = _FakeScorer(workers=workers, batch_size=1)
    handed = _run(scorer, found)
    assert [Path(p).name for p, _ in handed] == [f"IMG_{i}.jpg" for i in range(12)]
    assert scorer.held_back == []


def test_a_rare_shape_does_not_hold_back_the_other_records(tmp_path, monkeypatch):
    # One wide photo, then many of another shape: the wide photo's bucket never fills.
    names = ["IMG_0.jpg".replace("IMG", "wide_IMG")] + [f"IMG_{i}.jpg" for i in range(1, 13)]
    found = _files(tmp_path, names)
    scorer = _FakeScorer(workers=0, batch_size=4)
    pulled: list[int] = []
    handed = _run(scorer, found, pulled)
    assert [Path(p).name for p, _ in handed] == names  # input order, every file once
    first_out_after = handed[0][1]
    assert first_out_after < len(names), "the first record was held until the whole input had been read"
    # and no more than a batch's worth of finished records ever waited behind it
    assert first_out_after <= 1 + 2 * scorer.batch_size


def test_the_last_records_come_one_at_a_time(tmp_path, monkeypatch):
    """At the end of the input the loads still in flight are scored and handed out one by one, not all at once."""
    monkeypatch.setattr(S, "ThreadPoolExecutor", _SlowPool)
    found = _files(tmp_path, [f"IMG_{i}.jpg" for i in range(6)])
    scorer = _FakeScorer(workers=2, batch_size=1)
    passes_when_handed = []
    stream = S.ScoreStream(scorer)
    scorer.stream = stream
    passes = 0
    original = scorer.score_bucket

    def counting(items):
        nonlocal passes
        passes += 1
        return original(items)

    scorer.score_bucket = counting
    for _ in stream.run(found):
        passes_when_handed.append(passes)
    assert passes_when_handed == [1, 2, 3, 4, 5, 6]
