"""Where the raw images come from, and what they are: the sources registry (generated, local,
kaggle), layout detection (HAM10000 metadata CSV + image folders, or class folders), scanning a raw
dataset into records, and the label vocabulary (dx classes, benign/malignant).

The pictures of the generated source are drawn by lib.synthetic; the Kaggle download, its
credentials and its safe, atomic extraction live in lib.kaggle (this module supplies the check that a
download holds the expected images: `verify_dataset`).
"""

import dataclasses
import functools
import hashlib
import json
import logging
import re
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from lib import kaggle, paths, synthetic
from lib.errors import DataSourceError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
DX_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
MALIGNANT_DX = ("mel", "bcc", "akiec")
LONG_NAMES = {
    "akiec": "actinic keratosis / intraepithelial carcinoma (Bowen's disease)",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis-like lesion (solar lentigo, seborrheic keratosis, lichen planus-like keratosis)",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevus (mole)",
    "vasc": "vascular lesion (angioma, angiokeratoma, pyogenic granuloma, haemorrhage)",
    "benign": "benign (not cancer)",
    "malignant": "malignant (skin cancer or pre-cancer)",
}
LABEL_MODES = ("dx", "binary")
LAYOUTS = ("auto", "ham10000", "class_folders")
SUBGROUP_COLUMNS = ("age", "sex", "localization", "dx_type")  # HAM10000 metadata kept in the manifest
GENERATED_MARKER = ".complete"  # written last into a generated dataset: its presence means complete


@dataclasses.dataclass(frozen=True)
class KnownDataset:
    """A dataset this project knows by name: its Kaggle slug, layout and expected image counts."""
    slug: str
    layout: str
    expected_counts: dict  # {"all": n} for ham10000, {"train": n, "test": n} for class folders


KNOWN_DATASETS = {
    "ham10000": KnownDataset("kmader/skin-cancer-mnist-ham10000", "ham10000", {"all": 10015}),
    "isic_binary": KnownDataset("fanconic/skin-cancer-malignant-vs-benign", "class_folders",
                                {"train": 2637, "test": 660}),
}


def known_dataset(dataset):
    """(name, KnownDataset) for a known dataset given by name or Kaggle slug, else (dataset, None)."""
    for name, known in KNOWN_DATASETS.items():
        if dataset in (name, known.slug):
            return name, known
    return dataset, None


@dataclasses.dataclass(frozen=True)
class SourceRequest:
    """What a source needs to find or make a raw dataset (explicit values from Params.data)."""
    dataset: str
    path: str = None
    cache_dir: str = None
    seed: int = 42
    generated_images_per_class: int = 60
    generated_image_size: int = 96


def fetch(source, request):
    """Return the folder (absolute Path) holding the raw dataset for `request` from `source`
    ("generated", "local" or "kaggle"), downloading or generating it into the cache if needed."""
    if source not in SOURCES:
        raise DataSourceError(f"unknown data source {source!r}; choose one of: {', '.join(SOURCES)}")
    return SOURCES[source](request)


def fetch_local(request):
    """The `local` source: the folder `request.path` (relative to the project root), as is."""
    if not request.path:
        raise DataSourceError("data.source is 'local' but data.path is not set: set data.path to the "
                              "dataset folder (HAM10000 metadata CSV + images, or train/<class>/ folders)")
    raw_dir = paths.resolve(request.path)
    if not raw_dir.is_dir():
        raise DataSourceError(f"data.path {str(raw_dir)!r} is not a folder: point data.path at the dataset")
    return raw_dir


