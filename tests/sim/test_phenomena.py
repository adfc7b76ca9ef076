"""`icl-kernel phenomena`: each kind end to end, and a property of each that a wrong implementation fails."""
import collections
import itertools
import json

import numpy as np
import pytest

from conftest import tiny_hmm
from scipy.stats import chisquare
from icl_kernel.cli import main
from simulate import phenomena as ph
from simulate.phenomena import labels as phl, ood as pho, retrieval as phr
from theory.hmm import input_tokens
from theory.reference import operator_product, predictive_by_enumeration

TINY = ["-P", "num_tasks=2", "-P", "num_states=4", "-P", "num_tokens=6", "--length", "2", "--num-labels", "2",
        "--grid", "1,2,4", "--seeds", "0", "--prompts", "5", "--kernels", "predictive gram", "--quiet"]
EXTRA = dict(retrieval=["--pool", "12"], labels=[], ood=["--lambdas", "0,1"])


def _cli(tmp_path, kind, *args):
    """Run the command on the tiny setting; a -P KEY=... in ``args`` replaces TINY's (a key given twice is refused)."""
    keys = {b.split("=")[0] for a, b in zip(args, args[1:]) if a == "-P"}
    tiny, i = [], 0
    while i < len(TINY):
        if TINY[i] == "-P" and TINY[i + 1].split("=")[0] in keys:
            i += 2
            continue
        tiny.append(TINY[i])
        i += 1
    return main(["phenomena", kind, "--runs-dir", str(tmp_path / "runs"), "--figures-dir", str(tmp_path / "fig"),
                 *tiny, *EXTRA[kind], *args])


@pytest.mark.parametrize("kind", ph.KINDS)
def test_cli_end_to_end(tmp_path, capsys, kind):
    assert _cli(tmp_path, kind) == 0
    out = capsys.readouterr().out
    run = tmp_path / "runs" / f"phen-{kind}"
    for f in ("config.json", "metrics.csv", "summary.json", "per_prompt.npz", "cells/seed_0.npz"):
        assert (run / f).exists(), f
    assert not list(run.rglob("*.tmp"))
    assert (tmp_path / "fig" / f"phen-{kind}.png").stat().st_size > 20000
    assert "run folder" in out
    s = json.loads((run / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))
    assert s["config"]["kind"] == kind and s["num_prompts"] == 5  # 5 prompts on 2 devices: padded
    conds = dict(retrieval=set(phr.SELECTIONS), labels={"original", "mapped"}, ood={"lambda=0", "lambda=1"})[kind]
    assert set(s["results"]) == conds
    for cond in conds:
        assert {"bayes", "predictive", "gram"} <= set(s["results"][cond])
        r = s["results"][cond]["predictive"]["l1_oracle"]
        assert [row["n"] for row in r] == [1, 2, 4] and all(row["lo"] <= row["mean"] <= row["hi"] for row in r)
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert rows[0] == "condition,estimator,metric,n,seed,mean" and len(rows) > 1 + 3 * len(conds)
    with np.load(run / "per_prompt.npz") as z:  # prompt axis first: [P, G] metrics, [P] side arrays
        assert z[f"metric|{sorted(conds)[0]}|predictive|l1_oracle"].shape == (5, 3)
        assert all(z[k].shape[0] == 5 for k in z.files) and any(k.startswith("metric|") for k in z.files)
    # the same name with another config is refused (nothing changed), and --overwrite replaces it
    before = (run / "summary.json").read_bytes()
    assert _cli(tmp_path, kind, "--kernels", "belief") == 2
    assert "another config" in capsys.readouterr().err
    assert (run / "summary.json").read_bytes() == before
    assert _cli(tmp_path, kind, "--kernels", "belief", "--overwrite") == 0
    assert json.loads((run / "summary.json").read_text())["config"]["kernels"] == ["belief"]


# ------------------------------------------------------------------ retrieval


