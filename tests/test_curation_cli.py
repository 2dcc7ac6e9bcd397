"""cull, sort, tag, undo and history through the CLI: dry runs change nothing and print what the real run then
reports, every change comes back byte-identical with `undo`, the quarantine is never walked again, collisions
never overwrite, siblings travel with their photo, sidecars read back with exiftool, exit codes."""

import hashlib
import json
import os
import re

import pytest

from cli_support import jsonl_rows as _jsonl
from cli_support import natural_image, run_cli, run_process
from curation_support import exiftool_xmp, snapshot

NAMES = ("astronaut", "coffee", "chelsea", "rocket")


def _shoot(root, names=NAMES):
    """IMG_1.jpg … IMG_4.jpg, small natural images."""
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names, start=1):
        natural_image(name).save(root / f"IMG_{i}.jpg", quality=92)
    return root


def _scores(root, weights):
    """basename -> score, via `qualiclip score` (which also fills the results cache)."""
    result = run_cli("score", root, "--format", "jsonl", "--weights", weights)
    assert result.exit_code == 0, result.stderr
    return {os.path.basename(r["path"]): r["score"] for r in _jsonl(result.stdout)}


def _worst_first(scores):
    return sorted(scores, key=lambda name: (scores[name], name))


def _contents(state):
    """A snapshot without modification times."""
    return {k: v if v == "dir" else v[:2] for k, v in state.items()}


def _run_id(stderr):
    match = re.search(r"undo with: qualiclip undo (\S+)", stderr)
    assert match, stderr
    return match.group(1)


def cli(*args, weights=None, env=None):
    extra = ("--weights", weights) if weights is not None else ()
    return run_cli(*args, *extra, env=env)


# ------------------------------------------------------------------------------------------------------ cull


def test_cull_dry_run_changes_nothing_and_prints_what_the_real_run_reports(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "work" / "shoot")
    worst = _worst_first(_scores(root, tiny_weights_file))
    before = snapshot(root.parent, include_dirs=True)

    dry = cli("cull", root, "--keep-top", "2", "--action", "move", "--dry-run", weights=tiny_weights_file)
    assert dry.exit_code == 0, dry.stderr
    assert snapshot(root.parent, include_dirs=True) == before
    assert "dry run" in dry.stderr and "nothing was changed" in dry.stderr
    lines = dry.stdout.splitlines()
    assert [line.split()[:4] for line in lines] == [
        ["move", str(root / name), "->", str(root / "_rejected" / name)] for name in worst[:2]]
    assert all(re.search(r"\(score 0\.\d{4}\)$", line) for line in lines)

    real = cli("cull", root, "--keep-top", "2", "--action", "move", weights=tiny_weights_file)
    assert real.exit_code == 0, real.stderr
    assert real.stdout == dry.stdout
    assert sorted(os.listdir(root / "_rejected")) == sorted(worst[:2])
    assert sorted(p for p in os.listdir(root) if p != "_rejected") == sorted(worst[2:])
    run_id = _run_id(real.stderr)
    assert f"run {run_id}" in real.stderr and "moved 2 files" in real.stderr

    undo = cli("undo", run_id)
    assert undo.exit_code == 0, undo.stderr
    assert [line.split()[0] for line in undo.stdout.splitlines()] == ["restored", "restored"]
    assert snapshot(root.parent, include_dirs=True) == before  # byte-identical, same mtimes, _rejected/ gone


def test_jsonl_plan_and_report(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "work" / "shoot")
    worst = _worst_first(_scores(root, tiny_weights_file))
    dry = _jsonl(cli("cull", root, "--bottom-percent", "50", "-a", "copy", "-n", "--format", "jsonl",
                     weights=tiny_weights_file).stdout)
    real = cli("cull", root, "--bottom-percent", "50", "-a", "copy", "--format", "jsonl", weights=tiny_weights_file)
    assert real.exit_code == 0, real.stderr
    done = _jsonl(real.stdout)
    assert [set(r) for r in done] == [{"action", "source", "destination", "status", "error", "score", "reason",
                                       "sibling_of"}] * 2
    assert [r["status"] for r in dry] == ["planned"] * 2 and [r["status"] for r in done] == ["done"] * 2
    strip = lambda rows: [{k: v for k, v in r.items() if k != "status"} for r in rows]  # noqa: E731
    assert strip(dry) == strip(done)
    assert [os.path.basename(r["source"]) for r in done] == worst[:2]
    assert all(r["action"] == "copy" and r["error"] is None and 0 < r["score"] < 1 for r in done)
    for row in done:  # a copy: both exist, identical
        assert open(row["source"], "rb").read() == open(row["destination"], "rb").read()


