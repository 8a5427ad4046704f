"""Several training seeds, one answer: the same recipe trained with `--seeds N` seeds, and the mean and standard
deviation of each test metric over the runs.

    python -m lib sweep params/demo.yaml --seeds 3          # runs demo-seed42, demo-seed43, demo-seed44
    python -m lib sweep params/demo.yaml --seeds 5 --name demo-lr -p train.learning_rate=0.001
    python -m lib sweep params/demo.yaml --seeds 3 --until 03_train   # train only: compare recipes on validation,
    python -m lib sweep params/demo.yaml --seeds 3 --resume           # then evaluate the chosen one on test

Each run is an ordinary run folder made by the project's runner (`pipeline.run`), named <name>-seed<seed>, with the
params file's `seed` + 0, 1, ... N-1: only `seed` changes, so `data.split_seed` keeps the split and every run is
tested on the same images. Notebooks 01-02 do not read `seed`, so the first run's products of them (data/, their
plots and executed notebooks) are copied into the other runs, which start at 03_train.

The record outputs/<name>-sweep.json ({name, params_file, overrides, seeds, runs, shared_data_from, until,
aggregate}) is rewritten after every run; its aggregate holds the mean and spread of the runs' best validation value
of `train.monitor` as soon as they are trained, and of their test metrics once they are evaluated;
`python -m lib compare` recomputes the aggregate from the runs' metrics.json.
"""

import datetime
import logging
import shutil
import sys
from pathlib import Path

from lib import artifacts, compare, pipeline
from lib import params as params_lib
from lib.errors import RunError

log = logging.getLogger(__name__)

SHARED_STEPS = ("01_download", "02_preprocess")
# What the shared steps leave in a run folder (besides their progress.json entries), relative to it.
SHARED_PRODUCTS = ("data", "plots/class_distribution.png", "plots/samples.png", "notebooks/01_download.ipynb",
                   "notebooks/01_download.kernel.log", "notebooks/02_preprocess.ipynb",
                   "notebooks/02_preprocess.kernel.log")


def seeds_for(base_seed, count):
    """The seeds of a sweep: `base_seed` (the params file's), then the next `count - 1` integers."""
    if count < 1:
        raise RunError(f"--seeds must be at least 1; got {count}")
    return [base_seed + offset for offset in range(count)]


def run_params(params_file, overrides, seed, run_name):
    """The validated params of one run of the sweep: the file with `overrides`, `seed` and the run's name."""
    loaded = params_lib.load(params_file, [*overrides, f"seed={seed}"])
    return params_lib.from_dict({**loaded.to_dict(), "name": run_name}, origin=f"sweep run {run_name}")


def share_prepared_data(first_run_dir, run_dir):
    """Copy the products of notebooks 01-02 from `first_run_dir` into the fresh run folder `run_dir` and record
    those steps as finished there, after checking that both runs have the same data params (the only params 01-02
    read). Copies, not links: rerunning 02 in one run must not change the other's images."""
    first, this = params_lib.load_run(first_run_dir), params_lib.load_run(run_dir)
    if first.data != this.data:
        raise RunError(f"cannot share notebooks 01-02 between {first_run_dir} and {run_dir}: their data params "
                       "differ; a sweep changes only `seed`")
    for relative in SHARED_PRODUCTS:
        source, target = Path(first_run_dir) / relative, Path(run_dir) / relative
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        elif source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    artifacts.record_copied_steps(run_dir, first_run_dir, SHARED_STEPS)
    log.info("copied notebooks 01-02's products from %s into %s", first_run_dir, run_dir)


def sweep_path(outputs_dir, name):
    return Path(outputs_dir) / f"{name}{compare.SWEEP_SUFFIX}"


def run_sweep(params_file, seeds=3, overrides=(), name=None, outputs_dir="outputs", resume=False,
              kernel_name="python3", log_output=False, share_data=True, until=pipeline.NOTEBOOKS[-1]):
    """Run the recipe `params_file` once per seed (`seeds_for`), one after the other, through `pipeline.run` up to
    notebook `until`, and write the sweep record after each run. `resume` continues an interrupted sweep, or one
    that stopped at `until` (finished notebooks are skipped, an interrupted one resumes). Returns the record."""
    if any(override.partition("=")[0].strip() == "seed" for override in overrides):
        raise RunError("a sweep sets `seed` itself (--seeds N: the params file's seed and the N-1 after it); "
                       "remove -p seed=..., or set seed in the params file")
    base = params_lib.load(params_file, overrides)
    name = name or base.name
    outputs_dir = Path(outputs_dir)
    record_path = sweep_path(outputs_dir, name)
    if record_path.exists() and not resume:
        raise RunError(f"sweep {record_path} already exists; continue it with --resume, or name a new one with "
                       "--name NEW_NAME")
    seed_list = seeds_for(base.seed, seeds)
    runs = [f"{name}-seed{seed}" for seed in seed_list]
    record = {"name": name, "params_file": str(params_file), "overrides": list(overrides), "seeds": seed_list,
              "runs": runs, "shared_data_from": runs[0] if share_data and len(runs) > 1 else None, "until": until,
              "command": " ".join(sys.argv),
              "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    outputs_dir.mkdir(parents=True, exist_ok=True)
    artifacts.write_json(record_path, {**record, "aggregate": None})
    for index, (seed, run) in enumerate(zip(seed_list, runs)):
        print(f"== sweep {name}: run {index + 1}/{len(runs)}, seed {seed} ==")
        run_dir = outputs_dir / run
        resume_run = resume
        if index > 0 and share_data:
            fresh = not run_dir.exists()
            pipeline.create_run(run_dir, run_params(params_file, overrides, seed, run), params_file, resume=resume,
                                command=tuple(sys.argv))
            if fresh or not set(SHARED_STEPS) & set(artifacts.finished_steps(run_dir)):
                share_prepared_data(outputs_dir / runs[0], run_dir)
            resume_run = True  # the folder exists now, made here
        pipeline.run(params_file, [*overrides, f"seed={seed}"], name=run, resume=resume_run, outputs_dir=outputs_dir,
                     kernel_name=kernel_name, log_output=log_output, until=until)
        artifacts.write_json(record_path, {**record, "aggregate": compare.aggregate_runs(outputs_dir, runs)})
    print(f"Sweep complete: {record_path}" if until == pipeline.NOTEBOOKS[-1] else
          f"Sweep done up to {until}: {record_path}; evaluate it with the same command, --resume and no --until")
    return artifacts.read_json(record_path)