def test_kernel_retrieval_picks_the_most_similar():
    """Kernel scores are cos(P(o|x), P(o|x_test)) (checked by path enumeration) and top-n takes the largest."""
    hmm = tiny_hmm(1, num_tasks=2, num_states=4, num_tokens=5)
    rng = np.random.default_rng(0)
    inp = input_tokens(hmm)
    pool = inp[rng.integers(0, len(inp), (3, 10, 2))]
    x_test = inp[rng.integers(0, len(inp), (3, 2))]
    scores = phr.similarity_scores(hmm, pool, x_test, np.random.default_rng(1))
    allt = list(range(hmm.num_tokens))
    for p in range(3):
        ft = predictive_by_enumeration(hmm, x_test[p], allt)
        for j in range(10):
            fd = predictive_by_enumeration(hmm, pool[p, j], allt)
            cos = ft @ fd / np.linalg.norm(ft) / np.linalg.norm(fd)
            np.testing.assert_allclose(scores["kernel"][p, j], cos, rtol=1e-10)
    for n in (1, 3, 7):
        for rule in phr.SELECTIONS:
            sel = phr.select_top(scores[rule], n)
            chosen = np.take_along_axis(scores[rule], sel, 1)
            rest = np.where(np.isin(np.arange(10)[None], sel), -np.inf, scores[rule])
            assert np.all(chosen.min(1) >= rest.max(1))
            assert np.all(np.diff(chosen, axis=1) <= 0)  # most similar first
        # the Hamming rule's integer part is the number of agreeing positions
        ham = np.floor(np.take_along_axis(scores["hamming"], phr.select_top(scores["hamming"], n), 1))
        agree = (pool == x_test[:, None]).sum(-1)
        assert np.all(ham.min(1) >= np.sort(agree, 1)[:, ::-1][:, n - 1])


# ------------------------------------------------------------------ labels


def test_label_mappings():
    hmm = tiny_hmm(0, num_tasks=2, num_states=4, num_tokens=7)
    assert phl.label_mapping(hmm, [1, 2], "other") == [3, 4]
    assert phl.label_mapping(hmm, [4, 5], "other") == [6, 1]
    assert phl.label_mapping(hmm, [1, 2, 3], "permute") == [2, 3, 1]
    assert phl.label_mapping(hmm, [1, 2], "identity") == [1, 2]
    with pytest.raises(ph.PhenomenaError, match="needs 4 emittable"):
        phl.label_mapping(hmm, [1, 2, 3, 4], "other")


def test_identity_mapping_reproduces_the_sweep_and_kernels_are_label_agnostic(tmp_path):
    """With π = identity, 'mapped' Bayes equals the ordinary sweep's Bayes on the same prompts; under the
    default π the kernel estimate carries over exactly while exact Bayes does not."""
    from simulate.sweep import SweepConfig, run_sweep

    common = dict(preset_params=dict(num_tasks=2, num_states=4, num_tokens=6), grid=(1, 2, 4), seeds=(0, 1),
                  prompts_per_seed=8, length=2, num_labels=2, kernels=("predictive",), dtype="float64")
    run_sweep(SweepConfig(**common), tmp_path / "sweep", quiet=True)
    ident = ph.run_phenomenon(ph.PhenomenonConfig("labels", SweepConfig(**common), dict(mapping="identity")),
                              tmp_path / "id", quiet=True)
    cells = [np.load(tmp_path / "sweep" / "cells" / f"seed_{s}.npz") for s in (0, 1)]
    with np.load(tmp_path / "id" / "per_prompt.npz") as z:
        for mine, theirs in (("bayes|l1_oracle", "common|bayes_vs_oracle_l1"),
                             ("bayes|task_mass", "common|posterior_mass_true_task"),
                             ("predictive|l1_bayes", "kernel|predictive|kernel_vs_bayes_l1")):
            ref = np.concatenate([c[theirs] for c in cells], axis=0)
            np.testing.assert_allclose(z[f"metric|mapped|{mine}"], ref, rtol=1e-12, atol=1e-14)
            np.testing.assert_array_equal(z[f"metric|mapped|{mine}"], z[f"metric|original|{mine}"])
    assert ident["config"]["mapped_labels"] == ident["config"]["labels"]
    other = ph.run_phenomenon(ph.PhenomenonConfig("labels", SweepConfig(**common)), tmp_path / "other", quiet=True)
    with np.load(tmp_path / "other" / "per_prompt.npz") as z:
        np.testing.assert_allclose(z["metric|mapped|predictive|l1_oracle"], z["metric|original|predictive|l1_oracle"],
                                   atol=1e-14)
        assert np.nanmean(z["metric|mapped|bayes|l1_oracle"]) > np.nanmean(z["metric|original|bayes|l1_oracle"]) + 0.1
    assert other["config"]["mapped_labels"] == [3, 4]


