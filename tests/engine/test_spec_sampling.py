"""Speculative sampling keeps the target's distribution: the acceptance rules checked by chi-square tests that
can fail (a negative control: emitting the draft's own token is detected), the candidate set as llama.cpp's
chain computes it, and — on a real synthetic model through the runner — the joint distribution of the first
three generated tokens with a model draft against the exact one enumerated from the target's logits."""
from __future__ import annotations

import numpy as np
import pytest

from hypura_engine import GenerateOptions, LoadOptions, Runner, SamplingOptions
from hypura_engine.spec_sampling import TokenChooser, _inverse_cdf, distribution, leviathan, prob_of
from hypura_synthetic import write_synthetic


def chi2_ok(counts: np.ndarray, probs: np.ndarray, z: float = 3.29) -> bool:
    """Pearson's chi-square at about p = 0.0005 (Wilson–Hilferty), cells with < 5 expected merged."""
    n = counts.sum()
    exp = probs * n
    small = exp < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(exp[~small], exp[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    df = len(exp) - 1
    stat = float(((obs - exp) ** 2 / exp).sum())
    crit = df * (1 - 2 / (9 * df) + z * np.sqrt(2 / (9 * df))) ** 3
    return stat < crit


P = (np.arange(6), np.array([0.30, 0.25, 0.20, 0.15, 0.07, 0.03]))
Q = (np.array([0, 1, 2, 3, 4, 6]), np.array([0.05, 0.10, 0.40, 0.05, 0.30, 0.10]))   # token 6: not in p
N = 20000


def test_leviathan_emits_the_target_distribution_and_the_check_can_fail():
    rng = np.random.default_rng(0)
    out, drafts = np.zeros(7), np.zeros(7)
    accepted = 0
    for _ in range(N):
        d = _inverse_cdf(Q, rng.random())
        x = leviathan(P, Q, d, rng)
        out[x] += 1
        drafts[d] += 1
        accepted += x == d
    assert out[6] == 0 and chi2_ok(out[:6], P[1])
    # acceptance is sum(min(p, q)) = 0.05 + 0.10 + 0.20 + 0.05 + 0.07 = 0.47
    assert abs(accepted / N - 0.47) < 0.015
    assert not chi2_ok(drafts[:6], P[1])      # negative control: emitting the drafts (q) fails the same test


def test_a_point_mass_draft_is_accepted_with_probability_p_and_the_rest_is_p_without_it():
    chooser = TokenChooser(SamplingOptions(temperature=1.0, top_k=0, top_p=1.0, seed=5))
    logits = np.log(np.array([0.30, 0.25, 0.20, 0.15, 0.07, 0.03]))
    counts, accepted = np.zeros(6), 0
    for pos in range(N):
        x = chooser.target(logits, pos, draft=2, q=None)
        counts[x] += 1
        accepted += x == 2
    assert abs(accepted / N - 0.20) < 0.015 and chi2_ok(counts, P[1])
    again = [chooser.target(logits, pos, draft=2, q=None) for pos in range(50)]
    assert again == [chooser.target(logits, pos) for pos in range(50)]     # the draft does not move the sample


def test_the_candidate_set_follows_llama_cpps_chain():
    logits = np.log(np.array([0.05, 0.40, 0.25, 0.20, 0.10]))
    ids, p = distribution(logits, SamplingOptions(temperature=1.0, top_k=3, top_p=1.0))
    assert ids.tolist() == [1, 2, 3] and np.allclose(p, np.array([0.40, 0.25, 0.20]) / 0.85)
    ids, p = distribution(logits, SamplingOptions(temperature=1.0, top_k=0, top_p=0.6))   # 0.40 + 0.25 >= 0.6
    assert ids.tolist() == [1, 2]
    ids, p = distribution(logits, SamplingOptions(temperature=1.0, top_k=0, top_p=1.0, min_p=0.5))
    assert ids.tolist() == [1, 2, 3]                                   # p >= 0.5 * 0.40
    ids, p = distribution(logits, SamplingOptions(temperature=0.5, top_k=2, top_p=1.0))
    assert np.allclose(p, np.array([0.40, 0.25]) ** 2 / (0.40 ** 2 + 0.25 ** 2))
    assert prob_of((ids, p), 4) == 0.0


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A synthetic target and its draft: the same file with output_norm scaled by 0.3 — the draft's logits are
    the target's at another temperature, so the two agree on the candidates and differ in probabilities."""
    import shutil

    from gguf import GGUFReader

    d = tmp_path_factory.mktemp("specsample")
    target = write_synthetic(d / "target.gguf", "llama3-70b", qtype="Q4_0", layers=2, scale=16, vocab=512)
    draft = d / "draft.gguf"
    shutil.copyfile(target, draft)
    t = next(t for t in GGUFReader(target).tensors if t.name == "output_norm.weight")
    with open(draft, "r+b") as f:
        f.seek(t.data_offset)
        f.write((np.asarray(t.data, dtype=np.float32) * 0.3).tobytes())
    return target, draft


def _exact_joint(runner, prompt, s):
    """{(x1, x2, x3): probability} from the target's own single-token logits."""
    ctx = runner.ctx
    out = {}

    def dist_after(tokens):
        ctx.clear()
        ctx.decode(tokens, 0)
        return distribution(ctx.logits().copy(), s)

    d1 = dist_after(prompt)
    for a, pa in zip(*d1):
        d2 = dist_after(prompt + [int(a)])
        for b, pb in zip(*d2):
            d3 = dist_after(prompt + [int(a), int(b)])
            for c, pc in zip(*d3):
                out[int(a), int(b), int(c)] = pa * pb * pc
    ctx.clear()
    runner.cached = []
    return out


def test_sampling_with_a_model_draft_keeps_the_targets_joint_distribution(models):
    target, draft = models
    s = SamplingOptions(temperature=0.5, top_k=3, top_p=1.0)
    runner = Runner(target, LoadOptions(mode="resident", ctx=128, n_threads=1, draft=str(draft), draft_depth=2))
    try:
        prompt = runner.tokenize("a b c d a b")
        joint = _exact_joint(runner, prompt, s)
        cells = {k: i for i, k in enumerate(joint)}
        counts = np.zeros(len(cells) + 1)
        drafted = accepted = 0
        for seed in range(2000):
            s.seed = seed
            res = list(runner.generate(prompt, GenerateOptions(num_predict=3, sampling=s)))[-1]
            counts[cells.get(tuple(res.tokens), len(cells))] += 1
            drafted += res.speculative["drafted"]
            accepted += res.speculative["accepted"]
    finally:
        runner.close()
    assert counts[-1] == 0                              # nothing outside the target's candidates
    assert drafted > accepted > drafted // 4            # both the acceptance and the residual path ran
    assert chi2_ok(counts[:-1], np.array(list(joint.values())))


def test_top_k_ids_are_the_k_largest_on_vocabulary_rows_with_ties_and_infinities():
    from hypura_engine.spec_sampling import top_k_ids

    rng = np.random.default_rng(7)
    for n, k in ((262144, 40), (262144, 1), (151936, 64), (32000, 40), (1000, 40), (300, 200)):
        for row in (rng.standard_normal(n, dtype=np.float32),
                    np.round(rng.standard_normal(n) * 4).astype(np.float32),       # many ties
                    np.where(rng.random(n) < 0.99, -np.inf, rng.standard_normal(n)).astype(np.float32)):
            ids = top_k_ids(row, k)
            assert len(ids) == k == len(set(ids.tolist()))
            kth = np.sort(row)[n - k]
            assert (row[ids] >= kth).all() and np.count_nonzero(row > kth) <= k
