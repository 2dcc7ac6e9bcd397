"""`tag` never overrides a human: ratings and labels that qualiclip did not write are kept (unless asked),
our own are updated, the rejects' label goes on the rejects only, existing sidecars in either naming are
updated, a RAW+JPEG pair's RAW sidecar gets the rating too, curated folders are not walked, and a failure is
reported once."""

import os

import pytest

from qualiclip_cli.core.curation import xmp
from qualiclip_cli.core.curation.execute import execute
from qualiclip_cli.core.curation.plan import plan_tag
from qualiclip_cli.core.curation.undo import undo

from cli_support import natural_image, run_cli
from curation_support import exiftool_xmp, record, snapshot, write

WEIGHTS = "0123456789abcdef" * 4


def human_sidecar(rating=None, label=None) -> bytes:
    """A sidecar as Lightroom or darktable leaves it: a rating and/or a colour label set by the photographer."""
    attrs = "".join(f' xmp:{k}="{v}"' for k, v in (("Rating", rating), ("Label", label)) if v is not None)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
            f' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
            f'  <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
            f' xmlns:dc="http://purl.org/dc/elements/1.1/"{attrs} dc:format="image/jpeg"/>\n'
            f' </rdf:RDF>\n</x:xmpmeta>\n').encode()


def tags_of(path):
    return xmp.read_tags(path.read_bytes())


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QUALICLIP_HOME", str(tmp_path / "qhome"))
    return tmp_path


def run(records, **kw):
    plan = plan_tag(records, WEIGHTS, "short-side-224", **kw)
    return plan, execute(plan, command="tag")


def test_a_human_rating_and_label_are_kept(home):
    root = home / "shoot"
    one = write(root / "IMG_1.jpg", b"jpeg 1")
    two = write(root / "IMG_2.jpg", b"jpeg 2")
    write(root / "IMG_1.xmp", human_sidecar(rating=4, label="Blue"))
    write(root / "IMG_2.xmp", human_sidecar(label="Blue"))
    plan, result = run([record(one, 0.1), record(two, 0.1)], reject_below=0.3, reject_label="Red")
    assert [o.status for o in result.outcomes] == ["done", "done"]
    first, second = tags_of(root / "IMG_1.xmp"), tags_of(root / "IMG_2.xmp")
    # IMG_1: the photographer's 4 stars and Blue stay (ours would have been -1 and Red); our score is added
    assert first["Rating"] == "4" and first["Label"] == "Blue" and first["qualiclip:score"] == "0.100000"
    assert "qualiclip:Rating" not in first and "qualiclip:Label" not in first
    # IMG_2 had no rating: it gets ours (-1, recorded as ours), but keeps its own label
    assert second["Rating"] == "-1" and second["qualiclip:Rating"] == "-1" and second["Label"] == "Blue"
    assert [op.kept for op in plan] == [("rating",), ("label",)]
    assert plan.operations[0].reason == "kept its own rating 4, score 0.1000"
    assert "dc:format" in (root / "IMG_1.xmp").read_text()


def test_our_own_earlier_rating_is_updated_until_someone_changes_it(home):
    root = home / "shoot"
    photo = write(root / "IMG_1.jpg", b"jpeg")
    sidecar = root / "IMG_1.xmp"
    run([record(photo, 0.5)])
    assert tags_of(sidecar)["Rating"] == "3" and tags_of(sidecar)["qualiclip:Rating"] == "3"
    plan, _ = run([record(photo, 0.5)], thresholds=(0.1, 0.2, 0.3, 0.4))  # ours: updated
    assert plan.operations[0].kept == () and tags_of(sidecar)["Rating"] == "5"
    sidecar.write_text(sidecar.read_text().replace('xmp:Rating="5"', 'xmp:Rating="2"'))  # changed in Lightroom
    plan, _ = run([record(photo, 0.5)])
    assert plan.operations[0].kept == ("rating",) and tags_of(sidecar)["Rating"] == "2"
    assert "qualiclip:Rating" not in tags_of(sidecar)  # never taken for ours again, even when equal
    plan, _ = run([record(photo, 0.3)])  # ours would now be 2, the same as the photographer's
    plan, _ = run([record(photo, 0.5)])
    assert tags_of(sidecar)["Rating"] == "2"


