"""Which file names are photos, by extension (compared case-insensitively): the walk's image files, the RAW
formats among them, and the camera pictures a RAW is paired with.

One list for every wing: the walk (`images.discovery`) picks these files up, the decoder sends the RAWs to
LibRaw (`images.raw`), and curation (`curation.siblings`) moves a RAW+JPEG pair together.
"""

from __future__ import annotations

__all__ = ["CAMERA_PICTURE_EXTENSIONS", "IMAGE_EXTENSIONS", "JPEG_EXTENSIONS", "PICTURE_EXTENSIONS", "RAW_EXTENSIONS",
           "extension", "is_camera_picture_name", "is_image_name", "is_raw_name"]

#: Pictures Pillow decodes (lower case, without the dot). jpe and jfif are JPEG, mpo is a camera's multi-picture
#: JPEG (its first picture is scored), hif is HEIF (Canon, Fujifilm, Sony).
PICTURE_EXTENSIONS: frozenset[str] = frozenset(
    {"jpg", "jpeg", "jpe", "jfif", "mpo", "png", "tif", "tiff", "webp", "bmp", "gif", "heic", "heif", "hif", "avif"}
)

#: Camera RAW formats, read through LibRaw: Canon (cr2, cr3, crw), Nikon (nef, nrw), Sony (arw, srf, sr2), Fujifilm
#: (raf), Olympus/OM (orf), Panasonic/Leica (rw2, rwl, raw), Pentax (pef), Adobe and many bodies (dng), Samsung
#: (srw), Sigma (x3f), Hasselblad (3fr), Phase One (iiq), Epson (erf), Leaf (mos), Minolta (mrw), Kodak (kdc, dcr),
#: Mamiya (mef).
RAW_EXTENSIONS: frozenset[str] = frozenset(
    {"cr2", "cr3", "crw", "nef", "nrw", "arw", "srf", "sr2", "raf", "orf", "rw2", "pef", "dng", "srw", "x3f",
     "3fr", "iiq", "erf", "mos", "mrw", "kdc", "dcr", "rwl", "raw", "mef"}
)

#: JPEG files (what the nvjpeg decoder takes; where JPEG-embedded XMP is read).
JPEG_EXTENSIONS: frozenset[str] = frozenset({"jpg", "jpeg", "jpe", "jfif"})

#: What a directory walk picks up.
IMAGE_EXTENSIONS: frozenset[str] = PICTURE_EXTENSIONS | RAW_EXTENSIONS

#: The camera's own pictures that a RAW of the same stem is paired with (RAW+JPEG, RAW+HEIF shooting).
CAMERA_PICTURE_EXTENSIONS: frozenset[str] = frozenset({"jpg", "jpeg", "jpe", "jfif", "heic", "heif", "hif"})


def extension(name: str) -> str:
    """The lower-case extension of a file name, without the dot ("" for none)."""
    _, dot, ext = name.rpartition(".")
    return ext.lower() if dot else ""


def is_image_name(name: str) -> bool:
    """True when the file name's extension is one of `IMAGE_EXTENSIONS`."""
    return extension(name) in IMAGE_EXTENSIONS


def is_raw_name(name: str) -> bool:
    """True when the file name's extension is one of `RAW_EXTENSIONS`."""
    return extension(name) in RAW_EXTENSIONS


def is_camera_picture_name(name: str) -> bool:
    """True when the file name's extension is one of `CAMERA_PICTURE_EXTENSIONS`."""
    return extension(name) in CAMERA_PICTURE_EXTENSIONS
