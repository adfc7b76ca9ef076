"""The Theorem-1 bound for a preset or a sweep's run folder: constants, per-prompt terms, bound.json.

For a run folder, the bound is evaluated on the run's own prompts (the first ``--prompts`` of its
first seed) and set beside the errors the sweep measured on those prompts: the fraction of prompts
where the measured ‖ŷ_n − Bayes_n‖₁ is within the bound (it should be at least 1 − δ_K − δ_B), and
the measured floor ‖ŷ_N − o‖₁ against the exactly computed bias.

Demonstration sets are exact (the whole support of q_θ, enumerated) when (m−1)^l ≤ ``enum_limit``,
else Monte Carlo draws from the exact sampler; then every population quantity is an estimate and
bound.json says so.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from icl_kernel.errors import UserError
from icl_kernel.runfolder import RunFolder, RunFolderError, atomic_write_json, open_existing
from simulate.evaluator import prepare_kernels
from simulate.sampling import sample_prompts
from simulate.sweep import SweepConfig, SweepIdentity, load_cells, load_prompts, load_run_hmm, prompt_key, resolve
from theory import bounds as tb
from theory import kernels as tk
from theory.hmm import HMM

DEFAULT_BOUND_GRID = (1, 2, 4, 8, 16, 32, 64, 128, 1024, 16384, 262144)


def mc_demo_set(key, hmm: HMM, task: int, length: int, labels, num: int) -> tb.DemoSet:
    """``num`` demonstrations of task ``task`` from the exact sampler, as an equal-weight set."""
    pr = sample_prompts(key, hmm, labels, 1, num, length, task=task)
    ys = np.argmax(pr.demos_y[0][:, None] == np.asarray(labels)[None], axis=1).astype(np.int32)
    return tb.DemoSet(pr.demos_x[0], ys, np.full(num, 1.0 / num), False)


def demo_sets(hmm: HMM, length: int, labels, mc_demos: int, seed: int, enum_limit: int = 200000):
    if tb.all_inputs(hmm, length, enum_limit) is not None:
        return [tb.exact_demo_set(hmm, k, length, labels, enum_limit) for k in range(hmm.num_tasks)]
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 0xB0D)
    return [mc_demo_set(jax.random.fold_in(key, k), hmm, k, length, labels, mc_demos) for k in range(hmm.num_tasks)]


def _finite(x):
    x = np.asarray(x, float)
    return [None if not np.isfinite(v) else float(v) for v in np.ravel(x)]


def compute_bound(hmm: HMM, length: int, labels, specs, x_test, tasks, grid, delta_k: float = 0.05,
                  delta_b: float = 0.05, mc_demos: int = 4096, seed: int = 0, quiet: bool = True,
                  enum_limit: int = 200000) -> dict:
    """Everything `icl-kernel bound` reports, as a JSON-ready dict (per-prompt arrays under ``per_prompt``).

    Raises :class:`theory.errors.AssumptionError` when the HMM violates an assumption.
    """
    t0 = time.perf_counter()
    labels = np.asarray(labels)
    assumptions = tb.check_assumptions(hmm)
    sets = demo_sets(hmm, length, labels, mc_demos, seed, enum_limit)
    exact = all(s.exact for s in sets)
    blocks = tk.block_structure(hmm)
    phis = [tk.operator_features(hmm, ds.xs, blocks) for ds in sets]  # shared by D, o_x and the Σ kernels
    dist = tb.distinguishability(hmm, sets, labels, phis)
    tb.check_distinguishable(dist)
    eta = tb.eta(hmm, length, enum_limit)
    Z = tb.demo_normaliser(hmm, length, labels)
    F = tk.feature_dim(blocks)
    consts = dict(eps_r=assumptions.eps_r, eps_d=assumptions.eps_d, prior=assumptions.prior.tolist(),
                  eta=eta.value, eta_kind=eta.kind, Z=Z.tolist(), D=dist.D.tolist(), D_range=dist.r.tolist(),
                  kl=_finite(dist.kl) if exact else None, D_min=float(np.min(dist.D + np.diag(np.full(len(Z), np.inf)))),
                  demo_sets="exact" if exact else f"monte carlo ({mc_demos} per task)", feature_dim=F)
    matrices = {}
    if F <= 4096:
        G = tk.gram_matrix(hmm, length, blocks)
        Gp, ginfo = tk.psd_pinv(G, 1e-10, 0.0, "G_l")
        consts.update(gram_pinv_norm=ginfo["pinv_norm"], gram_rank=ginfo["rank"])
        need = [s for s in specs if s.name in tk.MATRIX_KERNELS]
        if need:
            labels_ = [s.label for s in need]
            extra = [tk.parse_kernel(k) for k in ("pretrain", "task") if k not in labels_]
            prepared = prepare_kernels(hmm, need + extra, length, seed)
            infos = prepared.infos
            by_label = {k.label: k.inverses for k in prepared.kernels}
            # ‖Σ⁺‖₂ per kernel (one per start for the task kernel), as the pinv used it.
            consts["sigma_pinv_norm"] = {i["kernel"]: [ps["pinv_norm"] for ps in i["per_start"]] for i in infos}
            for s in need:
                matrices[s.label] = by_label[s.label]
            A_pre, A_task = by_label["pretrain"][0], by_label["task"]
            consts["paper_eps_theta"] = [tb.spectral_radius_sym(A_pre - A_task[k]) for k in range(len(A_task))]
            consts["eps_gram"] = {}
            for s in need:
                if s.name == "gram":
                    consts["eps_gram"][s.label] = [0.0]
                else:
                    consts["eps_gram"][s.label] = [tb.gram_epsilon(M, Gp, iters=25).value for M in matrices[s.label]]
    grid = np.asarray(sorted(set(int(n) for n in grid)), float)
    P = len(tasks)
    per = {s.label: {k: np.zeros((P, len(grid))) for k in ("deviation", "bayes", "total")} for s in specs}
    for s in specs:
        per[s.label].update(bias=np.zeros(P), bias_bound=np.zeros(P), bias_bound_paper=np.zeros(P), mu=np.zeros(P),
                            bias_error=np.zeros(P))
    o_x = [tb.oracle_per_input(hmm, k, ds.xs, labels, phis[k]) for k, ds in enumerate(sets)]
    bar = tqdm(total=P * len(specs), disable=quiet, unit="prompt", desc="bound", delay=2.0)
    for j, s in enumerate(specs):
        if s.name in tk.MATRIX_KERNELS and s.label not in matrices:
            raise tk.KernelError(f"kernel {s.label!r}: vec(T_x) has {F} dimensions (> 4096); use belief or predictive")
        f_sets = phis if s.name in tk.MATRIX_KERNELS else [tb.kernel_features(hmm, s, ds.xs) for ds in sets]
        f_test = tb.kernel_features(hmm, s, np.asarray(x_test))
        for p in range(P):
            th = int(tasks[p])
            eps = None
            if s.name in ("pretrain", "task"):
                eps = consts["eps_gram"][s.label][th if s.name == "task" else 0]
            kv = tb.kernel_values_from_features(s, f_test[p], f_sets[th], matrices.get(s.label), th)
            pb = tb.prompt_bound(hmm, s, x_test[p], th, labels, sets[th], dist, assumptions.prior, grid,
                                 delta_k, delta_b, A=matrices.get(s.label), eta_value=eta.value, eps=eps, Z=Z[th],
                                 kv=kv, o_x=o_x[th])
            r = per[s.label]
            r["deviation"][p], r["bayes"][p], r["total"][p] = pb.deviation, pb.bayes, pb.total
            r["bias"][p], r["bias_bound"][p], r["bias_bound_paper"][p] = pb.bias, pb.bias_bound, pb.bias_bound_paper
            r["mu"][p] = pb.limit.mu
            # A Monte Carlo set estimates ȳ from M draws: its error is the deviation bound at n = M.
            r["bias_error"][p] = 0.0 if exact else tb.deviation_bound(
                len(sets[th].w), 0.05, pb.limit.k_min, pb.limit.k_max, pb.limit.mu, len(labels),
                float(np.abs(pb.limit.ybar).sum()), pb.limit.var_nu, pb.limit.var_mu)
            bar.update(1)
    bar.close()
    kernels = {}
    for s in specs:
        r = per[s.label]
        kernels[s.label] = dict(
            median_deviation=_finite(np.median(r["deviation"], axis=0)),
            median_bayes=_finite(np.median(r["bayes"], axis=0)),
            median_total=_finite(np.median(r["total"], axis=0)),
            mean_bias=float(np.mean(r["bias"])), mean_bias_bound=float(np.mean(r["bias_bound"])),
            median_bias_bound_paper=(_finite(np.median(r["bias_bound_paper"]))[0]
                                     if s.name in tk.MATRIX_KERNELS else "n/a"),
            finite_total_frac=_finite(np.mean(np.isfinite(r["total"]), axis=0)),
            median_mu=float(np.median(r["mu"])), median_bias_error=_finite(np.median(r["bias_error"]))[0])
    return dict(grid=grid.astype(int).tolist(), delta_k=delta_k, delta_b=delta_b, length=int(length),
                labels=labels.tolist(), num_prompts=P, constants=consts, kernels=kernels,
                per_prompt={k: {m: np.asarray(v).tolist() for m, v in r.items()} for k, r in per.items()},
                seconds=time.perf_counter() - t0)


def compare_with_run(bound: dict, rf: RunFolder) -> dict:
    """Per kernel and run-grid n: the fraction of the run's prompts within the bound, and floor vs bias.

    The bound was evaluated on the first ``num_prompts`` prompts of the run's first seed.
    """
    resolved = SweepIdentity.from_dict(rf.config())
    cells = load_cells(rf, resolved)
    P = bound["num_prompts"]
    out = {}
    for name in resolved.kernels:
        if name not in bound["per_prompt"]:
            continue
        meas = cells.per_seed[f"kernel|{name}|kernel_vs_bayes_l1"][0][:P]  # [P, G] first seed
        meas_o = cells.per_seed[f"kernel|{name}|kernel_vs_oracle_l1"][0][:P]
        tot = np.asarray(bound["per_prompt"][name]["total"], float)  # [P, Gb]
        tot = np.where(np.isnan(tot), np.inf, tot)  # an infinite bound is stored as null
        within = []
        for g, n in enumerate(resolved.grid):
            if n in bound["grid"]:
                gi = bound["grid"].index(n)
                within.append(dict(n=n, within=float(np.mean(meas[:, g] <= tot[:, gi])),
                                   finite=float(np.mean(np.isfinite(tot[:, gi])))))
        bias = np.asarray(bound["per_prompt"][name]["bias"], float)
        out[name] = dict(within_bound=within, measured_floor_vs_oracle=float(np.mean(meas_o[:, -1])),
                         floor_n=int(resolved.grid[-1]), mean_bias=float(np.mean(bias)))
    return out


@dataclass
class BoundConfig:
    """`icl-kernel bound` without a run folder: the preset part of a sweep config plus the bound's own."""

    sweep: SweepConfig
    grid: tuple = DEFAULT_BOUND_GRID
    delta_k: float = 0.05
    delta_b: float = 0.05
    prompts: int = 64
    mc_demos: int = 4096
    seed: int = 0

    def validate(self) -> None:
        if not (0 < self.delta_k < 1 and 0 < self.delta_b < 1):
            raise BoundArgumentError(f"delta_k={self.delta_k}, delta_b={self.delta_b}; expected probabilities in (0, 1)")
        if self.prompts < 1:
            raise BoundArgumentError(f"prompts {self.prompts}, expected >= 1")
        if self.mc_demos < 1:
            raise BoundArgumentError(f"mc_demos {self.mc_demos}, expected >= 1")
        if not self.grid or any(n < 1 for n in self.grid):
            raise BoundArgumentError(f"grid {list(self.grid)}: every n must be >= 1")


