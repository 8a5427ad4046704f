"""Train / validation / test splits that never put one lesion in two subsets, stratified by class and
seeded; the stratified subsample behind data.limit; and the per-class, per-split counts.
"""

import logging
import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


def subsample(records, limit, seed):
    """At most `limit` images of `records` (DataFrame with label, lesion_id), whole lesions only,
    keeping the class proportions: each class's lesions are shuffled, ranked by their position within
    the class, and taken in that interleaved order until the next lesion would pass `limit`."""
    if limit is None or limit >= len(records):
        return records.copy()
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    lesions = _lesion_table(records)
    rng = np.random.default_rng(seed)
    lesions["order"] = rng.random(len(lesions))
    lesions["rank"] = lesions.groupby("label")["order"].rank(method="first") / lesions.groupby("label")["label"].transform("size")
    lesions = lesions.sort_values(["rank", "order"])
    keep = lesions[lesions["images"].cumsum() <= limit]["lesion_id"]
    chosen = records[records["lesion_id"].isin(set(keep))].copy()
    log.info("data.limit=%d: kept %d images of %d lesions out of %d images", limit, len(chosen), len(keep), len(records))
    return chosen


def split_records(records, validation_fraction, test_fraction, seed, test_as_validation=False):
    """Return a copy of `records` with a `split` column (train | validation | test).
    Records with an original_split of "test" (class-folder layouts) stay test; the rest form the pool.
    From the pool, whole lesions are drawn, stratified by class: a test set (only when the layout has
    none) of about `test_fraction` of the images, then validation of about `validation_fraction`.
    With `test_as_validation`, validation is the test set itself (recipe B's choice), with a warning."""
    for name, fraction in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise ValueError(f"{name} must be in [0, 1), got {fraction}")
    records = records.copy()
    has_test = "original_split" in records and (records["original_split"] == "test").any()
    records["split"] = np.where(records["original_split"] == "test", "test", "train") if has_test else "train"
    if not has_test and test_fraction > 0:
        _carve(records, "test", test_fraction, seed)
    if test_as_validation:
        message = ("test_as_validation is on: validation == test, so checkpoint choice and early stopping see the "
                   "test images and the test scores are optimistic (recipe B's leak; use only to reproduce it)")
        warnings.warn(message, stacklevel=2)
        log.warning(message)
        validation = records[records["split"] == "test"].assign(split="validation")
        return pd.concat([records, validation], ignore_index=True)
    if validation_fraction > 0:
        share = validation_fraction / (1 - test_fraction) if not has_test else validation_fraction
        _carve(records, "validation", min(share, 0.9), seed + 1)
    return records


def _carve(records, split, fraction, seed):
    """Move about `fraction` of the train rows of `records` (in place) to `split`, by whole lesions."""
    pool = records[records["split"] == "train"]
    lesions = _lesion_table(pool)
    if len(lesions) < 2:
        raise ValueError(f"cannot carve a {split} split out of {len(lesions)} lesion(s): add images or set the fraction to 0")
    size = max(1, min(len(lesions) - 1, round(fraction * len(lesions))))
    try:
        _, taken = train_test_split(lesions["lesion_id"], test_size=size, random_state=seed, stratify=lesions["label"])
    except ValueError as error:  # a class with one lesion, or fewer lesions to draw than classes
        log.warning("the %s split is not stratified: %s", split, error)
        _, taken = train_test_split(lesions["lesion_id"], test_size=size, random_state=seed)
    records.loc[records["lesion_id"].isin(set(taken)) & (records["split"] == "train"), "split"] = split


def _lesion_table(records):
    """One row per lesion: lesion_id, label (its most common label), images (how many)."""
    pairs = records.groupby(["lesion_id", "label"]).size().reset_index(name="n")
    mixed = pairs["lesion_id"].duplicated().sum()
    if mixed:
        log.warning("%d lesions carry more than one label; each is stratified by its most common one", int(mixed))
    main = pairs.sort_values(["lesion_id", "n"], ascending=[True, False]).drop_duplicates("lesion_id").set_index("lesion_id")
    table = pd.DataFrame({"label": main["label"], "images": records.groupby("lesion_id").size()})
    table.index.name = "lesion_id"
    return table.reset_index()


def lesions_in_several_splits(manifest):
    """lesion_ids found in more than one split (should be empty; validation == test is exempt only when
    every lesion of validation is also test, i.e. test_as_validation)."""
    splits_per_lesion = manifest.groupby("lesion_id")["split"].agg(lambda s: frozenset(s))
    return sorted(lesion for lesion, found in splits_per_lesion.items()
                  if len(found) > 1 and found != frozenset({"validation", "test"}))


def count_table(found, manifest, skipped):
    """DataFrame indexed by class (plus a "total" row) with columns found, used, skipped, then one
    column per split of `manifest` (label, split, image_id; an image listed under validation and test
    by test_as_validation is used once). found == used + skipped when nothing was lost."""
    used = manifest.drop_duplicates("image_id")
    table = pd.DataFrame({"found": found["label"].value_counts(), "used": used["label"].value_counts(),
                          "skipped": skipped["label"].value_counts()}).fillna(0).astype(int)
    per_split = manifest.groupby(["label", "split"]).size().unstack(fill_value=0)
    per_split = per_split.reindex(columns=[s for s in SPLITS if s in per_split.columns])
    table = table.join(per_split).fillna(0).astype(int).sort_index()
    for label in table.index[(table["found"] > 0) & (table["used"] == 0)]:
        log.warning("class %r has no usable image: all %d found were skipped (see data/skipped.csv); "
                    "the model will not learn it", label, table.loc[label, "found"])
    table.loc["total"] = table.sum()
    return table


def counts_json(table):
    """The count table as {"per_class": {class: {...}}, "per_split": {split: {class: n}}, "total": {...}}."""
    per_class = table.drop(index="total")
    splits = [s for s in SPLITS if s in table.columns]
    return {"per_class": {label: {k: int(v) for k, v in row.items()} for label, row in per_class.iterrows()},
            "per_split": {split: {label: int(n) for label, n in per_class[split].items()} for split in splits},
            "total": {k: int(v) for k, v in table.loc["total"].items()}}