def test_overwrite_ratings_and_labels_replace_them(home):
    root = home / "shoot"
    photo = write(root / "IMG_1.jpg", b"jpeg")
    write(root / "IMG_1.xmp", human_sidecar(rating=4, label="Blue"))
    plan, _ = run([record(photo, 0.1)], reject_below=0.3, reject_label="Red", overwrite_ratings=True)
    assert tags_of(root / "IMG_1.xmp")["Rating"] == "-1" and tags_of(root / "IMG_1.xmp")["Label"] == "Blue"
    plan, _ = run([record(photo, 0.1)], reject_below=0.3, reject_label="Red", overwrite_labels=True)
    assert tags_of(root / "IMG_1.xmp")["Label"] == "Red" and plan.operations[0].kept == ()


def test_the_reject_label_goes_on_the_rejects_only_and_ours_leaves_a_photo_no_longer_rejected(home):
    root = home / "shoot"
    photos = [write(root / f"IMG_{i}.jpg", f"jpeg {i}".encode()) for i in (1, 2)]
    run([record(photos[0], 0.1), record(photos[1], 0.9)], reject_below=0.3, reject_label="Red")
    assert tags_of(root / "IMG_1.xmp")["Label"] == "Red" and "Label" not in tags_of(root / "IMG_2.xmp")
    run([record(photos[0], 0.1), record(photos[1], 0.9)], reject_below=0.05, reject_label="Red")
    assert "Label" not in tags_of(root / "IMG_1.xmp")  # our own Red went with the reject
    write(root / "IMG_1.xmp", human_sidecar(label="Red"))  # the photographer's own Red
    run([record(photos[0], 0.1)], reject_below=0.3, reject_label="Red")
    run([record(photos[0], 0.1)], reject_below=0.05, reject_label="Red")
    assert tags_of(root / "IMG_1.xmp")["Label"] == "Red"  # theirs, even though it said what ours would
    run([record(photos[0], 0.1)])  # a run without --reject-label leaves labels alone
    assert tags_of(root / "IMG_1.xmp")["Label"] == "Red"


@pytest.mark.parametrize("naming", ["adobe", "append"])
def test_an_existing_sidecar_in_either_naming_is_updated_not_doubled(home, naming):
    root = home / "shoot"
    one = write(root / "IMG_1.JPG", b"jpeg 1")
    two = write(root / "IMG_2.JPG", b"jpeg 2")
    write(root / "IMG_1.JPG.xmp", human_sidecar(label="Blue"))   # darktable's naming
    write(root / "IMG_2.xmp", human_sidecar(label="Green"))      # Lightroom's naming
    plan, result = run([record(one, 0.9), record(two, 0.9)], naming=naming)
    assert [op.destination.name for op in plan] == ["IMG_1.JPG.xmp", "IMG_2.xmp"]
    assert sorted(os.listdir(root)) == ["IMG_1.JPG", "IMG_1.JPG.xmp", "IMG_2.JPG", "IMG_2.xmp"]
    assert tags_of(root / "IMG_1.JPG.xmp")["Rating"] == "5" and tags_of(root / "IMG_1.JPG.xmp")["Label"] == "Blue"
    assert tags_of(root / "IMG_2.xmp")["Rating"] == "5" and tags_of(root / "IMG_2.xmp")["Label"] == "Green"


def test_both_namings_existing_are_both_updated(home):
    root = home / "shoot"
    photo = write(root / "IMG_1.jpg", b"jpeg")
    write(root / "IMG_1.xmp", human_sidecar())
    write(root / "IMG_1.jpg.xmp", human_sidecar())
    plan, _ = run([record(photo, 0.9)], naming="append")
    assert [op.destination.name for op in plan] == ["IMG_1.jpg.xmp", "IMG_1.xmp"]  # the chosen naming first
    assert tags_of(root / "IMG_1.xmp")["Rating"] == tags_of(root / "IMG_1.jpg.xmp")["Rating"] == "5"


