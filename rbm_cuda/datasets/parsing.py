"""Reading delimited rating files with pandas while keeping file line numbers for messages.

Tables are read with pandas' C parser (``na_filter=False``, ``skip_blank_lines=False``), so row
``k`` of a table is line ``k + first_line`` of its file and an empty field stays the string ''.
Blank lines are dropped afterwards and the line number of every kept row is remembered.
Limitation: a quoted field spanning several lines would shift the line numbers of later rows;
rating files have no such fields.
"""

from __future__ import annotations

import csv
import gzip
import zlib
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .core import format_levels, format_value, sorted_unique
from .errors import DataError

# Separators tried when a file does not split as declared, to suggest the right one.
_CANDIDATE_SEPS = ("\t", ",", ";", "|", "::", " ")


class Origin:
    """Where the rows of a table came from, to name a row in messages.

    ``where(k)`` gives "FILE, line N" for files (N as in the file, 1-based, header included) and
    "LABEL, row k" for in-memory tables (k = 0-based position).
    """

    def __init__(self, label: str, *, path=None, first_line=None, encoding="utf-8", sep=None, positions=None):
        self.label = str(label)
        self.path = None if path is None else Path(path)
        self.first_line = first_line
        self.encoding = encoding
        self.sep = sep
        self.lines = None  # file line of each kept row when rows were dropped
        self.positions = positions  # DataFrame index labels, for in-memory tables

    def line(self, k: int) -> int | None:
        if self.first_line is None:
            return None
        if self.lines is not None:
            return int(self.lines[k])
        return int(k) + self.first_line

    def where(self, k: int) -> str:
        n = self.line(k)
        if n is not None:
            return f"{self.label}, line {n}"
        if self.positions is not None:
            lab = self.positions[k]
            if lab != k:
                return f"{self.label}, row {k} (index {lab!r})"
        return f"{self.label}, row {k}"

    def raw_line(self, n: int) -> str | None:
        """Text of line n (1-based) of the file, without its line ending, or None."""
        return self.raw_lines([n]).get(n)

    def raw_lines(self, ns) -> dict[int, str]:
        """{n: text of line n} for the wanted 1-based line numbers (read in one pass)."""
        wanted = set(int(n) for n in ns)
        out: dict[int, str] = {}
        if self.path is None or not wanted:
            return out
        last = max(wanted)
        try:
            with _open_text(self.path, self.encoding) as f:
                for i, text in enumerate(f, 1):
                    if i in wanted:
                        out[i] = text.rstrip("\r\n")
                    if i >= last:
                        break
        except (OSError, UnicodeDecodeError):
            pass
        return out


def _open_text(path: Path, encoding: str):
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return open(path, encoding=encoding, newline="")


def _split(text: str, sep: str) -> list[str]:
    return text.split(sep)


def _guess_sep(text: str, sep: str, n_fields: int | None, names=None) -> str | None:
    """Another separator that splits ``text`` into n_fields fields (or that yields ``names``)."""
    for cand in _CANDIDATE_SEPS:
        if cand == sep or cand not in text:
            continue
        parts = [p.strip().strip('"') for p in text.split(cand)]
        if names is not None and set(names) <= set(parts):
            return cand
        if n_fields is not None and len(parts) == n_fields:
            return cand
    if n_fields is not None:
        # no exact fit: the candidate giving most fields, if it gives more than one
        best = max(
            (c for c in _CANDIDATE_SEPS if c != sep and c in text), key=lambda c: len(text.split(c)), default=None
        )
        if best is not None and len(text.split(best)) > 1:
            return best
    return None


def _sep_hint(text: str | None, sep: str, n_fields: int | None = None, names=None) -> str:
    if text is None:
        return ""
    g = _guess_sep(text, sep, n_fields, names)
    return f"; is the separator {g!r}?" if g else ""


def require_file(path: Path, expected: str) -> Path:
    """``path`` if it is a file, else DataError naming it and what should be there."""
    path = Path(path)
    if not path.is_file():
        where = "does not exist" if not path.exists() else "is not a file"
        raise DataError(f"{path} {where}; expected {expected} there")
    return path


