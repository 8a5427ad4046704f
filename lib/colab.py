"""Google Colab: install what Colab lacks without touching its TensorFlow, keep runs on Google Drive, read the
training images from the machine's own disk, and hand the finished run to the user.

Everything here does nothing outside Colab, so the same setup cell runs in Jupyter, papermill and Colab.
Fetching the project itself (git clone) happens in the notebook's setup cell, before `lib` can import.
"""

import concurrent.futures
import dataclasses
import importlib.metadata
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from lib import paths
from lib.errors import SetupError

log = logging.getLogger(__name__)

DRIVE_MOUNT_POINT = Path("/content/drive")
DEFAULT_DRIVE_FOLDER = "MyDrive/skin-lesion-pipeline"
# The Colab machine's own disk, where images read every epoch are copied from Drive (see `stage_images`).
LOCAL_IMAGES_ROOT = Path("/content/local-images")


@dataclasses.dataclass(frozen=True)
class Requirement:
    """A package the project needs on Colab: installed as `install` when missing or older than `minimum`."""
    name: str
    minimum: str
    install: str
    with_dependencies: bool = True


# Colab ships TensorFlow, Keras, numpy, OpenCV, pandas, scikit-learn, matplotlib, seaborn, TensorBoard, tf_keras,
# tensorflow-hub, jax and flax. The pins are requirements.txt's (a test checks that they agree).
REQUIREMENTS = (
    Requirement("papermill", minimum="2.7.0", install="papermill==2.7.0"),  # not on Colab; its dependencies are
    # the kaggle that lib.kaggle and its tests are written against; Colab's 2.0.2 authenticates differently (it
    # reads the host program's command line as a kaggle command) and is not tested here
    Requirement("kaggle", minimum="2.2.4", install="kaggle==2.2.4"),
    # tensorflowjs declares tensorflow-decision-forests, which pins one exact TensorFlow: installing its dependencies
    # would replace Colab's. Only decision-forest models need TF-DF (lib.converter lends it a placeholder).
    Requirement("tensorflowjs", minimum="4.22.0", install="tensorflowjs==4.22.0", with_dependencies=False),
    Requirement("tensorflow-hub", minimum="0.16.1", install="tensorflow-hub==0.16.1", with_dependencies=False),
)
# Never installed, upgraded or downgraded by the setup, whatever a requirement declares: Colab's own builds. Every
# compiled package already installed is held too (see `held_versions`).
NEVER_INSTALL = ("tensorflow", "keras", "numpy")


def in_colab():
    return "google.colab" in sys.modules


def setup(mount_drive=False, drive_folder=DEFAULT_DRIVE_FOLDER, project_root=paths.PROJECT_ROOT, install=True):
    """On Colab: install missing or outdated packages and, if `mount_drive`, keep `outputs/` and `data/` on Drive so
    runs and downloads survive the session. Returns a one-line description of what was done."""
    if not in_colab():
        return "not on Colab: nothing to set up"
    done = []
    if install:
        done.append(install_missing_packages())
    if mount_drive:
        done.append(keep_on_drive(drive_folder, project_root))
    summary = "; ".join(done) or "Colab: nothing to do"
    print(summary)
    return summary


def normalize(name):
    """A distribution name as pip compares them (PEP 503): `tf_keras` and `TF-Keras` are the same package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_versions():
    """{normalized distribution name: version} of this interpreter's packages."""
    return {normalize(dist.metadata["Name"]): dist.version for dist in importlib.metadata.distributions()
            if dist.metadata["Name"]}


def packages_to_install(installed, requirements=REQUIREMENTS):
    """The requirements that are missing from `installed` ({normalized name: version}) or older than their
    minimum, in order. Raises SetupError if one of them is a package the setup never installs."""
    from packaging.version import InvalidVersion, Version

    wanted = []
    for requirement in requirements:
        if normalize(requirement.name) in NEVER_INSTALL:
            raise SetupError(f"{requirement.name} is Colab's own build and is never installed by the setup; "
                             f"remove it from lib.colab.REQUIREMENTS")
        current = installed.get(normalize(requirement.name))
        try:
            outdated = current is not None and Version(current) < Version(requirement.minimum)
        except InvalidVersion:
            outdated = True  # an unreadable version cannot be shown to satisfy the minimum
        if current is None or outdated:
            wanted.append(requirement)
    return wanted


def held_versions(distributions=None):
    """{name: version} the setup must not change: NEVER_INSTALL, and every installed distribution that is not
    pure Python (a wheel with `Root-Is-Purelib: false`, or installed without wheel metadata, as Colab's apt ones)."""
    held = {}
    for dist in importlib.metadata.distributions() if distributions is None else distributions:
        name = dist.metadata["Name"]
        if not name:
            continue
        wheel = dist.read_text("WHEEL") or ""
        if normalize(name) in NEVER_INSTALL or "Root-Is-Purelib: true" not in wheel:
            held[normalize(name)] = dist.version
    return held


