"""Run parameters: the schema with defaults, loading YAML with `-p key=value` overrides, strict validation.

One YAML file in `params/` describes a run and sets only what differs from the defaults below.
Every key is checked before any notebook starts: an unknown key, a wrong type or an impossible value
raises `ParamsError` naming the key, where the value came from (the file, or the `-p` / `--name` option
that set it) and what is allowed. A message quotes at most SHOWN_CHARACTERS of a bad value.

How values are read (PyYAML speaks YAML 1.1, whose surprises are switched off here):
- only true/false are booleans, so the choices `on`, `off`, `yes`, `no` can be written plainly
  (`export.browser_parity: off`); true/false keys still take yes/no/on/off;
- numbers as Python writes them are numbers: `1e-4`, `1E+5`, `.5`, `5.`, `1_000`; an integer key takes
  an exactly integral value (`1e3`, `2.0`), not `1.5`; NaN and infinity (`.nan`, `.inf`, `1e999`) are refused;
- anchors and aliases (`&x`, `*x`) are refused (nested aliases expand exponentially: "billion laughs"),
  and so are files over MAX_FILE_BYTES, nesting deeper than MAX_DEPTH and files that are not UTF-8.
"""

import dataclasses
import difflib
import math
import os
import re
import reprlib
import typing
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lib import images, registry, sources
from lib.errors import ParamsError


def choice(*allowed, help="", booleans=None):
    """A string key with `allowed` values; `booleans` ({True: value, False: value}) reads true and false as choices,
    for a key that was a true/false switch before it had choices (older params files keep working)."""
    return {"choices": allowed, "help": help, "booleans": booleans or {}}


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
    erasing: float = field(default=0.0, metadata=bounded(0.0, 1.0))  # share of images with a rectangle erased
    fill_mode: str = field(default="nearest", metadata=choice(*registry.FILL_MODES))
    one_resampling: bool = False  # flips to zoom as one affine map per image: one interpolation, ~2.8x cheaper


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
    colour_constancy: str = field(default="none", metadata=choice(*registry.COLOUR_CONSTANCIES))
    dense_units: typing.List[int] = field(default_factory=list)
    dropout: float = field(default=0.25, metadata=bounded(0.0, 0.95))
    trainable_layers: int = field(default=-1, metadata=bounded(-1))  # -1 all, 0 frozen, N the last N layers
    output_activation: str = field(default="softmax", metadata=choice(*registry.OUTPUT_ACTIVATIONS))
    # BatchNormalization layers stay frozen, in inference mode, when the backbone is fine-tuned
    freeze_batch_norm: bool = True
    # with freeze_batch_norm: the statistics stay ImageNet's, but each BatchNorm's scale and offset are fine-tuned
    batch_norm_affine: bool = False


