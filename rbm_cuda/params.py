"""The RBM's hyper-parameters, their defaults, and their validation: all in one place."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, fields

VISIBLE_TYPES = ("softmax", "like", "bernoulli")
# Gibbs steps per update at most: each step is a pass over the batch, so more is never a useful setting.
MAX_CD_STEPS = 1000
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class RBMParams:
    n_hidden: int = 100
    visible: str = "softmax"
    like_threshold: float = 3.0
    cd_steps: object = 1
    learning_rate: float = 0.1
    momentum: float = 0.8
    initial_momentum: float = 0.5
    momentum_warmup: int = 5
    weight_decay: float = 0.003
    batch_size: int = 100
    epochs: int = 40
    average_epochs: int = 1
    seed: int = 0
    device: str = "auto"
    # Normalised form of cd_steps: ((first_epoch, T), ...), starting at epoch 0.
    schedule: tuple = field(default=(), repr=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("schedule")
        # keep the caller's form when JSON holds it as is; mappings become (first_epoch, T) pairs
        if not isinstance(self.cd_steps, (int, str)):
            d["cd_steps"] = [list(p) for p in self.schedule]
        return d

    def cd_at(self, epoch: int) -> int:
        """Gibbs steps T used in `epoch` (0-based)."""
        steps = self.schedule[0][1]
        for start, t in self.schedule:
            if epoch >= start:
                steps = t
        return steps

    def momentum_at(self, epoch: int) -> float:
        return self.initial_momentum if epoch < self.momentum_warmup else self.momentum


PARAM_NAMES = tuple(f.name for f in fields(RBMParams) if f.name != "schedule")


def parse_cd_schedule(spec) -> tuple:
    """cd_steps as an int T, a mapping {first_epoch: T}, a sequence of (first_epoch, T) pairs, or a
    string "1,3@15,5@25" (T=1 from epoch 0, 3 from epoch 15, 5 from epoch 25)."""
    if isinstance(spec, bool):
        raise ValueError(f"cd_steps must be a positive int or a schedule, got {spec!r}")
    if isinstance(spec, numbers.Integral):
        pairs = [(0, int(spec))]
    elif isinstance(spec, str):
        pairs = []
        for part in spec.replace(" ", "").split(","):
            t, _, start = part.partition("@")
            try:
                pairs.append((int(start) if start else 0, int(t)))
            except ValueError:
                raise ValueError(
                    f"cd_steps {spec!r}: cannot read {part!r}; expected 'T' or 'T@first_epoch', e.g. '1,3@15,5@25'"
                ) from None
    elif isinstance(spec, dict):
        pairs = [(_whole(k, spec), _whole(v, spec)) for k, v in spec.items()]
    else:
        try:
            raw = [(a, b) for a, b in spec]
        except (TypeError, ValueError):
            raise ValueError(
                f"cd_steps must be an int, a dict {{first_epoch: T}}, (first_epoch, T) pairs or a string like "
                f"'1,3@15', got {spec!r}"
            ) from None
        pairs = [(_whole(a, spec), _whole(b, spec)) for a, b in raw]
    pairs.sort()
    if not pairs or pairs[0][0] != 0:
        raise ValueError(f"cd_steps schedule {spec!r} must say how many steps to use from epoch 0")
    for start, t in pairs:
        if t < 1 or start < 0:
            raise ValueError(f"cd_steps schedule {spec!r}: steps must be >= 1 and epochs >= 0")
        if t > MAX_CD_STEPS:
            raise ValueError(f"cd_steps schedule {spec!r}: {t} Gibbs steps per update is more than the "
                             f"{MAX_CD_STEPS} allowed")
    if len({s for s, _ in pairs}) != len(pairs):
        raise ValueError(f"cd_steps schedule {spec!r} names an epoch twice")
    return tuple(pairs)


def _whole(x, spec) -> int:
    """An int from an int or a string of digits; 2.7 is refused, never truncated."""
    if isinstance(x, bool) or not (isinstance(x, numbers.Integral) or (isinstance(x, str) and x.strip().isdigit())):
        raise ValueError(f"cd_steps {spec!r}: {x!r} is not a whole number")
    return int(x)


def check_n(n) -> None:
    """How many items to return: an int >= 1 (True, 2.5, "5" and NaN are refused)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n={n!r} is not allowed: n must be an int >= 1")


def _check(cond: bool, name: str, value, allowed: str) -> None:
    if not cond:
        raise ValueError(f"{name}={value!r} is not allowed: {name} must be {allowed}")


def validate_params(**kw) -> RBMParams:
    """Build RBMParams from keyword arguments, raising ValueError that names the parameter, the value
    given and what is allowed."""
    unknown = set(kw) - set(PARAM_NAMES)
    if unknown:
        raise TypeError(f"unknown RBM parameter(s) {sorted(unknown)}; known: {', '.join(PARAM_NAMES)}")
    p = RBMParams(**kw)

    def is_int(x):
        return isinstance(x, numbers.Integral) and not isinstance(x, bool)

    def is_real(x):
        return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)

    _check(is_int(p.n_hidden) and p.n_hidden >= 1, "n_hidden", p.n_hidden, "an int >= 1")
    _check(p.visible in VISIBLE_TYPES, "visible", p.visible, f"one of {VISIBLE_TYPES}")
    _check(is_real(p.like_threshold), "like_threshold", p.like_threshold, "a finite number (ratings >= it are likes)")
    _check(is_real(p.learning_rate) and p.learning_rate > 0, "learning_rate", p.learning_rate, "a finite number > 0")
    _check(is_real(p.momentum) and 0 <= p.momentum < 1, "momentum", p.momentum, "in [0, 1)")
    _check(is_real(p.initial_momentum) and 0 <= p.initial_momentum < 1, "initial_momentum",
           p.initial_momentum, "in [0, 1)")
    _check(is_int(p.momentum_warmup) and p.momentum_warmup >= 0, "momentum_warmup", p.momentum_warmup,
           "an int >= 0 (epochs at initial_momentum)")
    _check(is_real(p.weight_decay) and p.weight_decay >= 0, "weight_decay", p.weight_decay, "a finite number >= 0")
    _check(is_int(p.batch_size) and p.batch_size >= 1, "batch_size", p.batch_size, "an int >= 1 (users per batch)")
    _check(is_int(p.epochs) and p.epochs >= 0, "epochs", p.epochs, "an int >= 0")
    _check(is_int(p.average_epochs) and p.average_epochs >= 1, "average_epochs", p.average_epochs,
           "an int >= 1 (the last epochs whose weights fit averages)")
    _check(is_int(p.seed) and 0 <= p.seed < 2**64, "seed", p.seed, "an int in [0, 2**64)")
    _check(p.device in DEVICES, "device", p.device, f"one of {DEVICES}")
    p.schedule = parse_cd_schedule(p.cd_steps)
    return p