def install_commands(requirements, constraints_file):
    """The `python -m pip` argument lists that install `requirements`: those with dependencies in one command
    held to the versions in `constraints_file` (pip fails rather than change them), the others with --no-deps."""
    with_dependencies = [r.install for r in requirements if r.with_dependencies]
    without = [r.install for r in requirements if not r.with_dependencies]
    commands = []
    if with_dependencies:
        commands.append(["install", "--quiet", "--constraint", str(constraints_file), *with_dependencies])
    if without:
        commands.append(["install", "--quiet", "--no-deps", *without])
    return commands


def install_missing_packages():
    """Install what `packages_to_install` says, holding Colab's TensorFlow, Keras, numpy and compiled packages.
    Returns what changed, e.g. "Colab: installed papermill 2.7.0, kaggle 2.0.2 -> 2.2.4 (tensorflow 2.20.0 kept)"."""
    before = installed_versions()
    wanted = packages_to_install(before)
    kept = ", ".join(f"{name} {before[name]}" for name in NEVER_INSTALL if name in before)
    if not wanted:
        return f"Colab: every package the project needs is there ({kept} kept)"
    held = held_versions()
    with tempfile.TemporaryDirectory() as folder:
        constraints = Path(folder) / "colab-held.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(held.items())))
        for command in install_commands(wanted, constraints):
            result = subprocess.run([sys.executable, "-m", "pip", *command], capture_output=True, text=True)
            if result.returncode != 0:
                raise SetupError(f"`pip {' '.join(command)}` failed (exit {result.returncode}); Colab's TensorFlow, "
                                 f"Keras, numpy and compiled packages are held at their versions, so a package that "
                                 f"needs others cannot be installed: change its pin in lib.colab.REQUIREMENTS.\n"
                                 f"{result.stderr[-3000:]}")
    importlib.invalidate_caches()
    after = installed_versions()
    changed_held = sorted(name for name, version in held.items() if after.get(name) != version)
    if changed_held:
        raise SetupError(f"the install changed Colab's own {', '.join(changed_held)}: restart the runtime "
                         f"(Runtime > Disconnect and delete runtime) and report this")
    changes = [f"{name} {after[name]}" if name not in before else f"{name} {before[name]} -> {after[name]}"
               for name in sorted(after) if before.get(name) != after[name]]
    return f"Colab: installed {', '.join(changes)} ({kept} kept)"


def keep_on_drive(drive_folder, project_root):
    """Mount Google Drive and make `outputs/` and `data/` links into `<Drive>/<drive_folder>/`.
    A local folder that already holds files is left in place, never replaced."""
    from google.colab import drive

    if not (DRIVE_MOUNT_POINT / "MyDrive").is_dir():
        drive.mount(str(DRIVE_MOUNT_POINT))
    target_root = DRIVE_MOUNT_POINT / drive_folder
    linked = []
    for name in ("outputs", "data"):
        target, local = target_root / name, Path(project_root) / name
        target.mkdir(parents=True, exist_ok=True)
        if local.is_symlink():
            if local.resolve() == target.resolve():
                linked.append(name)
                continue
            local.unlink()
        elif local.exists():
            if any(p.name != ".gitkeep" for p in local.iterdir()):
                log.warning("%s already holds files: kept on the Colab disk, not linked to Drive", local)
                continue
            for placeholder in local.iterdir():
                placeholder.unlink()
            local.rmdir()
        local.symlink_to(target, target_is_directory=True)
        linked.append(name)
    return f"Drive: {', '.join(linked) or 'nothing'} kept in {target_root}"


def on_drive(path):
    """Whether `path` (symbolic links followed) lies on the mounted Google Drive."""
    return Path(path).resolve().is_relative_to(DRIVE_MOUNT_POINT.resolve())