class BoundArgumentError(UserError):
    """A bad argument of `icl-kernel bound`."""


def run_bound(cfg: BoundConfig, run_dir=None, out=None, quiet: bool = True) -> dict:
    """The bound for a preset (``run_dir=None``) or on a sweep's own prompts; saved to ``out``.

    With a run folder, ``out`` defaults to RUN/bound.json (written under the folder's lock) and the
    bound is checked against the errors the sweep measured. Everything is validated first.
    """
    cfg.validate()
    grid = set(int(n) for n in cfg.grid)
    if run_dir is not None:
        rf = open_existing(run_dir, "sweep", write=out is None)
        try:
            rc = SweepIdentity.from_dict(rf.config())
            if rc.label_mode != "sample":
                raise BoundArgumentError("the bound assumes labels sampled from P(y|x,θ*) (label_mode 'sample'), "
                                         f"not {rc.label_mode!r}")
            hmm = load_run_hmm(rf)
            if not rf.exists(f"prompts/seed_{rc.seeds[0]}.npz"):
                why = ("the sweep ran with --no-save-prompts" if not rc.save_prompts
                       else "the sweep has not finished its first seed")
                raise RunFolderError(f"{rf.path}/prompts/seed_{rc.seeds[0]}.npz not found; {why}")
            pr = load_prompts(rf, rc.seeds[0])
            x_test, tasks = pr.x_test[:cfg.prompts], pr.task[:cfg.prompts]
            grid |= set(rc.grid)
            specs = [tk.parse_kernel(k) for k in rc.kernels]
            bound = compute_bound(hmm, rc.length, rc.labels, specs, x_test, tasks, sorted(grid), cfg.delta_k,
                                  cfg.delta_b, cfg.mc_demos, cfg.seed, quiet=quiet)
            if rf.exists("summary.json"):
                bound["run_check"] = compare_with_run(bound, rf)
            if out is None:
                rf.write_json("bound.json", bound)
                bound["written_to"] = str(rf.path / "bound.json")
        finally:
            rf.close()
    else:
        resolved, hmm = resolve(cfg.sweep)
        specs = [tk.parse_kernel(k) for k in resolved.kernels]
        pr = sample_prompts(prompt_key(cfg.seed), hmm, resolved.labels, cfg.prompts, 1, resolved.length)
        bound = compute_bound(hmm, resolved.length, resolved.labels, specs, pr.x_test, pr.task, sorted(grid),
                              cfg.delta_k, cfg.delta_b, cfg.mc_demos, cfg.seed, quiet=quiet)
    if out is not None:
        out = Path(out)
        if out.parent != Path("") and not out.parent.is_dir():
            raise RunFolderError(f"cannot write {out}: folder {out.parent} does not exist")
        atomic_write_json(out, bound)
        bound["written_to"] = str(out)
    return bound