@dataclass
class TrainParams:
    epochs: int = field(default=30, metadata=bounded(1, 10_000))
    batch_size: int = field(default=32, metadata=bounded(1, 65_536))
    optimizer: str = field(default="adam", metadata=choice(*registry.OPTIMIZERS))
    learning_rate: float = field(default=1e-3, metadata=bounded(0.0, 10.0))  # the peak, with schedule: cosine
    schedule: str = field(default="constant", metadata=choice(*registry.SCHEDULES))  # per phase
    warmup_epochs: float = field(default=0.0, metadata=bounded(0.0, 1000.0))  # schedule: cosine only
    momentum: float = field(default=0.0, metadata=bounded(0.0, 0.999))  # sgd and rmsprop only (Keras' default: 0)
    weight_decay: typing.Optional[float] = field(default=None, metadata=bounded(0.0, 1.0))  # None: the optimizer's
    loss: str = field(default="crossentropy", metadata=choice(*registry.LOSSES))
    focal_gamma: float = field(default=2.0, metadata=bounded(0.0, 10.0))  # loss: focal only
    label_smoothing: float = field(default=0.0, metadata=bounded(0.0, 0.5))
    # logit-adjusted loss (Menon et al. 2021): the training loss adds logit_adjustment x log(each class's share of
    # the training batches) to the network's logits, so the network itself learns scores that weigh every class the
    # same, without resampling (with sampling: shuffle; balanced batches have equal shares, where it does nothing).
    # Usual: 1. 0: off
    logit_adjustment: float = field(default=0.0, metadata=bounded(0.0, 10.0))
    # MixUp in the augmented phase: blend pairs of a batch's images and their labels by a Beta(mixup, mixup) share
    # (0.2-0.4 are usual); 0: off
    mixup: float = field(default=0.0, metadata=bounded(0.0, 10.0))
    # keep an exponential moving average of the weights (e.g. 0.99 a step), validated and checkpointed each epoch in
    # their place: a smoother checkpoint than the last step's weights; null: none
    ema_momentum: typing.Optional[float] = field(default=None, metadata=bounded(0.0, 0.9999))
    # layer-wise learning-rate decay when the backbone trains: each weighted backbone layer learns at this multiple
    # of the rate of the layer above it (the head: the full rate); 1: one rate for every layer
    layer_decay: float = field(default=1.0, metadata=bounded(0.01, 1.0))
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
    # progressive resizing: the first low_resolution_epochs of the fine_tune_epochs train on the images downscaled to
    # low_resolution px (an epoch costs about (low_resolution / data.image_size)^2), the rest at data.image_size; every
    # epoch is validated at data.image_size and one learning-rate schedule runs across the switch. 0: off
    low_resolution_epochs: int = field(default=0, metadata=bounded(0, 10_000))
    low_resolution: int = field(default=160, metadata=bounded(16, 4096))
    # the last plain_epochs of the fine_tune_epochs see only the 8 exact right-angle views of each image (the random
    # flips and transposes: no turn by other angles, shift, zoom, colour change, erasing or MixUp), as the test-time
    # views show them; the same optimizer, schedule and moving average run on. 0: off
    plain_epochs: int = field(default=0, metadata=bounded(0, 10_000))
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
    # test-time augmentation, reported beside the plain model (which the web page runs): off, flips (4 views),
    # dihedral (the 8 right-angle views), dihedral_45 (those and the same 8 of the image turned by 45 degrees: 16),
    # auto (the one with the higher validation balanced accuracy; with class biases, on held-out validation after
    # them: evaluation.choose_tta); true means flips, as it did before the choices
    tta: str = field(default="off", metadata=choice(*registry.TTA_MODES, booleans={True: "flips", False: "off"}))
    # after the temperature, one log-probability bias per class fitted on validation so that every class weighs the
    # same (times train.class_weight's factors): off, on, auto (where it raises balanced accuracy on held-out
    # halves of the validation split). It moves the argmax toward the rare classes the training mix under-served
    class_bias: str = field(default="off", metadata=choice(*registry.CLASS_BIAS_MODES,
                                                           booleans={True: "on", False: "off"}))
    # resamples of the test set (whole lesions) behind each 95% interval; 0: no intervals. All are held at once:
    # 10,000 resamples of 1,500 test images take about 0.5 GB
    bootstrap: int = field(default=1000, metadata=bounded(0, 10_000))
    # the melanoma (or malignant) threshold is set on validation to catch at least this share of them
    target_sensitivity: float = field(default=0.85, metadata=bounded(0.01, 1.0))
    gradcam_images_per_class: int = field(default=2, metadata=bounded(0, 100))
    external: typing.Optional[ExternalDataParams] = None


@dataclass
class ExportParams:
    quantize: str = field(default="none", metadata=choice(*registry.QUANTIZATIONS))
    # test images the TF.js model is compared with Keras on: with 64, one near-tie flipped by float16 weighs 1.6%
    # against the 98% floor, and a model agreeing on 99.4% of 898 images failed on 62 of 64
    parity_images: int = field(default=512, metadata=bounded(1, 10_000))
    browser_parity: str = field(default="auto", metadata=choice(*registry.BROWSER_PARITY))
    # also convert every other quantization, for the size and parity table of export.json (each costs seconds)
    all_quantizations: bool = False


