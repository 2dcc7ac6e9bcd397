"""XMP sidecars: ratings and our fields written, foreign properties kept, exiftool reads them back, malformed
sidecars left alone, and a tag run is undone to the previous sidecar."""

import json
import shutil
import subprocess

import pytest

from qualiclip_cli.core.curation import xmp
from qualiclip_cli.core.curation.execute import execute
from qualiclip_cli.core.curation.plan import plan_tag
from qualiclip_cli.core.curation.undo import undo
from qualiclip_cli.core.errors import CurationError, UsageError
from qualiclip_cli.core.records import PAIR_NAMES

from curation_support import record, sha, write

WEIGHTS = "0123456789abcdef" * 4
PAIRS = {name: round(0.1 * (i + 1), 3) for i, name in enumerate(PAIR_NAMES)}

FOREIGN = b"""<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:darktable="http://darktable.sf.net/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
   xmp:Rating="2"
   xmp:Label="Red"
   xmp:CreatorTool="darktable 4.6.1"
   darktable:xmp_version="5">
   <!-- written by darktable -->
   <dc:subject>
    <rdf:Bag>
     <rdf:li>holiday</rdf:li>
     <rdf:li>beach</rdf:li>
    </rdf:Bag>
   </dc:subject>
  </rdf:Description>
  <rdf:Description rdf:about="" xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/">
   <photoshop:City>Lisbon</photoshop:City>
   <xmp:Rating xmlns:xmp="http://ns.adobe.com/xap/1.0/">1</xmp:Rating>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def tags(rating=4, label=None, **choices):
    return xmp.SidecarTags(rating=rating, score=0.712345678, weights_sha256=WEIGHTS, preprocessing="short-side-224",
                           pairs=PAIRS, label=label, **choices)


OVERWRITE = {"overwrite_rating": True, "manage_label": True, "overwrite_label": True}


def exiftool_json(path):
    exe = shutil.which("exiftool")
    if exe is None:
        pytest.fail("exiftool is required for this test: install it (Debian/Ubuntu: apt-get install "
                    "libimage-exiftool-perl)")
    out = subprocess.run([exe, "-j", "-G1", "-XMP:all", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)[0]


def test_rating_for_tiers_and_reject():
    assert [xmp.rating_for(s) for s in (0.1, 0.3, 0.5, 0.7, 0.9)] == [1, 2, 3, 4, 5]
    assert xmp.rating_for(0.25, reject_below=0.3) == -1
    assert xmp.rating_for(0.35, reject_below=0.3) == 2
    assert xmp.rating_for(0.5, thresholds=(0.1, 0.2, 0.3, 0.4)) == 5
    with pytest.raises(UsageError):
        xmp.rating_for(0.5, reject_below=2)
    with pytest.raises(UsageError):
        xmp.rating_for(0.5, thresholds=(0.5, 0.4, 0.6, 0.8))


def test_sidecar_naming(tmp_path):
    photo = tmp_path / "IMG_1.jpg"
    assert xmp.sidecar_path(photo, "adobe") == tmp_path / "IMG_1.xmp"
    assert xmp.sidecar_path(photo, "append") == tmp_path / "IMG_1.jpg.xmp"
    write(tmp_path / "IMG_1.XMP", b"")
    assert xmp.sidecar_path(photo, "adobe") == tmp_path / "IMG_1.XMP"  # update it, don't shadow it
    with pytest.raises(UsageError):
        xmp.sidecar_path(photo, "darktable")


def test_merge_keeps_foreign_properties_and_prefixes(tmp_path):
    merged = xmp.merge_sidecar(FOREIGN, tags(label="Green", **OVERWRITE))
    text = merged.decode()
    for kept in ("darktable:xmp_version=\"5\"", "xmp:CreatorTool=\"darktable 4.6.1\"", "<dc:subject>",
                 "<rdf:li>holiday</rdf:li>", "<photoshop:City>Lisbon</photoshop:City>", "written by darktable",
                 "x:xmptk=\"XMP Core 4.4.0-Exiv2\""):
        assert kept in text, kept
    assert "ns0:" not in text and "ns1:" not in text
    assert text.count("xmp:Rating") == 1 and 'xmp:Rating="4"' in text  # both old ratings (either form) replaced
    assert 'xmp:Label="Green"' in text and "Red" not in text
    found = xmp.read_tags(merged)
    assert found["Rating"] == "4" and found["qualiclip:score"] == "0.712346"
    assert found["qualiclip:weightsSha256"] == WEIGHTS
    assert found["qualiclip:preprocessing"] == "short-side-224"
    pair_keys = {f"qualiclip:{v}" for v in xmp.PAIR_PROPERTIES.values()}
    assert {k for k in found if k.startswith("qualiclip:pair")} == pair_keys
    assert xmp.merge_sidecar(merged, tags(label="Green", **OVERWRITE)) == merged  # stable on re-tagging
    assert xmp.merge_sidecar(merged, tags(label="Green", manage_label=True)) == merged  # now ours: same


def test_label_left_alone_when_not_given():
    text = xmp.merge_sidecar(FOREIGN, tags()).decode()
    assert 'xmp:Label="Red"' in text


def test_exiftool_reads_merged_and_new_sidecars(tmp_path):
    merged = write(tmp_path / "IMG_1.xmp", xmp.merge_sidecar(FOREIGN, tags(rating=-1, label="Green", **OVERWRITE)))
    fresh = write(tmp_path / "IMG_2.xmp", xmp.merge_sidecar(None, tags(rating=5)))
    got = exiftool_json(merged)
    assert got["XMP-xmp:Rating"] == -1 and got["XMP-xmp:Label"] == "Green"
    assert got["XMP-xmp:CreatorTool"] == "darktable 4.6.1" and got["XMP-darktable:Xmp_version"] == 5
    assert got["XMP-dc:Subject"] == ["holiday", "beach"] and got["XMP-photoshop:City"] == "Lisbon"
    assert got["XMP-qualiclip:Score"] == pytest.approx(0.712346)
    assert got["XMP-qualiclip:WeightsSha256"] == WEIGHTS
    assert got["XMP-qualiclip:Preprocessing"] == "short-side-224"
    assert got["XMP-qualiclip:PairSharpness"] == pytest.approx(PAIRS["sharpness"])
    new = exiftool_json(fresh)
    assert new["XMP-xmp:Rating"] == 5 and new["XMP-qualiclip:PairPicture"] == pytest.approx(PAIRS["picture"])


@pytest.mark.parametrize("bad", [b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF", b"not xml at all",
                                 b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>",
                                 b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>"])
def test_malformed_sidecars_are_refused(bad):
    with pytest.raises(CurationError, match="left untouched"):
        xmp.merge_sidecar(bad, tags())


def test_rdf_root_without_wrapper_is_kept():
    bare = (b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
            b'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Make="Canon"/></rdf:RDF>')
    text = xmp.merge_sidecar(bare, tags()).decode()
    assert "<rdf:RDF" in text and "xmpmeta" not in text and 'tiff:Make="Canon"' in text


@pytest.fixture
def shoot(tmp_path, monkeypatch):
    monkeypatch.setenv("QUALICLIP_HOME", str(tmp_path / "qhome"))
    root = tmp_path / "shoot"
    photos = [write(root / f"IMG_{i}.jpg", f"jpeg {i}".encode(), 1_500_000_000 + i) for i in range(1, 4)]
    write(root / "IMG_1.xmp", FOREIGN)
    write(root / "IMG_3.xmp", b"<x:xmpmeta broken")
    records = [record(p, s) for p, s in zip(photos, (0.9, 0.1, 0.5))]
    for r, _p in zip(records, photos):
        r.pairs = PAIRS
    return root, records


def test_tag_run_and_undo_restore_previous_sidecars(shoot):
    root, records = shoot
    photos_before = {p.name: sha(p.read_bytes()) for p in root.glob("*.jpg")}
    plan = plan_tag(records, WEIGHTS, "short-side-224", reject_below=0.2, reject_label="qualiclip")
    assert [op.destination.name for op in plan] == ["IMG_1.xmp", "IMG_2.xmp", "IMG_3.xmp"]
    assert [op.kept for op in plan] == [("rating",), (), ()]  # IMG_1's darktable rating is not ours
    result = execute(plan, command="tag")
    status = {o.operation.source.name: o.status for o in result.outcomes}
    assert status == {"IMG_1.jpg": "done", "IMG_2.jpg": "done", "IMG_3.jpg": "failed"}
    assert "not valid XML" in result.failures[0].error
    assert (root / "IMG_3.xmp").read_bytes() == b"<x:xmpmeta broken"  # malformed: untouched
    assert 'xmp:Rating="2"' in (root / "IMG_1.xmp").read_text()  # kept (ours would have been 5)
    assert "qualiclip:Rating" not in (root / "IMG_1.xmp").read_text()
    assert xmp.read_tags((root / "IMG_2.xmp").read_bytes())["Rating"] == "-1"
    assert {p.name: sha(p.read_bytes()) for p in root.glob("*.jpg")} == photos_before  # images never modified

    report = undo(result.run_id)
    assert report.complete, report.problems
    assert (root / "IMG_1.xmp").read_bytes() == FOREIGN
    assert not (root / "IMG_2.xmp").exists()
    assert (root / "IMG_3.xmp").read_bytes() == b"<x:xmpmeta broken"
    assert sorted(p.name for p in root.iterdir()) == ["IMG_1.jpg", "IMG_1.xmp", "IMG_2.jpg", "IMG_3.jpg",
                                                      "IMG_3.xmp"]


def test_undo_leaves_a_sidecar_edited_after_the_run(shoot):
    root, records = shoot
    result = execute(plan_tag(records[:1], WEIGHTS, "p"))
    (root / "IMG_1.xmp").write_bytes(b"edited in lightroom")
    report = undo(result.run_id)
    assert [i.path for i in report.problems] == [str(root / "IMG_1.jpg")]
    assert (root / "IMG_1.xmp").read_bytes() == b"edited in lightroom"
