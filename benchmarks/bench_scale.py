"""Scale: a sweep of 10⁵ prompts x n = 1..1024 in bounded memory, and exact Bayes at n = 10⁴.

Usage::

    .venv/bin/python benchmarks/bench_scale.py                       # 10^5 and 10^4 prompts, n up to 1024
    .venv/bin/python benchmarks/bench_scale.py --prompts 10000       # 10^4 and 10^3 (about 10 minutes on 2 cores)
    .venv/bin/python benchmarks/bench_scale.py --skip-scale          # only the n = 10^4 check

Each run is ``icl-kernel sweep`` in its own child process into a temporary folder (one seed,
``--no-save-prompts``, the han preset, grid 1, 2, 4, ..., max n): the wall time, prompts per second
and the child's own peak RSS (``os.wait4``'s ``ru_maxrss``; the parent's is printed too) are
reported for ``--prompts`` P and for P / ``--factor``, so the growth with P is visible: a streamed
sweep holds one ``--chunk`` of prompts and its forward pass, plus the ``[P, grid]`` metric arrays,
so its RSS should barely move while the time grows ~linearly. The marginal rate
(P - P/factor) / (t - t_small) takes out the fixed start-up cost (imports, kernel preparation,
compilation — cached across runs in ~/.cache/icl-kernel/jax).

Kernels: ``predictive`` by default. Bayes (the factorised pass) and the Oracle always run; of the
kernels, predictive and belief are the light ones (features of one x are a filtered |Y|- or
d-vector, no Σ), about as costly per demonstration as Bayes. The matrix kernels (gram, pretrain,
task) carry φ(x) = vec(T_x) with K b² = 800 dimensions per demonstration for han: measured ~5x the
evaluation time and ~2.2 GB RSS already at --chunk 64 x n = 1024, so they are for smaller n.

The n = 10⁴ check (``--check-n``, ``--check-prompts``) runs grid 1, 10, ..., 10⁴ and prints, per n,
the mean posterior mass on the prompt's own task and Bayes' L1 distance to the Oracle, and checks
that every per-prompt value is finite (the sweep itself refuses a non-finite Bayes or Oracle).
The load average (``os.getloadavg``) before and after each run is printed: this machine is shared.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def powers_to(n: int) -> list[int]:
    return sorted({2 ** k for k in range(n.bit_length()) if 2 ** k <= n} | {n})


def run_sweep_child(out: Path, name: str, prompts: int, grid: list[int], args, chunk: int) -> dict:
    """One ``icl-kernel sweep`` in a child process; its wall time, peak RSS and the summary."""
    cmd = [sys.executable, "-c", "import sys; from icl_kernel.cli import main; sys.exit(main(sys.argv[1:]))",
           "sweep", "--runs-dir", str(out), "--name", name, "--prompts", str(prompts), "--seeds", str(args.seed),
           "--n", ",".join(map(str, grid)), "--kernels", args.kernels, "--chunk", str(chunk),
           "--no-save-prompts", "--quiet"]
    if args.devices:
        cmd += ["--devices", str(args.devices)]
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out_text = p.stdout.read().decode(errors="replace")
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"sweep {name} failed (exit {p.returncode}):\n{out_text[-3000:]}")
    summary = json.loads((out / name / "summary.json").read_text())
    return dict(name=name, prompts=prompts, max_n=max(grid), wall_s=wall, prompts_per_s=prompts / wall,
                peak_rss_mib=ru.ru_maxrss / 1024, load_before=load0, load_after=os.getloadavg(),
                summary=summary, folder=str(out / name))


def describe(r: dict) -> str:
    return (f"{r['prompts']:>7d} prompts x n<={r['max_n']}: {r['wall_s']:8.1f} s  {r['prompts_per_s']:7.1f} prompts/s  "
            f"peak RSS {r['peak_rss_mib']:7.0f} MiB  load {r['load_before'][0]:.2f} -> {r['load_after'][0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--prompts", type=int, default=100_000, help="prompts of the large run (one seed)")
    ap.add_argument("--factor", type=int, default=10, help="the small run has prompts / factor prompts")
    ap.add_argument("--max-n", type=int, default=1024, help="grid 1, 2, 4, ..., max n demonstrations")
    ap.add_argument("--kernels", default="predictive", help="kernels (Bayes and the Oracle always run)")
    ap.add_argument("--chunk", type=int, default=256, help="sweep --chunk: prompts sampled and evaluated at a time")
    ap.add_argument("--devices", type=int, default=None, help="CPU devices (default: the sweep's, cores up to 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check-n", type=int, default=10_000, help="largest n of the exactness check")
    ap.add_argument("--check-prompts", type=int, default=200)
    ap.add_argument("--check-chunk", type=int, default=None,
                    help="--chunk of the check (default: chunk x max-n / check-n, the scale runs' memory)")
    ap.add_argument("--skip-scale", action="store_true", help="only the n = 10^4 check")
    ap.add_argument("--skip-check", action="store_true", help="only the scale runs")
    ap.add_argument("--keep", default=None, help="write the run folders here instead of a temporary folder")
    ap.add_argument("--json", default=None, help="also write the measurements to this file")
    args = ap.parse_args()

    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="icl-kernel-scale-")
    out = Path(args.keep or tmp.name)
    out.mkdir(parents=True, exist_ok=True)
    print(f"cpus {os.cpu_count()}  load {os.getloadavg()}  kernels {args.kernels!r}  chunk {args.chunk}  "
          f"devices {args.devices or 'default'}  folders {out}", flush=True)
    results: dict = {}
    if not args.skip_scale:
        grid = powers_to(args.max_n)
        small = max(1, args.prompts // args.factor)
        runs = []
        for P in (small, args.prompts):
            r = run_sweep_child(out, f"scale_{P}", P, grid, args, args.chunk)
            print(describe(r), flush=True)
            runs.append(r)
        a, b = runs
        if b["prompts"] > a["prompts"] and b["wall_s"] > a["wall_s"]:
            marginal = (b["prompts"] - a["prompts"]) / (b["wall_s"] - a["wall_s"])
            print(f"marginal rate {marginal:.1f} prompts/s (start-up cost ~{a['wall_s'] - a['prompts'] / marginal:.0f} s); "
                  f"peak RSS x{b['peak_rss_mib'] / a['peak_rss_mib']:.2f} for x{b['prompts'] / a['prompts']:.0f} prompts",
                  flush=True)
            results["marginal_prompts_per_s"] = marginal
        s = b["summary"]
        k = s["config"]["kernels"][0]
        print(f"  n={grid[-1]}: mass on θ* {s['common']['posterior_mass_true_task'][-1]['mean']:.4f}  "
              f"Bayes-Oracle L1 {s['common']['bayes_vs_oracle_l1'][-1]['mean']:.4f}  "
              f"{k} L1 to Bayes {s['kernels'][k]['kernel_vs_bayes_l1'][-1]['mean']:.4f} "
              f"[{s['kernels'][k]['kernel_vs_bayes_l1'][-1]['lo']:.4f}, {s['kernels'][k]['kernel_vs_bayes_l1'][-1]['hi']:.4f}]")
        results["scale"] = [{k_: v for k_, v in r.items() if k_ != "summary"} for r in runs]
    if not args.skip_check:
        import numpy as np

        from icl_kernel.runfolder import open_existing

        n = args.check_n
        grid = sorted({10 ** k for k in range(len(str(n))) if 10 ** k <= n} | {n})
        chunk = args.check_chunk or max(2, args.chunk * args.max_n // n)  # the scale runs' chunk x n
        r = run_sweep_child(out, f"check_n{n}", args.check_prompts, grid, args, chunk)
        print(describe(r), flush=True)
        cells = open_existing(Path(r["folder"])).load_npz(f"cells/seed_{args.seed}.npz")
        finite = {k: bool(np.isfinite(v).all()) for k, v in cells.items() if k.startswith("common|")}
        c = r["summary"]["common"]
        for j, g in enumerate(grid):
            m, l1 = c["posterior_mass_true_task"][j], c["bayes_vs_oracle_l1"][j]
            print(f"  n={g:>6d}: mass on θ* {m['mean']:.6f} [{m['lo']:.6f}, {m['hi']:.6f}]  "
                  f"Bayes-Oracle L1 {l1['mean']:.2e}  (finite over {m['count']} prompts)")
        mass = cells["common|posterior_mass_true_task"]
        print(f"  every per-prompt Bayes metric finite: {all(finite.values())}; posterior mass in [0, 1]: "
              f"{bool(((mass >= 0) & (mass <= 1 + 1e-6)).all())}; min mass at n={n}: {mass[:, -1].min():.6f}")
        # log P(prompt_n) itself is not in the cells: evaluate a few prompts here, in float32 and float64.
        from simulate.runtime import setup

        setup()
        from simulate.evaluator import evaluate_prompts, make_evaluator, prepare_kernels
        from simulate.sampling import sample_prompts
        from simulate.sweep import SweepConfig, evaluated_ns, prompt_key, resolve
        from theory import kernels as tk

        res, hmm = resolve(SweepConfig(grid=tuple(grid), seeds=(args.seed,), prompts_per_seed=4, kernels=("predictive",)))
        prep = prepare_kernels(hmm, [tk.parse_kernel("predictive")], res.length)
        pr = sample_prompts(prompt_key(args.seed), hmm, res.labels, 4, n, res.length)
        logev = {}
        for dtype in ("float32", "float64"):
            ev = make_evaluator(hmm, prep, res.labels, evaluated_ns(res), dtype, length=res.length,
                                forward=res.forward)
            e = evaluate_prompts(ev, pr.demos_x, pr.demos_y, pr.x_test, pr.task, 2)
            logev[dtype] = np.asarray(e.log_evidence)[:, -1]
            print(f"  {dtype} ({res.forward} pass), 4 prompts at n={n}: log P(prompt) {np.round(logev[dtype], 1)} "
                  f"(nats; {np.round(logev[dtype] / n, 3)} per demonstration), Bayes sums to "
                  f"{np.asarray(e.bayes)[:, -1].sum(-1).round(6)}, mass on θ* {np.asarray(e.task_mass)[:, -1].round(6)}")
        print(f"  float32 vs float64 log P(prompt) relative difference: "
              f"{np.max(np.abs(logev['float32'] - logev['float64']) / np.abs(logev['float64'])):.1e}")
        results["check"] = dict({k_: v for k_, v in r.items() if k_ != "summary"}, grid=grid, finite=finite,
                                mass_mean=[x["mean"] for x in c["posterior_mass_true_task"]],
                                bayes_oracle_l1=[x["mean"] for x in c["bayes_vs_oracle_l1"]],
                                log_evidence_at_n={k_: v.tolist() for k_, v in logev.items()})
    print(f"this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; "
          f"largest child {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
