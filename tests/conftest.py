"""Shared test setup: quiet TensorFlow, a non-interactive plotting backend, and access to ../shared."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

from lib import paths  # noqa: E402

SHARED_DIR = paths.PROJECT_ROOT.parent / "shared"
HAM10000_LESIONS = SHARED_DIR / "data" / "ham10000-lesions-224"
MOBILENET_WEIGHTS = SHARED_DIR / "weights" / "mobilenet_0.75_224_imagenet_tf_no_top.h5"


@pytest.fixture
def ham10000_lesions():
    """The real HAM10000 subset beside the project (one image per lesion); skipped on a clone without it."""
    if not (HAM10000_LESIONS / "HAM10000_metadata.csv").is_file():
        pytest.skip(f"real data not found at {HAM10000_LESIONS}")
    return HAM10000_LESIONS


@pytest.fixture
def mobilenet_weights():
    """Genuine ImageNet MobileNet (alpha 0.75, no top) weights beside the project; skipped when absent."""
    if not MOBILENET_WEIGHTS.is_file():
        pytest.skip(f"weights not found at {MOBILENET_WEIGHTS}")
    return MOBILENET_WEIGHTS


@pytest.fixture
def run_folder(tmp_path):
    """A run folder as notebook 02 leaves it: 3 classes x 8 synthetic lesions at 32 px, split 4/2/2 per class."""
    from tests import runfolders

    return runfolders.write_run_folder(tmp_path / "run")


@pytest.fixture
def make_run_folder(tmp_path):
    """Build run folders of other sizes: make_run_folder(name, per_class=..., size=..., fractions=..., seed=...)."""
    from tests import runfolders

    return lambda name="run", **options: runfolders.write_run_folder(tmp_path / name, **options)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A run folder as notebook 03 leaves it, trained once per session and shared by the export and web tests (copy
    it before changing it): 3 classes x 20 synthetic lesions at 32 px, split 12/4/4 per class, and a small CNN
    trained on them in model/best.keras. Returns (run_dir, model)."""
    from tests import runfolders

    run_dir = runfolders.write_run_folder(tmp_path_factory.mktemp("trained") / "run", per_class=20,
                                          fractions=(0.6, 0.2, 0.2))
    return run_dir, runfolders.train_on_run_folder(runfolders.small_exportable_cnn(), run_dir)


@pytest.fixture(scope="session")
def chromium():
    """Headless Chromium with the project's TF.js: skips the test when chromium, node or the npm packages are
    absent, except in CI (CI=true), where that is a failure."""
    from lib import browser

    missing = browser.missing_tools()
    if missing:
        message = f"browser check impossible, missing: {', '.join(missing)}; {browser.INSTALL_HINT}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
