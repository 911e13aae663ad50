"""rbm_cuda.topn.best_items against a full sort, with ties, excluded items and short rows."""

import numpy as np
import pytest

from rbm_cuda.topn import MAX_BUFFERED, best_items


def reference(neg, n):
    out = np.full((neg.shape[0], min(n, neg.shape[1])), -1, dtype=np.int64)
    for r, row in enumerate(neg):
        ok = np.flatnonzero(np.isfinite(row))
        order = ok[np.lexsort((ok, row[ok]))][:out.shape[1]]
        out[r, :len(order)] = order
    return out


@pytest.mark.parametrize("n", [1, 10, MAX_BUFFERED, MAX_BUFFERED + 1, 1000, 5000])
def test_best_items_is_a_full_sort_cut_at_n(n):
    rng = np.random.default_rng(n)
    neg = rng.integers(0, 50, size=(7, 3000)).astype(np.float32)  # many ties
    neg[rng.random(neg.shape) < 0.3] = np.inf  # excluded items
    neg[0, :2990] = np.inf  # a row with 10 candidates
    neg[1] = np.inf  # none
    neg[2, 5] = np.nan
    neg[3, :2000] = -np.inf  # a score of +inf is not a finite score either: excluded like the rest
    np.testing.assert_array_equal(best_items(neg, n), reference(neg, n))
