"""The error raised for bad or missing rating data."""


class DataError(ValueError):
    """Bad or missing input data.

    The message names the file (or table), the line or row, the offending value and what was
    expected there. It is a ``ValueError`` so callers that already catch those keep working.
    """
