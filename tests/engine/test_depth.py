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


def test_t1_is_measured_while_drafting_so_an_expert_streaming_cost_turns_it_off():
    """Expert streaming: a pass of 2 tokens costs 1.56 passes of 1 (the union of their experts: measured on the
    qwen3-30b-a3b shape). At 40% acceptance one draft buys 1.4 / 1.56 = 0.9x plain decoding, so drafting must go
    off. The prior's slope alone (t(1) guessed from t(2) as t(2) / 1.25) would keep it on; measuring t(1) with a
    few plain passes while drafting turns it off, and the passes per chosen depth are reported."""
    p = DepthPolicy(k_max=1, mode="expert-stream")
    cost = {1: 0.100, 2: 0.156}
    depths = []
    for i in range(120):
        k = p.depth(room=100)
        depths.append(k)
        p.record_pass(k + 1, cost[k + 1])
        if k:
            p.record_drafts(1, 1 if i % 5 in (0, 2) else 0)    # 2 of 5 accepted
    assert len(p._recent[1]) >= 3 and abs(p.t(1) - 0.100) < 1e-9
    assert sum(depths[60:]) <= 3                                  # off, but for rare probes
    assert p.summary()["depths"] == {0: depths.count(0), 1: depths.count(1)}


def test_plain_passes_for_t1_cost_little_where_drafting_pays():
    p = DepthPolicy(k_max=4, mode="dense-stream")
    depths = run(p, lambda n: 0.100 + 0.001 * n, accept=1.0, passes=60)
    assert depths.count(0) == 3 and depths[-20:] == [4] * 20     # three measurements of t(1), then deep


def test_no_probes_once_a_drafted_token_costs_a_whole_pass():
    """A draft model as slow as the target (its probe also catches it up on the context): after the first
    probes measured that, drafting stays off without probing again."""
    p = DepthPolicy(k_max=4, mode="resident")
    depths = []
    for _ in range(300):
        k = p.depth(room=100)
        depths.append(k)
        p.record_pass(k + 1, 0.020 * (1 + 0.2 * k))
        if k:
            p.record_drafts(k, k, draft_seconds=0.030 * k)        # accepted, but 30 ms a drafted token
    assert p.draft_never_pays() and sum(depths[20:]) == 0
    cheap = DepthPolicy(k_max=4, mode="resident")
    run(cheap, lambda n: 0.010 * n, accept=0.5, passes=200)
    assert cheap.probes >= 3 and not cheap.draft_never_pays()  # a cheap draft keeps being probed