# ------------------------------------------------------------------ ood


def test_mixed_emissions():
    hmm = tiny_hmm(2, num_tasks=2, num_states=4, num_tokens=5, delim_rate=0.1)
    assert np.array_equal(pho.mix_emissions(hmm, 0.0).B, hmm.B)
    B1 = np.asarray(pho.mix_emissions(hmm, 1.0).B)
    np.testing.assert_array_equal(B1[:, 0], hmm.B[:, 0])
    np.testing.assert_allclose(B1[:, 1:], np.full((4, 4), 0.9 / 4), rtol=1e-14)
    Bh = np.asarray(pho.mix_emissions(hmm, 0.5).B)
    np.testing.assert_allclose(Bh, 0.5 * (hmm.B + B1), rtol=1e-14)
    with pytest.raises(ph.PhenomenaError, match="lambda 1.5"):
        pho.mix_emissions(hmm, 1.5)


def _exact_ood_law(hmm, lam, task, labels, length):
    """q_λ(x) ∝ s_θᵀ T^λ_x b^λ_Y, times P(y | x, θ) ∝ s_θᵀ T_x b_y under the true model (operator products)."""
    h = pho.mix_emissions(hmm, lam)
    s = np.asarray(hmm.task_start[task])
    out = {}
    for x in itertools.product(input_tokens(hmm).tolist(), repeat=length):
        qx = float(s @ operator_product(h, x) @ np.asarray(h.B)[:, labels].sum(1))
        py = s @ operator_product(hmm, x) @ np.asarray(hmm.B)[:, labels]
        for j, y in enumerate(labels):
            out[(x, y)] = qx * py[j] / py.sum()
    Z = sum(out.values())
    return {k: v / Z for k, v in out.items()}


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_ood_sampler_law(lam):
    """At λ = 0 the inputs are the standard sampler's (same draws); at every λ the pairs (x, y) follow
    q_λ(x) P(y | x, θ*) (chi-square against enumeration), and P(y | x, θ*) is exact."""
    from simulate.sampling import sample_prompts
    from simulate.sweep import prompt_key

    hmm = tiny_hmm(3, num_tasks=2, num_states=4, num_tokens=4)
    labels, length, P, N = [1, 2], 2, 100, 200
    pr = pho.ood_prompts(hmm, labels, lam, 0, P, N, length)
    std = sample_prompts(prompt_key(0), hmm, labels, P, N, length)
    np.testing.assert_array_equal(pr.x_test, std.x_test)
    np.testing.assert_array_equal(pr.task, std.task)
    if lam == 0.0:
        np.testing.assert_array_equal(pr.demos_x, std.demos_x)
    probs = pho.true_label_probs(hmm, pr.demos_x[:2, :5], pr.task[:2], labels)
    for p in range(2):
        s = np.asarray(hmm.task_start[pr.task[p]])
        for j in range(5):
            v = s @ operator_product(hmm, pr.demos_x[p, j]) @ np.asarray(hmm.B)[:, labels]
            np.testing.assert_allclose(probs[p, j], v / v.sum(), rtol=1e-12)
    for task in (0, 1):
        exact = _exact_ood_law(hmm, lam, task, labels, length)
        rows = pr.task == task
        drawn = collections.Counter(zip(map(tuple, pr.demos_x[rows].reshape(-1, length).tolist()),
                                        pr.demos_y[rows].reshape(-1).tolist()))
        assert set(drawn) <= set(exact)
        keys = sorted(exact)
        expected = np.array([exact[k] for k in keys]) * sum(drawn.values())
        observed = np.array([drawn[k] for k in keys], float)
        big = expected >= 5  # Pearson's rule; the rare cells are pooled into one
        obs, exp = observed[big], expected[big]
        if (~big).any():
            obs, exp = np.append(obs, observed[~big].sum()), np.append(exp, expected[~big].sum())
        assert chisquare(obs, exp).pvalue > 1e-4, (task, lam)