def test_a_sidecar_found_in_the_other_naming_is_one_photos_only(home):
    root = home / "shoot"
    jpeg = write(root / "IMG_1.jpg", b"jpeg")
    png = write(root / "IMG_1.png", b"png")
    write(root / "IMG_1.xmp", human_sidecar())
    plan, _ = run([record(jpeg, 0.9), record(png, 0.1)], naming="append")
    assert [(op.source.name, op.destination.name) for op in plan] == [("IMG_1.jpg", "IMG_1.xmp"),
                                                                       ("IMG_1.png", "IMG_1.png.xmp")]
    assert plan.skipped == []
    (root / "IMG_1.png.xmp").unlink()  # (ours, from the run above: it would be the PNG's existing sidecar)
    plan = plan_tag([record(jpeg, 0.9), record(png, 0.1)], WEIGHTS, "p", naming="adobe")
    assert [op.source.name for op in plan] == ["IMG_1.jpg"] and plan.skipped[0].kind.value == "sidecar taken"


def test_a_raw_jpeg_pair_gets_both_sidecars_under_darktable_naming(home):
    root = home / "shoot"
    photo = write(root / "IMG_1.JPG", b"jpeg")
    write(root / "IMG_1.ARW", b"raw sensor data")
    before = snapshot(root)
    plan, result = run([record(photo, 0.7)], naming="append")
    assert [(op.source.name, op.destination.name) for op in plan] == [("IMG_1.JPG", "IMG_1.JPG.xmp"),
                                                                       ("IMG_1.ARW", "IMG_1.ARW.xmp")]
    assert plan.operations[1].reason == "rating 4, score 0.7000; RAW of IMG_1.JPG"
    assert [o.status for o in result.outcomes] == ["done", "done"]
    got = exiftool_xmp(root / "IMG_1.JPG.xmp", root / "IMG_1.ARW.xmp")
    assert got["IMG_1.JPG.xmp"]["XMP-xmp:Rating"] == got["IMG_1.ARW.xmp"]["XMP-xmp:Rating"] == 4
    assert got["IMG_1.ARW.xmp"]["XMP-qualiclip:Rating"] == 4
    assert got["IMG_1.ARW.xmp"]["XMP-qualiclip:Score"] == pytest.approx(0.7)
    assert undo(result.run_id).complete and snapshot(root) == before

    # Lightroom's naming gives the RAW no sidecar of its own: IMG_1.xmp is the pair's
    plan = plan_tag([record(photo, 0.7)], WEIGHTS, "p", naming="adobe")
    assert [op.destination.name for op in plan] == ["IMG_1.xmp"]


# ----------------------------------------------------------------------------------------------- the CLI


def _shoot(root, n=2):
    root.mkdir(parents=True, exist_ok=True)
    names = ("astronaut", "coffee", "chelsea")
    for i in range(1, n + 1):
        natural_image(names[i - 1]).save(root / f"IMG_{i}.jpg", quality=92)
    return root


def test_cli_summary_counts_kept_ratings_and_label_is_a_usage_error(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "shoot")
    write(root / "IMG_1.xmp", human_sidecar(rating=4, label="Blue"))
    for args, message in ((["--label", "Red"], "--label was removed"),
                          (["--reject-label", "Red"], "--reject-label only applies with --reject-below"),
                          (["--reject-below", "0.5", "--overwrite-labels"], "--overwrite-labels only applies")):
        bad = run_cli("tag", root, *args, "--weights", tiny_weights_file)
        assert bad.exit_code == 2 and message in bad.stderr, bad.stderr
        assert "scored" not in bad.stderr  # refused before any work
    dry = run_cli("tag", root, "-n", "--weights", tiny_weights_file)
    assert dry.exit_code == 0, dry.stderr
    assert "would write 2 sidecars, 1 would keep its own rating" in dry.stderr
    real = run_cli("tag", root, "--weights", tiny_weights_file)
    assert "wrote 2 sidecars, 1 kept its own rating" in real.stderr and real.stdout == dry.stdout
    assert "kept its own rating 4" in real.stdout
    assert tags_of(root / "IMG_1.xmp")["Rating"] == "4"
    again = run_cli("tag", root, "--overwrite-ratings", "--weights", tiny_weights_file)
    assert "kept" not in again.stderr and tags_of(root / "IMG_1.xmp")["Rating"] != "4"


