"""Errors of the package's own, beside DataError (rbm_cuda.datasets) and ModelFileError
(rbm_cuda.serialization)."""


class NotFittedError(ValueError, AttributeError):
    """A model was used before fit() or load().  A ValueError and an AttributeError, as in
    scikit-learn, so code written for either keeps working."""


class TrainingDivergedError(ValueError):
    """Training produced NaN or infinite weights (a learning rate too large for the data, usually).
    Raised at the end of the epoch where it happened, before that epoch's callback, so a checkpoint
    written by the callback is the last good epoch."""
