"""The pipeline's errors: one base class, one subclass per stage, each message saying the fix."""


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""


class ParamsError(PipelineError):
    """A parameter file or override is invalid: unknown key, wrong type, impossible value."""


class DataSourceError(PipelineError):
    """Data cannot be obtained or read: missing credentials, bad layout, failed download."""


class ImageError(PipelineError):
    """Images cannot be used: too many unreadable files, no valid image in a class."""


class TrainingError(PipelineError):
    """A model cannot be built or trained as asked: missing weights, bad strategy."""


class ExportError(PipelineError):
    """The model cannot be converted to TensorFlow.js, or the converted model disagrees with Keras."""


class SetupError(PipelineError):
    """The environment cannot be prepared: the project cannot be fetched, or a package cannot be installed."""


class RunError(PipelineError):
    """A run directory cannot be created or continued, or a notebook in it failed."""
