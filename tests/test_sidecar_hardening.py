"""Crafted sidecars cannot hang, exhaust or blow up `tag`: FIFOs and links are refused without being opened,
sidecars have a size cap, the XML guard holds in every encoding (DTDs refused by the parser, not by a byte
search), permissions are kept on the rewritten sidecar and its backup, read-only sidecars need an explicit
option, and `tag` leaves the quarantine alone. Each refusal is one error row for that photo; the batch goes on."""

import json
import os
import signal
import stat
from contextlib import contextmanager
from pathlib import Path

import pytest

from qualiclip_cli.core.curation import fileops, xmp
from qualiclip_cli.core.curation.execute import execute, predict_failures
from qualiclip_cli.core.curation.plan import SkipKind, plan_tag
from qualiclip_cli.core.curation.undo import undo
from qualiclip_cli.core.errors import CurationError

from cli_support import natural_image, run_cli, run_process
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


def test_symlinked_sidecars_are_refused_wherever_they_point(tmp_path):
    """A link to /dev/zero, to a sidecar outside the folder and to one inside it: all refused, none read or
    written through, the links left as they were; the ordinary sidecar beside them is merged."""
    root = tmp_path / "shoot"
    records = photos(root, 4)
    outside = write(tmp_path / "elsewhere" / "shared.xmp", LEGIT.encode())
    inside = write(root / "real.xmp", LEGIT.encode())
    os.symlink("/dev/zero", root / "IMG_1.xmp")
    os.symlink(outside, root / "IMG_2.xmp")
    os.symlink("real.xmp", root / "IMG_3.xmp")
    write(root / "IMG_4.xmp", LEGIT.encode())

    plan = plan_tag(records, WEIGHTS, "p")
    with bounded():
        predicted = predict_failures(plan)
        result = execute(plan, command="tag")
    by_name = outcomes(result)
    for i in (1, 2, 3):
        outcome = by_name[f"IMG_{i}.jpg"]
        assert outcome.status == "failed"
        assert outcome.error == f"{root / f'IMG_{i}.xmp'}: a symbolic link (not followed), not a regular file; left untouched"
    assert sorted(predicted.values()) == sorted(o.error for o in result.failures)
    assert os.readlink(root / "IMG_1.xmp") == "/dev/zero"
    assert os.readlink(root / "IMG_2.xmp") == str(outside) and outside.read_bytes() == LEGIT.encode()
    assert os.readlink(root / "IMG_3.xmp") == "real.xmp" and inside.read_bytes() == LEGIT.encode()
    assert by_name["IMG_4.jpg"].status == "done"
    assert xmp.read_tags((root / "IMG_4.xmp").read_bytes())["Rating"]


def test_a_case_variant_link_is_refused_not_shadowed(tmp_path):
    root = tmp_path / "shoot"
    records = photos(root, 1)
    os.symlink("/dev/zero", root / "IMG_1.XMP")
    plan = plan_tag(records, WEIGHTS, "p")
    assert [op.destination.name for op in plan] == ["IMG_1.XMP"]
    with bounded():
        result = execute(plan, command="tag")
    assert result.outcomes[0].status == "failed" and "symbolic link" in result.outcomes[0].error
    assert sorted(p.name for p in root.iterdir()) == ["IMG_1.XMP", "IMG_1.jpg"]  # no second sidecar beside it


def test_fifo_sidecar_is_refused_without_being_opened(tmp_path):
    root = tmp_path / "shoot"
    records = photos(root, 2)
    os.mkfifo(root / "IMG_1.xmp")
    plan = plan_tag(records, WEIGHTS, "p")
    with bounded():
        with pytest.raises(CurationError, match="a FIFO, not a regular file; left untouched"):
            xmp.read_sidecar(root / "IMG_1.xmp")
        predicted = predict_failures(plan)
        result = execute(plan, command="tag")
    assert list(predicted.values()) == [f"{root / 'IMG_1.xmp'}: a FIFO, not a regular file; left untouched"]
    assert [o.status for o in result.outcomes] == ["failed", "done"]
    assert stat.S_ISFIFO(os.lstat(root / "IMG_1.xmp").st_mode)


