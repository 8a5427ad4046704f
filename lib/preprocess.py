"""Raw images to what the model reads: find the labelled images of a raw dataset, then decode, resize and save each
as a PNG. Notebook 02 runs these steps on the run's dataset, and notebook 04 on an external dataset
(`evaluate.external`), so an external dataset is prepared exactly as the model's own data was.
"""

import logging
from pathlib import Path

import pandas as pd

from lib import images, sources

log = logging.getLogger(__name__)


def find_images(raw_dir, layout, labels):
    """(layout, records, problems) of the raw dataset in `raw_dir` (`sources.scan`), labels in the `labels` mode
    (dx, or binary: benign/malignant) for both the records and the problems."""
    layout, records, problems = sources.scan(raw_dir, layout=layout)
    records = sources.to_labels(records, labels)
    problems = sources.to_labels(problems, labels) if len(problems) else problems
    return layout, records, problems


def decode_and_resize(records, problems, processed_dir, image_size, resize_mode, relative_to):
    """Decode, resize and save every record as `processed_dir`/<image_id>.png (`images.process_images`, with a
    progress bar). Returns (used, skipped): the records that became images, with their `path` relative to
    `relative_to`; and every image that could not, with its reason: the unreadable ones and the scan's problems."""
    used, unreadable = images.process_images(records, processed_dir, image_size=image_size, resize_mode=resize_mode,
                                             relative_to=relative_to, progress=True)
    skipped = pd.concat([unreadable, problems[unreadable.columns]], ignore_index=True)
    return used, skipped


def prepare_external(external, data, run_dir):
    """Notebooks 01-02's steps on the `evaluate.external` dataset (ExternalDataParams), with the run's `data`
    params (labels, image size, resize mode, cache): fetched, scanned and processed into run_dir/external/processed.
    Returns (used, skipped) as `decode_and_resize`, `used` with `abs_path`."""
    request = sources.SourceRequest(dataset=external.dataset, path=external.path, cache_dir=data.cache_dir,
                                    seed=data.split_seed, generated_images_per_class=data.generated_images_per_class,
                                    generated_image_size=data.generated_image_size)
    raw_dir = sources.fetch(external.source, request)
    layout, records, problems = find_images(raw_dir, external.layout, data.labels)
    log.info("external dataset %s (%s): %d images, %d problems", raw_dir, layout, len(records), len(problems))
    run_dir = Path(run_dir)
    used, skipped = decode_and_resize(records, problems, run_dir / "external" / "processed", data.image_size,
                                      data.resize_mode, relative_to=run_dir)
    used["abs_path"] = [str(run_dir / path) for path in used["path"]]
    return used, skipped