def read_table(
    path,
    *,
    sep: str,
    columns: list[str] | None = None,
    required: list[str] | None = None,
    encoding: str = "utf-8",
    content: bytes | None = None,
    display_sep: str | None = None,
    quoting: int = csv.QUOTE_MINIMAL,
    expected: str = "ratings",
    label: str | None = None,
    all_fields: bool = True,
) -> tuple[pd.DataFrame, Origin]:
    """Read a delimited file into a DataFrame of raw fields, plus its Origin.

    Headerless files: pass ``columns``, the names of exactly the fields each line must have.
    Files with a header: pass ``required``, the column names that must be in the header.
    ``all_fields``: every line must have all fields (rating files); a line with fewer is an error.
    ``content`` replaces the file's bytes (e.g. after turning '::' into a tab), ``path`` still names
    the file in messages and ``display_sep`` the separator as written in the file.
    """
    path = Path(path)
    shown_sep = display_sep or sep
    label = label or str(path)
    if content is None:
        require_file(path, expected)
    header = columns is None
    origin = Origin(label, path=path, first_line=2 if header else 1, encoding=encoding, sep=shown_sep)
    src = io.BytesIO(content) if content is not None else path
    try:
        df = pd.read_csv(
            src,
            sep=sep,
            header=0 if header else None,
            dtype=None,
            na_filter=False,
            skip_blank_lines=False,
            encoding=encoding,
            engine="c",
            quoting=quoting,
            index_col=False,
            compression="gzip" if str(path).endswith(".gz") and content is None else None,
            low_memory=False,
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"{label} is empty; expected {expected}") from None
    except pd.errors.ParserError as e:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
        if m:
            want, line, saw = (int(g) for g in m.groups())
            if columns is not None:
                want = len(columns)
            text = origin.raw_line(line)
            raise DataError(
                f"{label}, line {line}: expected {want} fields separated by {shown_sep!r}, found {saw}"
                + (f": {text!r}" if text is not None else "")
            ) from None
        raise DataError(f"{label}: could not parse as {shown_sep!r}-separated text: {e}") from None
    except UnicodeDecodeError:
        raise _decode_error(path, encoding, label, content) from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{label}: the compressed file is truncated or corrupt ({e}); expected a complete "
                        f".gz file") from None
    if header:
        df.columns = [str(c).strip() for c in df.columns]
        missing = [c for c in required or [] if c not in df.columns]
        if missing:
            first = origin.raw_line(1)
            raise DataError(
                f"{label}, line 1: expected a header with columns {', '.join(required)} separated by "
                f"{shown_sep!r}; missing {', '.join(missing)}; found columns {list(df.columns)}"
                + _sep_hint(first, shown_sep, names=required)
            )
    else:
        if df.shape[1] != len(columns):
            first = origin.raw_line(1)
            raise DataError(
                f"{label}, line 1: expected {len(columns)} fields separated by {shown_sep!r}, found "
                f"{df.shape[1]}" + (f": {first!r}" if first is not None else "")
                + _sep_hint(first, shown_sep, n_fields=len(columns))
            )
        df.columns = columns
    if len(df) == 0:
        raise DataError(f"{label} has no data rows; expected {expected}")
    df = _drop_blank_lines(df, origin)
    if len(df) == 0:
        raise DataError(f"{label} has only blank lines; expected {expected}")
    if all_fields:
        _check_short_rows(df, origin)
    return df, origin


# How many rows with an empty last field are checked for missing separators.
_SHORT_ROWS_CHECKED = 20


def _check_short_rows(df: pd.DataFrame, origin: Origin) -> None:
    """DataError for the first line that has fewer fields than the table (pandas fills the missing
    ones with ''), e.g. a comma-separated line in a tab-separated file."""
    last = df.columns[-1]
    if df[last].dtype.kind in "iufb":
        return
    cand = np.flatnonzero((df[last] == "").to_numpy())[:_SHORT_ROWS_CHECKED]
    if len(cand) == 0:
        return
    n_fields = df.shape[1]
    lines = {int(k): origin.line(int(k)) for k in cand}
    texts = origin.raw_lines(lines.values())
    for k in cand:
        text = texts.get(lines[int(k)])
        if text is None:
            continue
        found = len(_split(text, origin.sep))
        if found < n_fields:
            raise DataError(
                f"{origin.where(int(k))}: expected {n_fields} fields separated by {origin.sep!r}, "
                f"found {found}: {text!r}" + _sep_hint(text, origin.sep, n_fields=n_fields)
            )


