"""lib.splits: no lesion in two subsets, class proportions kept, seeds reproduce, class-folder test sets
kept, test-as-validation only on request; and the real-data check on the shared HAM10000 subset."""

import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lib import images, sources, splits
from tests import imagefactory


def lesion_records(lesions_per_class=40, classes=("mel", "nv", "bkl"), seed=0):
    """Records where every other lesion has two images."""
    rows = []
    for label in classes:
        for lesion in range(lesions_per_class):
            for view in range(1 + lesion % 2):
                image_id = f"{label}_{lesion}_{view}"
                rows.append({"source_path": f"/raw/{image_id}.jpg", "image_id": image_id, "label": label,
                             "lesion_id": f"L_{label}_{lesion}", "original_split": ""})
    return pd.DataFrame(rows)


def test_split_keeps_each_lesion_in_one_subset():
    manifest = splits.split_records(lesion_records(), 0.15, 0.15, seed=1)
    assert manifest.groupby("lesion_id")["split"].nunique().max() == 1
    assert splits.lesions_in_several_splits(manifest) == []


def test_split_is_stratified_with_the_requested_fractions():
    manifest = splits.split_records(lesion_records(), 0.2, 0.2, seed=1)
    shares = manifest["split"].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.6, abs=0.05)
    assert shares["test"] == pytest.approx(0.2, abs=0.05)
    per_class = manifest.groupby(["split", "label"]).size().unstack()
    assert (per_class.loc["test"] >= 6).all() and (per_class.loc["validation"] >= 6).all()


def test_split_is_reproducible_from_the_seed():
    records = lesion_records()
    first = splits.split_records(records, 0.15, 0.15, seed=7)["split"]
    assert first.equals(splits.split_records(records, 0.15, 0.15, seed=7)["split"])
    assert not first.equals(splits.split_records(records, 0.15, 0.15, seed=8)["split"])


def test_leak_detector_finds_a_lesion_in_two_splits():
    manifest = splits.split_records(lesion_records(), 0.15, 0.15, seed=1)
    two_views = manifest.groupby("lesion_id").filter(lambda group: len(group) == 2)
    manifest.loc[two_views.index[0], "split"] = "test" if two_views.iloc[0]["split"] != "test" else "train"
    assert splits.lesions_in_several_splits(manifest) == [two_views.iloc[0]["lesion_id"]]


def test_class_folders_keep_their_test_set_and_carve_validation_from_train():
    records = lesion_records(lesions_per_class=20, classes=("benign", "malignant"))
    records["lesion_id"] = records["image_id"]
    records["original_split"] = ["test" if i % 5 == 0 else "train" for i in range(len(records))]
    manifest = splits.split_records(records, 0.2, 0.15, seed=0)
    assert (manifest["split"] == "test").equals(records["original_split"] == "test")
    train_pool = (records["original_split"] == "train").sum()
    assert (manifest["split"] == "validation").sum() == pytest.approx(0.2 * train_pool, abs=2)


def test_test_as_validation_only_on_request_and_with_a_warning():
    records = lesion_records(lesions_per_class=10, classes=("benign", "malignant"))
    records["lesion_id"] = records["image_id"]  # class folders know no lesions
    records["original_split"] = ["test" if i % 4 == 0 else "train" for i in range(len(records))]
    with pytest.warns(UserWarning, match="validation == test"):
        manifest = splits.split_records(records, 0.2, 0.15, seed=0, test_as_validation=True)
    validation = set(manifest.loc[manifest["split"] == "validation", "image_id"])
    assert validation == set(manifest.loc[manifest["split"] == "test", "image_id"])
    assert splits.lesions_in_several_splits(manifest) == []
    table = splits.count_table(records, manifest, records.iloc[:0])
    assert table.loc["total", "used"] == len(records)
    assert table.loc["total", "validation"] == table.loc["total", "test"] > 0


def test_limit_takes_whole_lesions_in_class_proportions():
    records = lesion_records(lesions_per_class=30, classes=("mel", "nv"))
    records = pd.concat([records, lesion_records(lesions_per_class=60, classes=("nv2",))], ignore_index=True)
    limited = splits.subsample(records, 60, seed=0)
    assert 55 <= len(limited) <= 60
    kept = limited.groupby("lesion_id").size()
    assert kept.equals(records[records["lesion_id"].isin(kept.index)].groupby("lesion_id").size())
    shares = limited["label"].value_counts(normalize=True)
    assert shares["nv2"] == pytest.approx(0.5, abs=0.08)


def test_counts_add_up_per_class_and_split():
    found = lesion_records(lesions_per_class=10)
    skipped = found.iloc[:3].assign(reason="zero bytes")
    manifest = splits.split_records(found.iloc[3:], 0.2, 0.2, seed=0)
    table = splits.count_table(found, manifest, skipped)
    assert (table["found"] == table["used"] + table["skipped"]).all()
    assert (table[["train", "validation", "test"]].sum(axis=1) == table["used"]).all()
    summary = splits.counts_json(table)
    assert summary["total"]["found"] == len(found) and summary["total"]["skipped"] == 3


