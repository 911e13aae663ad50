"""RBMEnsemble: RBMs of the same rows, each trained from its own seed, read as one model."""

from __future__ import annotations

import numpy as np

from .model import nearest_items

# Member k's seed is seed + k * this odd constant (mod 2**64): member 0 keeps the seed, and the
# members of nearby seeds (0, 1, 2, ...) do not coincide.
_SEED_STRIDE = 0x9E3779B97F4A7C15


def member_seed(seed, k):
    """The training seed of member k of an ensemble seeded with `seed`."""
    return (int(seed) + k * _SEED_STRIDE) % 2**64


class RBMEnsemble:
    """Fitted RBMs with the same parameters and training rows but different seeds; score_users is
    the mean of their scores.

    A single RBM's top-N list moves from seed to seed; the mean of a few is steadier and ranks
    better (docs/evaluation.md, "Levers").  The members hold the training rows once.

    members_ : list of fitted RBMs over the same rows and items, in seed order (member_seed).
    """

    def __init__(self, members):
        members = list(members)
        if not members:
            raise ValueError("an RBMEnsemble needs at least one fitted RBM")
        self.members_ = members

    def _share_rows(self):
        """The members read the first one's copy of the training rows (made when first scored, so
        that loading a model touches no device)."""
        first = self.members_[0]._device()
        for m in self.members_[1:]:
            if m._dev is None or m._dev["states"] is not first["states"]:
                m._share_rows(self.members_[0])

    def __len__(self):
        return len(self.members_)

    def __repr__(self):
        return f"RBMEnsemble({len(self)} x {self.members_[0]!r})"

    # What every member shares: read from the first.
    @property
    def params_(self):
        return self.members_[0].params_

    @property
    def train_(self):
        return self.members_[0].train_

    @property
    def epochs_done_(self):
        return self.members_[0].epochs_done_

    @property
    def backend_(self):
        return self.members_[0].backend_

    @property
    def history_(self):
        """Every member's per-epoch records, member after member."""
        return [r for m in self.members_ for r in m.history_]

    @property
    def W_(self):
        """The members' weights side by side: float32[n_items, K, len(self) * n_hidden]."""
        if len(self.members_) == 1:
            return self.members_[0].W_
        return np.concatenate([m.W_ for m in self.members_], axis=2)

    def score_users(self, users, *, X=None):
        """The mean of the members' RBM.score_users, float32[len(users), n_items]."""
        self._share_rows()
        out = self.members_[0].score_users(users, X=X)
        for m in self.members_[1:]:
            out += m.score_users(users, X=X)
        out /= np.float32(len(self.members_))
        return out

    def similar_items(self, item, *, n=10):
        """As RBM.similar_items, over the members' weights side by side (W_)."""
        return nearest_items(self.members_[0], self.W_, item, n)
