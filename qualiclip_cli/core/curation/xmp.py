"""XMP sidecars: ratings and qualiclip scores, merged into existing sidecars without losing anything.

What we write (readable by Lightroom Classic, darktable, digiKam and exiftool):

- `xmp:Rating`: 1..5 stars from the score's tier (see selection.assign_tier), or -1 (reject) when the score is
  below `reject_below`; recorded as well in `qualiclip:Rating`.
- `xmp:Label`: only a label asked for (the rejects' label); recorded as well in `qualiclip:Label`.
- in the private namespace `qualiclip:` (QUALICLIP_NS): `score`, one property per prompt pair
  (`pairOverall`, `pairSharpness`, ... from PAIR_NAMES), `weightsSha256` and `preprocessing`.

The photographer's choices come first. An `xmp:Rating` is ours only while it equals the `qualiclip:Rating`
we recorded next to it; any other rating (set by a person or another program, or ours changed since) is kept
unless `overwrite_rating`, and then `qualiclip:Rating` is dropped, so a rating that is not ours is never taken
for ours later. A rating of 0 (XMP's "no rating") or none counts as not set. Labels alike: an `xmp:Label` is
ours while it equals `qualiclip:Label`; a run that labels (`manage_label`) sets its label where there is none
or ours (any with `overwrite_label`), and takes our earlier label away from a photo it no longer labels (nor
labels a photo whose own rating is kept); a run that does not label leaves labels alone. `merge_decision` says, before writing, what a merge keeps.

Merging: every property we do not own is kept: other rdf:Descriptions, other namespaces (with their
prefixes), attribute-form and element-form properties, the x:xmpmeta wrapper, comments. Our properties are
removed wherever they were (either form) and written in attribute form on the first rdf:Description.
A sidecar that is not well-formed XMP is never rewritten: CurationError.

Hardening (a sidecar is whatever file sits next to a photo, so it is read as untrusted input):

- `read_sidecar` opens only regular files, without following a symbolic link (in the folder or out of it: a
  link is refused, never read, written through or replaced) and without blocking (a FIFO or device is
  refused, not opened), and only up to SIDECAR_SIZE_LIMIT bytes.
- Sidecars are parsed with defusedxml: a DOCTYPE (hence any entity declaration, internal or external) is
  refused by the parser itself, after decoding, so the refusal holds in every encoding the parser reads
  (UTF-8, UTF-16 either byte order, with or without a byte-order mark). UTF-32 is refused as unsupported.
- A merged sidecar keeps its encoding: UTF-16 stays UTF-16 in the same byte order, with its byte-order mark if
  it had one; a UTF-8 byte-order mark is kept; anything else is written as UTF-8 (declared so).

This module only computes bytes; writing them (atomically, journaled) is curation's job.
"""

from __future__ import annotations

import math
import os
import re
import stat
import threading
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

from qualiclip_cli.core.curation import fileops
from qualiclip_cli.core.curation.selection import DEFAULT_TIER_THRESHOLDS, assign_tier
from qualiclip_cli.core.curation.siblings import DirectoryIndex
from qualiclip_cli.core.errors import CurationError, UsageError
from qualiclip_cli.core.records import PAIR_NAMES

QUALICLIP_NS = "http://ns.qualiclip.org/1.0/"
QUALICLIP_PREFIX = "qualiclip"
XMP_NS = "http://ns.adobe.com/xap/1.0/"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
X_NS = "adobe:ns:meta/"
DC_NS = "http://purl.org/dc/elements/1.1/"
LR_NS = "http://ns.adobe.com/lightroom/1.0/"
#: The keyword bags `tag --per-group` writes into (flat keywords, Lightroom/digiKam's keyword paths); entries
#: starting with `KEYWORD_PREFIX` are ours: replaced by each run that writes keywords, the others always kept.
KEYWORD_BAGS = (f"{{{DC_NS}}}subject", f"{{{LR_NS}}}hierarchicalSubject")
KEYWORD_PREFIX = "qualiclip|"
_BAG = f"{{{RDF_NS}}}Bag"
_LI = f"{{{RDF_NS}}}li"

