"""The synthetic lesions of the `generated` source: a drawing per class (shape, border, colours,
markings) and writers that lay the pictures out on disk exactly like the real datasets (HAM10000:
metadata CSV + two image folders; fanconic ISIC: train/ and test/ class folders).
"""

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from lib.errors import ImageError


SYNTHETIC_VERSION = 2  # bump when the drawing changes, so cached generated datasets are redrawn
# Per class: radius (fraction of the image height), border irregularity, asymmetry, blur of the edge,
# main and second colour (RGB) and how much the second is mixed in (variegation), and a marking.
LESION_STYLES = {
    "nv": dict(radius=0.20, irregular=0.03, asymmetry=0.02, edge=1.0, colors=[(120, 75, 45), (100, 60, 35)], mix=0.15, mark=None),
    "mel": dict(radius=0.32, irregular=0.16, asymmetry=0.25, edge=0.5, colors=[(60, 35, 25), (40, 50, 90)], mix=0.6, mark="dots"),
    "bkl": dict(radius=0.25, irregular=0.06, asymmetry=0.08, edge=0.6, colors=[(175, 130, 85), (140, 100, 60)], mix=0.4, mark="speckle"),
    "df": dict(radius=0.15, irregular=0.04, asymmetry=0.03, edge=2.0, colors=[(150, 95, 70), (150, 95, 70)], mix=0.0, mark="white_centre"),
    "bcc": dict(radius=0.22, irregular=0.08, asymmetry=0.10, edge=1.5, colors=[(225, 170, 170), (205, 140, 145)], mix=0.3, mark="vessels"),
    "akiec": dict(radius=0.26, irregular=0.12, asymmetry=0.15, edge=2.5, colors=[(200, 95, 85), (230, 200, 185)], mix=0.5, mark="scale"),
    "vasc": dict(radius=0.14, irregular=0.02, asymmetry=0.02, edge=0.8, colors=[(150, 25, 50), (90, 20, 70)], mix=0.35, mark="lobules"),
}
BINARY_STYLES = {"benign": ("nv", "bkl", "df", "vasc"), "malignant": ("mel", "bcc", "akiec")}


