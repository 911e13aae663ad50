"""Training curves: ``plot_history(model.history_, "curves.png")`` (matplotlib, the ``plot`` extra).

Two panels over the epochs: train and validation RMSE, and the free-energy gap
F(validation) - F(training) of the validation users (Hinton's overfitting check: a gap that keeps
growing means the model is fitting the training ratings at the cost of held-out ones).  Without
validation data the second panel shows the mean free energy of the training users instead.
Epochs where the number of CD steps changes are marked with dotted lines.
"""

from __future__ import annotations

import os

import numpy as np


def _column(history, key):
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in history], dtype=np.float64)


def plot_history(history, path, title=None):
    """Draw the training curves of `history` (RBM.history_: dicts with epoch, train_rmse,
    valid_rmse, free_energy_train, free_energy_valid, seconds, cd_steps; valid values may be None)
    into an image file `path` (format from the extension: .png, .pdf, .svg).  Returns the path."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plotting needs matplotlib: pip install 'rbm_cuda[plot]'") from None
    history = list(history or [])
    if not history:
        raise ValueError("the training history is empty: nothing to plot")
    path = os.fspath(path)
    epoch = np.array([r.get("epoch", k + 1) for k, r in enumerate(history)], dtype=np.float64)
    train, valid = _column(history, "train_rmse"), _column(history, "valid_rmse")
    fe_train, fe_valid = _column(history, "free_energy_train"), _column(history, "free_energy_valid")
    has_valid = bool(np.isfinite(valid).any())
    has_gap = bool(np.isfinite(fe_valid).any())

    fig = Figure(figsize=(7.5, 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    marker = "o" if len(epoch) <= 30 else None
    ax1.plot(epoch, train, marker=marker, ms=3, label="train")
    if has_valid:
        best = int(np.nanargmin(valid))
        ax1.plot(epoch, valid, marker=marker, ms=3, label=f"validation (best {valid[best]:.4f}, epoch {epoch[best]:g})")
        ax1.plot([epoch[best]], [valid[best]], "o", ms=8, mfc="none", color="tab:orange")
    ax1.set_ylabel("RMSE")
    ax1.set_title(title or "RBM training curves")
    ax1.legend(loc="best")
    ax1.grid(alpha=0.3)

    if has_gap:
        gap = fe_valid - fe_train
        ax2.plot(epoch, gap, marker=marker, ms=3, color="tab:red", label="F(validation) - F(train)")
        if np.nanmin(gap) <= 0.0 <= np.nanmax(gap):
            ax2.axhline(0.0, color="0.5", lw=0.8)
        ax2.set_ylabel("free-energy gap (nats)")
        ax2.legend(loc="best")
    else:
        ax2.plot(epoch, fe_train, marker=marker, ms=3, color="tab:red", label="mean F(train)")
        ax2.set_ylabel("free energy (nats)")
        ax2.legend(loc="best", title="no validation data")
    ax2.set_xlabel("epoch")
    ax2.grid(alpha=0.3)

    # CD steps: labelled on a top axis at the first epoch and wherever they change
    steps = [r.get("cd_steps") for r in history]
    marks = [k for k in range(len(history)) if steps[k] is not None and (k == 0 or steps[k] != steps[k - 1])]
    if marks:
        top = ax1.secondary_xaxis("top")
        top.set_xticks([epoch[k] for k in marks], [f"CD-{steps[k]}" for k in marks], fontsize=8, color="0.3")
        for k in marks[1:]:
            for ax in (ax1, ax2):
                ax.axvline(epoch[k] - 0.5, color="0.4", ls=":", lw=1)
    if len(epoch) and float(np.max(epoch)) - float(np.min(epoch)) < 20:
        ax2.set_xticks(epoch)
    total = sum(float(r.get("seconds") or 0.0) for r in history)
    fig.text(0.99, 0.003, f"{len(history)} epochs, {total:.1f} s", ha="right", va="bottom", fontsize=7, color="0.4")
    fig.savefig(path, dpi=110)
    return path
