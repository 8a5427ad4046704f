"""Run parameters: the schema with defaults, loading YAML with `-p key=value` overrides, strict validation.

One YAML file in `params/` describes a run and sets only what differs from the defaults below.
Every key is checked before any notebook starts: an unknown key, a wrong type or an impossible value
raises `ParamsError` naming the key, the file and what is allowed.
"""

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lib import images, registry, sources
from lib.errors import ParamsError


def choice(*allowed, help=""):
    return {"choices": allowed, "help": help}


def bounded(low=None, high=None, help=""):
    return {"low": low, "high": high, "help": help}


@dataclass
class DataParams:
    source: str = field(default="generated", metadata=choice(*sources.SOURCES))
    # ham10000 | isic_binary | any Kaggle slug "owner/name" in a supported layout
    dataset: str = "ham10000"
    path: typing.Optional[str] = None  # folder of a local dataset (source: local), relative to the project root
    layout: str = field(default="auto", metadata=choice(*sources.LAYOUTS))
    labels: str = field(default="dx", metadata=choice(*sources.LABEL_MODES))
    image_size: int = field(default=224, metadata=bounded(32, 1024))
    resize_mode: str = field(default="squash", metadata=choice(*images.RESIZE_MODES))
    limit: typing.Optional[int] = field(default=None, metadata=bounded(2))  # use at most N images, for quick runs
    # decides the split (and data.limit's subsample, and the generated pictures), apart from `seed`: runs with
    # different training seeds are then tested on the same images
    split_seed: int = 42
    validation_fraction: float = field(default=0.15, metadata=bounded(0.0, 0.9))
    test_fraction: float = field(default=0.15, metadata=bounded(0.0, 0.9))
    test_as_validation: bool = False  # reproduces recipe B's leak; only ever on purpose
    on_bad_image: str = field(default="skip", metadata=choice(*images.ON_BAD_IMAGE))
    max_bad_fraction: float = field(default=0.05, metadata=bounded(0.0, 1.0))
    cache_dir: typing.Optional[str] = None  # downloads shared by runs; None: $SKIN_LESION_DATA or <project>/data
    generated_images_per_class: int = field(default=60, metadata=bounded(2, 100_000))
    generated_image_size: int = field(default=96, metadata=bounded(16, 2048))


@dataclass
class AugmentationParams:
    """Recipe vocabulary of Keras' old ImageDataGenerator, mapped onto preprocessing layers."""

    rotation_range: float = field(default=0.0, metadata=bounded(0.0, 360.0))  # degrees
    width_shift_range: float = field(default=0.0, metadata=bounded(0.0, 1.0))
    height_shift_range: float = field(default=0.0, metadata=bounded(0.0, 1.0))
    zoom_range: float = field(default=0.0, metadata=bounded(0.0, 0.9))
    horizontal_flip: bool = False
    vertical_flip: bool = False
    rotate90: bool = False  # random transposes: with both flips, all 8 right-angle views of a lesion
    brightness: float = field(default=0.0, metadata=bounded(0.0, 1.0))  # largest relative change, +-
    contrast: float = field(default=0.0, metadata=bounded(0.0, 1.0))
    saturation: float = field(default=0.0, metadata=bounded(0.0, 1.0))
    hue: float = field(default=0.0, metadata=bounded(0.0, 1.0))
    fill_mode: str = field(default="nearest", metadata=choice(*registry.FILL_MODES))


@dataclass
class ReduceLRParams:
    monitor: str = "val_loss"
    factor: float = field(default=0.5, metadata=bounded(0.0, 1.0))
    patience: int = field(default=2, metadata=bounded(0))
    min_lr: float = field(default=1e-5, metadata=bounded(0.0))
    mode: str = field(default="auto", metadata=choice(*registry.MONITOR_MODES))


@dataclass
class EarlyStoppingParams:
    monitor: str = "val_loss"
    patience: int = field(default=5, metadata=bounded(0))
    mode: str = field(default="auto", metadata=choice(*registry.MONITOR_MODES))


