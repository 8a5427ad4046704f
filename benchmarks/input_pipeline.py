"""Input pipeline throughput, images/s from image files on disk to a float32 training batch
(B, 224, 224, 3), against the backbones' own speed, to see which one bounds training.

Measured, on the same M images of the HAM10000-layout folder (224 px JPEGs; files read once beforehand
so every variant reads from the page cache):
- tutorial: `cv2.imread` + `cv2.resize` loop into a list, `np.array(..., float32) / 255`, sliced into batches;
- ours, one-time preprocessing: `lib.images.process_images` (decode, checks, resize, PNG encode, hashes;
  threads), what notebook 02 does once per run;
- ours, training input: `lib.inputs.image_dataset` over the processed PNGs (tf.data decode, batch,
  prefetch), first pass (decoding) and second pass (lib keeps datasets that fit decoded in memory);
- ours with recipe A's augmentation (`lib.inputs.make_augmenter`, rotation 180, shifts, zoom, flips), and with
  the fine-tuning recipe's (ham10000_finetune.yaml: the 8 right-angle views, any angle, zoom, borders reflected)
  applied by one Keras layer per transform and with `one_resampling` (one affine map per image);
- backbones: forward (`predict`, batch 32) of MobileNet alpha 0.75 and VGG19 at 224, and a training
  step of MobileNet alpha 0.75 with the last 23 layers trainable (recipe A), all weights=None (same FLOPs);
- the fine-tuning recipe's epoch in miniature: `fit` of MobileNet alpha 0.75, every layer trainable (BatchNorm
  frozen), on its augmented input, with each of the two ways of applying the augmentation, and with tf.data's
  autotuning model turned back on (its thread sometimes stalls the end of an epoch: intermittent).

    .venv/bin/python benchmarks/input_pipeline.py            # M=512 images, about 3 minutes
    .venv/bin/python benchmarks/input_pipeline.py --images 256

Floor (the issue asks which one bounds training): exits non-zero if lib's training input (first
pass, no augmentation) is slower than the MobileNet 0.75 training step, i.e. if our input would bound
recipe A's training, or if one resampling does not make the fine-tuning recipe's augmented fit faster.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

RECIPE_A_AUGMENTATION = {"rotation_range": 180, "width_shift_range": 0.1, "height_shift_range": 0.1,
                         "zoom_range": 0.1, "horizontal_flip": True, "vertical_flip": True, "fill_mode": "nearest"}
FINETUNE_AUGMENTATION = {"horizontal_flip": True, "vertical_flip": True, "rotate90": True, "rotation_range": 180,
                         "zoom_range": 0.15, "fill_mode": "reflect"}
RESAMPLING = {False: "one Keras layer per transform", True: "one resampling (one_resampling: true)"}


def rate(count, seconds):
    return count / seconds if seconds > 0 else float("inf")


def fine_tuning_fits(models, training, datasets, rounds):
    """Table rows: images/s of the fine-tuning recipe's `fit` (MobileNet alpha 0.75, every layer trainable with
    BatchNorm frozen, AdamW) over each of `datasets` ({how: its augmented training input}), one epoch of each in
    turn for `rounds` rounds, so that a machine's drift hits all alike; after one step each to trace it."""
    fitted = {}
    for how, dataset in datasets.items():
        fitted[how] = models.build_model("mobilenet", num_classes=7, image_size=224, alpha=0.75, weights=None)
        training.compile_model(fitted[how], "adamw", 1e-4, label_smoothing=0.1)
        fitted[how].fit(dataset.take(1), verbose=0)
    seconds, processor = dict.fromkeys(datasets, 0.0), dict.fromkeys(datasets, 0.0)
    for _ in range(rounds):
        for how, dataset in datasets.items():
            started, used = time.monotonic(), time.process_time()
            fitted[how].fit(dataset, verbose=0)
            seconds[how] += time.monotonic() - started
            processor[how] += time.process_time() - used
    images = rounds * sum(int(x.shape[0]) for x, _ in next(iter(datasets.values())))
    return [{"stage": f"fine-tuning fit: MobileNet alpha 0.75, every layer, augmented input, {how}",
             "images": images, "seconds": seconds[how], "images/s": rate(images, seconds[how]),
             "note": f"the recipe's epoch in miniature, {rounds} epochs taking turns; {processor[how]:.1f} CPU "
                     "seconds: step and augmentation share the 2 cores"} for how in datasets]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--vgg-images", type=int, default=64, help="VGG19 is ~3 images/s here")
    parser.add_argument("--rounds", type=int, default=4, help="epochs of each fine-tuning fit, taking turns")
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args(argv)
    if not common.HAM10000_DIR.is_dir():
        print(f"no data at {common.HAM10000_DIR} (set BENCH_HAM10000): not measured")
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(common.PROJECT_ROOT))
    import cv2
    import keras
    import numpy as np
    import tensorflow as tf

    from lib import images as images_lib
    from lib import inputs, models, sources, training

    _, records, _ = sources.scan(str(common.HAM10000_DIR), layout="ham10000")
    records = sources.to_labels(records, "dx").sort_values("image_id").head(args.images).reset_index(drop=True)
    paths = list(records["source_path"])
    for path in paths:  # page cache: measure decoding, not the disk
        Path(path).read_bytes()
    size, batch = 224, args.batch_size
    rows = []

    # tutorial: cv2.imread loop into one float32 array / 255, then batches of it
    started = time.monotonic()
    loaded = [cv2.resize(cv2.imread(path), (size, size)) for path in paths]
    array = np.array(loaded, dtype=np.float32) / 255
    for first in range(0, len(array), batch):
        array[first:first + batch]
    seconds = time.monotonic() - started
    rows.append({"stage": "tutorial: cv2.imread loop -> float32 array / 255", "images": len(paths),
                 "seconds": seconds, "images/s": rate(len(paths), seconds),
                 "note": f"holds {array.nbytes / 2**20:.0f} MB for {len(paths)} images; every run re-decodes"})
    del array, loaded

    with tempfile.TemporaryDirectory(prefix="bench-input-") as work:
        started = time.monotonic()
        used, skipped = images_lib.process_images(records, Path(work) / "processed", image_size=size)
        seconds = time.monotonic() - started
        rows.append({"stage": "ours, once per run: images.process_images (JPEG -> checked, resized PNG)",
                     "images": len(used), "seconds": seconds, "images/s": rate(len(used), seconds),
                     "note": "notebook 02; also hashes each image for duplicate detection"})
        png_paths = [str(path) for path in used["path"]]
        labels = np.zeros(len(png_paths), np.int32)

        started = time.monotonic()  # the first pass includes building the dataset: that is where lib decodes
        dataset = inputs.image_dataset(png_paths, labels, 7, size, batch, shuffle=True, seed=1)
        for label, note in (("first pass (PNG decode)", "tf.data parallel decode into memory, batch, prefetch"),
                            ("second pass", "decoded images kept in memory by lib (up to 30% of free memory)")):
            count = sum(int(x.shape[0]) for x, _ in dataset)
            seconds = time.monotonic() - started
            started = time.monotonic()
            rows.append({"stage": f"ours, training input: inputs.image_dataset, {label}", "images": count,
                         "seconds": seconds, "images/s": rate(count, seconds), "note": note})
        ours_input = rows[-2]["images/s"]

        augmented = {}
        for stage, augmentation in (("recipe A augmentation (rotate, shift, zoom, flip)", RECIPE_A_AUGMENTATION),
                                    *((f"the fine-tuning recipe's augmentation, {how}",
                                       {**FINETUNE_AUGMENTATION, "one_resampling": once})
                                      for once, how in RESAMPLING.items())):
            augmented[stage] = inputs.image_dataset(png_paths, labels, 7, size, batch, shuffle=True, seed=1,
                                                    augment=inputs.make_augmenter(augmentation, seed=1))
            sum(1 for _ in augmented[stage].take(1))  # trace the augmentation graph
            started = time.monotonic()
            count = sum(int(x.shape[0]) for x, _ in augmented[stage])
            seconds = time.monotonic() - started
            rows.append({"stage": f"ours + {stage}", "images": count, "seconds": seconds,
                         "images/s": rate(count, seconds),
                         "note": "second pass: decode cached, augmentation recomputed every epoch"})
        recipe_a_augmented = rows[4]["images/s"]
        chained, once = list(augmented.values())[1:]
        autotuned = tf.data.Options()
        autotuned.autotune.enabled = True  # what lib turned off: its model's thread stalled iterators' deletion
        fits = fine_tuning_fits(models, training, {RESAMPLING[False]: chained, RESAMPLING[True]: once,
                                                   f"{RESAMPLING[False]}, tf.data autotuning on": chained.with_options(
                                                       autotuned)}, rounds=args.rounds)
        rows += fits

    def timed_predict(model, count):
        x = np.random.default_rng(0).uniform(0, 255, (count, size, size, 3)).astype(np.float32)
        model.predict(x[:batch], batch_size=batch, verbose=0)
        started = time.monotonic()
        model.predict(x, batch_size=batch, verbose=0)
        return time.monotonic() - started

    for name, options, count in (("MobileNet alpha 0.75", {"backbone": "mobilenet", "alpha": 0.75}, args.images),
                                 ("VGG19", {"backbone": "vgg19"}, args.vgg_images)):
        model = models.build_model(num_classes=7, image_size=size, weights=None, **options)
        seconds = timed_predict(models.feature_model(model), count)
        rows.append({"stage": f"backbone forward: {name} (predict, batch {batch})", "images": count,
                     "seconds": seconds, "images/s": rate(count, seconds), "note": "weights=None, same FLOPs"})

    model = models.build_model("mobilenet", num_classes=7, image_size=size, alpha=0.75, weights=None,
                               trainable_layers=23)
    training.compile_model(model, "adam", 0.01)
    x = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
    y = keras.utils.to_categorical(np.arange(batch) % 7, 7)
    model.train_on_batch(x, y)
    steps = max(2, args.images // batch // 2)
    started = time.monotonic()
    for _ in range(steps):
        model.train_on_batch(x, y)
    seconds = time.monotonic() - started
    rows.append({"stage": "training step: MobileNet alpha 0.75, last 23 layers trainable (recipe A)",
                 "images": steps * batch, "seconds": seconds, "images/s": rate(steps * batch, seconds),
                 "note": "train_on_batch on in-memory batches"})
    train_step = rows[-1]["images/s"]
    del tf

    table = common.markdown_table(rows, ["stage", "images", "seconds", "images/s", "note"])
    speedup = fits[1]["images/s"] / fits[0]["images/s"]
    backbone_bound = ours_input >= train_step
    ok = backbone_bound and speedup > 1
    verdict = (f"lib's training input (first pass, {ours_input:.0f} images/s) is "
               f"{ours_input / train_step:.1f}x the recipe A training step ({train_step:.0f} images/s): "
               f"{'the backbone, not the input, bounds training' if backbone_bound else 'the INPUT bounds training'}. "
               f"With recipe A's augmentation the input gives {recipe_a_augmented:.0f} images/s "
               f"({recipe_a_augmented / train_step:.1f}x the training step"
               f"{'' if recipe_a_augmented >= train_step else ': augmentation competes with the model for the 2 cores'}"
               f"). The fine-tuning recipe's augmented fit runs {speedup:.2f}x as fast with one resampling as with "
               f"one Keras layer per transform, and {fits[2]['images/s'] / fits[0]['images/s']:.2f}x as fast with "
               f"tf.data's autotuning model as without it (lib's default).")
    print(table)
    print(("PASS: " if ok else "FAIL: ") + verdict)
    markdown = "\n".join([
        "## 3. Input pipeline throughput (JPEG on disk -> float32 training batch)",
        "",
        f"Measured {common.machine_line()}.",
        "",
        f"Reproduce: `.venv/bin/python benchmarks/input_pipeline.py --images {args.images}`",
        "",
        f"The first {args.images} images (by image_id) of {common.HAM10000_DIR} (224 px JPEGs), read once before "
        "timing (page cache). All in one process, one after another; batch 32.",
        "",
        table,
        "",
        f"- {'PASS' if ok else 'FAIL'}: {verdict}",
    ])
    if not args.no_results:
        common.update_results("input_pipeline", markdown)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
