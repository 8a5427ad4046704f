"""Seed sweeps: one run per seed through the runner, notebooks 01-02 shared, and the aggregate record. The
notebooks are replaced by a fake runner that records what each run was given and writes what they would."""

import pytest

from lib import artifacts, pipeline, sweep
from lib import params as params_lib
from lib.errors import RunError

DEMO = "params/demo.yaml"


@pytest.fixture
def fake_runner(monkeypatch):
    """Replaces `pipeline.run`: creates the run folder as the runner does, then fakes notebooks 01-02 (a manifest
    naming its maker) unless they finished before, 03 (a training.json whose best validation value is seed/200)
    unless it finished before, and, unless `until` is 03_train, 04 (a metrics.json whose balanced accuracy is
    seed/100).
    Returns the list of (run, seed, steps finished when the run started)."""
    calls = []

    def run(params_file, overrides=(), name=None, resume=False, outputs_dir=None, until="05_convert_tfjs",
            **options):
        loaded = params_lib.load(params_file, overrides)
        loaded = params_lib.from_dict({**loaded.to_dict(), "name": name})
        run_dir = pipeline.create_run(outputs_dir / name, loaded, params_file, resume=resume)
        finished = artifacts.finished_steps(run_dir)
        calls.append((name, loaded.seed, sorted(finished)))
        if "02_preprocess" not in finished:
            for step in ("01_download", "02_preprocess"):
                artifacts.start_step(run_dir, step)
                artifacts.finish_step(run_dir, step)
            (run_dir / "data").mkdir(exist_ok=True)
            (run_dir / artifacts.MANIFEST).write_text(f"made by {name}\n")
        if "03_train" not in finished:
            artifacts.start_step(run_dir, "03_train")
            artifacts.write_json(run_dir / artifacts.TRAINING, {"monitor": "val_balanced_accuracy",
                                                                "best_value": loaded.seed / 200})
            artifacts.finish_step(run_dir, "03_train")
        if until == "03_train":
            return run_dir
        artifacts.start_step(run_dir, "04_evaluate")
        artifacts.write_json(run_dir / artifacts.METRICS, {"balanced_accuracy": loaded.seed / 100,
                                                           "test_set": {"sha256": "c" * 64, "n": 61}})
        artifacts.finish_step(run_dir, "04_evaluate")
        return run_dir

    monkeypatch.setattr(pipeline, "run", run)
    return calls


def test_seeds_are_the_params_files_seed_and_the_next_ones():
    assert sweep.seeds_for(42, 3) == [42, 43, 44]
    with pytest.raises(RunError, match="at least 1"):
        sweep.seeds_for(42, 0)


def test_sweep_runs_every_seed_and_shares_notebooks_01_02_of_the_first_run(tmp_path, fake_runner):
    record = sweep.run_sweep(DEMO, seeds=3, outputs_dir=tmp_path)

    assert fake_runner == [("demo-seed42", 42, []),
                           ("demo-seed43", 43, ["01_download", "02_preprocess"]),
                           ("demo-seed44", 44, ["01_download", "02_preprocess"])]
    assert (tmp_path / "demo-seed44" / artifacts.MANIFEST).read_text() == "made by demo-seed42\n"
    assert artifacts.read_progress(tmp_path / "demo-seed43")["02_preprocess"]["copied_from"] == "demo-seed42"
    assert params_lib.load_run(tmp_path / "demo-seed44").data == params_lib.load_run(tmp_path / "demo-seed42").data
    assert record == artifacts.read_json(tmp_path / "demo-sweep.json")
    assert record["runs"] == ["demo-seed42", "demo-seed43", "demo-seed44"] and record["seeds"] == [42, 43, 44]
    aggregate = record["aggregate"]
    assert aggregate["n_complete"] == 3 and aggregate["test_set"] == "c" * 64
    assert aggregate["metrics"]["balanced_accuracy"]["mean"] == pytest.approx(0.43)
    assert aggregate["metrics"]["balanced_accuracy"]["std"] == pytest.approx(0.01)


def test_without_sharing_every_run_prepares_its_own_data(tmp_path, fake_runner):
    sweep.run_sweep(DEMO, seeds=2, name="own", outputs_dir=tmp_path, share_data=False)

    assert [steps for _, _, steps in fake_runner] == [[], []]
    assert (tmp_path / "own-seed43" / artifacts.MANIFEST).read_text() == "made by own-seed43\n"


def test_a_sweep_is_not_run_twice_without_resume_and_resumes_with_it(tmp_path, fake_runner):
    sweep.run_sweep(DEMO, seeds=2, outputs_dir=tmp_path)

    with pytest.raises(RunError, match="--resume"):
        sweep.run_sweep(DEMO, seeds=2, outputs_dir=tmp_path)
    sweep.run_sweep(DEMO, seeds=2, outputs_dir=tmp_path, resume=True)
    every_step = ["01_download", "02_preprocess", "03_train", "04_evaluate"]
    assert [steps for _, _, steps in fake_runner[2:]] == [every_step] * 2


def test_a_sweep_trained_only_is_compared_on_validation_then_evaluated_on_resume(tmp_path, fake_runner):
    record = sweep.run_sweep(DEMO, seeds=3, outputs_dir=tmp_path, until="03_train")
    assert record["until"] == "03_train"
    assert not any((tmp_path / run / artifacts.METRICS).exists() for run in record["runs"])
    assert record["aggregate"]["n_complete"] == 0
    assert record["aggregate"]["validation"]["monitor"] == "val_balanced_accuracy"
    assert record["aggregate"]["validation"]["mean"] == pytest.approx((42 + 43 + 44) / 3 / 200)
    assert record["aggregate"]["validation"]["n"] == 3

    fake_runner.clear()
    record = sweep.run_sweep(DEMO, seeds=3, outputs_dir=tmp_path, resume=True)
    assert [finished for _, _, finished in fake_runner] == [["01_download", "02_preprocess", "03_train"]] * 3
    assert record["aggregate"]["n_complete"] == 3
    assert record["aggregate"]["metrics"]["balanced_accuracy"]["mean"] == pytest.approx(0.43)


def test_a_sweep_sets_the_seed_itself(tmp_path):
    with pytest.raises(RunError, match="remove -p seed"):
        sweep.run_sweep(DEMO, seeds=2, overrides=["seed=7"], outputs_dir=tmp_path)


def test_data_is_shared_only_between_runs_with_the_same_data_params(tmp_path, fake_runner):
    first = pipeline.run(DEMO, name="first", outputs_dir=tmp_path)
    other = params_lib.load(DEMO, ["data.image_size=32"])
    other = params_lib.from_dict({**other.to_dict(), "name": "other"})
    pipeline.create_run(tmp_path / "other", other, DEMO)

    with pytest.raises(RunError, match="data params differ"):
        sweep.share_prepared_data(first, tmp_path / "other")