@dataclass
class ModelParams:
    backbone: str = field(default="mobilenet", metadata=choice(*registry.BACKBONES))
    alpha: float = field(default=1.0, metadata=bounded(0.1, 2.0))  # MobileNet width multiplier
    weights: typing.Optional[str] = "imagenet"  # imagenet | null (from scratch) | path to a weights file
    head: str = field(default="pooled", metadata=choice(*registry.HEADS))
    pooling: str = field(default="avg", metadata=choice(*registry.POOLINGS))
    dense_units: typing.List[int] = field(default_factory=list)
    dropout: float = field(default=0.25, metadata=bounded(0.0, 0.95))
    trainable_layers: int = field(default=-1, metadata=bounded(-1))  # -1 all, 0 frozen, N the last N layers
    output_activation: str = field(default="softmax", metadata=choice(*registry.OUTPUT_ACTIVATIONS))
    # BatchNormalization layers stay frozen, in inference mode, when the backbone is fine-tuned
    freeze_batch_norm: bool = True


@dataclass
class TrainParams:
    epochs: int = field(default=30, metadata=bounded(1, 10_000))
    batch_size: int = field(default=32, metadata=bounded(1, 65_536))
    optimizer: str = field(default="adam", metadata=choice(*registry.OPTIMIZERS))
    learning_rate: float = field(default=1e-3, metadata=bounded(0.0, 10.0))  # the peak, with schedule: cosine
    schedule: str = field(default="constant", metadata=choice(*registry.SCHEDULES))  # per phase
    warmup_epochs: float = field(default=0.0, metadata=bounded(0.0, 1000.0))  # schedule: cosine only
    weight_decay: typing.Optional[float] = field(default=None, metadata=bounded(0.0, 1.0))  # None: the optimizer's
    loss: str = field(default="crossentropy", metadata=choice(*registry.LOSSES))
    focal_gamma: float = field(default=2.0, metadata=bounded(0.0, 10.0))  # loss: focal only
    label_smoothing: float = field(default=0.0, metadata=bounded(0.0, 0.5))
    sampling: str = field(default="shuffle", metadata=choice(*registry.SAMPLINGS))
    # null | "balanced" | {class name: weight}; unlisted classes weigh 1
    class_weight: typing.Union[None, str, typing.Dict[str, float]] = None
    monitor: str = "val_loss"  # the metric that picks the best checkpoint
    monitor_mode: str = field(default="auto", metadata=choice(*registry.MONITOR_MODES))
    augmentation: AugmentationParams = field(default_factory=AugmentationParams)
    reduce_lr: typing.Optional[ReduceLRParams] = None
    early_stopping: typing.Optional[EarlyStoppingParams] = None
    fine_tune_epochs: int = field(default=0, metadata=bounded(0, 10_000))  # >0: head first, then fine-tune
    fine_tune_learning_rate: float = field(default=1e-5, metadata=bounded(0.0, 10.0))
    feature_cache: str = field(default="auto", metadata=choice(*registry.FEATURE_CACHE))
    strategy: str = field(default="auto", metadata=choice(*registry.STRATEGIES))
    mixed_precision: str = field(default="auto", metadata=choice(*registry.PRECISIONS))
    # the same params on the same machine give the same weights (keras.utils.set_random_seed + op determinism)
    deterministic: bool = True


@dataclass
class ExternalDataParams:
    """Another dataset to evaluate on, to measure generalisation."""

    source: str = field(default="local", metadata=choice(*sources.SOURCES))
    dataset: str = "ham10000"
    path: typing.Optional[str] = None
    layout: str = field(default="auto", metadata=choice(*sources.LAYOUTS))