def _decode_error(path: Path, encoding: str, label: str, content: bytes | None) -> DataError:
    data = content
    if data is None:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rb") as f:
            data = f.read()
    try:
        data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        return DataError(
            f"{label}, line {line}: byte {data[e.start:e.start + 1]!r} is not valid {encoding}; "
            f"expected {encoding} text"
        )
    return DataError(f"{label}: not valid {encoding} text")


def _drop_blank_lines(df: pd.DataFrame, origin: Origin) -> pd.DataFrame:
    """Drop rows that come from blank lines (every field empty) and remember the line numbers of
    the others. A row of empty fields that is not a blank line (e.g. ',,') is kept so that it is
    reported as a missing value."""
    obj = [c for c in df.columns if df[c].dtype.kind not in "iufb"]
    if len(obj) < df.shape[1]:
        return df  # a numeric column has no empty field, so no row is blank
    empty = np.ones(len(df), dtype=bool)
    for c in df.columns:
        empty &= (df[c] == "").to_numpy()
    if not empty.any():
        return df
    cand = np.flatnonzero(empty)
    if df.shape[1] > 1 and origin.path is not None:
        # tell blank lines from lines of empty fields by their text
        texts = origin.raw_lines(cand + origin.first_line)
        cand = np.asarray([k for k in cand if texts.get(k + origin.first_line, "x").strip() == ""], dtype=np.int64)
    if len(cand) == 0:
        return df
    keep = np.ones(len(df), dtype=bool)
    keep[cand] = False
    origin.lines = np.flatnonzero(keep) + origin.first_line
    return df.loc[keep].reset_index(drop=True)


def _field_count_note(origin: Origin, k: int, n_fields: int | None) -> str:
    """', the line has 2 fields: '1,2'' when the raw line shows fields are missing."""
    n = origin.line(k)
    if n is None or origin.sep is None:
        return ""
    text = origin.raw_line(n)
    if text is None:
        return ""
    found = len(_split(text, origin.sep))
    if n_fields is not None and found != n_fields:
        return (
            f"; expected {n_fields} fields separated by {origin.sep!r}, found {found}: {text!r}"
            + _sep_hint(text, origin.sep, n_fields=n_fields)
        )
    return f": {text!r}"


def number_column(df: pd.DataFrame, col: str, origin: Origin, what: str = "rating") -> np.ndarray:
    """Column as float64; DataError at the first empty, non-numeric or infinite value."""
    s = df[col]
    if s.dtype.kind in "iub":
        return s.to_numpy(dtype=np.float64)
    if s.dtype.kind == "f":
        vals = s.to_numpy(dtype=np.float64)
    else:
        vals = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(vals)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DataError(_bad_value_message(s, k, col, origin, what, "a number", df.shape[1], int(bad.sum())))
    return vals


