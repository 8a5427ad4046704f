"""The runner: validate params, create the run folder, execute the notebooks in order with papermill.

A run folder `outputs/<name>/` is never overwritten: a second run with the same name is refused unless
`resume=True`, which skips the notebooks that already finished and continues with the rest (training
itself resumes from its last epoch). Each executed notebook is kept in `<run>/notebooks/` as the record;
when one fails, the runner stops and says which notebook and cell failed and where its executed copy lies.
"""

import datetime
import importlib.metadata
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from lib import artifacts, paths
from lib import params as params_lib
from lib.errors import RunError

log = logging.getLogger(__name__)

NOTEBOOKS = artifacts.STEPS
# Set by the runner on top of run_dir: a batch run must not start an inline TensorBoard server it would leave behind.
BATCH_PARAMETERS = {"03_train": {"tensorboard": "off"}}
# Set on every notebook of a batch run. On Colab (colab.ipynb) the notebooks run as kernels of the same machine: they
# use the project the runner runs from instead of cloning it again, and never ask for Drive access, which nobody could
# give inside a batch run (the runner's notebook already chose whether the run lives on Drive).
COLAB_BATCH_PARAMETERS = {"colab_mount_drive": False}
PROVENANCE_PACKAGES = ("tensorflow", "keras", "tensorflowjs", "numpy", "opencv-python-headless",
                       "scikit-learn", "papermill", "pandas")


def run(params_file, overrides=(), name=None, resume=False, outputs_dir=paths.OUTPUTS_DIR,
        kernel_name="python3", log_output=False, notebooks_dir=paths.NOTEBOOKS_DIR, until=NOTEBOOKS[-1]):
    """Run the notebooks on `params_file` into `<outputs_dir>/<name>/`, in order up to and including `until`
    (all by default; e.g. "03_train" to train without touching the test split); return the run folder."""
    if until not in NOTEBOOKS:
        raise RunError(f"unknown notebook {until!r} to stop after; choose one of: {', '.join(NOTEBOOKS)}")
    params = params_lib.load(params_file, overrides, name=name, outputs_dir=outputs_dir)
    run_dir = Path(outputs_dir) / params.name
    create_run(run_dir, params, params_file, resume=resume, command=sys.argv)
    finished = artifacts.finished_steps(run_dir)
    for number, notebook in enumerate(NOTEBOOKS[:NOTEBOOKS.index(until) + 1], start=1):
        if notebook in finished:
            print(f"[{number}/{len(NOTEBOOKS)}] {notebook}: finished earlier, skipped (--resume)")
            continue
        print(f"[{number}/{len(NOTEBOOKS)}] {notebook}")
        seconds = run_notebook(run_dir, notebook, kernel_name=kernel_name, log_output=log_output,
                               notebooks_dir=notebooks_dir)
        print(f"[{number}/{len(NOTEBOOKS)}] {notebook}: done in {seconds:.1f} s")
    print(f"Run complete: {run_dir}" if until == NOTEBOOKS[-1] else f"Run done up to {until}: {run_dir}")
    return run_dir


def create_run(run_dir, params, params_file, resume=False, command=()):
    """Make the run folder with the resolved params and provenance; refuse to touch an existing one
    unless `resume`, and then only when its params are the same."""
    run_dir = Path(run_dir)
    saved_params = run_dir / "params.yaml"
    if run_dir.exists():
        if not resume:
            raise RunError(f"run folder {run_dir} already exists and is never overwritten; continue it with "
                           f"--resume, or start a new run with --name NEW_NAME")
        if not saved_params.is_file():
            raise RunError(f"cannot resume {run_dir}: it has no params.yaml, so it is not a run folder")
        before = params_lib.load(saved_params).to_dict()
        changed = sorted(_diff(before, params.to_dict()))
        if changed:
            raise RunError(f"cannot resume {run_dir} with different parameters ({', '.join(changed)}); "
                           f"start a new run with --name NEW_NAME")
        return run_dir
    try:
        (run_dir / "notebooks").mkdir(parents=True)
    except OSError as error:  # a read-only disk, no permission, --outputs naming a file
        raise RunError(f"cannot create run folder {run_dir}: {error.strerror or error}; choose another "
                       f"--outputs folder") from None
    params_lib.save(params, saved_params)
    provenance = {
        "run": params.name,
        "params_file": str(params_file),
        "command": shlex.join(command),  # quoted: a name with spaces stays one argument
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git": _git_state(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PROVENANCE_PACKAGES},
        "seed": params.seed,
        "data": {"source": params.data.source, "dataset": params.data.dataset, "path": params.data.path},
    }
    artifacts.write_json(run_dir / "provenance.json", provenance)
    return run_dir


