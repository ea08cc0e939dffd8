"""How many tokens to draft: from the measured acceptance rate and the measured cost of a pass of n tokens.

With per-token acceptance α (a draft token is accepted given that the ones before it were), a pass of
k drafted tokens emits E(k) = 1 + α + … + α^k tokens on average and costs t(k + 1) + k·c (t(n): the target's
pass of n tokens, c: drafting one token). The depth maximises E(k) / cost over 0..k_max; k = 0 is plain
decoding, so drafting turns itself off where it does not pay. t(n) is measured on every pass (a running
mean per n); an unmeasured n is extrapolated from the measured ones with the mode's prior slope (dense
streaming reads the same weights for any n: nearly flat; resident decoding computes n times the matmuls).
While off, a probe pass of one draft now and then (ever rarer while it keeps not paying) re-measures α.
"""
from __future__ import annotations

# t(n) / t(1) - 1 per extra token before anything is measured
PRIOR_SLOPE = {"resident": 0.35, "dense-stream": 0.05, "expert-stream": 0.25}


class DepthPolicy:
    def __init__(self, k_max: int, mode: str = "resident", decay: float = 0.9, fixed: int | None = None) -> None:
        self.k_max = max(0, k_max)
        self.fixed = fixed                     # a fixed depth (measurements, tests): no choice made
        self.slope = PRIOR_SLOPE.get(mode, 0.35)
        self.decay = decay
        self._t: dict[int, float] = {}         # n -> running mean of a pass of n tokens (seconds)
        self._nt: dict[int, int] = {}
        self.accepted = 1.0                    # decayed counts (a prior of one accept, one reject)
        self.rejected = 1.0
        self.draft_cost = 0.0                  # seconds per drafted token (running mean)
        self._off = 0                          # passes since drafting was last chosen or probed
        self._probe_every = 8
        self.probes = 0

    # -- measurements ---------------------------------------------------------------------
    def record_pass(self, n: int, seconds: float) -> None:
        c = self._nt.get(n, 0)
        w = 1.0 / (c + 1) if c < 16 else 1.0 / 16   # mean of the first 16, then a running mean
        self._t[n] = seconds if c == 0 else self._t[n] + w * (seconds - self._t[n])
        self._nt[n] = c + 1

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
        """The cost of a pass of n tokens: measured, else extrapolated (None before any pass)."""
        if n in self._t:
            return self._t[n]
        if not self._t:
            return None
        known = sorted(self._t)
        if n < known[0]:                         # below every measured n: the prior's slope
            return self._t[known[0]] * (1 + self.slope * (n - 1)) / (1 + self.slope * (known[0] - 1))
        lo = max(m for m in known if m < n)
        hi = min((m for m in known if m > n), default=None)
        if hi is not None:                       # interpolate
            return self._t[lo] + (self._t[hi] - self._t[lo]) * (n - lo) / (hi - lo)
        base = self._t[known[0]] / (1 + self.slope * (known[0] - 1))
        per = self.slope * base                  # above: the measured slope, never below the prior's
        if len(known) >= 2:
            a, b = known[-2], known[-1]
            per = max((self._t[b] - self._t[a]) / (b - a), per)
        return self._t[lo] + per * (n - lo)

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
            return k
        self._off += 1
        if self._off >= self._probe_every and room > 0:
            self._off = 0
            self._probe_every = min(self._probe_every * 2, 256)
            self.probes += 1
            return 1
        return 0

    def summary(self) -> dict:
        """alpha, probes, t_ms (measured pass times by batch size) and t_rel (÷ t(1), where t(1) was measured)."""
        base = self._t.get(1)
        return {"alpha": round(self.alpha, 4), "probes": self.probes,
                "t_ms": {n: round(self._t[n] * 1e3, 3) for n in sorted(self._t)},
                "t_rel": {n: round(self._t[n] / base, 3) for n in sorted(self._t)} if base else {}}
