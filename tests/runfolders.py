"""The tests' one source of synthetic data: lesion-like pictures drawn by lib.synthetic (the demo's generator),
laid out as a run folder exactly as notebook 02 leaves it (data/manifest.csv, data/classes.json, processed PNGs),
optionally with a small trained model beside them. conftest.py exposes them as fixtures."""

from pathlib import Path

import numpy as np
import pandas as pd

from lib import artifacts, images, synthetic

CLASSES = ("mel", "nv", "vasc")  # three styles that differ in colour and shape: learnable in a few epochs
LONG_NAMES = {"mel": "melanoma", "nv": "melanocytic nevus (mole)", "vasc": "vascular lesion"}


def lesion_images(count, size=32, classes=CLASSES, seed=0):
    """(uint8 RGB (count, size, size, 3), int labels (count,)): pictures of `classes` in turn, drawn by
    lib.synthetic and squashed to size x size as notebook 02 would."""
    pictures, labels = [], []
    for index in range(count):
        label = index % len(classes)
        drawing = synthetic.draw_lesion(synthetic.LESION_STYLES[classes[label]], 2 * size,
                                        np.random.default_rng([seed, index]))
        pictures.append(images.resize_image(drawing, size, "squash"))
        labels.append(label)
    return np.stack(pictures), np.array(labels)


def write_run_folder(run_dir, per_class=8, size=32, classes=CLASSES, fractions=(0.5, 0.25, 0.25), seed=0):
    """A run folder as notebook 02 leaves it, each class's images split train/validation/test by `fractions`
    (one lesion per image; ages, sexes and sites cycled, for subgroup tables). Returns run_dir."""
    run_dir = Path(run_dir)
    (run_dir / artifacts.PROCESSED).mkdir(parents=True, exist_ok=True)
    pictures, labels = lesion_images(per_class * len(classes), size, classes, seed)
    bounds = np.cumsum(fractions)[:-1] * per_class
    rows = []
    for index, (picture, label) in enumerate(zip(pictures, labels)):
        image_id = f"img{index:04d}"
        path = f"{artifacts.PROCESSED}/{image_id}.png"
        images.save_png(run_dir / path, picture)
        split = ("train", "validation", "test")[int(np.searchsorted(bounds, index // len(classes), side="right"))]
        rows.append({"image_id": image_id, "label": classes[label], "lesion_id": f"lesion{index:04d}",
                     "split": split, "path": path, "source_path": f"/raw/{image_id}.jpg", "original_width": size,
                     "original_height": size, "age": str(float(20 + 5 * (index % 12))),
                     "sex": ("male", "female")[index % 2], "localization": ("back", "face", "trunk")[index % 3]})
    artifacts.write_manifest(run_dir, pd.DataFrame(rows), extra_columns=("age", "sex", "localization"))
    artifacts.write_classes(run_dir, classes_info(classes))
    return run_dir


def classes_info(classes=CLASSES):
    """data/classes.json's content for `classes`."""
    return {"labels": "dx", "classes": list(classes), "long_names": {name: LONG_NAMES.get(name, name) for name in classes}}


def small_exportable_cnn(size=32, num_classes=len(CLASSES)):
    """A conv + batch norm + pooling + dense classifier taking raw RGB 0-255, with its scaling AND a random
    augmentation layer inside: the export must run it with training=False (the project's own models never hold one)."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3))
    x = layers.RandomFlip("horizontal")(inputs)
    x = layers.Rescaling(1 / 127.5, offset=-1)(x)
    x = layers.Conv2D(8, 3, activation="relu")(x)
    x = layers.BatchNormalization()(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(16, 3, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def train_on_run_folder(model, run_dir, epochs=40):
    """Fit `model` on the run folder's train split (seeded), so its outputs depend on the input and its batch-norm
    statistics are calibrated; saved as the run's model/best.keras. Returns the model. Seeded with deterministic ops,
    as lib trains by default, so the tests that share it see the same model in every session on a machine."""
    import keras

    from lib import inputs, training

    training.seed_everything(0, deterministic=True)
    train = artifacts.read_manifest(run_dir, split="train")
    pictures = inputs.load_processed(train["abs_path"]).astype("float32")
    labels = train["label"].map(artifacts.class_names(run_dir).index).to_numpy()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(pictures, labels, epochs=epochs, batch_size=12, verbose=0)
    (Path(run_dir) / "model").mkdir(exist_ok=True)
    model.save(Path(run_dir) / artifacts.MODEL)
    return model
