"""Choosing tokens under speculative decoding: the target's distribution and the acceptance rules.

The distribution is what the plain sampler chain gives (`hypura_llama.Sampler`: top-k → top-p → min-p →
temperature → sample), computed in numpy over the surviving candidates, listed in ascending token id.
Every random draw is keyed by (seed, position, purpose), so the token at a position depends on the seed,
that position's logits and the draft's proposal there — not on how many tokens the last passes drafted:

- greedy: the target's argmax (first maximum); a draft is accepted when it equals it.
- a point-mass draft (prompt lookup) at temperature > 0: the token is the inverse-CDF sample of the target's
  distribution at the position's uniform, and the draft is accepted when it equals it. That accepts the draft
  with probability p(d) and otherwise gives p without d renormalised — Leviathan et al.'s rule for q = δ_d,
  with an output that does not even depend on the draft.
- a model draft (distribution q) at temperature > 0: Leviathan et al. / Chen et al.: accept d with probability
  min(1, p(d) / q(d)), else sample the residual max(0, p - q) renormalised. The emitted token is distributed
  exactly as p.
"""
from __future__ import annotations

import os

import numpy as np

from .generation import SamplingOptions

Distribution = tuple[np.ndarray, np.ndarray]   # (token ids ascending, probabilities summing to 1)

_DRAFT, _ACCEPT, _RESIDUAL, _PLAIN = 1, 2, 3, 4   # purposes of a position's random draws


def distribution(logits: np.ndarray, s: SamplingOptions) -> Distribution:
    """The target's distribution at temperature > 0: top-k, then top-p and min-p on the softmax of what is
    left (as llama.cpp's chain computes them, before the temperature), then the temperature."""
    x = np.asarray(logits)                                  # float32: no copy of a 262k-entry row
    n = x.shape[0]
    ids = top_k_ids(x, s.top_k) if 0 < s.top_k < n else np.arange(n)
    lg = x[ids].astype(np.float64)
    order = np.lexsort((ids, -lg))                          # descending logit, ties by id
    ids, lg = ids[order], lg[order]
    if 0.0 < s.top_p < 1.0 or s.min_p > 0.0:
        p = np.exp(lg - lg[0])
        p /= p.sum()
        keep = len(ids)
        if 0.0 < s.top_p < 1.0:
            keep = min(keep, int(np.searchsorted(np.cumsum(p), s.top_p)) + 1)
        if s.min_p > 0.0:
            keep = min(keep, max(1, int(np.count_nonzero(p >= s.min_p * p[0]))))
        ids, lg = ids[:keep], lg[:keep]
    w = np.exp((lg - lg[0]) / s.temperature)
    order = np.argsort(ids)
    return ids[order], w[order] / w.sum()


def top_k_ids(x: np.ndarray, k: int, block: int = 256) -> np.ndarray:
    """The ids of the `k` largest entries of `x` (in no order; which of several equal values at the k-th place
    is kept is unspecified). For a vocabulary-sized row: the k-th largest of the blocks' maxima bounds the
    k-th largest entry from below, so only the few entries at or above it are partitioned (0.3 ms → ~0.05 ms
    on 262k logits: a token's sampling cost next to a 20 ms pass)."""
    n = x.shape[0]
    nb = n // block
    if nb > 4 * k:
        maxima = x[:nb * block].reshape(nb, block).max(axis=1)
        bound = np.partition(maxima, nb - k)[nb - k]        # >= k entries of x are at least this
        cand = np.flatnonzero(x >= bound)
        return cand[np.argpartition(x[cand], len(cand) - k)[len(cand) - k:]]
    return np.argpartition(x, n - k)[n - k:]


def _rng(seed: int, pos: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, pos, purpose])


def _inverse_cdf(dist: Distribution, u: float) -> int:
    ids, p = dist
    c = np.cumsum(p)
    return int(ids[min(int(np.searchsorted(c, u * c[-1], side="right")), len(ids) - 1)])


def prob_of(dist: Distribution, token: int) -> float:
    ids, p = dist
    i = int(np.searchsorted(ids, token))
    return float(p[i]) if i < len(ids) and ids[i] == token else 0.0


class TokenChooser:
    """Chooses the emitted tokens of one generation (greedy or seeded sampling) and the draft model's tokens."""

    def __init__(self, s: SamplingOptions) -> None:
        self.s = s
        self.greedy = s.greedy
        self.seed = s.seed if s.seed != 0xFFFFFFFF else int.from_bytes(os.urandom(4), "little")

    def target(self, logits: np.ndarray, pos: int, draft: int | None = None,
               q: Distribution | None = None) -> int:
        """The token at `pos` from the target's logits there, given the draft's proposal (token, and its
        distribution for a model draft); the draft is accepted iff the returned token equals it."""
        if self.greedy:
            return int(np.argmax(logits))
        p = distribution(logits, self.s)
        if draft is None or q is None:    # no draft, or a point mass: the position's inverse-CDF sample
            return _inverse_cdf(p, _rng(self.seed, pos, _PLAIN).random())
        return leviathan(p, q, draft, _rng(self.seed, pos, _ACCEPT))

    def draft(self, logits: np.ndarray, pos: int) -> tuple[int, Distribution | None]:
        """A draft model's token at `pos` and the distribution it was drawn from (same settings as the target)."""
        if self.greedy:
            return int(np.argmax(logits)), None
        q = distribution(logits, self.s)
        return _inverse_cdf(q, _rng(self.seed, pos, _DRAFT).random()), q


def leviathan(p: Distribution, q: Distribution, d: int, rng: np.random.Generator) -> int:
    """Accept draft `d` (drawn from q) with probability min(1, p(d)/q(d)); else a sample of max(0, p - q)."""
    pd, qd = prob_of(p, d), prob_of(q, d)
    u, w = rng.random(), rng.random()
    if qd <= 0.0 or u * qd < pd:
        return d if qd > 0.0 else _inverse_cdf(p, w)
    ids = np.union1d(p[0], q[0])
    pp = np.zeros(len(ids))
    qq = np.zeros(len(ids))
    pp[np.searchsorted(ids, p[0])] = p[1]
    qq[np.searchsorted(ids, q[0])] = q[1]
    r = np.maximum(pp - qq, 0.0)
    if r.sum() <= 0.0:                # p == q up to rounding: nothing to correct
        return _inverse_cdf(p, w)
    return _inverse_cdf((ids, r / r.sum()), w)