@dataclass
class Params:
    name: str  # the run folder under outputs/: any folder name, spaces and any script included
    seed: int = field(default=42, metadata=bounded(0, 2**32 - 1))  # numpy's seeds are 32-bit unsigned
    data: DataParams = field(default_factory=DataParams)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    export: ExportParams = field(default_factory=ExportParams)

    def to_dict(self):
        return dataclasses.asdict(self)


MAX_FILE_BYTES = 100_000  # the recipes are 1-3 KB: a larger file is the wrong file, or an attack
MAX_DEPTH = 10  # the deepest value, train.class_weight.<class>, is 3 levels down; composing YAML recurses
SHOWN_CHARACTERS = 80  # of a bad value quoted in a message
FALLBACK_NAME_MAX = 255  # bytes, the usual limit, when the file system cannot be asked (no os.pathconf)

BOOL_TAG, FLOAT_TAG = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
# YAML 1.2's booleans: YAML 1.1 also reads on/off/yes/no as booleans, so the choice `off` arrived as False.
YAML12_BOOLEAN = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
# The spellings YAML 1.1 read as booleans besides true/false; true/false keys still accept them.
YAML11_BOOLEANS = {spelling: meaning for word, meaning in (("yes", True), ("on", True), ("no", False), ("off", False))
                   for spelling in (word, word.capitalize(), word.upper())}