def draw_lesion(style, image_width, rng):
    """A lesion-like picture: uint8 RGB, (round(0.75 * image_width), image_width, 3), drawn with
    `style` (an entry of LESION_STYLES) and jitter from `rng` (numpy Generator)."""
    width, height = image_width, max(8, round(image_width * 0.75))
    skin = np.array([228, 186, 160], np.float32) * rng.uniform(0.85, 1.05) + rng.normal(0, 4, 3)
    canvas = np.ones((height, width, 3), np.float32) * skin + _smooth_noise(rng, height, width, 4)[..., None] * 12
    angles = np.linspace(0, 2 * np.pi, 72, endpoint=False)
    radius = style["radius"] * height * rng.uniform(0.8, 1.2)
    shape = 1 + style["asymmetry"] * np.cos(angles - rng.uniform(0, 2 * np.pi))
    for frequency in range(3, 9):
        shape += style["irregular"] * rng.normal() * np.cos(frequency * angles + rng.uniform(0, 2 * np.pi))
    centre = np.array([width / 2, height / 2]) + rng.normal(0, 0.05 * height, 2)
    points = centre + (radius * shape)[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    mask = np.zeros((height, width), np.float32)
    cv2.fillPoly(mask, [points.round().astype(np.int32)], 1.0)
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.3, style["edge"] * height / 96))[..., None]
    mixing = np.clip(_smooth_noise(rng, height, width, 3) * style["mix"] + 0.5 * style["mix"], 0, 1)[..., None]
    first, second = (np.array(color, np.float32) + rng.normal(0, 8, 3) for color in style["colors"])
    lesion = first * (1 - mixing) + second * mixing
    canvas = canvas * (1 - mask) + lesion * mask
    _mark(canvas, style["mark"], centre, radius, rng)
    canvas += rng.normal(0, 4, canvas.shape)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def _smooth_noise(rng, height, width, cells):
    """Low-frequency noise in about [-1, 1], HxW."""
    return cv2.resize(rng.normal(0, 1, (cells, cells)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)


def _mark(canvas, mark, centre, radius, rng):
    cx, cy = centre
    if mark == "white_centre":
        cv2.circle(canvas, (round(cx), round(cy)), max(1, round(radius * 0.45)), (235, 225, 215), -1, cv2.LINE_AA)
    elif mark == "vessels":
        for _ in range(4):
            start = centre + rng.normal(0, radius * 0.4, 2)
            end = start + rng.normal(0, radius * 0.6, 2)
            cv2.line(canvas, tuple(start.round().astype(int)), tuple(end.round().astype(int)), (170, 20, 30), 1, cv2.LINE_AA)
    elif mark in ("dots", "speckle", "scale", "lobules"):
        count, size, color = {"dots": (10, 0.08, (20, 15, 25)), "speckle": (25, 0.04, (90, 60, 35)),
                              "scale": (15, 0.07, (245, 240, 230)), "lobules": (6, 0.25, (110, 10, 40))}[mark]
        for _ in range(count):
            spot = centre + rng.normal(0, radius * 0.45, 2)
            cv2.circle(canvas, tuple(spot.round().astype(int)), max(1, round(radius * size)), color, -1, cv2.LINE_AA)


def _write_jpeg(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise ImageError(f"cannot encode {path}")
    path.write_bytes(encoded.tobytes())


def write_synthetic_ham10000(folder, images_per_class, image_width, seed):
    """Write a HAM10000-layout dataset into `folder`: HAM10000_metadata.csv (lesion_id, image_id, dx,
    dx_type, age, sex, localization) and JPEGs split over HAM10000_images_part_1/_part_2, as on Kaggle.
    Every third image is a second view (new pose) of the previous image's lesion."""
    folder = Path(folder)
    rows = []
    for class_index, dx in enumerate(sorted(LESION_STYLES)):
        for index in range(images_per_class):
            number = class_index * images_per_class + index
            second_view = index % 3 == 2
            lesion_seed = [seed, class_index, index - 1 if second_view else index]
            image = draw_lesion(LESION_STYLES[dx], image_width, np.random.default_rng(lesion_seed))
            if second_view:  # same lesion, photographed again: flipped and slightly shifted
                image = np.roll(cv2.flip(image, int(number % 2)), shift=(number % 5) - 2, axis=1)
            image_id = f"ISIC_{9000000 + number:07d}"
            part = 1 if index % 2 == 0 else 2
            _write_jpeg(folder / f"HAM10000_images_part_{part}" / f"{image_id}.jpg", image)
            lesion_number = class_index * images_per_class + (index - 1 if second_view else index)
            rng = np.random.default_rng([seed, number, 7])
            rows.append({"lesion_id": f"HAM_{9000000 + lesion_number:07d}", "image_id": image_id, "dx": dx,
                         "dx_type": "synthetic", "age": float(rng.integers(20, 85) // 5 * 5),
                         "sex": rng.choice(["male", "female"]), "localization": rng.choice(["back", "trunk", "face"])})
    pd.DataFrame(rows).to_csv(folder / "HAM10000_metadata.csv", index=False)


def write_synthetic_class_folders(folder, images_per_class, image_width, seed, test_fraction=0.2):
    """Write a class-folder dataset into `folder`: train/{benign,malignant}/<n>.jpg and test/...,
    the fanconic layout; benign pictures use the nv, bkl, df and vasc styles, malignant ones mel, bcc, akiec."""
    folder = Path(folder)
    n_test = max(1, round(images_per_class * test_fraction))
    for class_index, (label, styles) in enumerate(sorted(BINARY_STYLES.items())):
        for index in range(images_per_class):
            rng = np.random.default_rng([seed, class_index, index])
            image = draw_lesion(LESION_STYLES[styles[index % len(styles)]], image_width, rng)
            split = "test" if index < n_test else "train"
            _write_jpeg(folder / split / label / f"{index + 1}.jpg", image)