def hostile_class_folders(root):
    """A class-folder dataset holding every kind of file users have: {path: None (usable) or skip reason}."""
    benign, malignant = root / "train" / "benign", root / "train" / "malignant"
    palette = Image.new("P", (5, 5), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0, 0, 0] * 254)
    benign.mkdir(parents=True)
    malignant.mkdir()
    (root / "train" / "unused").mkdir()
    (malignant / "empty.jpg").write_bytes(b"")
    (malignant / "notes.jpg").write_text("not a picture")
    (malignant / "readme.txt").write_text("read me")
    cmyk = benign / "cmyk.jpg"
    Image.fromarray(imagefactory.gradient()).convert("CMYK").save(cmyk, "JPEG")
    return {
        imagefactory.write_jpeg(benign / "plain.jpg"): None,
        imagefactory.write_jpeg(benign / "with space ünïcödé 病变.jpg"): None,
        imagefactory.write_jpeg(benign / "rotated.jpg", orientation=6): None,
        imagefactory.write_png(benign / "rgba.png", Image.new("RGBA", (9, 7), (5, 6, 7, 128))): None,
        imagefactory.write_png(benign / "palette.png", palette): None,
        imagefactory.write_png(benign / "deep.png", Image.fromarray(np.full((6, 6), 40000, np.uint16))): None,
        imagefactory.write_png(benign / "gray.png", Image.fromarray(np.full((6, 6), 77, np.uint8), "L")): None,
        imagefactory.write_png(benign / "dot.png", Image.new("RGB", (1, 1), (1, 2, 3))): None,
        cmyk: None,
        imagefactory.write_jpeg(root / "test" / "benign" / "kept.jpg"): None,
        imagefactory.write_truncated_jpeg(malignant / "cut.jpg"): "truncated",
        imagefactory.write_blank_png(malignant / "huge.png", 20000, 20000): "too large",
        imagefactory.write_png_header(malignant / "bomb.png", 100_000, 100_000): "too large",
        malignant / "empty.jpg": "zero bytes",
        malignant / "notes.jpg": "not an image",
        malignant / "readme.txt": "not an image file name (suffix '.txt')",
        root / "train" / "unused": "class folder holds no image files",
    }


def test_a_hostile_dataset_is_accounted_for_file_by_file(tmp_path, caplog):
    expected = hostile_class_folders(tmp_path / "raw")
    _, records, problems = sources.scan(tmp_path / "raw")
    used, bad_images = images.process_images(records, tmp_path / "processed", image_size=32, workers=2)
    skipped = pd.concat([bad_images, problems[bad_images.columns]], ignore_index=True)
    assert sorted(used["source_path"]) == sorted(str(path) for path, reason in expected.items() if reason is None)
    assert {path: reason.split(":")[0] for path, reason in zip(skipped["source_path"], skipped["reason"])} == {
        str(path): reason for path, reason in expected.items() if reason is not None}
    manifest = splits.split_records(used, 0.0, 0.0, seed=0)
    with caplog.at_level(logging.WARNING, logger="lib.splits"):
        table = splits.count_table(pd.concat([records, problems], ignore_index=True), manifest, skipped)
    assert (table["found"] == table["used"] + table["skipped"]).all()
    assert table.loc["total", "found"] == len(expected) == 17
    assert table.loc["malignant", ["found", "used", "skipped"]].tolist() == [6, 0, 6]
    assert "class 'malignant' has no usable image" in caplog.text
    assert "class 'unused' has no usable image" in caplog.text


def test_counts_add_up_when_metadata_and_images_do_not_pair(tmp_path):
    raw = tmp_path / "raw"
    for image_id in ("ISIC_1", "ISIC_2", "ISIC_orphan"):
        imagefactory.write_jpeg(raw / "HAM10000_images_part_1" / f"{image_id}.jpg")
    (raw / "HAM10000_images_part_1" / "ISIC_3.jpg").write_bytes(b"")
    pd.DataFrame({"lesion_id": ["HAM_1", "HAM_2", "HAM_3", "HAM_4"],
                  "image_id": ["ISIC_1", "ISIC_2", "ISIC_3", "ISIC_gone"], "dx": ["mel", "nv", "nv", "bcc"]}).to_csv(raw / "HAM10000_metadata.csv", index=False)
    _, records, problems = sources.scan(raw)
    used, bad_images = images.process_images(records, tmp_path / "processed", image_size=32, workers=1)
    skipped = pd.concat([bad_images, problems[bad_images.columns]], ignore_index=True)
    table = splits.count_table(pd.concat([records, problems], ignore_index=True),
                               used.assign(split="train"), skipped)
    assert (table["found"] == table["used"] + table["skipped"]).all()
    assert table.loc["total", ["found", "used", "skipped"]].tolist() == [5, 2, 3]
    assert dict(zip(skipped["image_id"], skipped["reason"])) == {
        "ISIC_3": "zero bytes", "ISIC_gone": "metadata row has no image file", "ISIC_orphan": "image has no metadata row"}


@pytest.mark.slow  # decodes 5,984 real images: about 10 s on an idle core
@pytest.mark.shared_data
def test_real_ham10000_subset_is_used_whole_and_split_by_lesion(ham10000_lesions, tmp_path):
    raw_dir = sources.fetch("local", sources.SourceRequest("ham10000", path=str(ham10000_lesions)))
    layout, records, problems = sources.scan(raw_dir)
    used, skipped = images.process_images(records, tmp_path / "processed", image_size=32, relative_to=tmp_path)
    manifest = splits.split_records(used, 0.15, 0.15, seed=42)
    assert layout == "ham10000" and problems.empty
    assert (len(records), len(used), len(skipped)) == (5984, 5984, 0)
    assert splits.lesions_in_several_splits(manifest) == []
    assert set(manifest["label"]) == set(sources.DX_CLASSES)