@dataclass
class EvaluateParams:
    # test-time augmentation reported beside the plain model (which the web page runs); auto: the variant with the
    # higher validation balanced accuracy
    tta: str = field(default="off", metadata=choice(*registry.TTA_MODES))
    # resamples of the test set (whole lesions) behind each 95% interval; 0: no intervals. All are held at once:
    # 10,000 resamples of 1,500 test images take about 0.5 GB
    bootstrap: int = field(default=1000, metadata=bounded(0, 10_000))
    # the melanoma (or malignant) threshold is set on validation to catch at least this share of them
    target_sensitivity: float = field(default=0.85, metadata=bounded(0.01, 1.0))
    gradcam_images_per_class: int = field(default=2, metadata=bounded(0, 100))
    external: typing.Optional[ExternalDataParams] = None


@dataclass
class ExportParams:
    quantize: str = field(default="none", metadata=choice("none", "float16", "uint8"))
    parity_images: int = field(default=64, metadata=bounded(1, 10_000))
    browser_parity: str = field(default="auto", metadata=choice("auto", "on", "off"))


@dataclass
class Params:
    name: str
    seed: int = 42
    data: DataParams = field(default_factory=DataParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    export: ExportParams = field(default_factory=ExportParams)

    def to_dict(self):
        return dataclasses.asdict(self)


def load(path, overrides=()):
    """Read a params YAML file, apply `overrides` ("dotted.key=value", value parsed as YAML) and
    return validated `Params`. Raises ParamsError naming the key and the file."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file not found: {path}; the recipes are in params/, e.g. params/demo.yaml")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ParamsError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must hold a mapping of parameters, not {type(raw).__name__}")
    for override in overrides:
        apply_override(raw, override, origin=path)
    return from_dict(raw, origin=path)


def load_run(run_dir):
    """The resolved params a run was started with (`<run_dir>/params.yaml`)."""
    path = Path(run_dir) / "params.yaml"
    if not path.is_file():
        raise ParamsError(f"{run_dir} is not a run folder (no params.yaml); start one with "
                          f"`python -m lib run params/demo.yaml`")
    return load(path)


def save(params, path):
    Path(path).write_text(yaml.safe_dump(params.to_dict(), sort_keys=False))


def apply_override(raw, override, origin):
    """Set "a.b.c=value" in the nested dict `raw`; the value is parsed as YAML (`1`, `null`, `[1, 2]`)."""
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ParamsError(f"override {override!r} must look like dotted.key=value, e.g. train.epochs=1")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    try:
        node[parts[-1]] = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ParamsError(f"override {override!r} (applied to {origin}): value is not valid YAML: {error}") from None


def from_dict(raw, origin="<dict>"):
    if "name" not in raw:
        raise ParamsError(f"missing parameter 'name' in {origin}: every run needs a name (its folder under outputs/)")
    params = _build(Params, raw, prefix="", origin=origin)
    _check_recipe(params, origin)
    return params


def _build(cls, raw, prefix, origin):
    if not isinstance(raw, dict):
        raise ParamsError(f"parameter '{prefix.rstrip('.')}' in {origin} must be a mapping of "
                          f"{', '.join(f.name for f in dataclasses.fields(cls))}; got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ParamsError(f"unknown parameter '{prefix}{key}' in {origin}{hint}; known: {', '.join(fields)}")
    values = {}
    for name, spec in fields.items():
        if name in raw:
            values[name] = _convert(raw[name], hints[name], f"{prefix}{name}", spec.metadata, origin)
    return cls(**values)


def _convert(value, hint, key, metadata, origin):
    def fail(expected):
        raise ParamsError(f"parameter '{key}' in {origin} must be {expected}; got {value!r}")

    origin_type = typing.get_origin(hint)
    if origin_type is typing.Union:
        options = typing.get_args(hint)
        if value is None:
            if type(None) in options:
                return None
            fail(_describe(hint))
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key, metadata, origin)
            except ParamsError:
                continue
        fail(_describe(hint))
    if dataclasses.is_dataclass(hint):
        return _build(hint, {} if value is True else value, f"{key}.", origin)
    if origin_type is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, list):
            fail(f"a list of {item_type.__name__}")
        return [_convert(item, item_type, f"{key}[{i}]", {}, origin) for i, item in enumerate(value)]
    if origin_type is dict:
        key_type, item_type = typing.get_args(hint)
        if not isinstance(value, dict):
            fail("a mapping")
        return {str(k): _convert(v, item_type, f"{key}.{k}", {}, origin) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            fail("true or false")
    elif hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("a number")
        value = float(value)
    elif hint is str:
        if not isinstance(value, str):
            fail("a string")
    _check_metadata(value, key, metadata, origin)
    return value


def _check_metadata(value, key, metadata, origin):
    choices = metadata.get("choices")
    if choices and value not in choices:
        raise ParamsError(f"parameter '{key}' in {origin} must be one of: {', '.join(choices)}; got {value!r}")
    low, high = metadata.get("low"), metadata.get("high")
    if low is not None and value < low or high is not None and value > high:
        allowed = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ParamsError(f"parameter '{key}' in {origin} must be {allowed}; got {value!r}")


def _describe(hint):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    names = [getattr(a, "__name__", str(a)).replace("Dict", "mapping") for a in args]
    return " or ".join(names) + (" or null" if type(None) in typing.get_args(hint) else "")


def _check_recipe(params, origin):
    """Combinations that cannot work, caught before any notebook starts."""
    data, model = params.data, params.model
    if data.source == "local" and not data.path:
        raise ParamsError(f"parameter 'data.path' in {origin} is required with data.source: local "
                          f"(the folder holding the dataset)")
    if data.source == "generated" and data.dataset not in ("ham10000", "isic_binary"):
        raise ParamsError(f"parameter 'data.dataset' in {origin}: the generated source imitates ham10000 or "
                          f"isic_binary; got {data.dataset!r}")
    if data.source == "kaggle" and data.dataset not in ("ham10000", "isic_binary") and "/" not in data.dataset:
        raise ParamsError(f"parameter 'data.dataset' in {origin} must be ham10000, isic_binary or a Kaggle "
                          f"slug like owner/name; got {data.dataset!r}")
    if data.validation_fraction + data.test_fraction >= 0.9:
        raise ParamsError(f"parameters 'data.validation_fraction' + 'data.test_fraction' in {origin} leave "
                          f"less than 10% for training; lower them")
    if model.weights not in (None, "imagenet") and not _resolve(model.weights).is_file():
        raise ParamsError(f"parameter 'model.weights' in {origin}: no weights file at {model.weights!r} "
                          f"(use imagenet, null, or the path of an .h5/.keras weights file)")
    backbone = registry.BACKBONES[model.backbone]
    if model.weights == "imagenet" and not backbone.has_imagenet_weights:
        raise ParamsError(f"parameter 'model.weights' in {origin}: {model.backbone} has no ImageNet weights; use null")
    if model.weights == "imagenet" and backbone.imagenet_alphas and model.alpha not in backbone.imagenet_alphas:
        raise ParamsError(f"parameter 'model.alpha' in {origin}: ImageNet {model.backbone} weights exist for alpha "
                          f"{', '.join(map(str, backbone.imagenet_alphas))}; got {model.alpha}")
    if params.train.schedule != "constant" and params.train.reduce_lr is not None:
        raise ParamsError(f"parameters 'train.schedule' and 'train.reduce_lr' in {origin} both set the learning "
                          f"rate; use schedule: constant with reduce_lr, or remove reduce_lr")
    if data.source == "local" and not _resolve(data.path).is_dir():
        raise ParamsError(f"parameter 'data.path' in {origin}: no folder at {data.path!r}")
    if params.train.class_weight is not None and isinstance(params.train.class_weight, str) \
            and params.train.class_weight != "balanced":
        raise ParamsError(f"parameter 'train.class_weight' in {origin} must be null, balanced or a mapping "
                          f"of class name to weight; got {params.train.class_weight!r}")
    if not isinstance(params.name, str) or not params.name or "/" in params.name or params.name.startswith("."):
        raise ParamsError(f"parameter 'name' in {origin} must be a folder name (no '/'); got {params.name!r}")


def _resolve(path):
    from lib.paths import resolve

    return resolve(path)
