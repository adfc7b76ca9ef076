"""The sweep end to end: CLI, run folder, determinism, resume, refusal of another config, bad input."""
import json

import numpy as np
import pytest

from icl_kernel.cli import main
from simulate.sweep import SweepConfig, run_sweep, RunFolderError

SMALL = ["--param", "num_tasks=2", "-P", "num_states=6", "-P", "num_tokens=8", "--n", "1,2,4", "--seeds", "0:2",
         "--prompts", "10", "--length", "2", "--quiet",
         "--kernels", "predictive belief:beta=5 gram pretrain task"]


def small_cfg(**kw):
    base = dict(preset_params=dict(num_tasks=2, num_states=6, num_tokens=8), grid=(1, 2, 4), seeds=(0, 1),
                prompts_per_seed=10, length=2, kernels=("predictive", "belief:beta=5", "gram", "pretrain", "task"))
    base.update(kw)
    return SweepConfig(**base)


def test_cli_end_to_end(tmp_path, capsys):
    rc = main(["sweep", "--runs-dir", str(tmp_path), "--name", "small", "--save-predictions", "3", *SMALL])
    assert rc == 0
    out = capsys.readouterr().out
    assert "[predictive]" in out and "L1 to Bayes" in out
    run = tmp_path / "small"
    for f in ("config.json", "hmm.npz", "summary.json", "metrics.csv", "kernels.json", "predictions.npz",
              "prompts/seed_0.npz", "cells/seed_1.npz"):
        assert (run / f).exists(), f
    assert not list(run.rglob("*.tmp"))
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["kernels"]) == {"predictive", "belief:beta=5", "gram", "pretrain", "task"}
    assert summary["num_prompts"] == 20
    # metrics.csv: one row per (kernel, n, seed)
    lines = (run / "metrics.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 5 * 3 * 2
    # Saved predictions can be recomputed independently: Bayes by the direct (non-sweep) forward pass.
    import jax.numpy as jnp
    from simulate.forward import bayes_direct, hmm_arrays, prompt_tokens
    from theory.hmm import HMM

    with np.load(run / "predictions.npz") as z, np.load(run / "prompts/seed_0.npz") as pz, np.load(run / "hmm.npz") as hz:
        hmm = HMM(**{k: hz[k] for k in hz.files})
        labels = jnp.asarray(z["labels"])
        for g, n in enumerate(z["grid"]):
            toks = prompt_tokens(pz["demos_x"][:3], pz["demos_y"][:3], pz["x_test"][:3], int(n), 0)
            b, _ = bayes_direct(hmm_arrays(hmm, jnp.float64), toks, 0, labels)
            np.testing.assert_allclose(z["bayes"][g], np.asarray(b), atol=1e-5)
        assert z["k0"].shape == (3, 3, len(labels))
    # plot
    fig = tmp_path / "fig.png"
    assert main(["plot", str(run), "--out", str(fig)]) == 0
    assert fig.stat().st_size > 10000
    # the same name with another config is refused (exit 2), and nothing is touched
    before = (run / "summary.json").read_bytes()
    rc = main(["sweep", "--runs-dir", str(tmp_path), "--name", "small", *SMALL[:-2], "--kernels", "belief"])
    assert rc == 2
    assert "another config" in capsys.readouterr().err
    assert (run / "summary.json").read_bytes() == before


def test_same_seed_same_numbers_and_resume(tmp_path):
    cfg = small_cfg()
    full = run_sweep(cfg, tmp_path / "a", quiet=True)
    # interrupted after one cell, then resumed: same numbers, first cell not recomputed
    assert run_sweep(cfg, tmp_path / "b", quiet=True, stop_after_cells=1) == {}
    cells = sorted(p.name for p in (tmp_path / "b" / "cells").iterdir())
    assert cells == ["seed_0.npz"]
    mtime = (tmp_path / "b" / "cells" / "seed_0.npz").stat().st_mtime_ns
    resumed = run_sweep(cfg, tmp_path / "b", quiet=True)
    assert (tmp_path / "b" / "cells" / "seed_0.npz").stat().st_mtime_ns == mtime
    for a, b in ((full, resumed),):
        assert a["kernels"] == b["kernels"] and a["common"] == b["common"]
    # different seeds give different prompts
    with np.load(tmp_path / "a" / "prompts" / "seed_0.npz") as z0, np.load(tmp_path / "a" / "prompts" / "seed_1.npz") as z1:
        assert not np.array_equal(z0["demos_x"], z1["demos_x"])


def test_refuses_folder_with_other_config(tmp_path):
    run_sweep(small_cfg(kernels=("predictive",)), tmp_path / "r", quiet=True)
    with pytest.raises(RunFolderError, match="another config"):
        run_sweep(small_cfg(kernels=("belief",)), tmp_path / "r", quiet=True)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(RunFolderError, match="not a run folder"):
        run_sweep(small_cfg(kernels=("predictive",)), tmp_path / "junk", quiet=True)


def test_sharded_batch_equals_single_device(tmp_path):
    """Prompt batches sharded over the two CPU devices give the numbers of an unsharded run."""
    import jax
    from simulate.presets import build_preset
    from simulate.sampling import sample_prompts
    from simulate.sweep import make_evaluator, prepare_kernels
    from simulate.runtime import batch_sharding
    from theory import kernels as tk

    assert len(jax.local_devices()) >= 2
    hmm = build_preset("han", dict(num_tasks=2, num_states=6, num_tokens=8))
    specs = [tk.parse_kernel(k) for k in ("predictive", "gram")]
    prep, _, blocks = prepare_kernels(hmm, specs, 2)
    ev = make_evaluator(hmm, prep, blocks, [1, 2, 3], (1, 2, 4), "float64")
    pr = sample_prompts(jax.random.PRNGKey(0), hmm, [1, 2, 3], 8, 4, 2)
    sh, nd = batch_sharding()
    args = [np.asarray(x) for x in (pr.demos_x, pr.demos_y, pr.x_test, pr.task)]
    sharded = [jax.device_put(a, sh) for a in args]
    assert nd >= 2 and all(len(x.sharding.device_set) == nd and not x.sharding.is_fully_replicated for x in sharded)
    sb1, k1 = ev(*sharded)
    sb2, k2 = ev(*[jax.device_put(a, jax.local_devices()[0]) for a in args])
    np.testing.assert_allclose(np.asarray(sb1.bayes), np.asarray(sb2.bayes), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(k1[1][0]), np.asarray(k2[1][0]), rtol=1e-9)


def test_ginc_preset_runs(tmp_path):
    s = run_sweep(SweepConfig(preset="ginc", grid=(1, 4), seeds=(0,), prompts_per_seed=8, length=3,
                              kernels=("predictive",), label_mode="argmax"), tmp_path / "g", quiet=True)
    assert np.isfinite(s["kernels"]["predictive"]["kernel_vs_bayes_l1"][-1]["mean"])
    assert s["common"]["posterior_mass_true_task"][-1]["mean"] > 0.2


def test_custom_file(tmp_path):
    from simulate.presets import build_preset

    hmm = build_preset("han", dict(num_tasks=2, num_states=4, num_tokens=5))
    np.savez(tmp_path / "h.npz", T=hmm.T, B=hmm.B, delim=0, task_of_state=hmm.task_of_state, starts=[0, 2])
    s = run_sweep(SweepConfig(preset="custom", hmm_file=str(tmp_path / "h.npz"), grid=(1, 2), seeds=(0,),
                              prompts_per_seed=4, length=2, kernels=("belief",)), tmp_path / "c", quiet=True)
    assert s["num_prompts"] == 4
    (tmp_path / "h.json").write_text(json.dumps(dict(T=hmm.T.tolist(), B=hmm.B.tolist(), delim=0,
                                                     task_of_state=hmm.task_of_state.tolist(), starts=[0, 2])))
    assert build_preset("custom", custom_path=str(tmp_path / "h.json")).num_tasks == 2


def _bad_npz(tmp_path, **kw):
    from simulate.presets import build_preset

    hmm = build_preset("han", dict(num_tasks=2, num_states=4, num_tokens=5))
    arrs = dict(T=hmm.T, B=hmm.B, delim=0, task_of_state=hmm.task_of_state, starts=[0, 2])
    arrs.update(kw)
    p = tmp_path / "bad.npz"
    np.savez(p, **arrs)
    return p


@pytest.mark.parametrize("mutate,msg", [
    (lambda T, B: dict(T=T * 1.1), "not row-stochastic"),
    (lambda T, B: dict(B=np.where(np.arange(B.shape[1]) == 1, -0.1, B)), "negative"),
    (lambda T, B: dict(T=np.where(np.eye(T.shape[0]) > 0, np.nan, T)), "NaN"),
    (lambda T, B: dict(B=B[:, :3].T), "shape"),
    (lambda T, B: dict(delim=7), "outside the vocabulary"),
])
def test_bad_hmm_files(tmp_path, capsys, mutate, msg):
    from simulate.presets import build_preset

    hmm = build_preset("han", dict(num_tasks=2, num_states=4, num_tokens=5))
    p = _bad_npz(tmp_path, **mutate(hmm.T, hmm.B))
    rc = main(["sweep", "--preset", "custom", "--hmm-file", str(p), "--runs-dir", str(tmp_path), "--name", "x", "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()  # nothing half-written


@pytest.mark.parametrize("args,msg", [
    (["--n", "0,2"], "n >= 1"),
    (["--labels", "0"], "delimiter"),
    (["--num-labels", "0"], "num_labels"),
    (["--labels", "99"], "outside the vocabulary"),
    (["--kernels", "gram:rtol=0"], "singular"),
    (["--preset", "custom"], "needs a file"),
    (["--preset", "custom", "--hmm-file", "/no/such.npz"], "does not exist"),
    (["-P", "bogus=1"], "unknown han parameter"),
])
def test_bad_cli_input(tmp_path, capsys, args, msg):
    base = ["sweep", "--runs-dir", str(tmp_path), "--name", "x", "-P", "num_tasks=2", "-P", "num_states=4",
            "-P", "num_tokens=6", "--n", "1,2", "--seeds", "0", "--prompts", "4", "--length", "1", "--quiet"]
    if "--kernels" not in args:
        base += ["--kernels", "belief"]
    rc = main(base + args)
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert msg in err, err
    assert len(err.splitlines()) == 1


def test_label_no_state_can_emit(tmp_path):
    from simulate.presets import build_preset
    from theory.errors import HMMError
    from theory.hmm import check_labels, make_hmm

    hmm = build_preset("han", dict(num_tasks=2, num_states=4, num_tokens=5))
    B = hmm.B.copy()
    B[:, 0] += B[:, 3]
    B[:, 3] = 0
    h2 = make_hmm(hmm.T, B, hmm.R, hmm.p0, hmm.task_start, hmm.task_of_state, 0)
    with pytest.raises(HMMError, match="cannot be emitted"):
        check_labels(h2, [1, 3])
    with pytest.raises(HMMError, match="empty"):
        check_labels(h2, [])
