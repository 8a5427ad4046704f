"""Pixels: decode any image file to uint8 RGB with opencv (refusing what cannot be used, with a
reason), resize it (squash, crop, pad), process a whole dataset into lossless PNGs in parallel,
and find exact and near duplicates. (The synthetic lesions of the `generated` source are drawn by
lib.synthetic; processed images are read back by lib.inputs.load_processed.)
"""

import concurrent.futures
import hashlib
import io
import logging
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from lib.errors import ImageError

log = logging.getLogger(__name__)

MAX_PIXELS = 80_000_000  # larger than any dermoscope photo (about 24 MP); 80 MP of RGB is 240 MB decoded
ALPHA_BACKGROUND = 255  # transparent pixels are composited on white, like a browser shows them
EXIF_ORIENTATION_TAG = 0x0112
ON_BAD_IMAGE = ("skip", "stop")  # data.on_bad_image: list unusable images and go on, or stop at the first


def read_image(path, max_pixels=MAX_PIXELS):
    """Decode the file at `path` (any name, any script) to uint8 RGB, HxWx3. Grayscale is
    replicated, alpha (RGBA, palette with transparency) is composited on white, 16-bit is scaled to
    8-bit, CMYK is converted by opencv, and the EXIF orientation is applied. The header is checked
    before decoding: more than `max_pixels` pixels is refused. Raises ImageError whose message is the
    reason: "zero bytes", "not an image", "truncated", "too large", "unreadable"."""
    return decode_image(Path(path).read_bytes(), max_pixels)


def decode_image(data, max_pixels=MAX_PIXELS):
    """`read_image` for the bytes of an image file."""
    if not data:
        raise ImageError("zero bytes")
    width, height, orientation = _header(data, max_pixels)
    if _is_truncated(data):
        raise ImageError("truncated")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageError("unreadable: opencv could not decode it")
    return _apply_orientation(_to_rgb8(image), orientation)


