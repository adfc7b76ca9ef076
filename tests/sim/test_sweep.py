"""The sweep end to end: CLI, run folder, determinism, resume, refusal of another config, bad input."""
import json

import numpy as np
import pytest

from icl_kernel.cli import main
from icl_kernel.runfolder import RunFolderError
from simulate.sweep import SweepConfig, SweepConfigError, run_sweep

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
            np.testing.assert_allclose(z["bayes"][:, g], np.asarray(b), atol=1e-5)
        assert z["kernel|predictive"].shape == (3, 3, len(labels))
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
    with pytest.raises(RunFolderError, match="not an icl-kernel run folder"):
        run_sweep(small_cfg(kernels=("predictive",)), tmp_path / "junk", quiet=True)


def test_sharded_batch_equals_single_device(tmp_path):
    """Prompt batches sharded over the two CPU devices give the numbers of an unsharded run, also when
    the prompt count does not divide by the device count (padding is cut from the prompt axis)."""
    import jax
    from simulate.evaluator import evaluate_prompts, make_evaluator, prepare_kernels
    from simulate.presets import build_preset
    from simulate.sampling import sample_prompts
    from simulate.runtime import batch_sharding
    from theory import kernels as tk

    assert len(jax.local_devices()) >= 2
    hmm = build_preset("han", dict(num_tasks=2, num_states=6, num_tokens=8))
    specs = [tk.parse_kernel(k) for k in ("predictive", "gram")]
    ev = make_evaluator(hmm, prepare_kernels(hmm, specs, 2), [1, 2, 3], (1, 2, 4), "float64")
    pr = sample_prompts(jax.random.PRNGKey(0), hmm, [1, 2, 3], 8, 4, 2)
    sh, nd = batch_sharding()
    args = [np.asarray(x) for x in (pr.demos_x, pr.demos_y, pr.x_test, pr.task)]
    sharded = [jax.device_put(a, sh) for a in args]
    assert nd >= 2 and all(len(x.sharding.device_set) == nd and not x.sharding.is_fully_replicated for x in sharded)
    e1 = ev(*sharded)
    e2 = ev(*[jax.device_put(a, jax.local_devices()[0]) for a in args])
    np.testing.assert_allclose(np.asarray(e1.bayes), np.asarray(e2.bayes), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(e1.kernels[1].yhat), np.asarray(e2.kernels[1].yhat), rtol=1e-9)
    # 5 prompts in chunks of 3 on 2 devices: batches of 4 and 1, each padded to a multiple of 2.
    e3 = evaluate_prompts(ev, *[a[:5] for a in args], chunk=3)
    assert e3.bayes.shape == (5, 3, 3) and e3.oracle.shape == (5, 3) and e3.kernels[0].yhat.shape == (5, 3, 3)
    np.testing.assert_allclose(e3.oracle, np.asarray(e2.oracle)[:5], rtol=1e-12)
    np.testing.assert_allclose(e3.bayes, np.asarray(e2.bayes)[:5], rtol=1e-12)
    np.testing.assert_allclose(e3.kernels[1].yhat, np.asarray(e2.kernels[1].yhat)[:5], rtol=1e-9)


def test_prompt_count_not_divisible_by_devices(tmp_path):
    """--prompts 5 on 2 devices (and 21) runs and gives the per-prompt numbers of a one-prompt-per-batch run."""
    from icl_kernel.runfolder import open_existing

    cfg = small_cfg(prompts_per_seed=5, seeds=(0,), dtype="float64")
    a = run_sweep(cfg, tmp_path / "a", quiet=True)
    run_sweep(cfg, tmp_path / "b", quiet=True, chunk=1)
    assert a["num_prompts"] == 5
    ca = open_existing(tmp_path / "a").load_npz("cells/seed_0.npz")
    cb = open_existing(tmp_path / "b").load_npz("cells/seed_0.npz")
    assert set(ca) == set(cb)
    for k in ca:
        assert ca[k].shape[0] == 5, k
        np.testing.assert_allclose(ca[k], cb[k], rtol=1e-6, atol=1e-9, err_msg=k)  # Σ kernels amplify rounding
    assert run_sweep(small_cfg(prompts_per_seed=21, seeds=(0,), kernels=("belief",)), tmp_path / "c",
                     quiet=True)["num_prompts"] == 21