def test_a_sidecar_replaced_by_a_link_or_fifo_before_the_write_is_left_alone(tmp_path):
    target = write(tmp_path / "target.xmp", b"old")
    link = tmp_path / "IMG_1.xmp"
    os.symlink(target, link)
    with pytest.raises(CurationError, match="symbolic link"):
        fileops.write_file_atomic(link, b"new", sha(b"old"))
    assert os.readlink(link) == str(target) and target.read_bytes() == b"old"
    fifo = tmp_path / "IMG_2.xmp"
    os.mkfifo(fifo)
    with bounded():
        with pytest.raises(CurationError, match="FIFO"):
            fileops.write_file_atomic(fifo, b"new", sha(b"old"))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["IMG_1.xmp", "IMG_2.xmp", "target.xmp"]  # no temp left


def test_oversized_sidecar_is_an_error_row_and_a_large_one_still_merges(tmp_path):
    root = tmp_path / "shoot"
    records = photos(root, 3)
    head, tail = LEGIT.rsplit("</x:xmpmeta>", 1)
    padded = lambda size: (head + "<!--" + "p" * (size - len(LEGIT.encode()) - 7) + "-->" + "</x:xmpmeta>"  # noqa: E731
                           + tail).encode()
    write(root / "IMG_1.xmp", padded(xmp.SIDECAR_SIZE_LIMIT + 1))
    write(root / "IMG_2.xmp", padded(xmp.SIDECAR_SIZE_LIMIT // 4))
    assert (root / "IMG_1.xmp").stat().st_size == xmp.SIDECAR_SIZE_LIMIT + 1
    big = (root / "IMG_1.xmp").read_bytes()

    plan = plan_tag(records, WEIGHTS, "p")
    predicted = predict_failures(plan)
    result = execute(plan, command="tag")
    by_name = outcomes(result)
    message = f"{root / 'IMG_1.xmp'}: larger than 4 MiB, the most accepted here; left untouched"
    assert by_name["IMG_1.jpg"].status == "failed" and by_name["IMG_1.jpg"].error == message
    assert list(predicted.values()) == [message]
    assert (root / "IMG_1.xmp").read_bytes() == big
    assert by_name["IMG_2.jpg"].status == "done" and by_name["IMG_3.jpg"].status == "done"
    assert xmp.read_tags((root / "IMG_2.xmp").read_bytes())["Rating"]


# ---------------------------------------------------------------------------------------------- permissions


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o664])
def test_rewritten_sidecar_and_its_backup_keep_the_permission_bits(tmp_path, mode):
    root = tmp_path / "shoot"
    records = photos(root, 1)
    sidecar = write(root / "IMG_1.xmp", LEGIT.encode())
    os.chmod(sidecar, mode)
    old_umask = os.umask(0o022)
    try:
        result = execute(plan_tag(records, WEIGHTS, "p"), command="tag")
    finally:
        os.umask(old_umask)
    assert result.outcomes[0].status == "done"
    backups = list(result.journal_path.with_name(result.run_id + ".backup").iterdir())
    assert [b.read_bytes() for b in backups] == [LEGIT.encode()]
    assert stat.S_IMODE(os.stat(backups[0]).st_mode) == mode
    assert stat.S_IMODE(os.stat(sidecar).st_mode) == mode
    assert undo(result.run_id).complete
    assert sidecar.read_bytes() == LEGIT.encode() and stat.S_IMODE(os.stat(sidecar).st_mode) == mode


def test_undo_of_a_sidecar_deleted_since_brings_back_its_permission_bits(tmp_path):
    root = tmp_path / "shoot"
    records = photos(root, 1)
    sidecar = write(root / "IMG_1.xmp", LEGIT.encode())
    os.chmod(sidecar, 0o640)
    old_umask = os.umask(0o022)
    try:
        result = execute(plan_tag(records, WEIGHTS, "p"), command="tag")
        sidecar.unlink()  # the user removed the sidecar tag wrote; undo puts the previous one back
        assert undo(result.run_id).complete
    finally:
        os.umask(old_umask)
    assert sidecar.read_bytes() == LEGIT.encode()
    assert stat.S_IMODE(os.stat(sidecar).st_mode) == 0o640


