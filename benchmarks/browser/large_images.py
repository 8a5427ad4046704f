"""Large images in the web page (issue 15), before and after: time to the refusal or the result, whether the page's
main thread was blocked meanwhile, and peak memory, in headless Chromium.

    .venv/bin/python benchmarks/browser/large_images.py --before 46aa55d          # today's web/ vs that commit's

Cases: a genuine 400-megapixel PNG (20000x20000 black, 0.5 MB on disk, 1.6 GB as decoded RGBA; tests/imagefactory.py
`write_blank_png`), and an 8000x6000 photo (a synthetic lesion drawn by lib.synthetic at full size, with per-pixel
noise as a camera gives, JPEG quality 90). Each case runs `--repeats` times in a fresh browser (the page and the
model loaded, 1 s of quiet, then the file chosen through the page's own input: benchmarks/browser/large_images.mjs).
Model: `--run`'s tfjs/ when given, else MobileNet alpha 0.75 at 224x224 with 7 classes and random weights (recipe A's
architecture: the same inference cost as a trained one), converted like notebook 05 does.

Reported per case (median over repeats, max for the blocking columns):
- `ms to outcome`: from the choice to the refusal or the result on screen (the page's clock);
- `longest frame gap ms`: the longest time without an animation frame (a frozen page cannot repaint) and `longest
  task ms` (PerformanceObserver 'longtask'); "Analysing painted": whether the "Analysing..." status reached the screen;
- `renderer RSS peak MB` / `+MB over idle`: peak VmRSS of Chromium's renderer process (where decoding, the worker
  and the page live), sampled every 25 ms from /proc, and its rise over the sample just before the choice;
  `Chromium RSS peak MB`: all of Chromium's processes together; `JS heap peak MB` (CDP Performance.getMetrics;
  decoded pixels and ArrayBuffers are not in it).
Not a test: it prints its table and rewrites its section of benchmarks/RESULTS.md (`--no-results`: do not).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import common  # noqa: E402

sys.path.insert(0, str(common.PROJECT_ROOT))
sys.path.insert(0, str(common.PROJECT_ROOT / "tests"))
HAM10000_CLASSES = {"labels": "dx", "classes": ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]}
SAMPLE_SECONDS = 0.025


def make_model(work_dir, image_size=224):
    """A tfjs/ folder (graph model + metadata.json) of recipe A's architecture with random weights."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from lib import export, models

    model = models.build_model("mobilenet", len(HAM10000_CLASSES["classes"]), image_size, alpha=0.75, weights=None)
    saved = export.export_saved_model(model, work_dir / "saved_model", image_size)
    tfjs_dir = export.convert_saved_model(saved, work_dir / "tfjs", "none")
    metadata = export.build_metadata(HAM10000_CLASSES, image_size, "bench-large-images", "none")
    (tfjs_dir / "metadata.json").write_text(json.dumps(metadata))
    return tfjs_dir