def fetch_generated(request):
    """The `generated` source: a deterministic synthetic dataset in the on-disk layout of
    `request.dataset` (ham10000 or isic_binary), cached in <cache>/raw/generated-<dataset>-<hash>/ and
    reused when complete (marker file and image count); written to a temp folder and renamed, so a
    crash never leaves half a dataset."""
    dataset, known = known_dataset(request.dataset)
    if known is None:
        raise DataSourceError(f"cannot generate dataset {request.dataset!r}; choose one of: "
                              f"{', '.join(KNOWN_DATASETS)} (or use data.source: local/kaggle)")
    settings = {"dataset": dataset, "seed": request.seed, "version": synthetic.SYNTHETIC_VERSION,
                "images_per_class": request.generated_images_per_class,
                "image_size": request.generated_image_size}
    digest = _short_hash(json.dumps(settings, sort_keys=True))
    target = paths.data_cache_dir(request.cache_dir) / "raw" / f"generated-{dataset}-{digest}"
    classes = synthetic.LESION_STYLES if known.layout == "ham10000" else synthetic.BINARY_STYLES
    expected_files = request.generated_images_per_class * len(classes)
    if (target / GENERATED_MARKER).exists() and count_files(target) == expected_files:
        log.info("reusing generated dataset %s", target)
        return target
    if target.exists():
        log.warning("removing incomplete or damaged generated dataset %s", target)
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        writer = synthetic.write_synthetic_ham10000 if known.layout == "ham10000" \
            else synthetic.write_synthetic_class_folders
        writer(staging, images_per_class=request.generated_images_per_class,
               image_width=request.generated_image_size, seed=request.seed)
        (staging / GENERATED_MARKER).write_text(json.dumps(settings))
        kaggle.publish_folder(staging, target, GENERATED_MARKER)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("generated %s", target)
    return target


def fetch_kaggle(request):
    """The `kaggle` source: download, verify and extract into <cache>/raw/<owner>__<slug>/ (skipped
    when already there and verified). See `lib.kaggle.download_dataset`."""
    _, known = known_dataset(request.dataset)
    slug = known.slug if known else request.dataset
    if "/" not in slug:
        raise DataSourceError(f"data.dataset {request.dataset!r} is neither a known dataset "
                              f"({', '.join(KNOWN_DATASETS)}) nor a Kaggle slug like 'owner/name'")
    verify = functools.partial(verify_dataset, expected_counts=known.expected_counts if known else None)
    return kaggle.download_dataset(slug, paths.data_cache_dir(request.cache_dir) / "raw", verify)


SOURCES = {"generated": fetch_generated, "local": fetch_local, "kaggle": fetch_kaggle}


# ---- layouts ---------------------------------------------------------------------------------

def detect_layout(raw_dir, layout="auto"):
    """Return (layout, root): "ham10000" with the folder holding the metadata CSV, or "class_folders"
    with the folder holding train/ and test/ (or the <class>/ folders). Looks up to two levels down,
    because Kaggle zips often wrap the data in one more folder."""
    raw_dir = Path(raw_dir)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    boundary = raw_dir.resolve()
    candidates = _two_levels(raw_dir, boundary)
    if layout in ("auto", "ham10000"):
        for folder in candidates:
            if find_metadata_csv(folder, boundary) is not None:
                return "ham10000", folder
    if layout in ("auto", "class_folders"):
        for folder in candidates:
            if _splits_in(folder, boundary):
                return "class_folders", folder
        class_dirs = [d for d in _subdirs(raw_dir, boundary) if any(_images_in(d, boundary))]
        if class_dirs:
            return "class_folders", raw_dir
    raise DataSourceError(f"no {'supported' if layout == 'auto' else layout} layout in {raw_dir}: expected a "
                          "metadata CSV with image_id and dx columns plus image folders (HAM10000), or "
                          "train/<class>/ and test/<class>/ folders")


def find_metadata_csv(folder, boundary=None):
    """The first CSV in `folder` with image_id and dx columns (HAM10000_metadata.csv), or None. With
    `boundary` (the dataset folder, resolved), a symbolic link to a CSV elsewhere is not read."""
    for csv_path in sorted(Path(folder).glob("*.csv")):
        refused = boundary is not None and _link_problem(csv_path, boundary)
        if refused:
            log.warning("not reading %s: %s", csv_path, refused)
            continue
        columns = pd.read_csv(csv_path, nrows=0).columns
        if {"image_id", "dx"} <= set(columns):
            return csv_path
    return None


def scan(raw_dir, layout="auto"):
    """Scan a raw dataset. Returns (layout, records, problems): records is a DataFrame with columns
    source_path (str, absolute), image_id (unique, safe as a file name), label (dx or folder class),
    lesion_id (image_id when the layout has none), original_split (train|test, or "" when none), and the
    metadata columns of SUBGROUP_COLUMNS that the layout has (HAM10000: age, sex, localization, dx_type);
    problems is a DataFrame (source_path, image_id, label, reason) of what cannot become a record:
    metadata rows without an image, images without a metadata row (label ""), and in class folders
    non-image files, sub-folders and empty class folders; reported instead of dropped silently. Symbolic
    links are followed only within `raw_dir`: one leading elsewhere (or nowhere) is a problem too, neither
    read nor walked, so no file from elsewhere on the disk can slip into training."""
    layout, root = detect_layout(raw_dir, layout)
    boundary = Path(raw_dir).resolve()
    records, problems = (_scan_ham10000 if layout == "ham10000" else _scan_class_folders)(root, boundary)
    log.info("scanned %s (%s): %d images, %d problems", root, layout, len(records), len(problems))
    return layout, records, pd.DataFrame(problems, columns=["source_path", "image_id", "label", "reason"])


