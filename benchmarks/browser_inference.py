"""Browser inference: TF.js model size on disk and median latency per image in headless Chromium, for the
demo model and the recipe A model, float32 vs uint8 (float16 too), with the TF.js backend used; for a run whose
notebook 04 chose test-time augmentation, also with the views the exported model averages (what the page runs)
beside one view.

Conversion reuses lib/export.py (`export_saved_model`, `convert_saved_model`, `verify_tfjs_model`,
`directory_size`); the browser is driven by lib/browser.py (`run_script`, `find_chromium`) through the
project's launcher web/scripts/chromium.mjs, and the page loads the model with web/classifier.js
(`initBackend`, `loadModel`), exactly as the web page does. lib has no latency measurement, so the
timing loop is here: benchmarks/browser/latency.{html,js,mjs}: one 1xSxSx3 image, `predict` +
`await data()`, 3 warm-up calls (the first is reported separately), then the median of 20.

    .venv/bin/python benchmarks/browser_inference.py \
        --model demo=outputs/bench_demo --model recipe_a=outputs/bench_recipe_a

A run folder is any folder with model/best.keras. Without --model, the script uses outputs/bench_demo
(made with `python -m lib run params/demo.yaml --name bench_demo` when missing) and
outputs/bench_recipe_a (made by benchmarks/recipe_a_real_data.py; skipped, and said so, when missing).
Check (issue 8 sets no floor here): the uint8 model is at most 30% of the float32 one on disk (weights
are 4x smaller; model.json is not).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

BENCH_BROWSER_DIR = Path(__file__).resolve().parent / "browser"
SIZE_FLOOR = 0.30


def latency(tfjs_dir, backend, runs, warmup):
    from lib import browser, serve

    server = serve.make_server({"/": serve.WEB_DIR, "/model/": str(tfjs_dir), "/bench/": str(BENCH_BROWSER_DIR)})
    try:
        url = serve.start_in_thread(server)
        return browser.run_script(str(BENCH_BROWSER_DIR / "latency.mjs"),
                                  {"url": url, "backend": backend, "runs": runs, "warmup": warmup,
                                   "timeout_ms": 600_000}, timeout_seconds=660)
    finally:
        server.shutdown()
        server.server_close()


def parity_note(export_report, option):
    """The browser parity lib measured for this run and quantization (export.json), e.g. "1.00 (16 img)"."""
    parity = export_report.get("options", {}).get(option, {}).get("parity", {})
    if not parity.get("measured"):
        return "not in export.json"
    return f"{parity['top1_agreement']:.2f} ({parity['images']} img){'' if parity.get('passes') else ' FAILS floor'}"


def views_ratios(rows, run_views):
    """Notes on what averaging the run's views costs: its median latency over one view's, per weights and backend."""
    if run_views == 1:
        return []
    median = {(row["views"], row["weights"], row["backend"]): row["median ms/image"] for row in rows}
    return [f"{rows[0]['model']}: {run_views} views cost {median[(run_views, weights, backend)] / value:.1f}x the "
            f"median latency of one ({weights}, {backend})"
            for (views, weights, backend), value in median.items() if views == 1]


def ensure_demo(run_dir):
    if (Path(run_dir) / "model" / "best.keras").is_file():
        return
    print(f"making the demo model in {run_dir}", flush=True)
    subprocess.run([common.PYTHON, "-m", "lib", "run", "params/demo.yaml", "--name", Path(run_dir).name,
                    "--outputs", str(Path(run_dir).parent), "-p", "train.epochs=3"],
                   cwd=common.PROJECT_ROOT, env=common.child_env(), check=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", action="append", default=[], metavar="NAME=RUN_DIR")
    parser.add_argument("--quantize", default="none,float16,uint8")
    parser.add_argument("--backends", default="wasm")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(common.PROJECT_ROOT))
    from lib import browser, export

    missing = browser.missing_tools()
    if missing:
        print(f"cannot measure in a browser, missing: {', '.join(missing)} ({browser.INSTALL_HINT})")
        return 2
    outputs = common.PROJECT_ROOT / "outputs"
    models = dict(item.split("=", 1) for item in args.model) or {
        "demo": str(outputs / "bench_demo"), "recipe_a": str(outputs / "bench_recipe_a")}
    if "demo" in models and not args.model:
        ensure_demo(models["demo"])
    rows, notes, floors = [], [], []
    for name, run_dir in models.items():
        run_dir = common.PROJECT_ROOT / run_dir
        if not (run_dir / "model" / "best.keras").is_file():
            notes.append(f"{name}: no model at {run_dir}/model/best.keras, not measured")
            continue
        model = export.load_run_model(run_dir)
        export_report = json.loads((run_dir / "export.json").read_text()) if (run_dir / "export.json").is_file() else {}
        image_size = int(model.input_shape[1])
        metrics_file = run_dir / "metrics.json"
        run_views = export.views_key(json.loads(metrics_file.read_text()) if metrics_file.is_file() else None)["count"]
        sizes = {}
        with tempfile.TemporaryDirectory(prefix="bench-browser-") as work:
            for views, option in [(views, option) for views in sorted({1, run_views})
                                  for option in args.quantize.split(",")]:
                saved = Path(work) / f"saved_model-{views}"
                if not saved.exists():
                    export.export_saved_model(model, saved, image_size, views=views)
                converted = export.convert_saved_model(saved, Path(work) / f"tfjs-{views}-{option}", option)
                export.verify_tfjs_model(converted, image_size)
                sizes[option] = export.directory_size(converted)
                for backend in args.backends.split(","):
                    result = latency(converted, backend, args.runs, args.warmup)
                    rows.append({"model": name, "input": f"{image_size}x{image_size}", "views": views,
                                 "params": model.count_params(), "weights": option,
                                 "size MB": sizes[option] / 2**20, "backend": result["backend"],
                                 "median ms/image": result["medianMs"], "min ms": result["minMs"],
                                 "first call ms": result["firstMs"], "load ms": result["loadMs"],
                                 "wasm simd/threads": (f"{result['simd']}/{result['threads']}"
                                                       if result["backend"] == "wasm" else ""),
                                 "top-1 vs Keras": (parity_note(export_report, option) if views == run_views
                                                    else "not measured"),
                                 "browser": f"Chromium {result['browser']}, TF.js {result['tfjs']}"})
                    print(rows[-1], flush=True)
        notes += views_ratios([row for row in rows if row["model"] == name], run_views)
        if "none" in sizes and "uint8" in sizes:
            ratio = sizes["uint8"] / sizes["none"]
            floors.append((f"{name}: uint8 size <= 30% of float32", ratio <= SIZE_FLOOR, f"{ratio:.2f}"))
    table = common.markdown_table(rows, ["model", "input", "views", "params", "weights", "size MB", "backend",
                                         "median ms/image", "min ms", "first call ms", "load ms",
                                         "wasm simd/threads", "top-1 vs Keras"])
    print(table)
    for note in notes:
        print(note)
    for floor, ok, detail in floors:
        print(f"{'PASS' if ok else 'FAIL'}: {floor} ({detail})")
    browsers = sorted({row["browser"] for row in rows})
    markdown = "\n".join([
        "## 5. Browser inference (TF.js graph model in headless Chromium)",
        "",
        f"Measured {common.machine_line()}. {'; '.join(browsers)}.",
        "",
        "Reproduce: `.venv/bin/python benchmarks/browser_inference.py "
        + " ".join(f"--model {name}={Path(path).relative_to(common.PROJECT_ROOT) if Path(path).is_absolute() and Path(path).is_relative_to(common.PROJECT_ROOT) else path}"
                   for name, path in models.items()) + "`",
        "",
        "Size = model.json + weight shards on disk (what the page downloads). Latency = one image (batch 1) "
        f"`predict` + `await data()`, median of {args.runs} after {args.warmup} warm-up calls, page and model "
        "loading as in web/classifier.js; `first call` includes the backend's one-time kernel setup. "
        "uint8/float16 quantize the weights only (TF.js dequantizes them at load), so latency should not change. "
        "`views`: the orientations of the photo the exported model averages (notebook 04's `tta` choice; one view "
        "beside it); the page runs the run's choice. "
        "`top-1 vs Keras` is the browser parity that lib's export measured for the same run and quantization "
        "(the run's export.json: top-1 agreement with Keras on its parity images, and whether it meets lib's "
        "floor); a quantization that fails it is not usable, however small.",
        "",
        table,
        "",
        *[f"- {'PASS' if ok else 'FAIL'}: {floor} ({detail})" for floor, ok, detail in floors],
        *[f"- {note}" for note in notes],
    ])
    if not args.no_results:
        common.update_results("browser", markdown)
    return 0 if all(ok for _, ok, _ in floors) and rows else 1


if __name__ == "__main__":
    sys.exit(main())