REJECT_RATING = -1
#: The largest sidecar read (real ones are a few KiB, a large darktable history some hundred KiB); larger files
#: are refused, never read whole.
SIDECAR_SIZE_LIMIT = 4 << 20
#: adobe: IMG_1.xmp (Lightroom, digiKam); append: IMG_1.jpg.xmp (darktable).
SidecarNaming = Literal["adobe", "append"]
SIDECAR_NAMINGS: tuple[str, ...] = get_args(SidecarNaming)

RATING = f"{{{XMP_NS}}}Rating"
LABEL = f"{{{XMP_NS}}}Label"
_DESCRIPTION = f"{{{RDF_NS}}}Description"
_RDF = f"{{{RDF_NS}}}RDF"
_ABOUT = f"{{{RDF_NS}}}about"

# Property names in the qualiclip namespace.
SCORE_PROPERTY = "score"
WEIGHTS_PROPERTY = "weightsSha256"
PREPROCESSING_PROPERTY = "preprocessing"
#: written by every tag that records the rating it writes (qualiclip:Rating); a sidecar of ours without it
#: comes from an earlier version (see _legacy_ours)
TAG_VERSION_PROPERTY, TAG_VERSION = "tagVersion", "2"
RATING_PROPERTY = "Rating"  # the xmp:Rating we wrote: while they are equal, the rating is ours
LABEL_PROPERTY = "Label"    # the xmp:Label we wrote
OUR_RATING = f"{{{QUALICLIP_NS}}}{RATING_PROPERTY}"
OUR_LABEL = f"{{{QUALICLIP_NS}}}{LABEL_PROPERTY}"
OUR_SCORE = f"{{{QUALICLIP_NS}}}{SCORE_PROPERTY}"
OUR_TAG_VERSION = f"{{{QUALICLIP_NS}}}{TAG_VERSION_PROPERTY}"
PAIR_PROPERTIES: dict[str, str] = {name: "pair" + name[:1].upper() + name[1:] for name in PAIR_NAMES}

_EMPTY_SIDECAR = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    f'<x:xmpmeta xmlns:x="{X_NS}" x:xmptk="qualiclip">\n'
    f' <rdf:RDF xmlns:rdf="{RDF_NS}">\n'
    '  <rdf:Description rdf:about=""/>\n'
    " </rdf:RDF>\n"
    "</x:xmpmeta>\n"
).encode()

# ElementTree keeps its prefix table globally; registration and serialisation happen under this lock.
_NAMESPACE_LOCK = threading.Lock()


@dataclass(frozen=True)
class SidecarTags:
    """What one sidecar should say. rating: -1 (reject) or 1..5; pairs: sub-score per PAIR_NAMES entry.

    overwrite_rating: replace a rating that is not ours too. label: the label this photo should get (None:
    none); manage_label: this run labels (without it labels are left alone); overwrite_label: replace a label
    that is not ours too."""

    rating: int
    score: float
    weights_sha256: str
    preprocessing: str
    pairs: Mapping[str, float] | None = None
    label: str | None = None
    overwrite_rating: bool = False
    manage_label: bool = False
    overwrite_label: bool = False
    keywords: tuple[str, ...] | None = None  # ours (KEYWORD_PREFIX...), replacing our earlier ones; None: left alone


@dataclass(frozen=True)
class MergeDecision:
    """What a merge does with the rating and the label already there. kept_rating / kept_label: the value
    kept because it is not ours (None: ours was written, or there was none)."""

    kept_rating: str | None = None
    kept_label: str | None = None