def test_default_action_lists_when_piped_and_moves_on_a_terminal(tmp_path, tiny_weights_file, monkeypatch):
    root = _shoot(tmp_path / "work" / "shoot")
    worst = _worst_first(_scores(root, tiny_weights_file))
    before = snapshot(root, include_dirs=True)
    piped = cli("cull", root, "--keep-top", "3", weights=tiny_weights_file)
    assert piped.exit_code == 0, piped.stderr
    assert piped.stdout.split()[:2] == ["list", str(root / worst[0])]
    assert snapshot(root, include_dirs=True) == before and "undo with" not in piped.stderr

    from qualiclip_cli.commands import console

    monkeypatch.setattr(console, "stdout_is_terminal", lambda: True)
    on_terminal = cli("cull", root, "--keep-top", "3", weights=tiny_weights_file)
    assert on_terminal.exit_code == 0, on_terminal.stderr
    assert os.listdir(root / "_rejected") == [worst[0]]
    assert cli("undo").exit_code == 0
    assert snapshot(root, include_dirs=True) == before


def test_second_cull_scores_nothing_again_and_never_walks_the_quarantine(tmp_path, tiny_weights_file, monkeypatch):
    root = _shoot(tmp_path / "work" / "shoot")
    worst = _worst_first(_scores(root, tiny_weights_file))
    first = cli("cull", root, "--keep-top", "3", "-a", "move", weights=tiny_weights_file)
    assert first.exit_code == 0 and os.listdir(root / "_rejected") == [worst[0]]

    import qualiclip_cli.core.images.decode as decode

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded a file that was cached")

    scanned = []
    real_scandir = os.scandir

    def spying_scandir(path="."):
        scanned.append(str(path))
        return real_scandir(path)

    with monkeypatch.context() as m:
        m.setattr(decode, "decode_image", no_decoding)
        m.setattr(os, "scandir", spying_scandir)
        second = cli("cull", root, "--keep-top", "2", "-a", "move", weights=tiny_weights_file)
    assert second.exit_code == 0, second.stderr
    assert "3 scored (3 from cache)" in second.stderr
    assert str(root) in scanned
    assert not [p for p in scanned if "_rejected" in p]
    assert sorted(os.listdir(root / "_rejected")) == sorted(worst[:2])  # nothing went to _rejected/_rejected


def test_collisions_are_numbered_or_refused_never_overwritten(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "work" / "shoot")
    worst = _worst_first(_scores(root, tiny_weights_file))[0]
    occupant = root / "_rejected" / worst
    occupant.parent.mkdir()
    occupant.write_bytes(b"an earlier reject with the same name")
    before = snapshot(root.parent, include_dirs=True)

    refused = cli("cull", root, "--keep-top", "3", "-a", "move", "--on-collision", "refuse", "--format", "jsonl",
                  weights=tiny_weights_file)
    assert refused.exit_code == 3, refused.stderr
    assert [(r["status"], r["source"]) for r in _jsonl(refused.stdout)] == [("skipped", str(root / worst))]
    assert "destination exists" in refused.stderr
    assert snapshot(root.parent, include_dirs=True) == before

    numbered = cli("cull", root, "--keep-top", "3", "-a", "move", weights=tiny_weights_file)
    assert numbered.exit_code == 0, numbered.stderr
    stem, ext = os.path.splitext(worst)
    assert numbered.stdout.startswith(f"move  {root / worst} -> {root / '_rejected' / f'{stem} (1){ext}'}  (score ")
    assert occupant.read_bytes() == b"an earlier reject with the same name"
    assert cli("undo").exit_code == 0
    assert snapshot(root.parent, include_dirs=True) == before

    assert cli("cull", root, "--keep-top", "3", "--on-collision", "overwrite").exit_code == 2