def test_epsilon_and_shift_by_enumeration():
    """ε_θ(0) = ρ(Σ_pre⁺ − Σ_θ⁺) and ε_θ(λ), shift(λ) recomputed from operator products and np.linalg.pinv."""
    from theory import kernels as tk

    hmm = tiny_hmm(4, num_tasks=2, num_states=4, num_tokens=4)
    length, lams = 2, [0.0, 0.5]
    m = pho.shift_measures(hmm, lams, length)
    full = tk.restricted_to_full(tk.block_structure(hmm), hmm.num_states)

    def sigma(h, start):
        S = 0.0
        for x in itertools.product(input_tokens(hmm).tolist(), repeat=length):
            v = operator_product(hmm, x).reshape(-1)[full]
            S = S + float(np.asarray(start) @ operator_product(h, x).sum(1)) * np.outer(v, v)
        return S

    pre = np.linalg.pinv(sigma(hmm, hmm.p0), rcond=1e-10, hermitian=True)
    for i, lam in enumerate(lams):
        h = pho.mix_emissions(hmm, lam)
        for t in range(2):
            S0 = sigma(hmm, hmm.task_start[t])
            S = sigma(h, hmm.task_start[t])
            eps = np.abs(np.linalg.eigvalsh(pre - np.linalg.pinv(S, rcond=1e-10, hermitian=True))).max()
            np.testing.assert_allclose(m["eps"][i][t], eps, rtol=1e-6)
            np.testing.assert_allclose(m["rel_shift"][i][t], np.linalg.norm(S - S0) / np.linalg.norm(S0),
                                       rtol=1e-10, atol=1e-14)
    assert max(m["rel_shift"][0]) < 1e-12 and min(m["rel_shift"][1]) > 1e-6


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("kind,args,msg", [
    # refused by the library after parsing (the config, the HMM, the kernels)
    ("retrieval", ["--pool", "2"], "pool size 2"),
    ("ood", ["-P", "num_tokens=30", "--length", "4"], "29^4"),
    ("labels", ["--num-labels", "3"], "--mapping other needs 3"),
    ("labels", ["--mapping", "permute", "--labels", "1"], "permute needs at least 2"),
    ("retrieval", ["--kernels", "gram:rtol=0", "--length", "1"], "singular"),
    ("labels", ["--labels", "0,1"], "delimiter"),
    ("labels", ["--labels", "1,1"], "duplicates"),
    ("labels", ["-P", "num_tasks=2.5"], "num_tasks=2.5"),
    ("labels", ["-P", "num_tasks=3", "-P", "num_tasks=2"], "given twice"),
    ("labels", ["--hmm-file", "nosuch.npz"], "--hmm-file nosuch.npz"),
    ("ood", ["-P", "num_tasks=1", "-P", "num_states=66", "--length", "1"], "4356 dimensions"),
    # refused by argparse (icl_kernel.argtypes)
    ("ood", ["--lambdas", "0,1.5"], "contains [1.5]"),
    ("ood", ["--lambdas", "0,x"], "--lambdas"),
    ("ood", ["--lambdas", "nan"], "--lambdas"),
    ("ood", ["--lambdas", ""], "--lambdas"),
    ("labels", ["--mapping", "bogus"], "invalid choice: 'bogus'"),
    ("labels", ["--grid", "0,2"], "integers >= 1"),
    ("labels", ["--grid", "1,a"], "--grid"),
    ("labels", ["--seeds", "a:b"], "--seeds"),
    ("labels", ["--seeds", "0,0"], "repeats a seed"),
    ("labels", ["--prompts", "0"], "--prompts"),
    ("labels", ["--prompts", "2.5"], "--prompts"),
    ("labels", ["--length", "0"], "--length"),
    ("labels", ["--chunk", "0"], "--chunk"),
    ("retrieval", ["--pool", "0"], "--pool"),
    ("retrieval", ["--pool", "x"], "--pool"),
    ("labels", ["--kernels", ""], "names no kernel"),
    ("labels", ["--kernels", "predictive predictive"], "repeats"),
    ("labels", ["--kernels", "nosuch"], "nosuch"),
    ("labels", ["--name", "../x"], "--name"),
    ("labels", ["--name", ""], "--name"),
    ("labels", ["--devices", "-3"], "--devices"),
    ("labels", ["-P", "num_tokens=nan"], "num_tokens=nan"),
    ("labels", ["-P", "num_tokens"], "KEY=VALUE"),
])
def test_bad_input(tmp_path, capsys, kind, args, msg):
    """One line naming the value, exit 2, nothing written (neither the run folder nor the figure)."""
    rc = _cli(tmp_path, kind, *args)
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert not list(tmp_path.iterdir())


