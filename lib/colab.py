"""Google Colab: install what Colab lacks without touching its TensorFlow, and keep runs on Google Drive.

Everything here does nothing outside Colab, so the same setup cell runs in Jupyter, papermill and Colab.
Fetching the project itself (git clone) happens in the notebook's setup cell, before `lib` can import.
"""

import importlib.metadata
import logging
import subprocess
import sys
from pathlib import Path

from lib import paths

log = logging.getLogger(__name__)

DRIVE_MOUNT_POINT = Path("/content/drive")
DEFAULT_DRIVE_FOLDER = "MyDrive/skin-lesion-pipeline"
# Colab ships TensorFlow, Keras, OpenCV, pandas, scikit-learn, matplotlib, seaborn and TensorBoard.
# tensorflowjs declares tensorflow-decision-forests, which pins one exact TensorFlow: installing it with
# its dependencies would replace Colab's TensorFlow, so it and its light helpers go in without them.
COLAB_PACKAGES = ["papermill==2.7.0", "kaggle==2.2.4"]
COLAB_PACKAGES_NO_DEPS = ["tensorflowjs==4.22.0", "tensorflow-hub==0.16.1"]


def in_colab():
    return "google.colab" in sys.modules


def setup(mount_drive=False, drive_folder=DEFAULT_DRIVE_FOLDER, project_root=paths.PROJECT_ROOT, install=True):
    """On Colab: install missing packages and, if `mount_drive`, keep `outputs/` and `data/` on Drive so
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


def install_commands(installed):
    """The pip commands that add what is missing from `installed` ({distribution: version}), never a
    TensorFlow: each command is a list of arguments for `python -m pip`."""
    def missing(requirements):
        return [r for r in requirements if r.split("==")[0].lower() not in installed]

    commands = []
    if missing(COLAB_PACKAGES):
        commands.append(["install", "--quiet", *missing(COLAB_PACKAGES)])
    if missing(COLAB_PACKAGES_NO_DEPS):
        commands.append(["install", "--quiet", "--no-deps", *missing(COLAB_PACKAGES_NO_DEPS)])
    return commands


def install_missing_packages():
    installed = {dist.metadata["Name"].lower(): dist.version for dist in importlib.metadata.distributions()}
    commands = install_commands(installed)
    for command in commands:
        subprocess.run([sys.executable, "-m", "pip", *command], check=True)
    tensorflow = installed.get("tensorflow", "not installed")
    if not commands:
        return f"Colab: packages already present (TensorFlow {tensorflow} kept)"
    return f"Colab: installed {sum(len(c) - 2 for c in commands)} packages (TensorFlow {tensorflow} kept)"


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