def test_streamed_seed_equals_all_prompts_at_once():
    """A seed sampled and evaluated chunk by chunk (sweep_seed) gives, bit for bit, the prompts and cell
    of sampling all P prompts at once and evaluating them in the same chunks (the pre-streaming sweep),
    including a short last chunk, predictions spanning two chunks, and float32."""
    from simulate.evaluator import evaluate_prompts, make_evaluator, prepare_kernels
    from simulate.sampling import sample_prompts
    from simulate.sweep import cell_arrays, evaluated_ns, prompt_key, resolve, sweep_seed
    from theory import kernels as tk

    resolved, hmm = resolve(small_cfg(prompts_per_seed=23, save_predictions=6, kernels=("predictive", "gram")))
    prepared = prepare_kernels(hmm, [tk.parse_kernel(k) for k in resolved.kernels], resolved.length)
    ev = make_evaluator(hmm, prepared, resolved.labels, evaluated_ns(resolved), resolved.dtype,
                        length=resolved.length, forward=resolved.forward)
    cell, pr = sweep_seed(ev, hmm, resolved, 1, chunk=4)
    ref_pr = sample_prompts(prompt_key(1), hmm, resolved.labels, 23, 4, resolved.length)
    ref = cell_arrays(evaluate_prompts(ev, ref_pr.demos_x, ref_pr.demos_y, ref_pr.x_test, ref_pr.task, 4),
                      resolved.kernels, 6, ref_pr.y_test, resolved.labels)
    for a, b in zip(pr, ref_pr):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert set(cell) == set(ref) and cell["pred|bayes"].shape[0] == 6
    for k in ref:
        assert cell[k].dtype == ref[k].dtype and np.array_equal(cell[k], ref[k], equal_nan=True), k
    import jax

    seen = []

    def spy(*batch):  # every streamed batch is split over all local devices
        seen.append([(len(x.sharding.device_set), x.sharding.is_fully_replicated) for x in batch])
        return ev(*batch)

    cell2, none = sweep_seed(spy, hmm, resolved, 1, chunk=4, keep_prompts=False)
    assert none is None and all(np.array_equal(cell2[k], cell[k], equal_nan=True) for k in cell)
    nd = len(jax.local_devices())
    assert nd >= 2 and len(seen) == 6 and all(d == (nd, False) for b in seen for d in b)