def _fmt_paper(v) -> str:
    return "inf" if v is None else v if isinstance(v, str) else f"{v:.3g}"


def format_bound(b: dict) -> str:
    c = b["constants"]
    lines = [f"demonstration sets: {c['demo_sets']}; labels {b['labels']}; l={b['length']}; "
             f"{b['num_prompts']} prompts; delta_K={b['delta_k']}, delta_B={b['delta_b']}",
             f"eps_r (delimiter lower bound) {c['eps_r']:.4g}   eps_d (start lower bound) {c['eps_d']:.4g}   "
             f"eta ({c['eta_kind']}) {c['eta']:.4g}   D_min {c['D_min']:.4g}",
             "Z_theta " + " ".join(f"{z:.3g}" for z in c["Z"])]
    if "gram_pinv_norm" in c:
        lines.append(f"||G_l^+|| {c['gram_pinv_norm']:.4g} (rank {c['gram_rank']} of {c['feature_dim']})")
    for k, v in c.get("sigma_pinv_norm", {}).items():
        lines.append(f"||Sigma^+|| for {k}: " + " ".join(f"{e:.3g}" for e in v))
    if "paper_eps_theta" in c:
        lines.append("paper eps_theta = rho(Sigma_pre^+ - Sigma_theta^+): " + " ".join(f"{e:.3g}" for e in c["paper_eps_theta"]))
        for k, v in c["eps_gram"].items():
            lines.append(f"eps (min_c rho(c A - G^+)) for {k}: " + " ".join(f"{e:.3g}" for e in v))
    lines.append("n                " + " ".join(f"{n:>9d}" for n in b["grid"]))
    fmt = lambda v: f"{v:9.3g}" if v is not None else "      inf"  # noqa: E731
    for name, k in b["kernels"].items():
        err = k["median_bias_error"]
        err = "" if err == 0 else f" ± {err:.3g} (MC, 95%)" if err is not None else " ± inf (MC)"
        lines.append(f"[{name}]  mean bias {k['mean_bias']:.4f}{err}  (NW bound {k['mean_bias_bound']:.4f}; paper-form "
                     f"{_fmt_paper(k['median_bias_bound_paper'])})  "
                     f"median mu_K {k['median_mu']:.3g}")
        lines.append("  deviation      " + " ".join(fmt(v) for v in k["median_deviation"]))
        lines.append("  Bayes->Oracle  " + " ".join(fmt(v) for v in k["median_bayes"]))
        lines.append("  total (median) " + " ".join(fmt(v) for v in k["median_total"]))
    if "run_check" in b:
        for name, r in b["run_check"].items():
            w = ", ".join(f"n={x['n']}: {x['within']:.2f}" for x in r["within_bound"])
            lines.append(f"[{name}] run prompts within the bound: {w}; measured floor vs Oracle "
                         f"(n={r['floor_n']}) {r['measured_floor_vs_oracle']:.4f} vs mean bias {r['mean_bias']:.4f}")
    return "\n".join(lines)
