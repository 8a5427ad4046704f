"""Where things live: the project root, and paths given relative to it."""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OUTPUTS_DIR = PROJECT_ROOT / "outputs"
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
PARAMS_DIR = PROJECT_ROOT / "params"
# The project's public repository, named here only: Colab clones it, and the README's "Open in Colab" badges open
# notebooks from its branch. Those badges and the notebooks' `colab_repository` default repeat it (a fresh Colab
# machine reads that default before the project is there to import): `python -m lib repository URL` changes all.
REPOSITORY_URL = "https://github.com/skin-lesion-pipeline/skin-lesion-pipeline"
REPOSITORY_BRANCH = "main"


def resolve(path):
    """Return `path` as an absolute Path; relative paths are taken from the project root, not the cwd,
    so notebooks opened from `notebooks/` and runs started from the root agree."""
    path = Path(os.path.expanduser(str(path)))
    return path if path.is_absolute() else PROJECT_ROOT / path


def data_cache_dir(cache_dir=None):
    """The data cache shared by runs (downloads, generated datasets): `cache_dir` if given, else
    $SKIN_LESION_DATA, else `<project>/data`."""
    return resolve(cache_dir or os.environ.get("SKIN_LESION_DATA") or PROJECT_ROOT / "data")
