"""The depth policy on hand-made pass costs and acceptance: deep where passes are flat and drafts accepted,
off (with ever rarer probes) where a pass costs n times a token, an unlucky first measurement re-measured."""
from __future__ import annotations

from hypura_engine.depth import DepthPolicy


def run(policy: DepthPolicy, cost, accept: float, passes: int) -> list[int]:
    """Drive the policy: each pass of depth k costs cost(k + 1) and accepts the first round(accept * k) drafts."""
    depths = []
    for _ in range(passes):
        k = policy.depth(room=100)
        depths.append(k)
        policy.record_pass(k + 1, cost(k + 1))
        if k:
            ok = int(round(accept * k))
            policy.record_drafts(k, ok)
    return depths


def test_flat_passes_and_accepted_drafts_go_deep():
    p = DepthPolicy(k_max=8, mode="dense-stream")
    depths = run(p, lambda n: 0.100 + 0.001 * n, accept=1.0, passes=40)
    assert depths[-10:] == [8] * 10 and p.alpha > 0.9


def test_passes_that_cost_n_tokens_turn_drafting_off_with_rarer_probes():
    p = DepthPolicy(k_max=8, mode="resident")
    depths = run(p, lambda n: 0.010 * n, accept=0.5, passes=200)
    assert depths[-1] == 0 and sum(depths[50:]) <= 6          # off; a few probes of one draft
    probes = [i for i, k in enumerate(depths) if k and i > 10]
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    assert gaps == sorted(gaps) and gaps[-1] >= 32             # the probes' interval doubles
    assert p.best(room=100) == 0 and p.expected_rate(0) > p.expected_rate(1)


def test_expected_tokens_per_pass_follow_the_acceptance():
    p = DepthPolicy(k_max=4, mode="dense-stream")
    for _ in range(3):
        for n in range(1, 6):
            p.record_pass(n, 0.1)
    p.accepted, p.rejected = 3.0, 1.0                           # alpha = 0.75
    # flat cost: rate(k) = (1 - a^(k+1)) / (1 - a) / 0.1
    assert abs(p.expected_rate(2) - (1 + 0.75 + 0.75 ** 2) / 0.1) < 1e-9
    assert p.best(room=100) == 4 and p.best(room=2) == 2


def test_one_slow_first_pass_does_not_decide_the_rest():
    p = DepthPolicy(k_max=2, mode="dense-stream")
    p.record_pass(1, 0.050)
    p.record_pass(3, 0.055)
    p.record_pass(2, 1.200)                                     # another process had the cores
    assert p.t(2) < 0.06                                        # re-measured, not taken as the truth
    for _ in range(3):
        p.record_pass(2, 0.052)
    assert abs(p.t(2) - 0.052) < 1e-9
