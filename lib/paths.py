"""Where things live: the project root, and paths given relative to it."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OUTPUTS_DIR = PROJECT_ROOT / "outputs"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
PARAMS_DIR = PROJECT_ROOT / "params"


def resolve(path):
    """Return `path` as an absolute Path; relative paths are taken from the project root, not the cwd,
    so notebooks opened from `notebooks/` and runs started from the root agree."""
    path = Path(os.path.expanduser(str(path)))
    return path if path.is_absolute() else PROJECT_ROOT / path


def data_cache_dir(cache_dir=None):
    """The data cache shared by runs (downloads, generated datasets): `cache_dir` if given, else
    $SKIN_LESION_DATA, else `<project>/data`."""
    return resolve(cache_dir or os.environ.get("SKIN_LESION_DATA") or PROJECT_ROOT / "data")
