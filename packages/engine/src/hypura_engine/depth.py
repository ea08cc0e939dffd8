"""How many tokens to draft: from the measured acceptance rate and the measured cost of a pass of n tokens.

With per-token acceptance α (a draft token is accepted given that the ones before it were), a pass of
k drafted tokens emits E(k) = 1 + α + … + α^k tokens on average and costs t(k + 1) + k·c (t(n): the target's
pass of n tokens, c: drafting one token). The depth maximises E(k) / cost over 0..k_max; k = 0 is plain
decoding, so drafting turns itself off where it does not pay. t(n) is measured on every pass (the median of
the last passes per n); an unmeasured n is extrapolated from the measured ones with the mode's prior slope
(dense streaming reads the same weights for any n: nearly flat; resident decoding computes n times the
matmuls; expert streaming reads the union of the n tokens' experts). While off, a probe pass of one draft now
and then (ever rarer while it keeps not paying) re-measures α. While on, t(1) — the cost drafting is weighed
against — is measured too: until it was measured MEASURE_T1 times, every T1_EVERY-th pass is a plain one (a
prior's guess of t(1) from t(2) alone kept drafting on where expert streaming's t(2) / t(1) is 1.56 and a pass of
one draft bought less than plain decoding).
"""
from __future__ import annotations

import statistics
from collections import Counter, deque

# t(n) / t(1) - 1 per extra token before anything is measured
PRIOR_SLOPE = {"resident": 0.35, "dense-stream": 0.05, "expert-stream": 0.25}
MEASURE_T1 = 3     # plain passes measured while drafting, so that t(1) is a measurement, not the prior's guess
T1_EVERY = 8       # at most one such pass in this many


