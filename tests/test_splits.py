"""lib.splits: no lesion in two subsets, class proportions kept, seeds reproduce, class-folder test sets
kept, test-as-validation only on request; and the real-data check on the shared HAM10000 subset."""

import pandas as pd
import pytest

from lib import images, sources, splits


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


def test_real_ham10000_subset_is_used_whole_and_split_by_lesion(ham10000_lesions, tmp_path):
    raw_dir = sources.fetch("local", sources.SourceRequest("ham10000", path=str(ham10000_lesions)))
    layout, records, problems = sources.scan(raw_dir)
    used, skipped = images.process_images(records, tmp_path / "processed", image_size=32, relative_to=tmp_path)
    manifest = splits.split_records(used, 0.15, 0.15, seed=42)
    assert layout == "ham10000" and problems.empty
    assert (len(records), len(used), len(skipped)) == (5984, 5984, 0)
    assert splits.lesions_in_several_splits(manifest) == []
    assert set(manifest["label"]) == set(sources.DX_CLASSES)
