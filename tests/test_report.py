"""`qualiclip report`: the review page, opened in a real headless Chromium (tests/headless_chromium.py, CDP): photo count and
order as `score` gives them, the slider's count equal to what `cull --below T --dry-run` plans (by running the
command the page prints), heat maps on demand, errors listed, hostile names inert, groups, 5,000 photos."""

import json
import os
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from qualiclip_cli.core.records import ScoreRecord

from cli_support import jsonl_rows, natural_image, run_cli
from headless_chromium import Browser, find_chromium

TAG_NAME = "<img src=x onerror=window.__pwned=1>.jpg"
QUOTED_NAME = "IMG 0001 'it''s' & \"fine\".jpg"
BYTES_NAME = os.fsdecode(b"caf\xe9 \xff.jpg")  # not UTF-8


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if find_chromium() is None:
        pytest.fail("chromium was not found: the review-page tests open the page in a real headless Chromium; "
                    "install it (Debian: apt-get install chromium; .ci/run does)", pytrace=False)
    chrome = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield chrome
    chrome.close()


def _shoot(root: Path) -> Path:
    shoot = root / "shoot"
    (shoot / "day 2").mkdir(parents=True)
    natural_image("astronaut", (160, 120)).save(shoot / "plain.png")
    natural_image("coffee", (200, 150)).save(shoot / QUOTED_NAME, quality=90)
    natural_image("chelsea", (120, 96)).save(shoot / TAG_NAME, quality=90)
    natural_image("rocket", (150, 100)).save(shoot / BYTES_NAME, quality=90)
    natural_image("camera", (128, 128)).save(shoot / "day 2" / "grey.png")
    natural_image("astronaut", (64, 48)).save(shoot / "day 2" / "small.jpg", quality=40)
    (shoot / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return shoot


def _js(browser, expression):
    return browser.evaluate(expression)


def _move_slider(browser, value: float) -> int:
    browser.evaluate(f"(() => {{ const s = document.getElementById('threshold'); s.value = '{value}'; "
                     "s.dispatchEvent(new Event('input')); })()")
    return int(_js(browser, "document.getElementById('cull-count').textContent"))


def _planned(result) -> int:
    rows = jsonl_rows(result.stdout)
    return sum(1 for r in rows if r["sibling_of"] is None and r["status"] in ("listed", "planned"))


def test_review_page_in_a_real_browser(tmp_path, golden, browser):
    tiny_weights_file = golden / "tiny_qualiclip.pth"  # its scores spread wider than the tests' tiny weights'
    shoot = _shoot(tmp_path)
    page = shoot / "review.html"  # inside the scanned folder
    result = run_cli("report", shoot, "-o", page, "--heatmaps", "--weights", tiny_weights_file)
    assert result.exit_code == 3, result.stderr  # the broken file
    assert result.stdout == f"{page}\n"
    assert "broken.jpg" in result.stderr
    scored = run_cli("score", shoot, "--format", "jsonl", "--sort", "score", "--weights", tiny_weights_file)
    records = [r for r in jsonl_rows(scored.stdout) if r["status"] == "ok"]
    assert len(records) == 6  # the thumbnails folder beside the page is not walked

    browser.open(page)
    assert _js(browser, "document.querySelectorAll('#grid .card').length") == 6
    names = _js(browser, "[...document.querySelectorAll('#grid .card .name')].map(e => e.textContent)")
    from qualiclip_cli.core.names import display

    assert names == [display(os.path.basename(r["path"])) for r in records]  # worst first, as score --sort score
    shown = _js(browser, "[...document.querySelectorAll('#grid .card .score')].map(e => Number(e.textContent))")
    assert shown == sorted(shown) and shown == pytest.approx([r["score"] for r in records], abs=5e-4)
    # Names are text, never markup: the tag-named file shows its name and runs nothing.
    assert TAG_NAME in names and QUOTED_NAME in names and "caf\\xe9 \\xff.jpg" in names
    assert _js(browser, "typeof window.__pwned") == "undefined"
    assert _js(browser, "document.querySelectorAll('img[src=\"x\"]').length") == 0
    # The unreadable photo is in the error list with its reason, not a card with a broken image.
    errors = _js(browser, "[...document.querySelectorAll('#errors li')].map(e => e.textContent)")
    assert len(errors) == 1 and errors[0].startswith(f"{shoot / 'broken.jpg'}: ") and "not" in errors[0]
    assert _js(browser, "[...document.images].filter(i => i.complete && i.naturalWidth === 0).length") == 0
    assert _js(browser, "document.getElementById('sort-group').hidden") is True  # no groups in these records

    # The slider: its count is what `cull --below T --dry-run` plans, running the very command the page shows.
    scores = sorted(r["score"] for r in records)
    for low, high in zip(scores, scores[1:]):
        if high - low > 0.004:
            threshold = round((low + high) / 2, 3)
            break
    else:
        pytest.fail(f"the test photos' scores are too close to place a threshold between them: {scores}")
    for t in (threshold, 0.0, 1.0):
        count = _move_slider(browser, t)
        command = _js(browser, "document.getElementById('cull-command').textContent")
        assert command.endswith(f" --below {t:.3f}")
        words = shlex.split(command)
        assert words[:2] == ["qualiclip", "cull"]
        if t == 0.0:
            assert count == 0
            continue
        cull = run_cli(*words[1:], "--dry-run", "--format", "jsonl", "--action", "list")
        assert cull.exit_code in (0, 3), cull.stderr
        assert count == _planned(cull) == sum(s < t for s in scores)
    # A real key press on the focused slider moves it too (End: to 1.000, every photo scores below it).
    _js(browser, "document.getElementById('threshold').focus()")
    for kind in ("rawKeyDown", "keyUp"):
        browser.call("Input.dispatchKeyEvent", type=kind, key="End", code="End", windowsVirtualKeyCode=35)
    assert _js(browser, "document.getElementById('threshold-value').textContent") == "1.000"
    assert int(_js(browser, "document.getElementById('cull-count').textContent")) == 6
    assert _move_slider(browser, threshold) == sum(s < threshold for s in scores) > 0
    assert _js(browser, "document.querySelectorAll('#grid .card.culled').length") == sum(s < threshold for s in scores)

    # Heat map on demand: none loaded until asked, then it is there and decoded.
    assert _js(browser, "document.querySelectorAll('img.heat').length") == 0
    _js(browser, "document.querySelector('#grid .card .heat-toggle').click()")
    assert browser.wait_for("(() => { const h = document.querySelector('img.heat'); "
                            "return h && h.complete && h.naturalWidth > 0; })()", timeout=10)

    # Other orders.
    _js(browser, "(() => { const s = document.getElementById('sort'); s.value = 'name'; "
                 "s.dispatchEvent(new Event('change')); })()")
    by_name = _js(browser, "[...document.querySelectorAll('#grid .card .name')].map(e => e.textContent)")
    assert by_name == sorted(names)

    shot = browser.screenshot(tmp_path / "review.png")
    assert shot.startswith(b"\x89PNG") and len(shot) > 10_000
    if os.environ.get("QUALICLIP_SCREENSHOT_DIR"):  # to refresh docs/report.png
        shutil.copy(tmp_path / "review.png", Path(os.environ["QUALICLIP_SCREENSHOT_DIR"]) / "report.png")

    # A second report on the same folder replaces its own page and sees the same photos.
    again = run_cli("report", shoot, "-o", page, "--weights", tiny_weights_file, "-q")
    assert again.exit_code == 3 and "(from cache)" not in again.stderr  # -q: no summary
    browser.open(page)
    assert _js(browser, "document.querySelectorAll('#grid .card').length") == 6
    assert _js(browser, "document.querySelectorAll('#grid .heat-toggle').length") == 0  # no --heatmaps this time


@dataclass
class _Burst(ScoreRecord):
    """A record as the bursts feature will hand them: a group id and whether this frame is the group's pick."""

    group: int | None = None
    best: bool = False


def test_groups_side_by_side_with_the_best_frame_marked(tmp_path, browser):
    from qualiclip_cli.core.pipeline.report import Entry, write_page

    pairs = dict.fromkeys(("overall", "sharpness", "edges", "resolution", "noise", "quality", "picture"), 0.5)
    records = [
        _Burst(path="/p/a1.jpg", score=0.30, pairs=pairs, group=1),
        _Burst(path="/p/a2.jpg", score=0.70, pairs=pairs, group=1, best=True),
        _Burst(path="/p/a3.jpg", score=0.50, pairs=pairs, group=1),
        _Burst(path="/p/b1.jpg", score=0.20, pairs=pairs, group=2, best=True),
        _Burst(path="/p/b2.jpg", score=0.10, pairs=pairs, group=2),
        _Burst(path="/p/single.jpg", score=0.40, pairs=pairs),
    ]
    page = tmp_path / "groups.html"
    write_page(page, [Entry(r) for r in records])
    browser.open(page)
    assert _js(browser, "document.getElementById('sort-group').hidden") is False
    _js(browser, "(() => { const s = document.getElementById('sort'); s.value = 'group'; "
                 "s.dispatchEvent(new Event('change')); })()")
    groups = _js(browser, "[...document.querySelectorAll('#grid > .group')].map(g => "
                          "[...g.querySelectorAll('.card')].map(c => [c.querySelector('.name').textContent, "
                          "!!c.querySelector('.best-mark')]))")
    assert groups == [[["b1.jpg", True], ["b2.jpg", False]],
                      [["a2.jpg", True], ["a3.jpg", False], ["a1.jpg", False]]]
    loose = _js(browser, "[...document.querySelectorAll('#grid > .card .name')].map(e => e.textContent)")
    assert loose == ["single.jpg"]
    assert _js(browser, "document.querySelectorAll('.best-mark').length") == 2


def test_five_thousand_photos_open_fast_and_load_lazily(tmp_path, browser):
    from qualiclip_cli.core.pipeline.report import Entry, write_page

    thumbs = tmp_path / "t"
    thumbs.mkdir()
    for i in range(50):
        natural_image("coffee", (160, 120)).save(thumbs / f"{i}.jpg", quality=70)
    pairs = dict.fromkeys(("overall", "sharpness", "edges", "resolution", "noise", "quality", "picture"), 0.5)
    entries = [Entry(ScoreRecord(path=f"/lib/{i:05d}.jpg", score=(i * 7919 % 5000) / 5000, pairs=pairs),
                     thumb=f"t/{i % 50}.jpg?{i}", thumb_size=(160, 120)) for i in range(5000)]
    page = tmp_path / "big.html"
    write_page(page, entries)
    start = time.monotonic()
    browser.open(page)
    opened = time.monotonic() - start
    assert _js(browser, "document.querySelectorAll('#grid .card').length") == 5000
    slider_ms = _js(browser, "(() => { const s = document.getElementById('threshold'); const t0 = performance.now(); "
                             "s.value = '0.5'; s.dispatchEvent(new Event('input')); "
                             "document.body.offsetHeight; return performance.now() - t0; })()")
    assert int(_js(browser, "document.getElementById('cull-count').textContent")) == 2500
    browser.wait_for("[...document.images].some(i => i.complete && i.naturalWidth > 0)", timeout=10)
    loaded = _js(browser, "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length")
    print(f"5000 photos: opened in {opened:.2f} s, slider update {slider_ms:.0f} ms, {loaded} thumbnails loaded")
    assert 0 < loaded < 1000  # lazy: only those near the viewport
    assert opened < 15 and slider_ms < 1500  # generous bounds for a shared 2-core machine; README has the numbers


def test_page_escapes_names_and_refuses_to_replace_a_file_that_is_not_ours(tmp_path, tiny_weights_file):
    from qualiclip_cli.core.pipeline.report import Entry, render_page

    text = render_page([Entry(ScoreRecord.failure(f"/p/{TAG_NAME}", "</script><b>&amp;")),
                        Entry(ScoreRecord(path=BYTES_NAME, score=0.5, pairs=None))], title="<b>t</b>")
    assert TAG_NAME not in text and "</script><b>" not in text and "<b>t</b>" not in text
    data = text.split('<script id="data" type="application/json">')[1].split("</script>")[0]
    photos = json.loads(data)["photos"]
    assert photos[0]["name"] == TAG_NAME and photos[0]["where"] == f"/p/{TAG_NAME}" and photos[0]["error"] == "</script><b>&amp;"
    assert os.fsencode(photos[1]["path"]) == b"caf\xe9 \xff.jpg"
    text.encode("utf-8")  # valid UTF-8 whatever the names

    shoot = tmp_path / "s"
    shoot.mkdir()
    natural_image("coffee", (96, 72)).save(shoot / "a.jpg")
    mine = tmp_path / "notes.html"
    mine.write_text("<p>my notes</p>")
    result = run_cli("report", shoot, "-o", mine, "--weights", tiny_weights_file)
    assert result.exit_code == 1
    assert "notes.html: exists and is not a qualiclip report; not replaced" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert mine.read_text() == "<p>my notes</p>"