class DepthPolicy:
    def __init__(self, k_max: int, mode: str = "resident", decay: float = 0.9, fixed: int | None = None) -> None:
        self.k_max = max(0, k_max)
        self.fixed = fixed                     # a fixed depth (measurements, tests): no choice made
        self.slope = PRIOR_SLOPE.get(mode, 0.35)
        self.decay = decay
        self._t: dict[int, float] = {}         # n -> median of the last passes of n tokens (seconds)
        self._recent: dict[int, deque[float]] = {}
        self.accepted = 1.0                    # decayed counts (a prior of one accept, one reject)
        self.rejected = 1.0
        self.draft_cost = 0.0                  # seconds per drafted token (running mean)
        self._off = 0                          # passes since drafting was last chosen or probed
        self._probe_every = 8
        self.probes = 0
        self._since_plain = 0                  # drafting passes since the last plain one
        self.verified: Counter[int] = Counter()  # drafts verified in a pass -> passes (a drafter may propose
                                                 # fewer than the depth: prompt lookup without a match, none)

    # -- measurements ---------------------------------------------------------------------
    def record_pass(self, n: int, seconds: float) -> None:
        """A pass of n tokens took `seconds`: t(n) is the median of the last 9 (one slow pass, a page fault or
        another process on the cores, does not decide the depth for the rest of the run)."""
        q = self._recent.setdefault(n, deque(maxlen=9))
        q.append(seconds)
        self.verified[n - 1] += 1
        self._t[n] = statistics.median(q)

    def record_drafts(self, drafted: int, accepted: int, draft_seconds: float = 0.0) -> None:
        """One pass: `accepted` of `drafted` tokens (a rejection ended the run if accepted < drafted)."""
        if drafted <= 0:
            return
        d = self.decay ** drafted
        self.accepted = self.accepted * d + accepted
        self.rejected = self.rejected * d + (1 if accepted < drafted else 0)
        per = draft_seconds / drafted
        self.draft_cost = per if self.draft_cost == 0.0 else 0.8 * self.draft_cost + 0.2 * per

    @property
    def alpha(self) -> float:
        return self.accepted / (self.accepted + self.rejected)

    def t(self, n: int) -> float | None:
        """The cost of a pass of n tokens: measured (while fewer than 3 passes of n were, the lower of that and
        the estimate from the other sizes: an unlucky first pass gets measured again), else estimated."""
        if n in self._t:
            if len(self._recent[n]) >= 3 or len(self._t) == 1:
                return self._t[n]
            others = {m: v for m, v in self._t.items() if m != n}
            est = self._estimate(n, others)
            return min(self._t[n], est)
        if not self._t:
            return None
        return self._estimate(n, self._t)

    def _estimate(self, n: int, measured: dict[int, float]) -> float:
        """t(n) from the measured sizes: interpolated between them, the prior's slope below, the measured slope
        (never below the prior's) above."""
        known = sorted(measured)
        if n < known[0]:
            return measured[known[0]] * (1 + self.slope * (n - 1)) / (1 + self.slope * (known[0] - 1))
        lo = max(m for m in known if m < n)
        hi = min((m for m in known if m > n), default=None)
        if hi is not None:
            return measured[lo] + (measured[hi] - measured[lo]) * (n - lo) / (hi - lo)
        per = self.slope * measured[known[0]] / (1 + self.slope * (known[0] - 1))
        if len(known) >= 2:
            a, b = known[-2], known[-1]
            per = max((measured[b] - measured[a]) / (b - a), per)
        return measured[lo] + per * (n - lo)

    # -- the choice -----------------------------------------------------------------------
    def expected_rate(self, k: int) -> float | None:
        """Tokens per second with k drafts a pass (None before any pass was measured)."""
        t = self.t(k + 1)
        if t is None:
            return None
        a = self.alpha
        tokens = k + 1.0 if a >= 1.0 else (1.0 - a ** (k + 1)) / (1.0 - a)
        return tokens / (t + k * self.draft_cost)

    def best(self, room: int) -> int:
        """The depth that maximises expected tokens per second, at most `room` and k_max."""
        top = min(self.k_max, room)
        rates = [(self.expected_rate(k), k) for k in range(top + 1)]
        if top <= 0 or rates[0][0] is None:
            return min(1, top)                    # nothing measured yet: one draft measures both costs
        return max(rates, key=lambda r: (r[0], -r[1]))[1]

    def depth(self, room: int) -> int:
        """This pass's depth; counts off-passes and schedules the probes (doubling their interval, to 256)."""
        if self.fixed is not None:
            return max(0, min(self.fixed, room))
        k = self.best(room)
        if k > 0:
            self._off = 0
            self._probe_every = 8
            self._since_plain += 1
            if len(self._recent.get(1, ())) < MEASURE_T1 and self._since_plain >= T1_EVERY:
                self._since_plain = 0
                return 0                        # measure t(1): what drafting is weighed against
            return k
        self._since_plain = 0
        self._off += 1
        if self._off >= self._probe_every and room > 0 and not self.draft_never_pays():
            self._off = 0
            self._probe_every = min(self._probe_every * 2, 256)
            self.probes += 1
            return 1
        return 0

    def draft_never_pays(self) -> bool:
        """A drafted token costs at least a target pass of one token (a draft model about as slow as the target,
        or one that must first catch up on the context): no depth and no acceptance can pay, so no probes."""
        t1 = self.t(1)
        return t1 is not None and self.draft_cost >= t1

    def summary(self) -> dict:
        """alpha, probes, depths (passes per number of drafts they verified; 0: plain passes), t_ms (measured
        pass times by batch size) and t_rel (÷ t(1), where t(1) was measured)."""
        base = self._t.get(1)
        return {"alpha": round(self.alpha, 4), "probes": self.probes, "depths": dict(sorted(self.verified.items())),
                "t_ms": {n: round(self._t[n] * 1e3, 3) for n in sorted(self._t)},
                "t_rel": {n: round(self._t[n] / base, 3) for n in sorted(self._t)} if base else {}}
