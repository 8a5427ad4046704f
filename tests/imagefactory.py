"""Tiny image files for the data tests: good ones of every flavour and every kind of broken file."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def gradient(width=40, height=30):
    """uint8 RGB HxWx3 whose left, right, top and bottom all differ, so rotations and flips show."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return np.stack([x, y, 255 - x], axis=2).astype(np.uint8)


def write_jpeg(path, image=None, orientation=None):
    """Write a JPEG (RGB) with an optional EXIF orientation tag; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(gradient() if image is None else image)
    if orientation is None:
        picture.save(path, "JPEG", quality=95)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        picture.save(path, "JPEG", quality=95, exif=exif.tobytes())
    return path


def write_png(path, picture):
    """Save a PIL image as PNG; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, "PNG")
    return path


def write_truncated_jpeg(path):
    full = Path(str(path) + ".full")
    write_jpeg(full, np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    Path(path).write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    return Path(path)


def write_png_header(path, width, height):
    """A PNG whose header claims width x height (valid CRC) followed by a tiny body: a decompression bomb
    as far as any header reader can tell."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                           + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))
    return Path(path)


def records_for(paths, label="nv"):
    """Records (the sources.scan columns) for image files, one lesion each."""
    rows = [{"source_path": str(p), "image_id": f"img{i}", "label": label, "lesion_id": f"img{i}", "original_split": ""}
            for i, p in enumerate(paths)]
    return pd.DataFrame(rows, columns=["source_path", "image_id", "label", "lesion_id", "original_split"])


def write_blank_png(path, width, height):
    """A genuine, fully valid all-black grayscale PNG of width x height, built without ever holding its
    pixels: one deflate block of zero rows (flushed so it stands alone) repeated. 20000x20000 takes
    well under a second and about 0.5 MB on disk, yet decodes to 400 MB."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows_per_block = 100
    row = b"\x00" * (width + 1)  # filter byte + one byte per pixel
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(row * rows_per_block) + compressor.flush(zlib.Z_FULL_FLUSH)
    checksum = 1
    for _ in range(height):
        checksum = zlib.adler32(row, checksum)
    full, rest = divmod(height, rows_per_block)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = (b"\x78\xda" + block * full + tail.compress(row * rest) + tail.flush(zlib.Z_FINISH)
              + struct.pack(">I", checksum))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b""))
    return Path(path)
