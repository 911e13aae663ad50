"""A PyTorch RBM in the style of the project's PyTorch seed (the well-known tutorial RBM): binary
like/dislike visible units (rating >= 3 is 1, below 0, unrated -1 and clamped to -1 during Gibbs
sampling), the whole users x items matrix as a dense float32 tensor, W of F x items drawn from
randn, CD-k with Bernoulli samples, and the seed's update W += (v0^T ph0 - vk^T phk)^T with no
learning rate.  The seed's recipe is CD-10 with batches of 100 users; the benchmark also runs it
with CD-1 / CD-5 and the benchmark's batch size to pair it with rbm_cuda.
"""

import numpy as np
import torch


class SeedRBM:
    def __init__(self, nv, nh=100, seed=0):
        torch.manual_seed(seed)
        self.W = torch.randn(nh, nv)
        self.a = torch.randn(1, nh)
        self.b = torch.randn(1, nv)

    def sample_h(self, x):
        wx = torch.mm(x, self.W.t())
        p_h_given_v = torch.sigmoid(wx + self.a.expand_as(wx))
        return p_h_given_v, torch.bernoulli(p_h_given_v)

    def sample_v(self, y):
        wy = torch.mm(y, self.W)
        p_v_given_h = torch.sigmoid(wy + self.b.expand_as(wy))
        return p_v_given_h, torch.bernoulli(p_v_given_h)

    def train(self, v0, vk, ph0, phk):
        self.W += (torch.mm(v0.t(), ph0) - torch.mm(vk.t(), phk)).t()
        self.b += torch.sum((v0 - vk), 0)
        self.a += torch.sum((ph0 - phk), 0)


def epoch(rbm, training_set, batch_size=100, cd_steps=10):
    """One epoch of the seed's training loop.  The seed's loop, range(0, nb_users - batch_size,
    batch_size), drops the last partial batch (with 943 users and batches of 1000 it trains on
    nothing); here every user is trained on, as in rbm_cuda's epoch."""
    nb_users = training_set.shape[0]
    for id_user in range(0, nb_users, batch_size):
        vk = training_set[id_user:id_user + batch_size].clone()
        v0 = training_set[id_user:id_user + batch_size]
        ph0, _ = rbm.sample_h(v0)
        for _ in range(cd_steps):
            _, hk = rbm.sample_h(vk)
            _, vk = rbm.sample_v(hk)
            vk[v0 < 0] = v0[v0 < 0]
        phk, _ = rbm.sample_h(vk)
        rbm.train(v0, vk, ph0, phk)


def like_tensor(csr):
    """users x items float32 tensor: 1 like (rating >= 3), 0 dislike, -1 unrated."""
    V = np.full(csr.shape, -1.0, dtype=np.float32)
    rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
    V[rows, csr.indices] = (csr.data >= 3).astype(np.float32)
    return torch.from_numpy(V)