# Floats PyYAML leaves as strings, as Python and YAML 1.2 write them: an exponent without a dot or without a
# sign (1e-4, 1E5, 1.5e3), with '_' between digits as Python allows (1_000.5).
_DIGITS = r"[0-9](?:_?[0-9])*"
MORE_FLOATS = re.compile(rf"^[-+]?(?:{_DIGITS}(?:\.(?:{_DIGITS})?)?|\.{_DIGITS})[eE][-+]?{_DIGITS}$")
NUMBER_STARTS = list("-+0123456789.")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, bounded, reading booleans and numbers as the module docstring says."""

    yaml_implicit_resolvers = {first: [(tag, pattern) for tag, pattern in resolvers if tag != BOOL_TAG]
                               for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        # Refused before anything is built: nested aliases expand to billions of values ("billion laughs").
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.composer.ComposerError(None, None, "anchors and aliases (&name, *name) are not allowed in "
                                              "params: write each value out", event.start_mark)
        if self.depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"values nest more than {MAX_DEPTH} levels deep",
                                              event.start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


_Loader.add_implicit_resolver(BOOL_TAG, YAML12_BOOLEAN, list("tTfF"))
_Loader.add_implicit_resolver(FLOAT_TAG, MORE_FLOATS, NUMBER_STARTS)


class _Dumper(yaml.SafeDumper):
    """Writes what both _Loader and plain yaml.safe_load (other tools) read back unchanged: a string either
    would take for a number or a boolean is quoted ('1e5', 'off'), and no alias is ever written."""

    def ignore_aliases(self, data):
        return True


_Dumper.add_implicit_resolver(FLOAT_TAG, MORE_FLOATS, NUMBER_STARTS)


@dataclass(frozen=True)
class Origin:
    """Where parameter values come from: a params file, then the command-line options applied on top of it,
    in order, as (dotted key, option as typed) pairs, e.g. ("train.epochs", "-p train.epochs=1")."""

    file: str
    options: tuple = ()

    def setting(self, key, option):
        """This origin with `option` setting `key` last."""
        return Origin(self.file, self.options + ((key, option),))

    def of(self, *keys):
        """Where the values of `keys` were set: "in FILE", or "from -p KEY=VALUE (over FILE)"."""
        setters = []
        for key in keys:
            setter = next((option for set_key, option in reversed(self.options) if _within(key, set_key)), None)
            if setter is not None and setter not in setters:
                setters.append(setter)
        if not setters:
            return f"in {self.file}"
        return f"from {', '.join(_cut(setter) for setter in setters)} (over {self.file})"

    def __str__(self):
        return self.file


def _within(key, set_key):
    """Whether `key` is `set_key` or lies inside it ("train.epochs" within "train")."""
    return key == set_key or key.startswith(f"{set_key}.") or key.startswith(f"{set_key}[")


def load(path, overrides=(), name=None, outputs_dir=None):
    """Read a params YAML file, apply `overrides` ("dotted.key=value", value parsed as YAML) and `name`
    (the --name option) and return validated `Params`. With `outputs_dir`, the name must also fit the file
    system there. Raises ParamsError, one line, naming the key and where its value came from."""
    path = Path(path)
    raw = _read_mapping(path)
    origin = Origin(str(path))
    for override in overrides:
        origin = origin.setting(apply_override(raw, override, origin), f"-p {override}")
    if name is not None:
        raw["name"] = name
        origin = origin.setting("name", "--name")  # the message quotes the value
    return from_dict(raw, origin, outputs_dir)


def _read_mapping(path, extended_by=()):
    """The mapping of a params file, with the file it `extends:` (a params file in the same folder, whose values it
    overrides key by key) merged under it, so a variant of a recipe sets only what differs from that recipe."""
    raw = _parse_yaml(_read_params_file(path), where=str(path)) or {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{path} must hold a mapping of parameters, not {type(raw).__name__}")
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str) or Path(base).name != base:
        raise ParamsError(f"'extends' in {path} must name a params file in the same folder, e.g. "
                          f"ham10000_finetune.yaml; got {_show(base)}")
    base_path = path.parent / base
    if base_path.resolve() in {Path(p).resolve() for p in (*extended_by, path)}:
        raise ParamsError(f"'extends' in {path} makes a loop: {' -> '.join(str(p) for p in (*extended_by, path, base_path))}")
    return _merged(_read_mapping(base_path, (*extended_by, path)), raw)


def _merged(base, changes):
    """`base` with `changes` laid over it, mappings merged key by key."""
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return merged


def load_run(run_dir):
    """The resolved params a run was started with (`<run_dir>/params.yaml`)."""
    return load(_run_params_path(run_dir))


def read_run_mapping(run_dir):
    """The params a run was started with as the nested mapping of its params.yaml, not validated against today's
    schema: what `compare` reads, so that runs made by older versions still show."""
    return _read_mapping(_run_params_path(run_dir))


def _run_params_path(run_dir):
    path = Path(run_dir) / "params.yaml"
    if not path.is_file():
        raise ParamsError(f"{run_dir} is not a run folder (no params.yaml); start one with "
                          f"`python -m lib run params/demo.yaml`")
    return path


def save(params, path):
    Path(path).write_text(yaml.dump(params.to_dict(), Dumper=_Dumper, sort_keys=False), encoding="utf-8")


def apply_override(raw, override, origin):
    """Set "a.b.c=value" in the nested dict `raw`; the value is parsed as YAML (`1`, `null`, `[1, 2]`).
    Returns the dotted key."""
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ParamsError(f"override {_show(override)} must look like dotted.key=value, e.g. train.epochs=1")
    where = f"the value of -p {_cut(override)} (over {origin})"
    if len(text) > MAX_FILE_BYTES:
        raise ParamsError(f"{where} is longer than {MAX_FILE_BYTES} characters; put large values in the file")
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = _parse_yaml(text, where)
    return key


def _read_params_file(path):
    """The text of the params file at `path`; ParamsError, one line, when it cannot be one."""
    try:
        if path.is_dir():
            raise ParamsError(f"{path} is a folder, not a params file; give a YAML file such as params/demo.yaml")
        if not path.exists():
            raise ParamsError(f"params file not found: {path}; the recipes are in params/, e.g. params/demo.yaml")
        if not path.is_file():  # a pipe or a device could block or never end
            raise ParamsError(f"{path} is not a regular file; give a YAML file such as params/demo.yaml")
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise ParamsError(f"cannot read params file {path}: {error.strerror or error}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ParamsError(f"{path} is larger than {MAX_FILE_BYTES} bytes, and a params file is a few KB: "
                          f"is it the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ParamsError(f"{path} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
                          f"save it as UTF-8") from None


def _parse_yaml(text, where):
    """The value of the YAML `text`, read by the bounded loader; ParamsError naming `where` otherwise."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as error:
        raise ParamsError(f"{where} is not valid YAML: {_yaml_problem(error)}") from None
    except ValueError as error:  # from a constructor: a date such as 2001-13-45, an integer of 5,000 digits
        raise ParamsError(f"{where} is not valid YAML: {_cut(str(error), 160)}") from None


