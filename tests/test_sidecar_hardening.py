"""Crafted sidecars cannot hang, exhaust or blow up `tag`: FIFOs and links are refused without being opened,
sidecars have a size cap, the XML guard holds in every encoding (DTDs refused by the parser, not by a byte
search), permissions are kept on the rewritten sidecar and its backup, read-only sidecars need an explicit
option, and `tag` leaves the quarantine alone. Each refusal is one error row for that photo; the batch goes on."""

import json
import os
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest

from qualiclip_cli.core.curation import xmp
from qualiclip_cli.core.curation.execute import execute, predict_failures
from qualiclip_cli.core.curation.plan import plan_tag
from qualiclip_cli.core.errors import CurationError

from cli_support import natural_image
from curation_support import record, sha, snapshot, write

WEIGHTS = "0123456789abcdef" * 4

BODY = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/" photoshop:City="Lisbon">'
        "<dc:title>{}</dc:title></rdf:Description></rdf:RDF></x:xmpmeta>")
LEGIT = '<?xml version="1.0" encoding="UTF-8"?>\n' + BODY.format("Beach \u00e9t\u00e9 \u2603") + "\n"

ATTACKS = {
    "billion_laughs": '<!DOCTYPE x [<!ENTITY a "haha">' + "".join(
        f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9)) + "]>" + BODY.format("&j;"),
    "quadratic": '<!DOCTYPE x [<!ENTITY big "' + "A" * 20000 + '">]>' + BODY.format("&big;" * 2000),
    "external_file": '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + BODY.format("&e;"),
    "external_url": '<!DOCTYPE x [<!ENTITY e SYSTEM "http://127.0.0.1:9/x.xml">]>' + BODY.format("&e;"),
    "parameter_entity": '<!DOCTYPE x [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p;]>' + BODY.format("t"),
    "doctype_only": "<!DOCTYPE x>" + BODY.format("t"),
}

# id -> (Python codec, byte-order mark, encoding declaration or None for none).
ENCODINGS = {
    "utf-8": ("utf-8", b"", "UTF-8"),
    "utf-8-bom": ("utf-8", b"\xef\xbb\xbf", "UTF-8"),
    "utf-8-no-declaration": ("utf-8", b"", None),
    "utf-16-le-bom": ("utf-16-le", b"\xff\xfe", "UTF-16"),
    "utf-16-be-bom": ("utf-16-be", b"\xfe\xff", "UTF-16"),
    "utf-16-le-bom-no-declaration": ("utf-16-le", b"\xff\xfe", None),
    "utf-16-be-bom-no-declaration": ("utf-16-be", b"\xfe\xff", None),
    "utf-16-le": ("utf-16-le", b"", "UTF-16LE"),
    "utf-16-be": ("utf-16-be", b"", "UTF-16BE"),
    "utf-32-le-bom": ("utf-32-le", b"\xff\xfe\x00\x00", "UTF-32"),
    "utf-32-be-bom": ("utf-32-be", b"\x00\x00\xfe\xff", "UTF-32"),
    "utf-32-le": ("utf-32-le", b"", "UTF-32LE"),
    "utf-32-be": ("utf-32-be", b"", "UTF-32BE"),
}
UTF16 = [k for k in ENCODINGS if k.startswith("utf-16")]


def encoded(text: str, encoding: str) -> bytes:
    """`text` (an XML document, without declaration) in `encoding`, with its declaration and BOM."""
    codec, bom, declared = ENCODINGS[encoding]
    text = text.split("?>\n", 1)[-1] if text.startswith("<?xml") else text
    if declared is not None:
        text = f'<?xml version="1.0" encoding="{declared}"?>\n' + text
    return bom + text.encode(codec)


def tags(rating=4):
    return xmp.SidecarTags(rating=rating, score=0.7, weights_sha256=WEIGHTS, preprocessing="p")