def test_cli_a_failure_is_reported_once(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "shoot")
    write(root / "IMG_1.xmp", b"<not xml")
    for extra in (["-n"], []):
        result = run_cli("tag", root, *extra, "--weights", tiny_weights_file)
        assert result.exit_code == 3
        both = result.stdout + result.stderr
        assert both.count("not valid XML") == 1, both
        assert "IMG_1" not in result.stdout and "IMG_2.jpg -> " in result.stdout


def test_cli_tag_does_not_walk_the_folders_sort_and_cull_filled(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "shoot")
    assert run_cli("sort", root, "--into", root / "by-quality", "--weights", tiny_weights_file).exit_code == 0
    assert run_cli("cull", root, "--keep-top", "1", "-a", "copy", "--to", root / "rejects",
                   "--weights", tiny_weights_file).exit_code == 0
    result = run_cli("tag", root, "--weights", tiny_weights_file)
    assert result.exit_code == 0, result.stderr
    assert "wrote 2 sidecars" in result.stderr
    assert "not walking" in result.stderr and "by-quality" in result.stderr and "rejects" in result.stderr
    assert not [p for p in (root / "by-quality").rglob("*.xmp")] and not list((root / "rejects").rglob("*.xmp"))
    assert sorted(p.name for p in root.glob("*.xmp")) == ["IMG_1.xmp", "IMG_2.xmp"]
    # named itself, a curated folder is tagged
    assert run_cli("tag", root / "rejects", "--weights", tiny_weights_file).exit_code == 0
    assert list((root / "rejects").rglob("*.xmp"))


def legacy_sidecar(rating, score) -> bytes:
    """A sidecar as qualiclip's tag wrote it before it recorded qualiclip:Rating: our score beside xmp:Rating."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
            f' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
            f'  <rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/"'
            f' xmlns:qualiclip="{xmp.QUALICLIP_NS}" xmp:Rating="{rating}" qualiclip:score="{score}"/>\n'
            f' </rdf:RDF>\n</x:xmpmeta>\n').encode()


def test_a_rating_an_earlier_qualiclip_wrote_is_updated_one_changed_by_hand_is_kept(home):
    root = home / "shoot"
    ours = write(root / "IMG_1.jpg", b"jpeg 1")
    theirs = write(root / "IMG_2.jpg", b"jpeg 2")
    write(root / "IMG_1.xmp", legacy_sidecar(3, "0.500000"))  # 3 stars: what the default tiers give 0.5
    write(root / "IMG_2.xmp", legacy_sidecar(5, "0.500000"))  # 5 stars for 0.5: the photographer's choice
    plan, result = run([record(ours, 0.9), record(theirs, 0.9)])
    assert [o.status for o in result.outcomes] == ["done", "done"]
    first, second = tags_of(root / "IMG_1.xmp"), tags_of(root / "IMG_2.xmp")
    assert first["Rating"] == "5" and first["qualiclip:Rating"] == "5" and first["qualiclip:score"] == "0.900000"
    assert second["Rating"] == "5" and "qualiclip:Rating" not in second
    # the hand-set one stays the photographer's even now that our score beside it agrees with it
    assert first["qualiclip:tagVersion"] == second["qualiclip:tagVersion"] == "2"
    plan, result = run([record(ours, 0.3), record(theirs, 0.3)])
    assert tags_of(root / "IMG_1.xmp")["Rating"] == "2" and tags_of(root / "IMG_2.xmp")["Rating"] == "5"