def _header(data, max_pixels):
    """(width, height, EXIF orientation) from the header alone; nothing is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as header:
                width, height = header.size
                orientation = _orientation(header)
    except Image.DecompressionBombError as error:
        raise ImageError(f"too large: {error}") from None
    except UnidentifiedImageError:
        raise ImageError("not an image: no known image format") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"unreadable: {error}") from None
    if width * height > max_pixels:
        raise ImageError(f"too large: {width}x{height} pixels is more than {max_pixels} (decompression bomb guard)")
    return width, height, orientation


def _orientation(header):
    """EXIF orientation 1-8 of an opened PIL image; a damaged EXIF block means upright, not unusable."""
    try:
        return header.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception as error:  # PIL raises many types on malformed EXIF
        log.warning("ignoring unreadable EXIF (%s: %s)", type(error).__name__, error)
        return 1


def _is_truncated(data):
    """JPEGs must end with EOI and PNGs with IEND; libjpeg otherwise pads the missing rows in grey."""
    tail = data[-1024:]
    if data[:2] == b"\xff\xd8":
        return b"\xff\xd9" not in tail
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in tail
    return False


def _to_rgb8(image):
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        image = (np.clip(image.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        blended = image[:, :, :3].astype(np.float32) * alpha + ALPHA_BACKGROUND * (1.0 - alpha)
        return cv2.cvtColor(blended.round().astype(np.uint8), cv2.COLOR_BGR2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _apply_orientation(image, orientation):
    """Apply EXIF orientation 1-8 (IMREAD_UNCHANGED ignores it, unlike IMREAD_COLOR)."""
    transforms = {
        2: lambda im: cv2.flip(im, 1),
        3: lambda im: cv2.rotate(im, cv2.ROTATE_180),
        4: lambda im: cv2.flip(im, 0),
        5: lambda im: np.ascontiguousarray(im.transpose(1, 0, 2)),
        6: lambda im: cv2.rotate(im, cv2.ROTATE_90_CLOCKWISE),
        7: lambda im: cv2.rotate(np.ascontiguousarray(im.transpose(1, 0, 2)), cv2.ROTATE_180),
        8: lambda im: cv2.rotate(im, cv2.ROTATE_90_COUNTERCLOCKWISE),
    }
    return transforms[orientation](image) if orientation in transforms else image


def resize_image(image, image_size, resize_mode="squash"):
    """Resize uint8 RGB HxWx3 to image_size x image_size: "squash" ignores the aspect ratio, "crop"
    scales the short side and cuts the centre, "pad" scales the long side and pads with black."""
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"unknown resize_mode {resize_mode!r}; choose one of: {', '.join(RESIZE_MODES)}")
    return RESIZE_MODES[resize_mode](image, image_size)


def _scaled(image, width, height):
    shrinking = width * height < image.shape[0] * image.shape[1]
    return cv2.resize(image, (max(1, width), max(1, height)),
                      interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _squash(image, size):
    return _scaled(image, size, size)


def _crop(image, size):
    height, width = image.shape[:2]
    scale = size / min(height, width)
    scaled = _scaled(image, max(size, round(width * scale)), max(size, round(height * scale)))
    top, left = (scaled.shape[0] - size) // 2, (scaled.shape[1] - size) // 2
    return np.ascontiguousarray(scaled[top:top + size, left:left + size])


def _pad(image, size):
    height, width = image.shape[:2]
    scale = size / max(height, width)
    scaled = _scaled(image, min(size, round(width * scale)), min(size, round(height * scale)))
    top, left = (size - scaled.shape[0]) // 2, (size - scaled.shape[1]) // 2
    return cv2.copyMakeBorder(scaled, top, size - scaled.shape[0] - top, left, size - scaled.shape[1] - left,
                              cv2.BORDER_CONSTANT, value=(0, 0, 0))


RESIZE_MODES = {"squash": _squash, "crop": _crop, "pad": _pad}


def difference_hash(image, hash_size=16):
    """Perceptual difference hash of uint8 RGB as a hex string of hash_size**2 bits: near-identical
    pictures differ in few bits. 16x16 rather than the usual 8x8, because at 8x8 the smooth skin
    backgrounds of dermoscopy photos make unrelated images collide."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (hash_size + 1, hash_size), interpolation=cv2.INTER_AREA).astype(np.int16)
    return np.packbits(small[:, 1:] > small[:, :-1]).tobytes().hex()


def process_images(records, processed_dir, image_size, resize_mode="squash", max_pixels=MAX_PIXELS,
                   relative_to=None, workers=None, progress=False):
    """Decode, resize and save each record's image as `processed_dir`/<image_id>.png (uint8 RGB,
    image_size x image_size, lossless), in parallel threads (opencv releases the GIL).
    Returns (used, skipped): used is `records` (all columns kept) plus path (relative to
    `relative_to` when given), original_width, original_height, sha1 (of the file bytes) and dhash
    (of the decoded pixels); skipped is a DataFrame (source_path, image_id, label, reason).
    len(used) + len(skipped) == len(records) always."""
    processed_dir = Path(processed_dir)
    processed_dir.mkdir(parents=True, exist_ok=True)
    rows = records.to_dict("records")

    def work(row):
        try:
            data = Path(row["source_path"]).read_bytes()
            image = decode_image(data, max_pixels)
        except ImageError as error:
            return row, None, str(error)
        except (OSError, cv2.error) as error:
            return row, None, f"unreadable: {error}"
        target = processed_dir / f"{row['image_id']}.png"
        try:
            save_png(target, resize_image(image, image_size, resize_mode))
        except ImageError as error:
            return row, None, str(error)
        path = os.path.relpath(target, relative_to) if relative_to else str(target)
        facts = {"path": Path(path).as_posix(), "original_width": image.shape[1], "original_height": image.shape[0],
                 "sha1": hashlib.sha1(data).hexdigest(),
                 "dhash": difference_hash(image)}
        return row, facts, None

    used, skipped = [], []
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) + 2)) as pool:
        results = pool.map(work, rows)
        if progress:
            from tqdm.auto import tqdm
            results = tqdm(results, total=len(rows), desc="images", unit="img")
        for row, facts, reason in results:
            if reason is None:
                used.append({**row, **facts})
            else:
                log.warning("skipping %s: %s", row["source_path"], reason)
                skipped.append({"source_path": row["source_path"], "image_id": row["image_id"],
                                "label": row.get("label"), "reason": reason})
    used_columns = list(records.columns) + ["path", "original_width", "original_height", "sha1", "dhash"]
    return (pd.DataFrame(used, columns=used_columns),
            pd.DataFrame(skipped, columns=["source_path", "image_id", "label", "reason"]))