def make_files(work_dir):
    """{case: path} of the large images."""
    import cv2
    import numpy as np
    from imagefactory import write_blank_png

    from lib import synthetic

    photo = synthetic.draw_lesion(synthetic.LESION_STYLES["mel"], 8000, np.random.default_rng(0))
    cv2.imwrite(str(work_dir / "photo-8000x6000.jpg"), photo[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    return {"png 20000x20000 (400 MP)": write_blank_png(work_dir / "blank-400-megapixels.png", 20000, 20000),
            "jpeg 8000x6000 (48 MP)": work_dir / "photo-8000x6000.jpg"}


def web_at(ref, work_dir):
    """web/ as of git `ref` (its own files, this checkout's node_modules); None for the working tree's web/."""
    if ref is None:
        return common.PROJECT_ROOT / "web"
    folder = work_dir / f"web-{ref}"
    archive = subprocess.run(["git", "archive", ref, "web"], cwd=common.PROJECT_ROOT, check=True, capture_output=True)
    folder.mkdir()
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    (folder / "web" / "node_modules").symlink_to(common.PROJECT_ROOT / "web" / "node_modules")
    return folder / "web"


def chromium_rss(root_pid):
    """{"renderer": largest renderer VmRSS, "total": sum over Chromium's processes} in bytes, under `root_pid`."""
    renderer = total = 0
    for pid in common._descendants(root_pid)[1:]:  # not node itself
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            rss = next(int(line.split()[1]) * 1024 for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                       if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
        total += rss
        if b"--type=renderer" in command:
            renderer = max(renderer, rss)
    return {"renderer": renderer, "total": total}


def measure_once(web_dir, tfjs_dir, image):
    """One fresh browser, one choice of `image`: large_images.mjs' report plus RSS before and at the peak."""
    from lib import browser, serve

    server = serve.make_server({"/": str(web_dir), "/model/": str(tfjs_dir)})
    samples, done = [], threading.Event()
    try:
        url = serve.start_in_thread(server)
        command = ["node", str(HERE / "large_images.mjs"), json.dumps(
            {"url": url, "file": str(image), "chromium": browser.find_chromium(), "timeout_ms": 120000})]
        process = subprocess.Popen(command, cwd=common.PROJECT_ROOT / "web", stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)

        def sample():
            while not done.is_set():
                samples.append((time.time() * 1000, chromium_rss(process.pid)))
                done.wait(SAMPLE_SECONDS)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        output, errors = process.communicate(timeout=300)
        done.set()
        sampler.join()
    finally:
        server.shutdown()
        server.server_close()
    report = common.last_json(output)
    if process.returncode != 0 or report is None:
        raise RuntimeError(f"large_images.mjs failed (exit {process.returncode}): {errors[-3000:]}")
    before = [rss for when, rss in samples if when <= report["chosenAt"]][-1]
    during = [rss for when, rss in samples if report["chosenAt"] <= when <= report["outcomeAt"] + 200] or [before]
    return {**report, "rendererIdleMb": before["renderer"] / 2**20,
            "rendererPeakMb": max(rss["renderer"] for rss in during) / 2**20,
            "totalPeakMb": max(rss["total"] for rss in during) / 2**20}


def checkout_label():
    """"after (<commit>)" for this checkout's web/, with "+ local changes" when web/ differs from that commit."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=common.PROJECT_ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    changed = subprocess.run(["git", "status", "--porcelain", "--", "web"], cwd=common.PROJECT_ROOT, check=True,
                             capture_output=True, text=True).stdout.strip()
    return f"after ({commit}{' + local changes' if changed else ''})"


def summarise(page, case, runs):
    def median(key):
        return statistics.median(run[key] for run in runs)
    return {"page": page, "case": case, "outcome": runs[-1]["status"][:90], "ms to outcome": median("elapsedMs"),
            "longest frame gap ms": max(run["maxFrameGapMs"] for run in runs),
            "longest task ms": max(run["longestTaskMs"] for run in runs),
            "Analysing painted": all(any(status.startswith("Analysing") for status in run["paintedStatuses"])
                                     for run in runs),
            "renderer RSS peak MB": median("rendererPeakMb"),
            "+MB over idle": median("rendererPeakMb") - median("rendererIdleMb"),
            "Chromium RSS peak MB": median("totalPeakMb"), "JS heap peak MB": median("jsHeapPeakMb"),
            "browser": runs[-1]["browser"]}


COLUMNS = ["case", "page", "outcome", "ms to outcome", "longest frame gap ms", "longest task ms", "Analysing painted",
           "renderer RSS peak MB", "+MB over idle", "Chromium RSS peak MB", "JS heap peak MB"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", help="git ref of the web/ to compare with (e.g. the commit before issue 15)")
    parser.add_argument("--run", help="a run folder whose tfjs/ to use (default: recipe A's architecture, random)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-results", action="store_true", help="do not rewrite benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    from lib import browser

    missing = browser.missing_tools()
    if missing:
        print(f"cannot measure in a browser, missing: {', '.join(missing)} ({browser.INSTALL_HINT})")
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-large-images-") as work:
        work = Path(work)
        tfjs_dir = Path(args.run) / "tfjs" if args.run else make_model(work)
        files = make_files(work)
        pages = {f"before ({args.before})": web_at(args.before, work)} if args.before else {}
        pages[checkout_label()] = web_at(None, work)
        for case, image in files.items():
            for page, web_dir in pages.items():
                runs = [measure_once(web_dir, tfjs_dir, image) for _ in range(args.repeats)]
                rows.append(summarise(page, case, runs))
                print(json.dumps(rows[-1]), flush=True)
    table = common.markdown_table(rows, COLUMNS)
    print(table)
    if not args.no_results:
        command = "`.venv/bin/python benchmarks/browser/large_images.py" + (
            f" --before {args.before}" if args.before else "") + (f" --run {args.run}" if args.run else "") + (
            f" --repeats {args.repeats}" if args.repeats != 3 else "") + "`"
        common.update_results("large_images", "\n".join([
            "## 6. Large images in the web page (issue 15)", "",
            f"Measured {common.machine_line()}. Chromium {rows[-1]['browser']}. Reproduce: {command}", "",
            f"Median of {args.repeats} fresh browsers per row (frame gap and task: the largest). See the script's "
            "docstring for each column.", "", table]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