def rating_for(score: float, thresholds: Sequence[float] = DEFAULT_TIER_THRESHOLDS,
               reject_below: float | None = None) -> int:
    """Stars for a score: its tier 1..5, or -1 (reject) when `reject_below` is given and the score is below it."""
    if reject_below is not None:
        if not (isinstance(reject_below, (int, float)) and math.isfinite(reject_below) and 0 < reject_below <= 1):
            raise UsageError(f"--reject-below must be a score in (0, 1], got {reject_below!r}")
        if score < reject_below:
            return REJECT_RATING
    return assign_tier(score, thresholds)


# Characters XML 1.0 cannot hold (most C0 controls, lone surrogates such as undecodable argv bytes, U+FFFE/F).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def check_label(label: str | None, option: str = "--reject-label") -> None:
    """Refuse a label no XMP sidecar can hold (UsageError), before anything is scored or written."""
    if label is not None and (_NOT_XML.search(label) or not label.strip()):
        raise UsageError(f"{option} must be text a sidecar can hold (not empty, valid UTF-8, no control "
                         f"characters), got {label!r}")


def sidecar_path(photo: str | os.PathLike, naming: str = "adobe", index: DirectoryIndex | None = None) -> Path:
    """The sidecar of a photo in one naming: "adobe" gives IMG_1.xmp, "append" gives IMG_1.jpg.xmp.

    If a sidecar of that name exists with different letter case (IMG_1.XMP), that existing file is returned,
    so it is updated rather than shadowed by a second sidecar; so is one that is not a regular file (a link, a
    FIFO), which `read_sidecar` then refuses. Nothing is opened here (stat only). `index` (shared across
    photos) saves listing the photo's folder again for each of them.
    """
    if naming not in SIDECAR_NAMINGS:
        raise UsageError(f"sidecar naming must be one of {', '.join(SIDECAR_NAMINGS)}, got {naming!r}")
    photo = Path(photo)
    found = _existing_sidecar(photo, naming, index)
    if found is not None:
        return found
    return photo.with_name((photo.stem if naming == "adobe" else photo.name) + ".xmp")


def _existing_sidecar(photo: Path, naming: str, index: DirectoryIndex | None) -> Path | None:
    stem = photo.stem if naming == "adobe" else photo.name
    wanted = photo.with_name(stem + ".xmp")
    if os.path.lexists(wanted):
        return wanted
    try:
        for entry in (index or DirectoryIndex()).candidates(photo.parent, stem):
            name = entry.name
            if (name.startswith(stem) and name[len(stem):].lower() == ".xmp"
                    and not entry.is_dir(follow_symlinks=False)):
                return photo.with_name(name)
    except OSError:
        pass
    return None


def sidecars_of(photo: str | os.PathLike, naming: str = "adobe", index: DirectoryIndex | None = None) -> list[Path]:
    """The sidecars to write for a photo: every one that exists in either naming (IMG_1.xmp, IMG_1.jpg.xmp, any
    letter case), the chosen naming's first, so an existing sidecar is updated rather than joined by a
    second, disagreeing one; when none exists, the one `naming` names (to be created). Stat only."""
    if naming not in SIDECAR_NAMINGS:
        raise UsageError(f"sidecar naming must be one of {', '.join(SIDECAR_NAMINGS)}, got {naming!r}")
    photo = Path(photo)
    found = []
    for each in (naming, *(n for n in SIDECAR_NAMINGS if n != naming)):
        path = _existing_sidecar(photo, each, index)
        if path is not None and path not in found:
            found.append(path)
    return found or [sidecar_path(photo, naming, index)]


@dataclass(frozen=True)
class SidecarFile:
    """An existing sidecar as read: its bytes and its permission bits (kept on the rewritten file and backup)."""

    data: bytes
    mode: int


def read_sidecar(path: str | os.PathLike) -> SidecarFile | None:
    """The sidecar at `path`, None when there is none. Raises CurationError (naming the file and why; the file
    is left untouched) for a symbolic link, a FIFO, a device or anything else not a regular file (none of them
    is opened, so nothing blocks), and for a file larger than SIDECAR_SIZE_LIMIT."""
    try:
        data, st = fileops.read_regular_file(path, SIDECAR_SIZE_LIMIT)
    except FileNotFoundError:
        return None
    return SidecarFile(data, stat.S_IMODE(st.st_mode))