def id_column(df: pd.DataFrame, col: str, origin: Origin, what: str, integer: bool) -> np.ndarray:
    """Column of raw ids: int64 when all are integers, else (if ``integer`` is False) a numpy
    unicode array. DataError at the first empty id, or non-integer id when ``integer``."""
    s = df[col]
    if s.dtype.kind == "i":
        return s.to_numpy(dtype=np.int64)
    if s.dtype.kind == "u":
        vals = s.to_numpy()
        if len(vals) == 0 or vals.max() <= np.iinfo(np.int64).max:
            return vals.astype(np.int64)
        # ids at or above 2**63 do not fit in int64: they stay exact as text, never wrapped
        if integer:
            k = int(np.argmax(vals > np.iinfo(np.int64).max))
            raise DataError(_bad_value_message(s, k, col, origin, what, "an integer id below 2**63", df.shape[1], 1))
        return np.asarray([str(v) for v in vals.tolist()], dtype=str)
    na = s.isna().to_numpy()
    if na.any():
        k = int(np.flatnonzero(na)[0])
        raise DataError(_bad_value_message(s, k, col, origin, what, "an id", df.shape[1], int(na.sum())))
    if s.dtype.kind == "f":
        vals = s.to_numpy(dtype=np.float64)
        infinite = ~np.isfinite(vals)
        if infinite.any():
            k = int(np.flatnonzero(infinite)[0])
            raise DataError(_bad_value_message(s, k, col, origin, what, "a finite id", df.shape[1],
                                               int(infinite.sum())))
        # beyond 2**53 a float64 holds only every other integer: distinct ids may already be one value
        inexact = np.abs(vals) >= 2**53
        if inexact.any():
            k = int(np.flatnonzero(inexact)[0])
            raise DataError(_bad_value_message(
                s, k, col, origin, what, "an id that a float64 column holds exactly (below 2**53 in size; "
                "read large ids as text or int64)", df.shape[1], int(inexact.sum())))
        ok = np.isfinite(vals) & (vals == np.round(vals))
        if ok.all():
            return vals.astype(np.int64)
        if integer:
            k = int(np.flatnonzero(~ok)[0])
            raise DataError(_bad_value_message(s, k, col, origin, what, "an integer id", df.shape[1], int((~ok).sum())))
        # mixed integral and fractional ids become text, the integral ones without ".0"
        return np.asarray([str(int(v)) if v == np.round(v) else repr(float(v)) for v in vals.tolist()], dtype=str)
    text = s.astype(str)
    empty = (text.str.strip() == "").to_numpy()
    if empty.any():
        k = int(np.flatnonzero(empty)[0])
        raise DataError(_bad_value_message(s, k, col, origin, what, "an id", df.shape[1], int(empty.sum())))
    nums = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(nums) & (nums == np.round(nums)) & (np.abs(nums) < 2**53)
    if ok.all():
        return nums.astype(np.int64)
    if integer:
        k = int(np.flatnonzero(~ok)[0])
        raise DataError(_bad_value_message(s, k, col, origin, what, "an integer id", df.shape[1], int((~ok).sum())))
    return np.asarray(text.str.strip().to_numpy(), dtype=str)


def _is_missing(value) -> bool:
    if isinstance(value, str):
        return value.strip() == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _bad_value_message(s: pd.Series, k: int, col: str, origin: Origin, what: str, expected: str, n_fields, n_bad) -> str:
    value = s.iloc[k]
    more = f" ({n_bad} bad values in column {col!r})" if n_bad > 1 else ""
    if _is_missing(value):
        return (
            f"{origin.where(k)}: {what} (column {col!r}) is missing; expected {expected}"
            + _field_count_note(origin, k, n_fields)
            + more
        )
    return f"{origin.where(k)}: {what} {value!r} (column {col!r}) is not {expected}{more}"


def check_levels(values: np.ndarray, levels, origin: Origin, what: str = "rating") -> np.ndarray:
    """Sorted float64 levels (inferred from ``values`` when None); DataError at the first value
    outside them, or at the first value a float32 cannot hold (the ratings are stored as float32)."""
    big = np.abs(values) > np.finfo(np.float32).max
    if big.any():
        k = int(np.flatnonzero(big)[0])
        raise DataError(f"{origin.where(k)}: {what} {format_value(values[k])} is too large; expected a rating "
                        f"a float32 holds (below 3.4e38 in size)")
    if levels is None:
        return sorted_unique(values)
    lv = np.asarray(levels, dtype=np.float64).ravel()
    if lv.size == 0 or not np.all(np.isfinite(lv)) or np.any(np.diff(lv) <= 0):
        raise DataError(
            f"levels {list(np.asarray(levels).ravel())} must be finite, sorted ascending and distinct"
        )
    ok = np.isin(values, lv)
    if not ok.all():
        k = int(np.flatnonzero(~ok)[0])
        n_bad = int((~ok).sum())
        more = f" ({n_bad} ratings are outside the levels)" if n_bad > 1 else ""
        raise DataError(
            f"{origin.where(k)}: {what} {format_value(values[k])} is not one of the allowed levels "
            f"{format_levels(lv)}{more}"
        )
    return lv