def save_png(path, image):
    """Write uint8 RGB HxWx3 as a lossless PNG (the processed images' format; read back by inputs.load_processed)."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ImageError("unreadable: PNG encoding failed")
    Path(path).write_bytes(encoded.tobytes())
    return Path(path)


def check_skipped(n_found, skipped, on_bad_image="skip", max_bad_fraction=0.05):
    """Raise ImageError when `on_bad_image` is "stop" and anything was skipped, or when more than
    `max_bad_fraction` of the `n_found` images were skipped; `skipped` is the skip list (DataFrame)."""
    if on_bad_image not in ON_BAD_IMAGE:
        raise ValueError(f"unknown on_bad_image {on_bad_image!r}; choose one of: {', '.join(ON_BAD_IMAGE)}")
    if len(skipped) and on_bad_image == "stop":
        raise ImageError(f"{len(skipped)} of {n_found} images cannot be used and data.on_bad_image is 'stop' "
                         f"(first: {skipped.iloc[0]['source_path']}: {skipped.iloc[0]['reason']}); see data/skipped.csv, "
                         "fix or remove the files, or set data.on_bad_image: skip")
    fraction = len(skipped) / max(1, n_found)
    if fraction > max_bad_fraction:
        raise ImageError(f"{len(skipped)} of {n_found} images ({fraction:.1%}) cannot be used, more than "
                         f"data.max_bad_fraction={max_bad_fraction:.1%}; see data/skipped.csv for the reasons")


def find_duplicates(used, max_distance=20, chunk_size=512):
    """Pairs of images in different splits that are exact copies (same file sha1) or near copies
    (difference hashes at most `max_distance` of 256 bits apart; measured on HAM10000:
    a resized, recompressed, brightened copy stays within about 25, unrelated images are 30 or more). `used` needs image_id, split, sha1, dhash.
    Returns a DataFrame (kind, image_id_a, split_a, image_id_b, split_b, distance), exact pairs first."""
    columns = ["kind", "image_id_a", "split_a", "image_id_b", "split_b", "distance"]
    ids, splits = used["image_id"].to_numpy(), used["split"].to_numpy()
    hashes = np.array([np.frombuffer(bytes.fromhex(h), np.uint64) for h in used["dhash"]]).reshape(len(used), -1)
    sha1s = used["sha1"].to_numpy()
    pairs = []
    # identical files have identical pixels, hence distance 0: one pass over the hashes finds both kinds
    for start in range(0, len(used), chunk_size):
        distances = np.bitwise_count(hashes[start:start + chunk_size, None, :] ^ hashes[None, :, :]).sum(axis=2)
        for offset, other in zip(*np.nonzero(distances <= max_distance)):
            first = start + offset
            if first < other and splits[first] != splits[other]:
                kind = "exact" if sha1s[first] == sha1s[other] else "near"
                pairs.append((kind, ids[first], splits[first], ids[other], splits[other], int(distances[offset, other])))
    frame = pd.DataFrame(pairs, columns=columns)
    exact = int((frame["kind"] == "exact").sum())
    log.info("found %d exact and %d near duplicate pairs across splits", exact, len(frame) - exact)
    return frame.sort_values(["kind", "image_id_a", "image_id_b"]).reset_index(drop=True)