def is_read_only(path: str | os.PathLike) -> bool:
    """Whether the regular file at `path` is read-only: no write permission bit at all (chmod a-w, 0444), or
    none for the current user. False when there is no such file (a link or FIFO is refused when read)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    return not (st.st_mode & 0o222) or not os.access(path, os.W_OK)


@dataclass(frozen=True)
class _Encoding:
    codec: str
    bom: bytes
    declared: str


_UTF8 = _Encoding("utf-8", b"", "UTF-8")
_UTF32_STARTS = (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00", b"\x00\x00\x00<", b"<\x00\x00\x00")


def _encoding_of(data: bytes, where: str) -> _Encoding:
    """The encoding a sidecar is written back in: the one it came in, told by its first bytes (XML 1.0,
    appendix F). UTF-32 is refused: the parser does not read it."""
    if data.startswith(_UTF32_STARTS):
        raise CurationError(f"{where}: a UTF-32 sidecar, which is not supported; left untouched")
    if data.startswith(b"\xef\xbb\xbf"):
        return _Encoding("utf-8", b"\xef\xbb\xbf", "UTF-8")
    if data.startswith(b"\xff\xfe"):
        return _Encoding("utf-16-le", b"\xff\xfe", "UTF-16")
    if data.startswith(b"\xfe\xff"):
        return _Encoding("utf-16-be", b"\xfe\xff", "UTF-16")
    if data.startswith(b"<\x00") and len(data) > 2 and data[2] != 0:
        return _Encoding("utf-16-le", b"", "UTF-16LE")
    if data.startswith(b"\x00<"):
        return _Encoding("utf-16-be", b"", "UTF-16BE")
    return _UTF8


class _TreeBuilder(ET.TreeBuilder):
    """Keeps comments and processing instructions, and records the namespace declarations as they come."""

    def __init__(self) -> None:
        super().__init__(insert_comments=True, insert_pis=True)
        self.namespaces: list[tuple[str, str]] = []

    def start_ns(self, prefix: str, uri: str) -> None:
        self.namespaces.append((prefix, uri))


def _parse(data: bytes, where: str) -> tuple[ET.Element, list[tuple[str, str]]]:
    """Parse with a parser that refuses any DOCTYPE, entity declaration or external reference while parsing,
    in whatever encoding the document is: nothing is ever expanded or fetched."""
    builder = _TreeBuilder()
    parser = DefusedXMLParser(target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    try:
        parser.feed(data)
        root = parser.close()
    except DefusedXmlException:
        raise CurationError(f"{where}: contains a DTD (a DOCTYPE, with entities or external references), "
                            "which XMP does not use and is refused for safety; left untouched") from None
    except ET.ParseError as exc:
        raise CurationError(f"{where}: not valid XML ({exc}); left untouched") from None
    return root, builder.namespaces


def _rdf_of(root: ET.Element, where: str) -> ET.Element:
    rdf = root if root.tag == _RDF else root.find(f".//{_RDF}")
    if rdf is None:
        raise CurationError(f"{where}: no rdf:RDF element, not an XMP sidecar; left untouched")
    return rdf


def _first_values(rdf: ET.Element) -> dict[str, str]:
    """The first value (attribute or element form, any rdf:Description) of the properties merging decides on."""
    values: dict[str, str] = {}
    for desc in rdf.findall(_DESCRIPTION):
        for tag in (RATING, LABEL, OUR_RATING, OUR_LABEL, OUR_SCORE, OUR_TAG_VERSION):
            if tag in values:
                continue
            if tag in desc.attrib:
                values[tag] = desc.attrib[tag].strip()
            else:
                child = desc.find(tag)
                if child is not None:
                    values[tag] = "".join(child.itertext()).strip()
    return values


def _same_rating(a: str | None, b: str | None) -> bool:
    try:
        return a is not None and b is not None and float(a) == float(b)
    except ValueError:
        return False


def _legacy_ours(rating: str | None, values: Mapping[str, str]) -> bool:
    """A sidecar tagged by a qualiclip that did not record `qualiclip:Rating` yet (our score, no
    `qualiclip:tagVersion`): its rating counts as ours when it is exactly the star rating the default tiers give
    the score recorded beside it (a rating changed by hand since, a reject, or one from other tiers is kept:
    when in doubt, the photographer's)."""
    if OUR_RATING in values or OUR_TAG_VERSION in values or rating is None or OUR_SCORE not in values:
        return False
    try:
        score = float(values[OUR_SCORE])
    except ValueError:
        return False
    return math.isfinite(score) and _same_rating(rating, str(assign_tier(score, DEFAULT_TIER_THRESHOLDS)))


def _unset_rating(value: str | None) -> bool:
    if value is None or value == "":
        return True
    try:
        return float(value) == 0  # XMP: 0 is "no rating"
    except ValueError:
        return False


@dataclass(frozen=True)
class _Plan:
    """Per merge: what to write over what is there."""

    decision: MergeDecision
    write_rating: bool
    label: str | None      # the label to write
    drop_label: bool       # take the existing xmp:Label away (ours, no longer wanted)
    keep_our_label: bool   # keep qualiclip:Label as it is (a run that does not label)


def _decide(values: Mapping[str, str], tags: SidecarTags) -> _Plan:
    rating = values.get(RATING)
    rating_ours = _same_rating(rating, values.get(OUR_RATING)) or _legacy_ours(rating, values)
    write_rating = tags.overwrite_rating or rating_ours or _unset_rating(rating)
    label = values.get(LABEL)
    label_ours = bool(label) and label == values.get(OUR_LABEL)
    new_label, drop_label, kept_label = None, False, None
    if not tags.manage_label:
        pass  # labels are left alone, ours included
    elif tags.label is None or not write_rating:
        # not labelled this run (nor is a photo whose own rating is kept: the label marks our rejects): our
        # earlier label goes, any other stays
        drop_label = label_ours
    elif not label or label_ours or tags.overwrite_label:
        new_label = tags.label
    elif label != tags.label:  # (one that already says so but is someone else's is left, never taken for ours)
        kept_label = label
    return _Plan(MergeDecision(None if write_rating else rating, kept_label), write_rating, new_label, drop_label,
                 keep_our_label=not tags.manage_label)


def _owned(tag: str, plan: _Plan) -> bool:
    """Whether the merge removes this property (to write it again, or because it goes)."""
    if tag == OUR_LABEL:
        return not plan.keep_our_label
    if tag.startswith(f"{{{QUALICLIP_NS}}}"):
        return True
    if tag == RATING:
        return plan.write_rating
    if tag == LABEL:
        return plan.label is not None or plan.drop_label
    return False


def merge_decision(existing: bytes | None, tags: SidecarTags, where: str = "sidecar") -> MergeDecision:
    """What merging `tags` into `existing` keeps of the rating and label already there (see the module
    docstring). Raises CurationError for a sidecar `merge_sidecar` would refuse."""
    if existing is None:
        return MergeDecision()
    _encoding_of(existing, where)
    root, _ = _parse(existing, where)
    return _decide(_first_values(_rdf_of(root, where)), tags).decision


def _format_float(x: float) -> str:
    return f"{float(x):.6f}"


def _our_properties(tags: SidecarTags, plan: _Plan) -> list[tuple[str, str]]:
    if not (tags.rating == REJECT_RATING or 1 <= tags.rating <= 5):
        raise UsageError(f"rating must be -1 or 1..5, got {tags.rating!r}")
    q = f"{{{QUALICLIP_NS}}}"
    props = []
    if plan.write_rating:
        props += [(RATING, str(int(tags.rating))), (OUR_RATING, str(int(tags.rating)))]
    if plan.label is not None:
        props += [(LABEL, plan.label), (OUR_LABEL, plan.label)]
    props.append((q + SCORE_PROPERTY, _format_float(tags.score)))
    for name in PAIR_NAMES:
        if tags.pairs is not None and tags.pairs.get(name) is not None:
            props.append((q + PAIR_PROPERTIES[name], _format_float(tags.pairs[name])))
    props.append((q + WEIGHTS_PROPERTY, tags.weights_sha256))
    props.append((q + PREPROCESSING_PROPERTY, tags.preprocessing))
    props.append((OUR_TAG_VERSION, TAG_VERSION))
    return props


def merge_sidecar(existing: bytes | None, tags: SidecarTags, where: str = "sidecar") -> bytes:
    """The new sidecar content: `existing` (None: no sidecar yet) with our properties set and everything
    else kept. `where` names the file in error messages. Raises CurationError for a malformed sidecar."""
    data = existing if existing is not None else _EMPTY_SIDECAR
    encoding = _encoding_of(data, where)
    root, namespaces = _parse(data, where)
    rdf = _rdf_of(root, where)
    plan = _decide(_first_values(rdf), tags)
    descriptions = rdf.findall(_DESCRIPTION)
    for desc in descriptions:
        for attr in [a for a in desc.attrib if _owned(a, plan)]:
            del desc.attrib[attr]
        for child in [c for c in desc if isinstance(c.tag, str) and _owned(c.tag, plan)]:
            desc.remove(child)
    if descriptions:
        target = descriptions[0]
    else:
        target = ET.SubElement(rdf, _DESCRIPTION, {_ABOUT: ""})
    for key, value in _our_properties(tags, plan):
        target.set(key, value)
    if tags.keywords is not None:
        _set_keywords(descriptions or [target], target, tags.keywords)
    with _NAMESPACE_LOCK:
        _register_defaults()
        for prefix, uri in namespaces:
            if prefix:
                try:
                    ET.register_namespace(prefix, uri)
                except ValueError:  # ElementTree reserves ns0, ns1, ...; it will name those itself
                    pass
        if not any(uri == QUALICLIP_NS for _, uri in namespaces):
            _register_if_free(QUALICLIP_PREFIX, QUALICLIP_NS, namespaces)
        if not any(uri == XMP_NS for _, uri in namespaces):
            _register_if_free("xmp", XMP_NS, namespaces)
        if tags.keywords is not None:
            for prefix, uri in (("dc", DC_NS), ("lr", LR_NS)):
                if not any(u == uri for _, u in namespaces):
                    _register_if_free(prefix, uri, namespaces)
        body = ET.tostring(root, encoding="unicode")
    text = f'<?xml version="1.0" encoding="{encoding.declared}"?>\n' + body + "\n"
    return encoding.bom + text.encode(encoding.codec)


def _set_keywords(descriptions: list[ET.Element], target: ET.Element, keywords: Sequence[str]) -> None:
    """In each keyword bag (`KEYWORD_BAGS`): our earlier entries out, ``keywords`` in, every other entry kept.
    A bag that is not there is added to ``target``; one of ours left empty is removed."""
    for name in KEYWORD_BAGS:
        found = [(desc, child) for desc in descriptions for child in desc if child.tag == name]
        if not found:
            if not keywords:
                continue
            element = ET.SubElement(target, name)
            found = [(target, element)]
        desc, element = found[0]
        bag = element.find(_BAG)
        if bag is None:
            if len(element) or (element.text or "").strip():
                continue  # not a bag (a malformed or other kind of value): left as it is
            bag = ET.SubElement(element, _BAG)
        for li in [li for li in bag.findall(_LI) if (li.text or "").startswith(KEYWORD_PREFIX)]:
            bag.remove(li)
        for keyword in keywords:
            ET.SubElement(bag, _LI).text = keyword
        if not bag.findall(_LI) and len(bag) == 0:
            desc.remove(element)


def _register_defaults() -> None:
    ET.register_namespace("x", X_NS)
    ET.register_namespace("rdf", RDF_NS)


def _register_if_free(prefix: str, uri: str, namespaces: list[tuple[str, str]]) -> None:
    used = {p for p, _ in namespaces}
    candidate, n = prefix, 1
    while candidate in used:
        candidate, n = f"{prefix}{n}", n + 1
    ET.register_namespace(candidate, uri)


def read_tags(data: bytes, where: str = "sidecar") -> dict[str, str]:
    """Our properties as found in a sidecar (either form), keyed "Rating", "Label", "qualiclip:<name>"."""
    _encoding_of(data, where)
    root, _ = _parse(data, where)
    found: dict[str, str] = {}
    q = f"{{{QUALICLIP_NS}}}"

    def key(tag: str) -> str | None:
        if tag == RATING:
            return "Rating"
        if tag == LABEL:
            return "Label"
        if tag.startswith(q):
            return "qualiclip:" + tag[len(q):]
        return None

    for desc in _rdf_of(root, where).findall(_DESCRIPTION):
        for attr, value in desc.attrib.items():
            if key(attr):
                found[key(attr)] = value
        for child in desc:
            if isinstance(child.tag, str) and key(child.tag):
                found[key(child.tag)] = (child.text or "").strip()
    return found


XMPDM_NS = "http://ns.adobe.com/xmp/1.0/DynamicMedia/"
DIGIKAM_NS = "http://www.digikam.org/ns/1.0/"
_PICK = f"{{{XMPDM_NS}}}pick"  # Adobe's pick flag: 1 picked, -1 rejected, 0 none
_PICK_LABEL = f"{{{DIGIKAM_NS}}}PickLabel"  # digiKam's: 0 none, 1 rejected, 2 pending, 3 accepted


@dataclass(frozen=True)
class UserRating:
    """The judgement an XMP packet records: ``rating`` -1 (reject) or 0..5 (0: none), None when it says nothing;
    ``ours``: the rating is one qualiclip wrote (equal to our `qualiclip:Rating`, or an earlier version's), not
    the photographer's."""

    rating: int | None
    ours: bool = False


def user_rating(data: bytes, where: str = "sidecar") -> UserRating:
    """What a sidecar (or a file's embedded XMP packet) says of the photographer's rating: `xmp:Rating`, and the
    reject flags `xmpDM:pick` = -1 and digiKam's `PickLabel` = 1 (a reject flag wins over stars: the photo was
    rejected). Raises CurationError for a packet that is not well-formed XMP."""
    _encoding_of(data, where)
    root, _ = _parse(data, where)
    rdf = _rdf_of(root, where)
    values = _first_values(rdf)
    flags: dict[str, str] = {}
    for desc in rdf.findall(_DESCRIPTION):
        for tag in (_PICK, _PICK_LABEL):
            if tag in flags:
                continue
            if tag in desc.attrib:
                flags[tag] = desc.attrib[tag].strip()
            elif (child := desc.find(tag)) is not None:
                flags[tag] = "".join(child.itertext()).strip()
    if _number(flags.get(_PICK)) == -1 or _number(flags.get(_PICK_LABEL)) == 1:
        return UserRating(REJECT_RATING)  # qualiclip never writes these flags: always the photographer's
    rating = values.get(RATING)
    if _unset_rating(rating):
        return UserRating(None if rating is None else 0)
    stars = _number(rating)
    if stars is None or not (stars == REJECT_RATING or 0 <= stars <= 5):
        return UserRating(None)
    ours = _same_rating(rating, values.get(OUR_RATING)) or _legacy_ours(rating, values)
    return UserRating(int(round(stars)) if stars >= 0 else REJECT_RATING, ours=ours)


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None
