"""Errors of the package's own, beside DataError (rbm_cuda.datasets) and ModelFileError
(rbm_cuda.serialization)."""


class NotFittedError(ValueError, AttributeError):
    """A model was used before fit() or load().  A ValueError and an AttributeError, as in
    scikit-learn, so code written for either keeps working."""