@contextmanager
def bounded(seconds=20):
    """Fail (instead of hanging for ever) if the block takes longer than `seconds`: a blocking open() of a FIFO
    is interrupted by the alarm."""
    def expired(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def photos(root: Path, n: int) -> list:
    """IMG_1.jpg … IMG_n.jpg (content irrelevant: plans and sidecar writes never decode them) and their records."""
    records = []
    for i in range(1, n + 1):
        records.append(record(write(root / f"IMG_{i}.jpg", f"jpeg {i}".encode()), 0.1 + 0.8 * i / (n + 1)))
    return records


def outcomes(result):
    return {o.operation.source.name: o for o in result.outcomes}


# ------------------------------------------------------------------------------------------- the XML guard


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("attack", ATTACKS)
def test_dtds_are_refused_in_every_encoding(attack, encoding):
    data = encoded(ATTACKS[attack], encoding)
    with bounded():
        with pytest.raises(CurationError) as caught:
            xmp.merge_sidecar(data, tags(), where="shoot/IMG_1.xmp")
        with pytest.raises(CurationError):
            xmp.read_tags(data, where="shoot/IMG_1.xmp")
    message = str(caught.value)
    assert message.startswith("shoot/IMG_1.xmp: ") and message.endswith("left untouched") and "\n" not in message
    expected = "UTF-32" if encoding.startswith("utf-32") else "contains a DTD"
    assert expected in message


@pytest.mark.parametrize("encoding", [k for k in ENCODINGS if not k.startswith("utf-32")])
def test_legitimate_sidecars_merge_in_their_own_encoding(encoding):
    data = encoded(LEGIT, encoding)
    merged = xmp.merge_sidecar(data, tags())
    codec, bom, declared = ENCODINGS[encoding]
    assert merged.startswith(bom) and not merged[len(bom):].startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"))
    text = merged[len(bom):].decode(codec)
    expected_declaration = "UTF-16" if bom and codec.startswith("utf-16") else (declared or "UTF-8")
    assert text.startswith(f'<?xml version="1.0" encoding="{expected_declaration}"?>')
    assert "Beach \u00e9t\u00e9 \u2603" in text and 'photoshop:City="Lisbon"' in text
    assert xmp.read_tags(merged)["Rating"] == "4"
    assert xmp.merge_sidecar(merged, tags()) == merged  # stable, still in the same encoding


def test_exiftool_reads_a_merged_utf16_sidecar(tmp_path):
    import shutil
    import subprocess

    exe = shutil.which("exiftool")
    if exe is None:
        pytest.fail("exiftool is required for this test (Debian/Ubuntu: apt-get install libimage-exiftool-perl)")
    path = write(tmp_path / "IMG_1.xmp", xmp.merge_sidecar(encoded(LEGIT, "utf-16-le-bom"), tags(rating=5)))
    out = subprocess.run([exe, "-j", "-G1", "-XMP:all", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)[0]
    assert row["XMP-xmp:Rating"] == 5 and row["XMP-photoshop:City"] == "Lisbon"


def test_a_batch_with_crafted_sidecars_goes_on_and_nothing_grows(tmp_path):
    """Every attack in every encoding, next to legitimate sidecars, in one run: each crafted sidecar is one
    failed row naming it, untouched; the others are merged correctly; no file grows; the dry run predicts the
    same failures."""
    root = tmp_path / "shoot"
    cases = [(a, e) for a in ATTACKS for e in ENCODINGS] + [("legit", e) for e in ENCODINGS if "32" not in e]
    records = photos(root, len(cases) + 1)  # the last photo has no sidecar yet
    for rec, (attack, encoding) in zip(records, cases):
        write(Path(rec.path).with_suffix(".xmp"), encoded(LEGIT if attack == "legit" else ATTACKS[attack], encoding))
    before = snapshot(root)

    plan = plan_tag(records, WEIGHTS, "p")
    with bounded(60):
        predicted = predict_failures(plan)
        result = execute(plan, command="tag")
    by_name = outcomes(result)
    failed = {Path(o.operation.destination).name: o.error for o in result.outcomes if o.status == "failed"}
    assert {plan.operations[i].destination.name: e for i, e in predicted.items()} == failed
    for rec, (attack, encoding) in zip(records, cases):
        photo = Path(rec.path)
        sidecar = photo.with_suffix(".xmp")
        outcome = by_name[photo.name]
        if attack == "legit":
            assert outcome.status == "done", (encoding, outcome.error)
            assert xmp.read_tags(sidecar.read_bytes())["qualiclip:score"] == f"{rec.score:.6f}"
            assert sidecar.read_bytes().startswith(ENCODINGS[encoding][1])
        else:
            assert outcome.status == "failed", (attack, encoding)
            assert outcome.error.startswith(f"{sidecar}: "), outcome.error
            state = before[sidecar.name]
            assert (sha(sidecar.read_bytes()), sidecar.stat().st_size) == state[:2]  # untouched, not grown
    last = Path(records[-1].path)
    assert by_name[last.name].status == "done" and xmp.read_tags(last.with_suffix(".xmp").read_bytes())
    after = snapshot(root)
    grown = [name for name, (_, size, _) in after.items()
             if name.endswith(".xmp") and name in before and size > before[name][1] + 4096]
    assert grown == []
    assert max(size for _, size, _ in after.values()) < 200_000


# ------------------------------------------------------------------------------ links, FIFOs and the size cap


# ---------------------------------------------------------------------------------------------- permissions


# ---------------------------------------------------------------------------------------- through the CLI


def _shoot(root, n):
    root.mkdir(parents=True, exist_ok=True)
    names = ("astronaut", "coffee", "chelsea", "rocket")
    for i in range(1, n + 1):
        natural_image(names[i - 1]).save(root / f"IMG_{i}.jpg", quality=92)
    return root


def _rows(text):
    return {os.path.basename(r["source"]): r for r in (json.loads(line) for line in text.splitlines() if line)}






