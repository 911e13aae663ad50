"""The n best-scored items of each row, in one pass over the scores (Numba)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Up to this n a row's best n are kept in a sorted buffer while the row is read once; beyond it the
# insertions would cost more than a partition.
MAX_BUFFERED = 256


@njit(parallel=True, cache=True)
def _best_rows(neg, n, out):
    P, n_items = neg.shape
    for r in prange(P):
        vals = np.empty(n, np.float32)
        idx = np.empty(n, np.int64)
        count = 0
        for i in range(n_items):
            v = neg[r, i]
            if not np.isfinite(v):
                continue
            if count == n and v >= vals[n - 1]:  # an equal score with a lower index is already in
                continue
            j = count if count < n else n - 1
            while j > 0 and vals[j - 1] > v:
                vals[j] = vals[j - 1]
                idx[j] = idx[j - 1]
                j -= 1
            vals[j] = v
            idx[j] = i
            if count < n:
                count += 1
        for j in range(count):
            out[r, j] = idx[j]


def best_items(neg, n):
    """int64[P, min(n, n_items)]: each row's item indices by ascending `neg` (negated scores, so best
    first), ties by the lower index; entries that are not finite (excluded items) never appear, and
    a row with fewer finite entries is padded with -1."""
    neg = np.ascontiguousarray(neg, dtype=np.float32)
    P, n_items = neg.shape
    width = min(int(n), n_items)
    out = np.full((P, width), -1, dtype=np.int64)
    if width == 0:
        return out
    if width <= MAX_BUFFERED:
        _best_rows(neg, width, out)
        return out
    # every item up to the width-th smallest value, so that ties at the cut go by index too
    finite = np.where(np.isfinite(neg), neg, np.inf)  # excluded entries never set the cut
    cut = np.partition(finite, width - 1, axis=1)[:, width - 1]
    cut[np.isnan(cut)] = np.inf  # NaNs sort last: fewer than width other entries, all candidates
    for r in range(P):
        cand = np.flatnonzero((neg[r] <= cut[r]) & np.isfinite(neg[r]))
        cand = cand[np.lexsort((cand, neg[r, cand]))][:width]
        out[r, :len(cand)] = cand
    return out