def test_sidecar_and_raw_sibling_travel_with_their_photo_and_come_back(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "work" / "shoot", names=("astronaut", "coffee"))
    (root / "IMG_1.CR2").write_bytes(b"raw sensor data")
    (root / "IMG_1.xmp").write_bytes(b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    before = snapshot(root.parent, include_dirs=True)

    no_siblings = cli("cull", root, "--below", "1", "-a", "move", "-n", "--no-siblings", weights=tiny_weights_file)
    assert [line.split()[1] for line in no_siblings.stdout.splitlines()] == [
        str(root / n) for n in _worst_first(_scores(root, tiny_weights_file))]

    result = cli("cull", root, "--below", "1", "-a", "move", weights=tiny_weights_file)
    assert result.exit_code == 0, result.stderr
    assert sorted(os.listdir(root)) == ["_rejected"]
    assert sorted(os.listdir(root / "_rejected")) == ["IMG_1.CR2", "IMG_1.jpg", "IMG_1.xmp", "IMG_2.jpg"]
    assert f"move  {root / 'IMG_1.CR2'} -> {root / '_rejected/IMG_1.CR2'}  (RAW of IMG_1.jpg)" in result.stdout
    assert f"move  {root / 'IMG_1.xmp'} -> {root / '_rejected/IMG_1.xmp'}  (sidecar of IMG_1.jpg)" in result.stdout
    undo = cli("undo")
    assert undo.exit_code == 0, undo.stderr
    assert snapshot(root.parent, include_dirs=True) == before


def test_a_unit_that_cannot_move_whole_stays_and_is_reported_once(tmp_path, tiny_weights_file, monkeypatch):
    import errno

    from qualiclip_cli.core.curation import fileops

    root = _shoot(tmp_path / "work" / "shoot", names=("astronaut", "coffee"))
    (root / "IMG_1.CR2").write_bytes(b"raw sensor data")
    (root / "IMG_1.xmp").write_bytes(b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    _scores(root, tiny_weights_file)
    before = snapshot(root.parent, include_dirs=True)
    real = fileops.move_file

    def disk_full_for_the_raw(src, *a, **k):
        if os.path.basename(src) == "IMG_1.CR2":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(fileops, "move_file", disk_full_for_the_raw)
        result = cli("cull", root, "--below", "1", "-a", "move", weights=tiny_weights_file)
    assert result.exit_code == 3, result.stderr
    assert sorted(os.listdir(root)) == ["IMG_1.CR2", "IMG_1.jpg", "IMG_1.xmp", "_rejected"]  # the unit stays whole
    assert os.listdir(root / "_rejected") == ["IMG_2.jpg"]  # the batch went on
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == [f"qualiclip: warning: move {root / 'IMG_1.CR2'} failed: {root / 'IMG_1.CR2'}: No space left "
                        "on device; IMG_1.jpg with its 2 siblings left where it was"]
    lines = {line.split()[1]: line for line in result.stdout.splitlines()}
    assert lines[str(root / "IMG_1.jpg")].endswith("[rolled back: put back, since IMG_1.CR2 could not be moved]")
    assert lines[str(root / "IMG_1.xmp")].endswith("[skipped: not attempted, since IMG_1.CR2 could not be moved]")
    assert "moved 1 file, 1 failed, 1 put back, 1 not attempted" in result.stderr
    undo = cli("undo")
    assert undo.exit_code == 0, undo.stderr
    assert snapshot(root.parent, include_dirs=True) == before


def test_a_symlinked_quarantine_refuses_the_whole_cull_before_anything_moves(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "work" / "shoot", names=("astronaut", "coffee"))
    elsewhere = tmp_path / "other-disk"
    elsewhere.mkdir()
    (root / "_rejected").symlink_to(elsewhere, target_is_directory=True)
    before = snapshot(tmp_path, include_dirs=True)
    result = cli("cull", root, "--below", "1", "-a", "move", weights=tiny_weights_file)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"qualiclip: error: {root / '_rejected'}: is a symbolic link (to {elsewhere}); refusing to put files where it "
        "leads; to send the rejects there, name that folder as the quarantine folder"]
    assert result.stdout == "" and snapshot(tmp_path, include_dirs=True) == before
    followed = cli("cull", root, "--below", "1", "-a", "move", "--to", root / "_rejected", weights=tiny_weights_file)
    assert followed.exit_code == 0, followed.stderr
    assert sorted(os.listdir(elsewhere)) == ["IMG_1.jpg", "IMG_2.jpg"]


def test_cull_through_dotdot_after_a_symlink_and_a_followed_symlinked_photo(tmp_path, tiny_weights_file):
    dd = tmp_path / "dd"
    elsewhere = _shoot(dd / "elsewhere", names=("astronaut",))
    (elsewhere / "inner").mkdir()
    lexical = _shoot(dd / "shoot", names=("coffee",))  # also an IMG_1.jpg, but not the one the kernel opens
    (lexical / "link").symlink_to(elsewhere / "inner", target_is_directory=True)
    (elsewhere / "LINKED.jpg").symlink_to(lexical / "IMG_1.jpg")
    before = snapshot(lexical, include_dirs=True)
    result = cli("cull", lexical / "link" / "..", "--below", "1", "-a", "move", "--follow", weights=tiny_weights_file)
    assert result.exit_code == 3, result.stderr  # the symlinked photo was left out
    assert result.stdout.split()[:4] == ["move", str(elsewhere / "IMG_1.jpg"), "->",
                                         str(elsewhere / "_rejected" / "IMG_1.jpg")]
    assert os.listdir(elsewhere / "_rejected") == ["IMG_1.jpg"]
    assert f"{elsewhere / 'LINKED.jpg'} left out: is a symbolic link; left in place" in result.stderr
    assert (elsewhere / "LINKED.jpg").is_symlink() and snapshot(lexical, include_dirs=True) == before
    assert cli("undo").exit_code == 0
    assert sorted(os.listdir(elsewhere)) == ["IMG_1.jpg", "LINKED.jpg", "inner"]


def test_cull_to_a_chosen_quarantine_and_scoring_failures_exit_3(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "work" / "shoot", names=("astronaut", "coffee"))
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    bin_dir = root / "bin"
    result = cli("cull", root, "--below", "1", "-a", "move", "--to", bin_dir, weights=tiny_weights_file)
    assert result.exit_code == 3, result.stderr  # the broken file could not be scored
    assert "broken.jpg" in result.stderr
    assert sorted(os.listdir(bin_dir)) == ["IMG_1.jpg", "IMG_2.jpg"] and (root / "broken.jpg").exists()
    again = cli("cull", root, "--below", "1", "-a", "move", "--to", bin_dir, weights=tiny_weights_file)
    assert "0 scored" in again.stderr and again.stdout == ""  # files inside --to are not scored again


# ------------------------------------------------------------------------------------------------------ sort


def test_sort_prints_the_ranking_best_first(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "work" / "shoot")
    scores = _scores(root, tiny_weights_file)
    result = cli("sort", root, weights=tiny_weights_file)
    assert result.exit_code == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert [r[0] for r in rows] == ["1", "2", "3", "4"]
    assert [os.path.basename(r[2]) for r in rows] == list(reversed(_worst_first(scores)))
    as_json = _jsonl(cli("sort", root, "--format", "jsonl", weights=tiny_weights_file).stdout)
    assert [r["rank"] for r in as_json] == [1, 2, 3, 4] and as_json[0]["score"] == max(scores.values())
    assert not (tmp_path / "qualiclip-home" / "state" / "journal").exists()  # printing changes nothing


def test_sort_into_tier_folders_copies_and_undo_removes_the_copies(tmp_path, tiny_weights_file):
    from qualiclip_cli.core.curation.selection import assign_tier, tier_folder

    root = _shoot(tmp_path / "work" / "shoot")
    scores = _scores(root, tiny_weights_file)
    lo, hi = min(scores.values()), max(scores.values())
    assert hi > lo
    tiers = [lo + (hi - lo) * k / 4 for k in (1, 2, 3)] + [hi]
    into = root.parent / "sorted"
    before, before_root = snapshot(root.parent, include_dirs=True), snapshot(root, include_dirs=True)
    result = cli("sort", root, "--into", into, "--tiers", ",".join(repr(t) for t in tiers), weights=tiny_weights_file)
    assert result.exit_code == 0, result.stderr
    expected = {f"{tier_folder(assign_tier(s, tiers))}/{name}" for name, s in scores.items()}
    got = {f"{d}/{f}" for d in os.listdir(into) for f in os.listdir(into / d)}
    assert got == expected and "1-poor/" + _worst_first(scores)[0] in got and "5-excellent/" + _worst_first(scores)[-1] in got
    for rel in got:
        assert (into / rel).read_bytes() == (root / rel.split("/")[1]).read_bytes()
    assert snapshot(root, include_dirs=True) == before_root  # copies: the originals are untouched
    assert cli("undo").exit_code == 0
    assert snapshot(root.parent, include_dirs=True) == before and not into.exists()

    moved = cli("sort", root, "--into", into, "--move", weights=tiny_weights_file)
    assert moved.exit_code == 0 and os.listdir(root) == []
    assert cli("undo").exit_code == 0
    assert snapshot(root.parent, include_dirs=True) == before


def test_rank_prefix_renames_by_rank_and_undo_restores(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "work" / "shoot")
    (root / "IMG_2.xmp").write_bytes(b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    best_first = list(reversed(_worst_first(_scores(root, tiny_weights_file))))
    before = snapshot(root.parent, include_dirs=True)
    result = cli("sort", root, "--rank-prefix", weights=tiny_weights_file)
    assert result.exit_code == 0, result.stderr
    photos = sorted(p for p in os.listdir(root) if p.endswith(".jpg"))
    assert photos == [f"{rank:04d}_{name}" for rank, name in enumerate(best_first, start=1)]
    rank_of_2 = best_first.index("IMG_2.jpg") + 1
    assert (root / f"{rank_of_2:04d}_IMG_2.xmp").exists()  # the sidecar keeps pointing at its photo
    assert cli("undo").exit_code == 0
    assert snapshot(root.parent, include_dirs=True) == before


# ------------------------------------------------------------------------------------------------------- tag

FOREIGN = b"""<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" xmp:Rating="1" photoshop:City="Lisbon"/>
 </rdf:RDF>
</x:xmpmeta>
"""


def test_tag_writes_sidecars_exiftool_reads_and_merges_foreign_ones(tmp_path, tiny_weights_file):
    from qualiclip_cli.core.curation.selection import assign_tier

    root = _shoot(tmp_path / "work" / "shoot")
    scores = _scores(root, tiny_weights_file)
    order = _worst_first(scores)
    lo, hi = min(scores.values()), max(scores.values())
    tiers = [lo + (hi - lo) * k / 4 for k in (1, 2, 3)] + [hi]
    reject = (scores[order[0]] + scores[order[1]]) / 2
    (root / "IMG_3.xmp").write_bytes(FOREIGN)
    before = snapshot(root.parent, include_dirs=True)

    args = ("--tiers", ",".join(map(repr, tiers)), "--reject-below", repr(reject), "--reject-label", "Green")
    dry = cli("tag", root, *args, "-n", weights=tiny_weights_file)
    assert dry.exit_code == 0 and snapshot(root.parent, include_dirs=True) == before
    result = cli("tag", root, *args, weights=tiny_weights_file)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == dry.stdout and "wrote 4 sidecars" in result.stderr
    assert "1 kept its own rating" in result.stderr  # IMG_3's rating 1 is someone else's

    sha = hashlib.sha256(tiny_weights_file.read_bytes()).hexdigest()
    got = exiftool_xmp(*(root / f"IMG_{i}.xmp" for i in range(1, 5)))
    for name, score in scores.items():
        row = got[name.replace(".jpg", ".xmp")]
        expected = -1 if name == order[0] else assign_tier(score, tiers)
        if name == "IMG_3.jpg":
            expected = 1  # set by someone else: kept (and, a kept rating being no reject, not labelled)
        assert row["XMP-xmp:Rating"] == expected, name
        assert row.get("XMP-xmp:Label") == ("Green" if expected == -1 else None), name  # the rejects only
        assert row["XMP-qualiclip:Score"] == pytest.approx(score, abs=1e-6)
        assert row["XMP-qualiclip:WeightsSha256"] == sha
        assert row["XMP-qualiclip:Preprocessing"]
    assert got["IMG_3.xmp"]["XMP-photoshop:City"] == "Lisbon"  # the foreign property survived the merge

    assert cli("undo").exit_code == 0
    # New sidecars removed, the foreign one byte-identical again (rewritten, so its mtime is new).
    assert _contents(snapshot(root.parent, include_dirs=True)) == _contents(before)


def test_tag_append_naming_and_malformed_sidecar_exit_3(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "work" / "shoot", names=("astronaut", "coffee"))
    (root / "IMG_1.jpg.xmp").write_bytes(b"<not xml")
    dry = cli("tag", root, "--sidecar", "append", "-n", "--format", "jsonl", weights=tiny_weights_file)
    real = cli("tag", root, "--sidecar", "append", "--format", "jsonl", weights=tiny_weights_file)
    assert dry.exit_code == 3 and real.exit_code == 3, real.stderr
    rows = {os.path.basename(r["source"]): r for r in _jsonl(real.stdout)}
    assert rows["IMG_1.jpg"]["status"] == "failed" and "left untouched" in rows["IMG_1.jpg"]["error"]
    assert rows["IMG_2.jpg"]["status"] == "done" and rows["IMG_2.jpg"]["destination"] == str(root / "IMG_2.jpg.xmp")
    assert [r["error"] for r in _jsonl(dry.stdout)] == [r["error"] for r in _jsonl(real.stdout)]
    assert (root / "IMG_1.jpg.xmp").read_bytes() == b"<not xml"
    assert exiftool_xmp(root / "IMG_2.jpg.xmp")["IMG_2.jpg.xmp"]["XMP-xmp:Rating"] in (1, 2, 3, 4, 5)
    assert "IMG_1.jpg" not in real.stderr and "1 failed" in real.stderr  # reported once: by its row


# ---------------------------------------------------------------------------------------- history and undo


def test_history_lists_runs_and_undo_marks_them(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "work" / "shoot")
    before = snapshot(root.parent, include_dirs=True)
    assert cli("history", "--format", "jsonl").stdout == ""
    cull_id = _run_id(cli("cull", root, "--keep-top", "2", "-a", "move", weights=tiny_weights_file).stderr)
    sort_id = _run_id(cli("sort", root, "--into", root.parent / "s", weights=tiny_weights_file).stderr)

    runs = _jsonl(cli("history", "--format", "jsonl").stdout)
    assert [(r["run_id"], r["command"], r["counts"]["done"], r["undone"]) for r in runs] == [
        (sort_id, "sort", 2, None), (cull_id, "cull", 2, None)]
    table = cli("history", "--format", "table", env={"COLUMNS": "300"})
    assert sort_id in table.stdout and "cull" in table.stdout

    first = cli("undo")  # the latest run not yet undone: the sort
    assert first.exit_code == 0 and f"undo {sort_id}" in first.stderr
    runs = json.loads(cli("history", "--format", "json").stdout)
    assert [(r["run_id"], r["undone"], r["state"]) for r in runs] == [(sort_id, "complete", "undone"),
                                                                      (cull_id, None, "done")]
    again = cli("undo", sort_id)
    assert again.exit_code == 1 and "already undone" in again.stderr
    assert f"undo {cull_id}" in cli("undo").stderr
    assert snapshot(root.parent, include_dirs=True) == before
    nothing = cli("undo")
    assert nothing.exit_code == 1 and "nothing to undo" in nothing.stderr
    assert cli("undo", "not-a-run").exit_code == 1


def test_undo_reports_what_it_could_not_restore(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "work" / "shoot")
    worst = _worst_first(_scores(root, tiny_weights_file))
    run_id = _run_id(cli("cull", root, "--keep-top", "2", "-a", "move", weights=tiny_weights_file).stderr)
    (root / "_rejected" / worst[0]).write_bytes(b"edited in the quarantine")
    result = cli("undo", run_id, "--format", "jsonl")
    assert result.exit_code == 3
    rows = {os.path.basename(r["path"]): r for r in _jsonl(result.stdout)}
    assert rows[worst[0]]["status"] == "problem" and rows[worst[1]]["status"] == "restored"
    assert "could not be restored" in result.stderr and worst[0] in result.stderr
    assert (root / "_rejected" / worst[0]).read_bytes() == b"edited in the quarantine"
    runs = _jsonl(cli("history", "--format", "jsonl").stdout)
    assert runs[0]["undone"] == "partial"


@pytest.mark.parametrize("args", [
    ("cull",),                                                    # no criterion
    ("cull", "--keep-top", "2", "--bottom-percent", "10"),        # conflicting criteria
    ("cull", "--below", "1.5"),
    ("cull", "--below", "0.5", "--action", "delete"),
    ("cull", "--below", "0.5", "--action", "list", "--to", "elsewhere"),
    ("cull", "--below", "0.5", "--format", "xml"),
    ("sort", "--into", "x", "--rank-prefix"),
    ("sort", "--move"),
    ("sort", "--into", "x", "--tiers", "0.5,0.4,0.6,0.8"),
    ("tag", "--tiers", "a,b"),
    ("tag", "--reject-below", "0"),
    ("tag", "--sidecar", "sideways"),
    ("history", "--format", "csv"),
])
def test_usage_errors_exit_2_before_scoring(tmp_path, args):
    root = _shoot(tmp_path / "work" / "shoot", names=("astronaut",))
    command, *rest = args
    result = run_cli(command, root, *rest) if command != "history" else run_cli(*args)
    assert result.exit_code == 2, (args, result.stdout, result.stderr)
    # click's own usage errors come in a box titled "Error", ours as "qualiclip: error: ..."
    assert "error" in result.stderr.lower() and "scored" not in result.stderr


def test_trash_and_undo_in_a_real_process(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "work" / "shoot", names=("astronaut", "coffee"))
    (root / "IMG_1.xmp").write_bytes(b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    before = snapshot(root, include_dirs=True)
    data_home, user_home = tmp_path / "xdg-data", tmp_path / "user-home"
    user_home.mkdir()
    env = {"XDG_DATA_HOME": str(data_home), "HOME": str(user_home)}  # send2trash reads them at import

    proc = run_process("cull", root, "--below", "1", "--action", "trash", "--weights", tiny_weights_file, env=env)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(data_home / "Trash" / "files")) == ["IMG_1.jpg", "IMG_1.xmp", "IMG_2.jpg"]
    assert os.listdir(root) == []
    assert all(line.startswith("trash ") for line in proc.stdout.splitlines())

    undo = run_process("undo", _run_id(proc.stderr), env=env)
    assert undo.returncode == 0, undo.stderr
    assert snapshot(root, include_dirs=True) == before
    assert os.listdir(data_home / "Trash" / "files") == []


def test_interrupted_cull_names_the_run_and_undo_restores(tmp_path, tiny_weights_file, monkeypatch):
    from qualiclip_cli.core.curation import fileops

    root = _shoot(tmp_path / "work" / "shoot")
    _scores(root, tiny_weights_file)
    before = snapshot(root.parent, include_dirs=True)
    real_move, calls = fileops.move_file, []

    def move_then_ctrl_c(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_move(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(fileops, "move_file", move_then_ctrl_c)
        result = cli("cull", root, "--below", "1", "-a", "move", weights=tiny_weights_file)
    assert result.exit_code == 130
    run_id = json.loads(cli("history", "--format", "jsonl").stdout.splitlines()[0])["run_id"]
    assert f"interrupted; what was done is journaled: qualiclip undo {run_id}" in result.stderr
    assert len(os.listdir(root / "_rejected")) == 1
    undo = cli("undo")
    assert undo.exit_code == 0, undo.stderr
    assert snapshot(root.parent, include_dirs=True) == before


# ----------------------------------------------------- issue 12: broken files, sub-scores, tiers, rank prefix


def test_cull_unreadable_quarantines_broken_files_with_siblings_and_undo_restores(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "work" / "shoot", names=("astronaut", "coffee"))
    (root / "empty.jpg").write_bytes(b"")
    (root / "day2").mkdir()
    (root / "day2" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "day2" / "broken.xmp").write_bytes(b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    before = snapshot(root.parent, include_dirs=True)
    dry = cli("cull", root, "--unreadable", "-a", "move", "--dry-run", weights=tiny_weights_file)
    assert dry.exit_code == 0, dry.stderr
    assert snapshot(root.parent, include_dirs=True) == before
    result = cli("cull", root, "--unreadable", "-a", "move", weights=tiny_weights_file)
    assert result.exit_code == 0, result.stderr  # the broken files were culled as asked
    assert result.stdout == dry.stdout.replace("would ", "")
    assert "unreadable: empty file (0 bytes)" in result.stdout
    rejected = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert rejected == ["IMG_1.jpg", "IMG_2.jpg", "_rejected/day2/broken.jpg", "_rejected/day2/broken.xmp",
                        "_rejected/empty.jpg"]
    assert cli("undo").exit_code == 0
    assert snapshot(root.parent, include_dirs=True) == before

    both = cli("cull", root, "--unreadable", "--below", "1", "-a", "list", weights=tiny_weights_file)
    assert both.exit_code == 0, both.stderr
    assert sorted(os.path.basename(line.split()[1]) for line in both.stdout.splitlines()) == [
        "IMG_1.jpg", "IMG_2.jpg", "broken.jpg", "empty.jpg"]


def test_cull_and_sort_by_a_sub_score(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "work" / "shoot")
    # every digit: a cut taken from a rounded value could fall just above the unrounded one
    rows = _jsonl(cli("score", root, "--details", "--full-precision", "--format", "jsonl",
                      weights=tiny_weights_file).stdout)
    sharp = {os.path.basename(r["path"]): r["pairs"]["sharpness"] for r in rows}
    by_sharpness = sorted(sharp, key=lambda n: (-sharp[n], n))
    score = {os.path.basename(r["path"]): r["score"] for r in rows}
    assert len(set(sharp.values())) == 4
    assert by_sharpness != sorted(score, key=lambda n: (-score[n], n))  # so ranking by it is visible
    ranking = cli("sort", root, "--by", "sharpness", "--format", "jsonl", weights=tiny_weights_file)
    assert ranking.exit_code == 0, ranking.stderr
    got = _jsonl(ranking.stdout)
    assert [os.path.basename(r["path"]) for r in got] == by_sharpness
    assert [r["sharpness"] for r in got] == [float(f"{v:.6g}") for v in sorted(sharp.values(), reverse=True)]

    cut = sorted(sharp.values())[2]  # the two least sharp are strictly below
    culled = cli("cull", root, "--by", "sharpness", "--below", repr(cut), "-a", "list", weights=tiny_weights_file)
    assert culled.exit_code == 0, culled.stderr
    assert [os.path.basename(line.split()[1]) for line in culled.stdout.splitlines()] == by_sharpness[:1:-1]
    assert "(sharpness " in culled.stdout
    assert "sharpness" in cli("cull", "--help").stdout and "picture" in cli("cull", "--help").stdout


@pytest.mark.parametrize("args", [
    ("cull", "--by", "sharpness"),  # --by needs a score criterion
    ("cull", "--by", "blurriness", "--below", "0.5"),
    ("sort", "--by", "sharp"),
])
def test_by_usage_errors_exit_2(tmp_path, args):
    root = _shoot(tmp_path / "work" / "shoot", names=("astronaut",))
    command, *rest = args
    result = run_cli(command, root, *rest)
    assert result.exit_code == 2, (args, result.stdout, result.stderr)


def test_sort_into_keeps_sub_folders_under_each_tier(tmp_path, tiny_weights_file):
    from qualiclip_cli.core.curation.selection import assign_tier, tier_folder

    root = tmp_path / "work" / "shoot"
    _shoot(root / "2024", names=("astronaut", "coffee"))
    _shoot(root, names=("chelsea",))
    scores = {os.path.relpath(r["path"], root): r["score"]
              for r in _jsonl(cli("score", root, "--format", "jsonl", weights=tiny_weights_file).stdout)}
    into = tmp_path / "work" / "sorted"
    result = cli("sort", root, "--into", into, weights=tiny_weights_file)
    assert result.exit_code == 0, result.stderr
    got = sorted(p.relative_to(into).as_posix() for p in into.rglob("*") if p.is_file())
    assert got == sorted(f"{tier_folder(assign_tier(s))}/{rel}" for rel, s in scores.items())
    assert any(g.endswith("/2024/IMG_1.jpg") for g in got)


def test_rank_prefix_run_twice_replaces_its_prefix(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "work" / "shoot", names=("astronaut", "coffee", "chelsea"))
    first = cli("sort", root, "--rank-prefix", weights=tiny_weights_file)
    assert first.exit_code == 0, first.stderr
    names = sorted(os.listdir(root))
    assert all(re.fullmatch(r"000[123]_IMG_[123]\.jpg", n) for n in names), names
    second = cli("sort", root, "--rank-prefix", weights=tiny_weights_file)
    assert second.exit_code == 0, second.stderr
    assert sorted(os.listdir(root)) == names  # same ranking: nothing stacked, nothing renamed
    assert "0001_0001" not in second.stdout + second.stderr
