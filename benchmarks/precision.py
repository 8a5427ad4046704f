"""Compute precision on this CPU: float32 vs mixed_bfloat16 and vs bfloat16 in the plain convolutions only (and
the cost of deterministic ops and of XLA), measured on the two workloads that dominate the recipes: fine-tuning
MobileNet (ham10000_finetune) and VGG19's one feature pass (isic_vgg19). `train.mixed_precision: auto`
(lib.training.resolve_precision) follows this table.

    .venv/bin/python benchmarks/precision.py                 # ~12 min on 2 cores
    .venv/bin/python benchmarks/precision.py --repeats 5     # steadier medians

Each configuration runs in its own process (a dtype policy and op determinism are process-wide), on random
pixels with the project's model builder (`lib.models.build_model`, weights null: the same FLOPs as ImageNet
weights); throughputs are images per second, the median of `--repeats` passes over the configurations in turn
(each pass a fresh process per configuration, 2 timed rounds after warm-up), so that a machine whose speed drifts
over minutes (these shared ones do) slows every column alike. The XLA column compiles the step with
`jit_compile=True`, which Keras' default ("auto") turns on only with a GPU (a TPU compiles with XLA anyway).
Accuracy at equal settings is measured on real data by benchmarks/finetune_ablation.py (its bfloat16 rows).
"""

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

sys.path.insert(0, str(common.PROJECT_ROOT))

CHILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np, keras
    from lib import models, training
    job = json.loads(sys.argv[1])
    pointwise = job["policy"] == "mixed_bfloat16_pointwise"
    keras.config.set_dtype_policy("float32" if pointwise else job["policy"])
    if job["deterministic"]:
        training.seed_everything(0, deterministic=True)
    model = models.build_model(job["backbone"], num_classes=7, image_size=job["size"], alpha=job["alpha"],
                               weights=None, head=job["head"], pooling=job["pooling"],
                               trainable_layers=-1 if job["work"] == "train" else 0)
    if pointwise:
        models.compute_pointwise_in_bfloat16(model)
    images = np.random.default_rng(0).uniform(0, 255, (job["batch"], job["size"], job["size"], 3)).astype("float32")
    targets = np.eye(7, dtype="float32")[np.arange(job["batch"]) % 7]
    if job["work"] == "train":
        training.compile_model(model, "adamw", 1e-4)
        step = lambda: model.train_on_batch(images, targets)
    else:
        extractor = models.feature_model(model)
        step = lambda: extractor.predict_on_batch(images)
    (model if job["work"] == "train" else extractor).jit_compile = job["xla"]
    for _ in range(3):
        step()
    rounds = []
    for _ in range(job["repeats"]):
        started = time.perf_counter()
        for _ in range(job["steps"]):
            step()
        rounds.append(job["batch"] * job["steps"] / (time.perf_counter() - started))
    print(json.dumps({"rounds": rounds}))
""")

WORKLOADS = {  # name: model and work; batch and steps keep each round to a few seconds on 2 cores
    "mobilenet 0.75 fine-tune, 224 px": dict(backbone="mobilenet", alpha=0.75, head="pooled", pooling="avg",
                                            size=224, work="train", batch=32, steps=3),
    "mobilenet 0.75 fine-tune, 160 px": dict(backbone="mobilenet", alpha=0.75, head="pooled", pooling="avg",
                                            size=160, work="train", batch=32, steps=4),
    "vgg19 feature pass, 224 px": dict(backbone="vgg19", alpha=1.0, head="dense", pooling="max", size=224,
                                       work="features", batch=8, steps=2),
}

ROUNDS_A_PROCESS = 2  # timed rounds after each process's warm-up

CONFIGURATIONS = (  # dtype policy, deterministic ops, XLA, column
    ("float32", False, False, "float32"), ("float32", True, False, "float32 deterministic"),
    ("mixed_bfloat16", False, False, "mixed_bfloat16"),
    ("mixed_bfloat16_pointwise", False, False, "bfloat16 pointwise"), ("float32", False, True, "float32 XLA"))


def measure(workload, policy, deterministic, xla, rounds=ROUNDS_A_PROCESS):
    """Images per second of each of `rounds` timed rounds, in a fresh process."""
    job = {**WORKLOADS[workload], "policy": policy, "deterministic": deterministic, "xla": xla, "repeats": rounds}
    result = subprocess.run([common.PYTHON, "-c", CHILD, json.dumps(job)], env=common.child_env(),
                            cwd=common.PROJECT_ROOT, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"{workload} / {policy} failed:\n{result.stderr[-3000:]}")
    return common.last_json(result.stdout)["rounds"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from lib import training

    flags = sorted(training.cpu_flags() & set(training.BF16_CPU_FLAGS))
    rows = []
    for workload in WORKLOADS:
        rounds = {column: [] for *_, column in CONFIGURATIONS}
        for _ in range(args.repeats):  # the configurations take turns, so a drift in the machine's speed hits all
            for policy, deterministic, xla, column in CONFIGURATIONS:
                rounds[column] += measure(workload, policy, deterministic, xla)
                print(workload, column, [round(value, 1) for value in rounds[column]], flush=True)
        row = {"workload": workload, **{column: statistics.median(values) for column, values in rounds.items()}}
        row["bfloat16 / float32"] = row["mixed_bfloat16"] / row["float32"]
        row["pointwise / float32"] = row["bfloat16 pointwise"] / row["float32"]
        row["deterministic / float32"] = row["float32 deterministic"] / row["float32"]
        row["XLA / float32"] = row["float32 XLA"] / row["float32"]
        rows.append(row)
    columns = ["workload", *(column for *_, column in CONFIGURATIONS), "bfloat16 / float32",
               "pointwise / float32", "deterministic / float32", "XLA / float32"]
    table = common.markdown_table(rows, columns)
    print(table)
    common.update_results("precision", f"""
## Compute precision and determinism on this CPU (images per second, higher is better)

Measured {common.machine_line()}. CPU bfloat16 flags: {', '.join(flags) or 'none'}.

Reproduce: `.venv/bin/python benchmarks/precision.py --repeats {args.repeats}`

{table}

Ratios are within one run of the script (the same machine, the configurations taking turns). `lib.training.resolve_precision`
chooses the policy of `train.mixed_precision: auto` from these numbers (`bfloat16 pointwise`:
`mixed_bfloat16_pointwise`, only the plain convolutions in bfloat16); `train.deterministic: true` (the
default) costs `deterministic / float32`; XLA is left to Keras (on with a GPU, off on a CPU).
""")


if __name__ == "__main__":
    main()