def describe(source, dataset, raw_dir, layout="auto"):
    """The contents of data/source.json: source, dataset, layout (detected), raw_dir (absolute),
    dataset_root (where the layout was found) and n_files (image files under raw_dir)."""
    found_layout, root = detect_layout(raw_dir, layout)
    return {"source": source, "dataset": dataset, "layout": found_layout, "raw_dir": str(Path(raw_dir).resolve()),
            "dataset_root": str(Path(root).resolve()), "n_files": count_files(raw_dir)}


def _scan_ham10000(root, boundary):
    metadata = pd.read_csv(find_metadata_csv(root, boundary), dtype=str)
    files, refused = {}, {}
    for folder in _two_levels(root, boundary):
        for image_path in _images_in(folder, boundary):
            # Kaggle's zip holds each image twice (HAM10000_images_part_1 and ham10000_images_part_1): keep one.
            files.setdefault(image_path.stem, image_path)
        refused.update(_refused_links(folder, boundary))
    refused_images = {path.stem: path for path in refused if path.suffix.lower() in IMAGE_SUFFIXES}
    problems = []
    rows = []
    for row in metadata.itertuples(index=False):
        image_path = files.get(row.image_id)
        if image_path is None and row.image_id in refused_images:  # reported once, as the link, with its class
            link = refused_images.pop(row.image_id)
            problems.append((str(link), row.image_id, row.dx, refused.pop(link)))
            continue
        if image_path is None:
            problems.append((str(root / row.image_id), row.image_id, row.dx, "metadata row has no image file"))
            continue
        lesion_id = getattr(row, "lesion_id", None)
        rows.append((str(image_path), row.image_id, row.dx,
                     lesion_id if isinstance(lesion_id, str) and lesion_id else row.image_id, ""))
    listed = set(metadata["image_id"])
    problems += [(str(path), stem, "", "image has no metadata row") for stem, path in files.items() if stem not in listed]
    problems += [(str(path), path.stem if path.suffix.lower() in IMAGE_SUFFIXES else "", "", reason)
                 for path, reason in refused.items()]
    records = _records_frame(rows)
    # who and where (age, sex, body site, how the diagnosis was made): for results per subgroup in notebook 04
    described = [column for column in SUBGROUP_COLUMNS if column in metadata.columns]
    if described and len(records):
        records = records.merge(metadata[["image_id", *described]].drop_duplicates("image_id"), on="image_id",
                                how="left")
    return records, problems


def _scan_class_folders(root, boundary):
    splits = _splits_in(root, boundary)
    rows = []
    # a linked split or class folder leading elsewhere is reported where it lies
    problems = [(str(path), "", "", reason) for path, reason in _refused_links(root, boundary).items()]
    for split in splits or [""]:
        if split:
            problems += [(str(path), "", "", reason) for path, reason in _refused_links(root / split, boundary).items()]
        for class_dir in _subdirs(root / split if split else root, boundary):
            found = _images_in(class_dir, boundary)
            for image_path in found:
                image_id = safe_name("-".join(part for part in (split, class_dir.name, image_path.stem) if part))
                rows.append((str(image_path), image_id, class_dir.name, image_id, split))
            refused = _refused_links(class_dir, boundary)
            others = sorted(set(p for p in class_dir.iterdir() if not p.name.startswith(".")) - set(found) - set(refused))
            problems += [(str(p), "", class_dir.name, "folder inside a class folder is not scanned" if p.is_dir()
                          else f"not an image file name (suffix {p.suffix or 'none'!r})") for p in others]
            problems += [(str(path), "", class_dir.name, reason) for path, reason in refused.items()]
            if not found and not others and not refused:
                problems.append((str(class_dir), "", class_dir.name, "class folder holds no image files"))
    records = _records_frame(rows)
    duplicated = records["image_id"].duplicated(keep=False)
    if duplicated.any():  # "a b.jpg" and "a_b.jpg" meet after safe_name: keep both, distinctly named
        records.loc[duplicated, "image_id"] += "-" + records.index[duplicated].astype(str)
        records["lesion_id"] = records["image_id"]
    return records, problems