def stage_images(run_dir, local_root=LOCAL_IMAGES_ROOT, workers=16):
    """The folder to read the run's processed images from, instead of `run_dir`.

    Outside Colab, or when `run_dir` is not on Google Drive, that is `run_dir` itself and nothing is copied. On Colab
    with the run on Drive (where every read is a network round trip, every epoch), `run_dir`/data/processed/ is
    mirrored to `local_root`/<run folder name>/data/processed/ on the machine's own disk, and that root is returned:
    new and changed files (by size and modification time) are copied, each via a temporary name, files gone from the
    run are removed, so a rerun copies only what changed. Image paths in data/manifest.csv are relative to the run
    folder ("data/processed/<image_id>.png"): join them to the returned folder. Raises SetupError if the run has no
    data/processed/ (run notebook 02 first)."""
    run_dir = Path(run_dir)
    if not in_colab() or not on_drive(run_dir):
        return run_dir
    source = run_dir / "data" / "processed"
    if not source.is_dir():
        raise SetupError(f"{source} does not exist: run notebook 02_preprocess on {run_dir} first")
    local_run = Path(local_root) / run_dir.name
    target = local_run / "data" / "processed"
    target.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    wanted = {path.name: path.stat() for path in source.iterdir() if path.is_file()}
    for stale in [path for path in target.iterdir() if path.name not in wanted]:
        stale.unlink() if stale.is_file() or stale.is_symlink() else shutil.rmtree(stale)

    def needs_copy(name):
        copy = target / name
        if not copy.is_file():
            return True
        stat = copy.stat()
        return stat.st_size != wanted[name].st_size or int(stat.st_mtime) != int(wanted[name].st_mtime)

    def copy(name):
        temporary = target / f".{name}.partial"
        shutil.copy2(source / name, temporary)
        os.replace(temporary, target / name)

    to_copy = [name for name in sorted(wanted) if needs_copy(name)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:  # Drive reads are latency-bound
        list(pool.map(copy, to_copy))
    size = sum(stat.st_size for stat in wanted.values())
    print(f"Images: {len(wanted)} ({size / 1e6:.1f} MB) read from {target}, a local copy of {source} "
          f"({len(to_copy)} copied in {time.monotonic() - started:.1f} s)")
    return local_run


KEY_PLOTS = ("confusion_matrix_normalized.png", "roc.png", "training_curves.png", "gradcam.png")


def show_results(run_dir, plots=KEY_PLOTS):
    """Display a finished run in the notebook: report.md, the key plots that exist, and where the TF.js model is.
    Returns the TF.js model's folder."""
    from IPython.display import Image, Markdown, display

    run_dir = Path(run_dir)
    report = run_dir / "report.md"
    if not report.is_file():
        raise SetupError(f"{report} does not exist: the run did not finish notebook 04_evaluate")
    display(Markdown(report.read_text(encoding="utf-8")))
    for name in plots:
        if (run_dir / "plots" / name).is_file():
            print(f"plots/{name}")
            display(Image(filename=str(run_dir / "plots" / name)))
    tfjs_dir = run_dir / "tfjs"
    if not (tfjs_dir / "model.json").is_file():
        raise SetupError(f"{tfjs_dir / 'model.json'} does not exist: the run did not finish notebook 05_convert_tfjs")
    size = sum(path.stat().st_size for path in tfjs_dir.iterdir() if path.is_file())
    print(f"TF.js model: {tfjs_dir / 'model.json'} ({size / 1024:.0f} KB with its weights and metadata.json)")
    return tfjs_dir


# Left out of the zip: caches that a rerun rebuilds and that can be large (HAM10000's processed images: 0.6 GB).
ZIP_EXCLUDED = ("data/processed", "features", "model/backup", "external/processed")


def zip_run(run_dir, destination_dir=None):
    """A zip of the run folder (tfjs/, model/, notebooks/, metrics, report, plots, logs; not ZIP_EXCLUDED) written
    to `destination_dir` (default: the temporary folder, off Drive). Returns its path."""
    run_dir = Path(run_dir)
    archive = Path(destination_dir or tempfile.gettempdir()) / f"{run_dir.name}.zip"
    partial = archive.with_name(f".{archive.name}.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(run_dir.rglob("*")):
            relative = path.relative_to(run_dir).as_posix()
            if path.is_file() and not any(relative == e or relative.startswith(e + "/") for e in ZIP_EXCLUDED):
                bundle.write(path, f"{run_dir.name}/{relative}")
    os.replace(partial, archive)
    return archive


def deliver_run(run_dir, download=True):
    """Tell where the run is kept and, on Colab with `download`, send it to the browser as a zip
    (google.colab.files.download). Returns the zip's path, or None when none was made."""
    run_dir = Path(run_dir)
    if in_colab() and on_drive(run_dir):
        print(f"The run is kept on Google Drive: {run_dir.resolve()}")
    elif in_colab():
        print(f"The run is on this Colab machine only ({run_dir}): it is lost when the runtime ends")
    else:
        print(f"The run folder is {run_dir}")
    if not (in_colab() and download):
        return None
    from google.colab import files

    archive = zip_run(run_dir)
    print(f"Downloading {archive.name} ({archive.stat().st_size / 1e6:.1f} MB): unzip it into the project's outputs/ "
          f"and run `python -m lib serve outputs/{run_dir.name}` to classify photos in the browser")
    files.download(str(archive))
    return archive