def _yaml_problem(error):
    """PyYAML's message (several lines, with a snippet) in one line: what is wrong, and where."""
    mark, problem = getattr(error, "problem_mark", None), getattr(error, "problem", None)
    if problem and mark is not None:
        return f"{_cut(problem, 160)} (line {mark.line + 1}, column {mark.column + 1})"
    return _cut(" ".join(str(error).split()), 160)


def from_dict(raw, origin="<dict>", outputs_dir=None):
    """Validated `Params` from a nested dict; `origin` (an Origin or a file name) is named in messages.
    With `outputs_dir`, the run name must also fit the file system there."""
    origin = origin if isinstance(origin, Origin) else Origin(str(origin))
    if "name" not in raw:
        raise ParamsError(f"missing parameter 'name' in {origin}: every run needs a name (its folder under outputs/)")
    params = _build(Params, raw, prefix="", origin=origin)
    _check_recipe(params, origin)
    check_run_name(params.name, origin, outputs_dir)
    return params


def _build(cls, raw, prefix, origin):
    if not isinstance(raw, dict):
        section = prefix.rstrip(".")
        raise ParamsError(f"parameter '{section}' {origin.of(section)} must be a mapping of "
                          f"{', '.join(f.name for f in dataclasses.fields(cls))}; got {_show(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            unknown = f"{prefix}{_cut(str(key))}"
            raise ParamsError(f"unknown parameter '{unknown}' {origin.of(unknown)}{hint}; known: {', '.join(fields)}")
    values = {}
    for name, spec in fields.items():
        if name in raw:
            values[name] = _convert(raw[name], hints[name], f"{prefix}{name}", spec.metadata, origin)
    return cls(**values)


def _convert(value, hint, key, metadata, origin):
    def fail(expected):
        raise ParamsError(f"parameter '{key}' {origin.of(key)} must be {expected}; got {_show(value)}")

    origin_type = typing.get_origin(hint)
    if origin_type is typing.Union:
        options = typing.get_args(hint)
        if value is None:
            if type(None) in options:
                return None
            fail(_describe(hint))
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key, metadata, origin)
            except ParamsError as error:
                errors.append((option, error))
        # a mapping or list failed inside: say where (train.class_weight.mel), not just "str or mapping"
        inside = [error for option, error in errors if _is_container_for(option, value)]
        if inside:
            raise inside[0]
        fail(_describe(hint))
    if dataclasses.is_dataclass(hint):
        return _build(hint, {} if _as_bool(value) is True else value, f"{key}.", origin)
    if origin_type is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, list):
            fail(f"a list of {item_type.__name__}")
        return [_convert(item, item_type, f"{key}[{i}]", {}, origin) for i, item in enumerate(value)]
    if origin_type is dict:
        key_type, item_type = typing.get_args(hint)
        if not isinstance(value, dict):
            fail("a mapping")
        return {str(k): _convert(v, item_type, f"{key}.{_cut(str(k))}", {}, origin) for k, v in value.items()}
    if hint is bool:
        converted = _as_bool(value)
        if converted is None:
            fail("true or false")
    elif hint is int:
        converted = _as_int(value)
        if converted is None:
            fail("an integer")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("a number, such as 0.001 or 1e-3")
        converted = _as_finite_float(value)
        if converted is None:
            fail("a finite number, not NaN or infinity (.nan, .inf, 1e999)")
    elif hint is str:
        if isinstance(value, bool) and value in metadata.get("booleans", {}):
            value = metadata["booleans"][value]
        if not isinstance(value, str):
            fail("a string")
        converted = value
    _check_metadata(converted, key, metadata, origin)
    return converted