def safe_name(text):
    """`text` made safe as a file name: anything but letters (any script), digits, '.', '-', '_'
    becomes '_'. Non-ASCII letters are kept; spaces and separators are not."""
    return re.sub(r"[^\w.-]", "_", text).strip(".") or "_"


def to_labels(records, labels="dx"):
    """Return a copy of `records` whose `label` column uses the label mode: "dx" keeps the original
    classes; "binary" maps mel, bcc, akiec to malignant and every other dx to benign (folder classes
    already named benign/malignant stay). Raises ValueError on an unknown mode."""
    if labels not in LABEL_MODES:
        raise ValueError(f"unknown labels {labels!r}; choose one of: {', '.join(LABEL_MODES)}")
    records = records.copy()
    if labels == "binary":
        records["label"] = records["label"].map(to_binary)
    return records


def to_binary(label):
    """benign or malignant for a dx class (an already binary label, or "" for unknown, stays)."""
    if label in ("benign", "malignant", "") or not isinstance(label, str):
        return label
    return "malignant" if label in MALIGNANT_DX else "benign"


def count_files(raw_dir):
    """Number of image files under `raw_dir` (any depth)."""
    return sum(1 for path in Path(raw_dir).rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)


def _records_frame(rows):
    return pd.DataFrame(rows, columns=["source_path", "image_id", "label", "lesion_id", "original_split"])


def _subdirs(folder, boundary):
    """Visible sub-folders that stay within `boundary`; __MACOSX holds the resource forks of zips made on a
    Mac, never data."""
    return [d for d in _entries(folder, boundary) if d.is_dir() and not d.name.startswith(".") and d.name != "__MACOSX"]


def _two_levels(folder, boundary):
    """`folder`, its sub-folders and theirs: where a layout may lie, as Kaggle zips often wrap the data."""
    children = _subdirs(folder, boundary)
    return [Path(folder)] + children + [d for child in children for d in _subdirs(child, boundary)]


def _splits_in(folder, boundary):
    """The split folders (train, test) that `folder` holds."""
    names = {d.name for d in _subdirs(folder, boundary)}
    return [split for split in ("train", "test") if split in names]


def _images_in(folder, boundary):
    return [p for p in _entries(folder, boundary) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def _entries(folder, boundary):
    """The entries of `folder` (sorted) that may be read: all but the symbolic links of `_refused_links`."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [entry for entry in sorted(folder.iterdir()) if not _link_problem(entry, boundary)]


def _refused_links(folder, boundary):
    """{path: reason} for the visible symbolic links in `folder` that must not be followed."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    found = ((entry, _link_problem(entry, boundary)) for entry in sorted(folder.iterdir())
             if not entry.name.startswith("."))
    return {entry: reason for entry, reason in found if reason}


def _link_problem(path, boundary):
    """Why the symbolic link `path` must not be followed, or None (not a link, or a link staying within
    `boundary`, the resolved dataset folder). Following a link out of the dataset would train on any file
    of the disk that a downloaded or shared folder points at."""
    if not path.is_symlink():
        return None
    try:
        target = path.resolve(strict=True)
    except FileNotFoundError:
        return "broken symbolic link (its target does not exist)"
    except (OSError, RuntimeError):  # RuntimeError: a link loop, before Python 3.13
        return "symbolic link that loops or cannot be followed"
    if target == boundary or boundary in target.parents:
        return None
    return f"symbolic link to a {'folder' if target.is_dir() else 'file'} outside the dataset folder"


def _short_hash(text):
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def verify_dataset(raw_dir, expected_counts=None):
    """Check that `raw_dir` holds a supported layout and, when given, the expected image counts
    ({"all": n} or {"train": n, "test": n}). Returns the counts found; raises DataSourceError."""
    layout, records, problems = scan(raw_dir)
    if records.empty:
        raise DataSourceError(f"{raw_dir} holds a {layout} layout but no images")
    found = {"all": len(records)} if layout == "ham10000" else \
        records["original_split"].replace("", "all").value_counts().to_dict()
    for key, expected in (expected_counts or {}).items():
        if found.get(key, 0) != expected:
            raise DataSourceError(f"{raw_dir} has {found.get(key, 0)} {key} images, expected {expected}: the "
                                  "download is incomplete or a different version; delete the folder and retry")
    return found