def _snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_refusals_keep_existing_folders(tmp_path, capsys):
    """A finished run survives --overwrite with a bad value; a foreign folder, a file as --runs-dir and a
    folder where the figure goes are refused with one line and nothing changed. A corrupted cell is
    detected by its checksum and recomputed to the same numbers (resume is common to every kind)."""
    assert _cli(tmp_path, "labels", "--seeds", "0,1") == 0
    run = tmp_path / "runs" / "phen-labels"
    with np.load(run / "per_prompt.npz") as z:
        first = {k: z[k] for k in z.files}
    cell = run / "cells" / "seed_1.npz"
    cell.write_bytes(cell.read_bytes()[:-10])
    assert _cli(tmp_path, "labels", "--seeds", "0,1") == 0
    assert "seed_1.npz is corrupted" in capsys.readouterr().out
    with np.load(run / "per_prompt.npz") as z:
        assert set(z.files) == set(first) and z["metric|original|bayes|l1_oracle"].shape == (10, 3)
        for k in first:
            np.testing.assert_array_equal(z[k], first[k])
    capsys.readouterr()
    before = _snapshot(tmp_path)
    for args, msg in ((["--seeds", "0,1", "--overwrite", "--num-labels", "3"], "--mapping other needs 3"),
                      (["--overwrite", "--mapping", "bogus"], "invalid choice"),
                      (["--overwrite", "--kernels", "gram:rtol=0", "--length", "1"], "singular")):
        assert _cli(tmp_path, "labels", *args) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
        assert _snapshot(tmp_path) == before
    foreign = tmp_path / "runs" / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a run")
    (tmp_path / "fig" / "busy.png").mkdir()
    (tmp_path / "afile").write_text("x")
    before = _snapshot(tmp_path)
    for args, msg in ((["--name", "mine", "--overwrite"], "not an icl-kernel run folder"),
                      (["--name", "busy"], "is not a file"),
                      (["--runs-dir", str(tmp_path / "afile"), "--name", "x"], "afile")):
        assert _cli(tmp_path, "labels", *args) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err
        assert _snapshot(tmp_path) == before and not (tmp_path / "runs" / "busy").exists()


def test_unknown_option_is_refused():
    cfg = ph.PhenomenonConfig("labels", ph.default_config("labels").common, dict(pool=3))
    with pytest.raises(ph.PhenomenaError, match=r"\['pool'\] do not apply to phenomenon 'labels'"):
        ph.resolve_phenomenon(cfg)
    with pytest.raises(ph.PhenomenaError, match="unknown phenomenon 'nosuch'"):
        ph.default_config("nosuch")