def _is_container_for(hint, value):
    """Whether `value` has the shape of the section, mapping or list `hint` (whatever its contents)."""
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    return typing.get_origin(hint) in (dict, list) and isinstance(value, typing.get_origin(hint))


def _as_bool(value):
    """`value` as a bool when it is one (true, false, or YAML 1.1's yes/no/on/off), else None."""
    if isinstance(value, bool):
        return value
    return YAML11_BOOLEANS.get(value) if isinstance(value, str) else None


def _as_int(value):
    """`value` as an int when it is exactly one (3, 1_000, 1e3, 3.0), else None. Floats beyond 2**53 are
    refused: they may not be the integer written."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return None


def _as_finite_float(number):
    """`number` as a float, or None when it is NaN, infinite, or an integer too large for a float."""
    try:
        converted = float(number)
    except OverflowError:
        return None
    return converted if math.isfinite(converted) else None


def _check_metadata(value, key, metadata, origin):
    choices = metadata.get("choices")
    if choices and value not in choices:
        raise ParamsError(f"parameter '{key}' {origin.of(key)} must be one of: {', '.join(choices)}; "
                          f"got {_show(value)}")
    low, high = metadata.get("low"), metadata.get("high")
    if low is not None and value < low or high is not None and value > high:
        allowed = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ParamsError(f"parameter '{key}' {origin.of(key)} must be {allowed}; got {_show(value)}")


def _describe(hint):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    names = [getattr(a, "__name__", str(a)).replace("Dict", "mapping") for a in args]
    return " or ".join(names) + (" or null" if type(None) in typing.get_args(hint) else "")


def _check_recipe(params, origin):
    """Combinations that cannot work, caught before any notebook starts."""
    data, model = params.data, params.model
    if data.source == "local" and not data.path:
        raise ParamsError(f"parameter 'data.path' {origin.of('data.path', 'data.source')} is required with "
                          f"data.source: local (the folder holding the dataset)")
    if data.source == "generated" and data.dataset not in ("ham10000", "isic_binary"):
        raise ParamsError(f"parameter 'data.dataset' {origin.of('data.dataset', 'data.source')}: the generated "
                          f"source imitates ham10000 or isic_binary; got {_show(data.dataset)}")
    if data.source == "kaggle" and data.dataset not in ("ham10000", "isic_binary") and "/" not in data.dataset:
        raise ParamsError(f"parameter 'data.dataset' {origin.of('data.dataset', 'data.source')} must be "
                          f"ham10000, isic_binary or a Kaggle slug like owner/name; got {_show(data.dataset)}")
    if data.validation_fraction + data.test_fraction >= 0.9:
        raise ParamsError(f"parameters 'data.validation_fraction' + 'data.test_fraction' "
                          f"{origin.of('data.validation_fraction', 'data.test_fraction')} leave less than 10% for "
                          f"training; lower them")
    if model.weights not in (None, "imagenet") and not _is_file(model.weights):
        raise ParamsError(f"parameter 'model.weights' {origin.of('model.weights')}: no weights file at "
                          f"{_show(model.weights)} (use imagenet, null, or the path of an .h5/.keras weights file)")
    backbone = registry.BACKBONES[model.backbone]
    if model.weights == "imagenet" and not backbone.has_imagenet_weights:
        raise ParamsError(f"parameter 'model.weights' {origin.of('model.weights', 'model.backbone')}: "
                          f"{model.backbone} has no ImageNet weights; use null")
    if model.weights == "imagenet" and backbone.imagenet_alphas and model.alpha not in backbone.imagenet_alphas:
        raise ParamsError(f"parameter 'model.alpha' {origin.of('model.alpha', 'model.weights')}: ImageNet "
                          f"{model.backbone} weights exist for alpha {', '.join(map(str, backbone.imagenet_alphas))}; "
                          f"got {model.alpha}")
    if params.train.schedule != "constant" and params.train.reduce_lr is not None:
        raise ParamsError(f"parameters 'train.schedule' and 'train.reduce_lr' "
                          f"{origin.of('train.schedule', 'train.reduce_lr')} both set the learning rate; use "
                          f"schedule: constant with reduce_lr, or remove reduce_lr")
    if data.source == "local" and not _is_dir(data.path):
        raise ParamsError(f"parameter 'data.path' {origin.of('data.path')}: no folder at {_show(data.path)}")
    held = _alpha_of_weights_file(model.weights) if backbone.takes_alpha and _is_file(model.weights) else None
    if held is not None and abs(held - model.alpha) > 1e-6:
        raise ParamsError(f"parameter 'model.alpha' {origin.of('model.alpha', 'model.weights')} is {model.alpha}, but "
                          f"the weights file {_show(model.weights)} holds a network of width alpha {held:g} (its first "
                          f"convolution has {round(held * 32)} filters): set model.alpha: {held:g}")
    if model.batch_norm_affine and not model.freeze_batch_norm:
        where = origin.of("model.batch_norm_affine", "model.freeze_batch_norm")
        raise ParamsError(f"parameter 'model.batch_norm_affine' {where} keeps the BatchNorm statistics frozen, but "
                          f"model.freeze_batch_norm: false trains them on each batch; set one of the two")
    train = params.train
    if train.low_resolution_epochs and train.low_resolution_epochs >= train.fine_tune_epochs:
        raise ParamsError(f"parameter 'train.low_resolution_epochs' "
                          f"{origin.of('train.low_resolution_epochs', 'train.fine_tune_epochs')} must be fewer than "
                          f"train.fine_tune_epochs ({train.fine_tune_epochs}), so that the last fine-tuning epochs "
                          f"train at data.image_size; lower it, or raise fine_tune_epochs")
    if train.low_resolution_epochs and train.low_resolution >= data.image_size:
        raise ParamsError(f"parameter 'train.low_resolution' {origin.of('train.low_resolution', 'data.image_size')} "
                          f"is {train.low_resolution} px, not below data.image_size ({data.image_size}); lower it, or "
                          f"set train.low_resolution_epochs: 0")
    if train.plain_epochs and train.plain_epochs > train.fine_tune_epochs - train.low_resolution_epochs:
        raise ParamsError(f"parameter 'train.plain_epochs' "
                          f"{origin.of('train.plain_epochs', 'train.fine_tune_epochs', 'train.low_resolution_epochs')} "
                          f"is {train.plain_epochs}, more than the full-size fine-tuning epochs "
                          f"({train.fine_tune_epochs - train.low_resolution_epochs}: train.fine_tune_epochs minus "
                          f"train.low_resolution_epochs); lower it")
    if train.momentum and train.optimizer not in registry.MOMENTUM_OPTIMIZERS:
        raise ParamsError(f"parameter 'train.momentum' {origin.of('train.momentum', 'train.optimizer')} is for "
                          f"train.optimizer {' or '.join(registry.MOMENTUM_OPTIMIZERS)} ({train.optimizer} keeps its own "
                          f"moving averages); set train.momentum: 0, or choose sgd")
    if train.logit_adjustment and (train.loss != "crossentropy" or model.output_activation != "softmax"):
        raise ParamsError(f"parameter 'train.logit_adjustment' "
                          f"{origin.of('train.logit_adjustment', 'train.loss', 'model.output_activation')} adjusts "
                          f"a softmax's cross-entropy; set train.loss: crossentropy and model.output_activation: "
                          f"softmax, or train.logit_adjustment: 0")
    if params.train.class_weight is not None and isinstance(params.train.class_weight, str) \
            and params.train.class_weight != "balanced":
        raise ParamsError(f"parameter 'train.class_weight' {origin.of('train.class_weight')} must be null, "
                          f"balanced or a mapping of class name to weight; got {_show(params.train.class_weight)}")


def _alpha_of_weights_file(path):
    """The width multiplier of the MobileNet-style network whose Keras .h5 weights are at `path` (its first
    convolution, "conv1"/"Conv1", has 32 x alpha filters), or None when the file says nothing about it."""
    try:
        import h5py

        with h5py.File(_resolve(path), "r") as weights:
            for name in ("conv1", "Conv1"):
                if name in weights:
                    kernels = [item for item in _datasets(weights[name]) if item.ndim == 4]
                    if kernels:
                        return kernels[0].shape[-1] / 32
    except (ImportError, OSError, ValueError):  # not HDF5 (a .keras zip), or unreadable: Keras will say
        return None
    return None


def _datasets(group):
    import h5py

    found = []
    group.visititems(lambda name, item: found.append(item) if isinstance(item, h5py.Dataset) else None)
    return found


def check_run_name(name, origin, outputs_dir=None):
    """Refuse (ParamsError) a run name that cannot be a folder of its own under `outputs_dir`: empty,
    '.' or '..', hidden, with a path separator or a control character, or longer (in UTF-8 bytes) than the
    file system holding `outputs_dir` allows. Spaces and any script are fine."""
    problem = _name_problem(name)
    if problem:
        raise ParamsError(f"parameter 'name' {origin.of('name')} must be usable as a folder name, but it {problem}; "
                          f"got {_show(name)}")
    if outputs_dir is None:
        return
    size, limit = len(name.encode("utf-8")), name_max(outputs_dir)
    if size > limit:
        raise ParamsError(f"parameter 'name' {origin.of('name')} is {size} bytes long in UTF-8, and the file "
                          f"system of {outputs_dir} takes folder names of at most {limit}: shorten it; "
                          f"got {_show(name)}")


def _name_problem(name):
    """Why `name` cannot name a run folder (the end of a sentence starting "it"), or None."""
    if not name.strip():
        return "is blank"
    if name in (".", ".."):
        return f"is {name!r}, an existing folder, not a new one"
    if name.startswith("."):
        return "starts with '.', which would hide the run folder"
    for character in name:
        if character in ("/", "\\"):  # '\\' separates folders on Windows, where run folders may be copied
            return f"contains the path separator {character!r}"
        category = unicodedata.category(character)
        if category == "Cs":  # a byte that was not UTF-8, smuggled through as a lone surrogate
            return "is not valid text: it holds a byte that is not UTF-8"
        if category == "Cc":  # NUL, newline, tab, ESC (which starts terminal control sequences), ...
            return f"contains the control character {character!r}"
        if category in ("Zl", "Zp"):
            return f"contains the line break {character!r}"
    return None


def name_max(folder):
    """The longest file name, in bytes, accepted by the file system holding `folder` (or, when it does not
    exist yet, its nearest existing parent)."""
    folder = Path(folder).absolute()
    while not _exists(folder) and folder != folder.parent:
        folder = folder.parent
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no os.pathconf (Windows), or the system will not say
        return FALLBACK_NAME_MAX
    return limit if limit > 0 else FALLBACK_NAME_MAX


def _show(value):
    """`value` as quoted in a message: a repr bounded before it is built, cut to SHOWN_CHARACTERS."""
    return _cut(_SHORT_REPR.repr(value))


def _cut(text, limit=SHOWN_CHARACTERS):
    """`text` with unprintable characters escaped (no terminal control sequence gets through), cut to
    `limit` characters ending in '...'."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit + 1])
    return shown if len(shown) <= limit and len(text) <= limit else shown[:limit - 3] + "..."


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxlist, _SHORT_REPR.maxdict = 3, 6, 6
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = SHOWN_CHARACTERS


def _is_file(path):
    try:
        return _resolve(path).is_file()
    except (OSError, ValueError):  # a name too long, or with a NUL: no such file
        return False


def _is_dir(path):
    try:
        return _resolve(path).is_dir()
    except (OSError, ValueError):
        return False


def _exists(path):
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _resolve(path):
    from lib.paths import resolve

    return resolve(path)