def test_small_chunk_equals_large_chunk_and_no_save_prompts(tmp_path, capsys):
    """--chunk 3 and --chunk 256 draw the same prompts (bit for bit) and give the same numbers to float
    rounding (batches of another shape round differently); --no-save-prompts writes no prompts, says so in
    config.json, resumes, and the bound names the reason the prompts are missing."""
    from icl_kernel.runfolder import open_existing

    cfg = small_cfg(prompts_per_seed=11, dtype="float64", kernels=("predictive", "belief:beta=5"))
    a = run_sweep(cfg, tmp_path / "a", quiet=True, chunk=3)
    b = run_sweep(cfg, tmp_path / "b", quiet=True, chunk=256)
    ra, rb = open_existing(tmp_path / "a"), open_existing(tmp_path / "b")
    for s in cfg.seeds:
        pa, pb = ra.load_npz(f"prompts/seed_{s}.npz"), rb.load_npz(f"prompts/seed_{s}.npz")
        assert all(np.array_equal(pa[k], pb[k]) for k in pa)
        ca, cb = ra.load_npz(f"cells/seed_{s}.npz"), rb.load_npz(f"cells/seed_{s}.npz")
        for k in ca:
            np.testing.assert_allclose(ca[k], cb[k], rtol=1e-12, atol=1e-13, err_msg=k)
    assert a["num_prompts"] == b["num_prompts"] == 22
    cfg_ns = small_cfg(prompts_per_seed=11, dtype="float64", kernels=("predictive", "belief:beta=5"), save_prompts=False)
    assert run_sweep(cfg_ns, tmp_path / "c", quiet=True, chunk=3, stop_after_cells=1) == {}
    c = run_sweep(cfg_ns, tmp_path / "c", quiet=True, chunk=3)
    rc = open_existing(tmp_path / "c")
    assert rc.config()["save_prompts"] is False and "save_prompts" not in ra.config()
    assert not (tmp_path / "c" / "prompts").exists()
    assert c["kernels"] == a["kernels"] and c["common"] == a["common"]
    for s in cfg.seeds:  # same chunk: bit for bit
        ca, cc = ra.load_npz(f"cells/seed_{s}.npz"), rc.load_npz(f"cells/seed_{s}.npz")
        assert all(np.array_equal(ca[k], cc[k], equal_nan=True) for k in ca)
    assert main(["bound", str(tmp_path / "c"), "--quiet"]) == 2
    assert "--no-save-prompts" in capsys.readouterr().err
    assert main(["sweep", "--runs-dir", str(tmp_path), "--name", "d", "--no-save-prompts", *SMALL[:-2],
                 "--kernels", "predictive"]) == 0
    assert not (tmp_path / "d" / "prompts").exists() and (tmp_path / "d" / "cells" / "seed_1.npz").exists()


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    """jax.distributed with two processes of one CPU device each (localhost, gloo): every batch split over
    both processes' devices, process 0 writes; the cells equal a one-process run on two devices bit for bit."""
    import socket
    import subprocess
    import sys

    from icl_kernel.runfolder import open_existing

    with socket.socket() as sk:
        sk.bind(("localhost", 0))
        port = sk.getsockname()[1]
    args = ["sweep", "--runs-dir", str(tmp_path), "--name", "mp", "--devices", "1", "--chunk", "4",
            "--coordinator", f"localhost:{port}", "--num-processes", "2", *SMALL[:-2], "--kernels", "predictive gram"]
    code = "import sys; from icl_kernel.cli import main; sys.exit(main(sys.argv[1:]))"
    procs = [subprocess.Popen([sys.executable, "-c", code, *args, "--process-id", str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "[predictive]" in outs[0] and "process 1 of 2: done" in outs[1], outs
    cfg = small_cfg(kernels=("predictive", "gram"))
    one = run_sweep(cfg, tmp_path / "one", quiet=True, chunk=4)
    r1, r2 = open_existing(tmp_path / "one"), open_existing(tmp_path / "mp")
    assert r2.config() == r1.config()
    for s in cfg.seeds:
        c1, c2 = r1.load_npz(f"cells/seed_{s}.npz"), r2.load_npz(f"cells/seed_{s}.npz")
        for k in c1:  # the same per-device shapes, the same program: bit for bit (float32)
            assert np.array_equal(c2[k], c1[k], equal_nan=True), k
        p1, p2 = r1.load_npz(f"prompts/seed_{s}.npz"), r2.load_npz(f"prompts/seed_{s}.npz")
        assert all(np.array_equal(p1[k], p2[k]) for k in p1)
    assert json.loads((tmp_path / "mp" / "summary.json").read_text())["num_prompts"] == one["num_prompts"]


def test_corrupted_cell_is_recomputed(tmp_path, capsys):
    cfg = small_cfg(seeds=(0,))
    first = run_sweep(cfg, tmp_path / "r", quiet=True)
    cell = tmp_path / "r" / "cells" / "seed_0.npz"
    good = cell.read_bytes()
    cell.write_bytes(good[:100])
    msgs = []
    again = run_sweep(cfg, tmp_path / "r", quiet=True, log=msgs.append)
    assert any("corrupted" in m and "seed_0.npz" in m for m in msgs)
    assert cell.read_bytes() == good and again["kernels"] == first["kernels"]


def test_corrupted_summary_is_one_line_error(tmp_path, capsys):
    run_sweep(small_cfg(seeds=(0,)), tmp_path / "r", quiet=True)
    (tmp_path / "r" / "summary.json").write_text("{")
    assert main(["plot", str(tmp_path / "r"), "--out", str(tmp_path / "f.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "summary.json is corrupted" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "f.png").exists()


def test_overwrite_validates_before_deleting(tmp_path, capsys):
    run_sweep(small_cfg(seeds=(0,)), tmp_path / "r", quiet=True)
    before = (tmp_path / "r" / "summary.json").read_bytes()
    rc = main(["sweep", "--runs-dir", str(tmp_path), "--name", "r", *SMALL[:-2], "--kernels", "belief:beta=nan",
               "--overwrite"])
    assert rc == 2 and "beta=nan" in capsys.readouterr().err
    assert (tmp_path / "r" / "summary.json").read_bytes() == before


@pytest.mark.parametrize("kw,msg", [
    (dict(seeds=(0, 0)), "repeat"),
    (dict(kernels=()), "no kernels"),
    (dict(kernels=("belief", "belief")), "repeat"),
    (dict(kernels=("belief:beta=-1",)), "beta"),
    (dict(hmm_file="x.npz"), "--preset custom"),
])
def test_config_refusals(tmp_path, kw, msg):
    with pytest.raises((SweepConfigError, ValueError), match=msg):
        run_sweep(small_cfg(**kw), tmp_path / "r", quiet=True)
    assert not (tmp_path / "r").exists()


def test_ginc_restart_preset_runs(tmp_path):
    """ginc-restart (Assumption 1) runs with the matched law; its Bayes is the restart factorisation."""
    s = run_sweep(SweepConfig(preset="ginc-restart", grid=(1, 4), seeds=(0,), prompts_per_seed=8, length=3,
                              kernels=("predictive",)), tmp_path / "g", quiet=True)
    assert s["config"]["prompt_law"] == "matched" and s["config"]["forward"] == "factorised"
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
    (lambda T, B: dict(delim=0.5), "not an integer token id"),
    (lambda T, B: dict(T=T.astype(complex)), "complex"),
    (lambda T, B: dict(B=np.concatenate([np.zeros((B.shape[0], 1)), B[:, 1:] / B[:, 1:].sum(1, keepdims=True)], 1)),
     "task 0 cannot produce a demonstration"),
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
    (["--n=-1,2"], "expected integers >= 0"),
    (["--n", "0"], "at least one n >= 1"),
    (["--prompt-law", "ginc-id"], "needs --preset ginc"),
    (["--ginc-params", "reference"], "expected --preset ginc"),
    (["--labels", "0"], "delimiter"),
    (["--num-labels", "0"], "--num-labels: 0"),
    (["--labels", "99"], "outside the vocabulary"),
    (["--kernels", "gram:rtol=0"], "singular"),
    (["--preset", "custom"], "needs a file"),
    (["--preset", "custom", "--hmm-file", "/no/such.npz"], "does not exist"),
    (["-P", "bogus=1"], "unknown han parameter"),
    (["-P", "seed=1.5"], "expected an integer"),
    (["-P", "emit_conc=nan"], "finite"),
    (["-P", "emit_conc"], "KEY=VALUE"),
    (["-P", "emit_conc=abc"], "not a number"),
    (["--chunk", "0"], "expected an integer >= 1"),
    (["--devices", "-3"], "devices"),
    (["--devices", "100000"], "devices"),
    (["--name", "../x"], "not a valid run name"),
    (["--name", ""], "not a valid run name"),
    (["--seeds", "1,1"], "repeats a seed"),
    (["--hmm-file", "/no/such.npz"], "--preset custom"),
])
def test_bad_cli_input(tmp_path, capsys, args, msg):
    base = ["sweep", "--runs-dir", str(tmp_path), "--name", "x", "--n", "1,2", "--seeds", "0", "--prompts", "4",
            "--length", "1", "--quiet"]
    if "custom" not in args:
        base += ["-P", "num_tasks=2", "-P", "num_states=4", "-P", "num_tokens=6"]
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


def test_factorised_and_general_sweeps_agree(tmp_path):
    """The sweep picks the restart factorisation for the han preset; forcing the general scan gives the same
    per-prompt numbers (float64), and a leaky restart falls back to the general scan."""
    from icl_kernel.runfolder import open_existing

    cfg = dict(prompts_per_seed=6, seeds=(0,), dtype="float64", grid=(1, 3, 8), kernels=("predictive", "gram"))
    run_sweep(small_cfg(**cfg), tmp_path / "f", quiet=True)
    run_sweep(small_cfg(forward="general", **cfg), tmp_path / "g", quiet=True)
    rf, rg = open_existing(tmp_path / "f"), open_existing(tmp_path / "g")
    assert rf.config()["forward"] == "factorised" and rg.config()["forward"] == "general"
    a, b = rf.load_npz("cells/seed_0.npz"), rg.load_npz("cells/seed_0.npz")
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-9, atol=1e-12, err_msg=k)
    leaky = small_cfg(preset_params=dict(num_tasks=2, num_states=6, num_tokens=8, leak=0.1), **cfg)
    run_sweep(leaky, tmp_path / "l", quiet=True)
    assert open_existing(tmp_path / "l").config()["forward"] == "general"
    with pytest.raises(ValueError, match="restart factorisation does not apply"):
        run_sweep(small_cfg(preset_params=dict(num_tasks=2, num_states=6, num_tokens=8, leak=0.1),
                            forward="factorised", **cfg), tmp_path / "x", quiet=True)
    assert not (tmp_path / "x").exists()


def test_sigma_by_recursion_equals_enumeration():
    """Where the inputs are too many to enumerate, prepare_kernels builds Σ for `pretrain` and `task` by the
    exact third-moment recursion: the same Σ⁺ as enumeration (forced off here by enum_limit=1)."""
    from simulate.evaluator import prepare_kernels
    from simulate.presets import build_preset
    from theory import kernels as tk

    hmm = build_preset("han", dict(num_tasks=2, num_states=6, num_tokens=5))
    for name in ("pretrain", "task"):
        enum = prepare_kernels(hmm, [tk.parse_kernel(name)], 3)
        rec = prepare_kernels(hmm, [tk.parse_kernel(f"{name}:enum_limit=1")], 3)
        assert [p["method"] for p in enum.infos[0]["per_start"]] == ["enumeration"] * len(enum.kernels[0].inverses)
        assert {p["method"] for p in rec.infos[0]["per_start"]} == {"recursion"}
        A, E = rec.kernels[0].inverses, enum.kernels[0].inverses
        for a, e in zip(A, E):
            # Σ⁺ of an ill-conditioned Σ: the two Σ agree to rounding, so their pseudo-inverses agree to within
            # the perturbation bound κ·eps·|Σ⁺|, κ the condition number on the retained subspace (10 = slack)
            s = np.linalg.svd(e, compute_uv=False)
            kappa = s[0] / s[np.linalg.matrix_rank(e) - 1]
            np.testing.assert_allclose(a, e, rtol=0, atol=10 * kappa * np.finfo(float).eps * np.abs(e).max())


@pytest.mark.parametrize("kw", [dict(), dict(grid=(1, 4), curve=True, save_prompts=False, task=1)])
def test_identity_round_trips_through_config_json(kw):
    """config.json read back (from_dict) gives the same identity, and to_dict gives config.json again."""
    from icl_kernel.runfolder import config_form
    from simulate.sweep import SweepIdentity, resolve
    ident, _ = resolve(small_cfg(**kw))
    on_disk = config_form(ident.to_dict())
    back = SweepIdentity.from_dict(on_disk)
    assert back == ident
    assert list(back.to_dict().items()) == list(ident.to_dict().items())
    assert ("curve" in on_disk, "save_prompts" in on_disk) == (bool(kw), bool(kw))
    with pytest.raises(SweepConfigError, match="unknown"):
        SweepIdentity.from_dict(dict(on_disk, kind="ood"))