def prepare_run(run_dir, params_file):
    """For a notebook opened by hand: the run's params, creating the run folder from `params_file`
    when it does not exist yet."""
    run_dir = Path(run_dir)
    if not (run_dir / "params.yaml").is_file():
        params = params_lib.load(params_file)
        create_run(run_dir, params, params_file, command=("notebook 01_download",))
        print(f"Created run folder {run_dir} from {params_file}")
    return params_lib.load_run(run_dir)


def run_notebook(run_dir, notebook, kernel_name="python3", log_output=False, notebooks_dir=paths.NOTEBOOKS_DIR):
    """Execute `notebooks/<notebook>.ipynb` on `run_dir` into `<run_dir>/notebooks/`; return seconds taken.
    Raises RunError naming the failed cell and the executed copy that shows it."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    if notebook not in NOTEBOOKS:
        raise RunError(f"unknown notebook {notebook!r}; choose one of: {', '.join(NOTEBOOKS)}")
    run_dir = Path(run_dir).resolve()
    if not (run_dir / "params.yaml").is_file():
        raise RunError(f"{run_dir} is not a run folder (no params.yaml); start one with "
                       f"`python -m lib run params/demo.yaml`")
    source = Path(notebooks_dir) / f"{notebook}.ipynb"
    executed = run_dir / "notebooks" / f"{notebook}.ipynb"
    kernel_log = executed.with_suffix(".kernel.log")
    executed.parent.mkdir(exist_ok=True)
    # Quiet TensorFlow's C++ logging in cell output, and let the kernel import `lib` from any cwd.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    python_path = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(paths.PROJECT_ROOT) not in python_path:
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(paths.PROJECT_ROOT), *python_path]))
    started = time.monotonic()
    try:
        papermill.execute_notebook(
            str(source), str(executed),
            parameters={"run_dir": str(run_dir), "colab_project_dir": str(paths.PROJECT_ROOT), **COLAB_BATCH_PARAMETERS,
                        **BATCH_PARAMETERS.get(notebook, {})},
            kernel_name=kernel_name,
            cwd=str(paths.PROJECT_ROOT), progress_bar=True, log_output=log_output,
            request_save_on_cell_execute=True, kernel_manager_class=_kernel_manager_logging_to(kernel_log))
    except PapermillExecutionError as error:
        first_line = (error.source or "").strip().splitlines()[:1]
        raise RunError(f"notebook {notebook} failed in cell In [{error.exec_count}] "
                       f"(`{first_line[0] if first_line else ''}`): {error.ename}: {error.evalue}\nThe executed notebook, with the error, is {executed}\n"
                       f"Fix the cause, then continue with: python -m lib run <params> --name "
                       f"{shlex.quote(run_dir.name)} --resume") from None
    seconds = time.monotonic() - started
    if notebook not in artifacts.finished_steps(run_dir):
        raise RunError(f"notebook {notebook} ran without recording its end (artifacts.finish_step) in "
                       f"{run_dir / artifacts.PROGRESS}: its products cannot be trusted; see {executed}")
    return seconds


def _kernel_manager_logging_to(log_path):
    """A kernel manager whose kernel writes its process-level output (TensorFlow's C++ start-up lines,
    crashes) to `log_path` instead of the terminal or the cells; what Python prints still goes to the notebook."""
    from jupyter_client.manager import AsyncKernelManager

    class KernelManagerWithLog(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd, **kw):
            # without this, ipykernel copies file-descriptor output (the C++ lines) into the executed cells
            kernel_cmd = [*kernel_cmd, "--IPKernelApp.capture_fd_output=False"]
            with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
                kw["stderr"] = log
                return await super()._async_launch_kernel(kernel_cmd, **kw)

    return KernelManagerWithLog


def _diff(before, after, prefix=""):
    for key in before.keys() | after.keys():
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            yield from _diff(old, new, f"{prefix}{key}.")
        elif old != new:
            yield f"{prefix}{key}: {old!r} -> {new!r}"


def _git_state():
    def git(*args):
        return subprocess.run(["git", *args], cwd=paths.PROJECT_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None, "note": "not a git checkout"}


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
