"""lib.synthetic: the generated lesions are deterministic 4:3 pictures whose classes differ, written in the
on-disk layouts of the real datasets."""

import numpy as np
import pandas as pd
from PIL import Image

from lib import synthetic


def test_a_drawn_lesion_is_a_4_by_3_uint8_rgb_picture_fixed_by_its_seed():
    style = synthetic.LESION_STYLES["mel"]
    first = synthetic.draw_lesion(style, 64, np.random.default_rng(5))
    assert first.shape == (48, 64, 3) and first.dtype == np.uint8
    assert np.array_equal(first, synthetic.draw_lesion(style, 64, np.random.default_rng(5)))
    assert not np.array_equal(first, synthetic.draw_lesion(style, 64, np.random.default_rng(6)))


def test_lesion_styles_cover_every_dx_class_and_both_binary_classes():
    assert sorted(synthetic.LESION_STYLES) == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert sorted(sum(synthetic.BINARY_STYLES.values(), ())) == sorted(synthetic.LESION_STYLES)


def test_classes_differ_in_their_pictures():
    def mean_colour(dx):
        return synthetic.draw_lesion(synthetic.LESION_STYLES[dx], 48, np.random.default_rng(0)).mean(axis=(0, 1))
    assert np.abs(mean_colour("mel") - mean_colour("bcc")).max() > 10


def test_ham10000_writer_gives_metadata_two_image_folders_and_second_views(tmp_path):
    synthetic.write_synthetic_ham10000(tmp_path, images_per_class=3, image_width=32, seed=0)
    metadata = pd.read_csv(tmp_path / "HAM10000_metadata.csv")
    assert len(metadata) == 21 and metadata["image_id"].is_unique
    assert (metadata.groupby("lesion_id").size() == 2).sum() == 7  # the third image of each class
    files = sorted(tmp_path.glob("HAM10000_images_part_*/*.jpg"))
    assert sorted(p.stem for p in files) == sorted(metadata["image_id"])
    with Image.open(files[0]) as picture:
        assert picture.size == (32, 24)


def test_class_folder_writer_gives_train_and_test_per_class(tmp_path):
    synthetic.write_synthetic_class_folders(tmp_path, images_per_class=5, image_width=24, seed=0)
    counts = {f"{p.parent.parent.name}/{p.parent.name}": 0 for p in tmp_path.glob("*/*/*.jpg")}
    for path in tmp_path.glob("*/*/*.jpg"):
        counts[f"{path.parent.parent.name}/{path.parent.name}"] += 1
    assert counts == {"train/benign": 4, "train/malignant": 4, "test/benign": 1, "test/malignant": 1}