def test_read_only_sidecar_is_left_out_unless_asked(tmp_path):
    root = tmp_path / "shoot"
    records = photos(root, 2)
    sidecar = write(root / "IMG_1.xmp", LEGIT.encode())
    os.chmod(sidecar, 0o444)
    plan = plan_tag(records, WEIGHTS, "p")
    assert [op.source.name for op in plan] == ["IMG_2.jpg"]
    [skip] = plan.skipped
    assert skip.kind is SkipKind.SIDECAR_READ_ONLY and skip.kind.problem
    assert skip.reason.startswith("sidecar IMG_1.xmp is read-only; left untouched")
    execute(plan, command="tag")
    assert sidecar.read_bytes() == LEGIT.encode()

    asked = plan_tag(records, WEIGHTS, "p", rewrite_read_only=True)
    result = execute(asked, command="tag")
    assert [o.status for o in result.outcomes] == ["done", "done"] and not asked.skipped
    assert xmp.read_tags(sidecar.read_bytes())["Rating"] and stat.S_IMODE(os.stat(sidecar).st_mode) == 0o444


# ---------------------------------------------------------------------------------------- through the CLI


def _shoot(root, n):
    root.mkdir(parents=True, exist_ok=True)
    names = ("astronaut", "coffee", "chelsea", "rocket")
    for i in range(1, n + 1):
        natural_image(names[i - 1]).save(root / f"IMG_{i}.jpg", quality=92)
    return root


def _rows(text):
    return {os.path.basename(r["source"]): r for r in (json.loads(line) for line in text.splitlines() if line)}


def test_tag_over_a_fifo_and_a_dev_zero_link_finishes_and_reports_them(tmp_path, tiny_weights_file):
    """A real process, with a timeout: before the fix `tag --dry-run` blocked for ever on the FIFO."""
    root = _shoot(tmp_path / "shoot", 3)
    os.mkfifo(root / "IMG_1.xmp")
    os.symlink("/dev/zero", root / "IMG_2.xmp")
    for dry in (True, False):
        args = ["tag", root, "--weights", tiny_weights_file, "--format", "jsonl"] + (["--dry-run"] if dry else [])
        done = run_process(*args, timeout=60)  # raises TimeoutExpired (the test fails) instead of hanging
        assert done.returncode == 3, done.stderr
        rows = _rows(done.stdout)
        assert rows["IMG_1.jpg"]["status"] == "failed" and "a FIFO" in rows["IMG_1.jpg"]["error"]
        assert rows["IMG_2.jpg"]["status"] == "failed" and "symbolic link" in rows["IMG_2.jpg"]["error"]
        assert rows["IMG_3.jpg"]["status"] == ("planned" if dry else "done")
        # reported once, by its row: stderr only counts the failures
        assert "a FIFO" not in done.stderr and "Traceback" not in done.stderr
        assert ("2 would fail" if dry else "2 failed") in done.stderr
    assert stat.S_ISFIFO(os.lstat(root / "IMG_1.xmp").st_mode) and os.readlink(root / "IMG_2.xmp") == "/dev/zero"
    assert xmp.read_tags((root / "IMG_3.xmp").read_bytes())["Rating"]


def test_tag_read_only_sidecar_skipped_then_rewritten_with_the_option(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "shoot", 2)
    locked = write(root / "IMG_1.xmp", LEGIT.encode())
    os.chmod(locked, 0o444)

    assert "--rewrite-read-only" in run_cli("tag", "--help").stdout
    first = run_cli("tag", root, "--weights", tiny_weights_file)
    assert first.exit_code == 3, first.stderr
    assert "IMG_1.jpg left out: sidecar IMG_1.xmp is read-only; left untouched" in first.stderr
    assert locked.read_bytes() == LEGIT.encode() and "wrote 1 sidecar" in first.stderr

    second = run_cli("tag", root, "--weights", tiny_weights_file, "--rewrite-read-only")
    assert second.exit_code == 0, second.stderr
    assert xmp.read_tags(locked.read_bytes())["Rating"] and stat.S_IMODE(os.stat(locked).st_mode) == 0o444


def test_tag_leaves_the_quarantine_alone(tmp_path, tiny_weights_file):
    root = _shoot(tmp_path / "shoot", 1)
    quarantined = root / "_rejected" / "2024"
    quarantined.mkdir(parents=True)
    natural_image("rocket").save(quarantined / "IMG_9.jpg", quality=92)
    quarantine_sidecar = write(quarantined / "IMG_9.xmp", LEGIT.encode())

    result = run_cli("tag", root, "--weights", tiny_weights_file)
    assert result.exit_code == 0, result.stderr
    assert "wrote 1 sidecar" in result.stderr and "IMG_9" not in result.stdout
    assert (root / "IMG_1.xmp").is_file()
    assert quarantine_sidecar.read_bytes() == LEGIT.encode()
    assert sorted(p.name for p in quarantined.iterdir()) == ["IMG_9.jpg", "IMG_9.xmp"]
