r"""Out-of-distribution demonstrations (§4.2 (c), the paper's Table 1).

Demonstration inputs come from θ*'s chain with emissions mixed toward uniform,
B_λ = (1−λ)B + λU on the non-delimiter tokens (the delimiter column unchanged), and the labels
from the true P(y | x, θ*). x_test stays in distribution. ε_θ(λ) = ρ(Σ_pre⁺ − Σ_{q_λ,θ}⁺), with
Σ_{q_λ,θ} = Σ_x s_θᵀT^λ_x 1 · φ(x)φ(x)ᵀ (T^λ: the mixed chain, φ: the true features) by
enumeration, so ε_θ(0) is the paper's ρ(Σ_pre⁺ − Σ_θ⁺).

Conditions: ``lambda=L`` for each λ. Side arrays: ``task|lambda=L`` ``[P]`` (the test task of each
prompt, to pair the floor with ε_θ per task). Extras: ``eps``, ``eps_scaled``, ``rel_shift``
(``[Λ][K]``), ``eta2``, ``sigma_pre``.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from simulate.forward import filter_tokens, hmm_arrays, next_token_probs
from simulate.phenomena.common import (Context, Phenomenon, PhenomenaError, Pooled, SeedResult, color_cycle, draw_band,
                                       evaluation_metrics, fmt_band, header, log2_n_axis, viridis)
from simulate.sampling import Prompts, sample_prompts
from simulate.sweep import prompt_key
from theory import kernels as tk
from theory.bounds import eta, gram_epsilon, paper_epsilon
from theory.hmm import HMM, input_tokens, make_hmm

DEFAULT_LAMBDAS = (0.0, 0.25, 0.5, 0.75, 1.0)
EPS_RTOL = 1e-10
MAX_FEATURE_DIM = 4096


# ------------------------------------------------------------------ pure pieces


def mix_emissions(hmm: HMM, lam: float) -> HMM:
    """The HMM with B_λ = (1−λ)B + λU: U spreads each state's non-delimiter mass uniformly."""
    if not 0.0 <= float(lam) <= 1.0:
        raise PhenomenaError(f"lambda {lam!r} is outside [0, 1]")
    B = np.asarray(hmm.B, float)
    inp = input_tokens(hmm)
    U = np.zeros_like(B)
    U[:, inp] = (1.0 - B[:, int(hmm.delim)])[:, None] / len(inp)
    U[:, int(hmm.delim)] = B[:, int(hmm.delim)]
    Bl = (1.0 - lam) * B + lam * U
    return make_hmm(hmm.T, Bl, hmm.R, hmm.p0, hmm.task_start, hmm.task_of_state, hmm.delim, hmm.delim_weight)


def true_label_probs(hmm: HMM, xs, task, labels) -> np.ndarray:
    """P(y | x, θ*) over ``labels`` (renormalised) for inputs ``xs [P, N, l]`` of tasks ``task [P]``."""
    A = hmm_arrays(hmm, jnp.float64)
    xs = jnp.asarray(xs)
    start = jnp.broadcast_to(A.task_start[jnp.asarray(task)][:, None, :], xs.shape[:2] + (A.T.shape[0],))
    alpha, _ = filter_tokens(A, start, jnp.zeros(xs.shape[:2], jnp.float64), xs)
    return np.asarray(next_token_probs(A, alpha, jnp.asarray(labels, jnp.int32)))


def draw_categorical(probs, u) -> np.ndarray:
    """Index i with probability probs[..., i], by inverse CDF of the uniforms ``u`` (shape probs[..., 0])."""
    c = np.cumsum(probs, -1)
    return np.minimum((c < u[..., None] * c[..., -1:]).sum(-1), probs.shape[-1] - 1)


def input_law_weights(hmm_w: HMM, start, xs) -> np.ndarray:
    """startᵀ T^w_x 1 for each x of ``xs [S, l]`` under ``hmm_w`` (the probability that x comes first)."""
    A = hmm_arrays(hmm_w, jnp.float64)
    xs = jnp.asarray(xs)
    a0 = jnp.broadcast_to(jnp.asarray(start, jnp.float64), (xs.shape[0], A.T.shape[0]))
    _, logz = filter_tokens(A, a0, jnp.zeros(xs.shape[0], jnp.float64), xs)
    return np.exp(np.asarray(logz))


def enumerate_inputs(hmm: HMM, length: int) -> np.ndarray:
    """Every input x of length l ``[m^l, l]``; refused when there are more than 200 000."""
    xs = tk.all_inputs(hmm, length)
    if xs is None:
        m_in = len(input_tokens(hmm))
        raise PhenomenaError(f"exact ε_θ enumerates {m_in}^{length} = {m_in ** length} inputs (> 200000); "
                             "use fewer tokens (-P num_tokens=) or a shorter --length")
    return xs


def shift_measures(hmm: HMM, lambdas, length: int) -> dict:
    """Per λ and task θ: ε_θ(λ) = ρ(Σ_pre⁺ − Σ_{q_λ,θ}⁺), its scale-free form min_c ρ(c Σ_pre⁺ − Σ_{q_λ,θ}⁺)
    (kernel regression ignores the scale of Σ), and ‖Σ_{q_λ,θ} − Σ_θ‖_F / ‖Σ_θ‖_F; η² = max_x ‖T_x‖_F²."""
    xs = enumerate_inputs(hmm, length)
    blocks = tk.block_structure(hmm)
    phi = tk.operator_features(hmm, xs, blocks)
    sig_pre = tk.second_moment_exact(hmm, hmm.p0, length, blocks)
    pre_inv, pre_info = tk.psd_pinv(sig_pre, EPS_RTOL, 0.0, "Sigma_pre")
    starts = np.asarray(hmm.task_start)
    sig0 = [tk.second_moment_exact(hmm, s, length, blocks) for s in starts]  # Σ_θ
    out = dict(eps=[], eps_scaled=[], rel_shift=[])
    for lam in lambdas:
        h = mix_emissions(hmm, lam)
        sig = [(phi * input_law_weights(h, s, xs)[:, None]).T @ phi for s in starts]
        out["eps"].append([paper_epsilon(sig_pre, S, EPS_RTOL) for S in sig])
        out["eps_scaled"].append([gram_epsilon(pre_inv, tk.psd_pinv(S, EPS_RTOL, 0.0, "Sigma_q")[0]).value
                                  for S in sig])
        out["rel_shift"].append([float(np.linalg.norm(S - S0) / np.linalg.norm(S0)) for S, S0 in zip(sig, sig0)])
    return dict(out, eta2=eta(hmm, length).value ** 2, sigma_pre=pre_info)


def ood_prompts(hmm: HMM, labels, lam: float, seed: int, num_prompts: int, num_demos: int, length: int,
                true: Prompts | None = None) -> Prompts:
    """OOD prompts for λ: inputs from the B_λ chain (same uniforms for every λ), labels from the true
    P(y | x, θ*), x_test and θ* from the true model.

    ``true`` (the seed's in-distribution prompts, the same for every λ) may be passed precomputed.
    """
    key = prompt_key(seed)
    if true is None:
        true = sample_prompts(key, hmm, labels, num_prompts, num_demos, length)
    mixed = sample_prompts(key, mix_emissions(hmm, lam), labels, num_prompts, num_demos, length)
    probs = true_label_probs(hmm, mixed.demos_x, true.task, labels)
    u = np.random.default_rng([seed, 0x4F4F44]).random(probs.shape[:2])
    ys = np.asarray(labels, np.int32)[draw_categorical(probs, u)]
    return true._replace(demos_x=mixed.demos_x, demos_y=ys)


def lambda_name(lam: float) -> str:
    return f"lambda={lam:g}"


# ------------------------------------------------------------------ the phenomenon


class OOD(Phenomenon):
    kind = "ood"
    help = "demonstration inputs drawn away from p_pre (emissions mixed toward uniform); floor vs ε_θ"
    grid = (1, 4, 16, 64, 256, 1024)
    length = 3
    kernels = ("gram", "pretrain", "predictive", "belief")
    options = dict(lambdas=DEFAULT_LAMBDAS)  # emission mixing weights in [0, 1]

    def resolve(self, hmm, resolved, options):
        try:
            lams = [float(v) for v in options["lambdas"]]
        except (TypeError, ValueError):
            raise PhenomenaError(f"lambdas {options['lambdas']!r}, expected a list of numbers in [0, 1]") from None
        if not lams:
            raise PhenomenaError("no lambdas given; expected e.g. 0,0.5,1")
        for v in lams:
            mix_emissions(hmm, v)  # range check (NaN fails it too)
        enumerate_inputs(hmm, resolved.length)
        F = tk.feature_dim(tk.block_structure(hmm))
        if F > MAX_FEATURE_DIM:
            raise PhenomenaError(f"exact ε_θ needs Σ over vec(T_x), which has {F} dimensions here "
                                 f"(> {MAX_FEATURE_DIM}); use a smaller HMM")
        return dict(lambdas=sorted(set(lams)))

    def conditions(self, resolved):
        return [lambda_name(lam) for lam in resolved.options["lambdas"]]

    def extras(self, hmm, resolved):
        return shift_measures(hmm, resolved.options["lambdas"], resolved.sweep.length)

    def run_seed(self, ctx: Context, seed: int) -> SeedResult:
        r = ctx.resolved
        out, by_task = {}, {}
        s = r.sweep
        true = sample_prompts(prompt_key(seed), ctx.hmm, s.labels, s.prompts_per_seed, ctx.max_n, s.length)
        for lam in r.options["lambdas"]:
            pr = ood_prompts(ctx.hmm, s.labels, lam, seed, s.prompts_per_seed, ctx.max_n, s.length, true)
            out[lambda_name(lam)] = evaluation_metrics(ctx.evaluate(pr), ctx.names)
            by_task[f"task|{lambda_name(lam)}"] = pr.task
        return SeedResult(out, by_task)

    def summarise(self, summary: dict, pooled: Pooled) -> None:
        """The floor (largest n) per test task, to pair with ε_θ per task: ``floor_by_task[cond][est][θ]``."""
        K = len(summary["extras"]["eps"][0])
        by_task = {}
        for cond in [lambda_name(lam) for lam in summary["config"]["lambdas"]]:
            t = pooled.side[f"task|{cond}"]
            for est in summary["results"][cond]:
                arr = pooled.metrics[(cond, est, "l1_oracle")][:, -1]
                by_task.setdefault(cond, {})[est] = [_nanmean_or_none(arr[t == k]) for k in range(K)]
        summary["floor_by_task"] = by_task

    def table(self, summary: dict) -> str:
        c = summary["config"]
        res, ex = summary["results"], summary["extras"]
        N = c["grid"][-1]
        ests = ["bayes", *c["kernels"]]
        lines = [header(summary),
                 f"floor = L1 to Oracle at n={N} (95% band); ε_θ = ρ(Σ_pre⁺ − Σ_qλ⁺) and ε_c = min_c ρ(c Σ_pre⁺ − Σ_qλ⁺), "
                 f"means over tasks; shift = ‖Σ_qλ − Σ_θ‖_F/‖Σ_θ‖_F; η² = {ex['eta2']:.3g}; mass θ* at n={N}",
                 f"{'λ':>5s} {'ε_θ':>9s} {'η²ε_θ':>9s} {'ε_c':>9s} {'shift':>6s} {'mass θ*':>8s} "
                 + " ".join(f"{e:>22s}" for e in ests)]
        for i, lam in enumerate(c["lambdas"]):
            r = res[lambda_name(lam)]
            eps = float(np.mean(ex["eps"][i]))
            lines.append(f"{lam:5.2f} {eps:9.3g} {ex['eta2'] * eps:9.3g} {np.mean(ex['eps_scaled'][i]):9.3g} "
                         f"{np.mean(ex['rel_shift'][i]):6.3f} "
                         f"{r['bayes']['task_mass'][-1]['mean']:8.3f} "
                         + " ".join(f"{fmt_band(r[e]['l1_oracle'][-1]):>22s}" for e in ests))
        return "\n".join(lines)

    def plot(self, summary: dict, axes) -> None:
        c = summary["config"]
        res, ex = summary["results"], summary["extras"]
        lams = c["lambdas"]
        ests = ["bayes", *c["kernels"]]
        colors = color_cycle()
        scale = 10.0 ** np.floor(np.log10(max(np.max(ex["eps"]), 1e-300)))
        eps_mean = np.array([np.mean(e) for e in ex["eps"]]) / scale
        per_task = summary["floor_by_task"]
        for i, e in enumerate(ests):
            col = colors[i % len(colors)]
            floors = [res[lambda_name(lam)][e]["l1_oracle"][-1] for lam in lams]
            draw_band(axes[0], lams, floors, color=col, marker="o", label=e)
            pts = [(ex["eps"][j][t] / scale, per_task[lambda_name(lam)][e][t])
                   for j, lam in enumerate(lams) for t in range(len(ex["eps"][j]))
                   if per_task[lambda_name(lam)][e][t] is not None]
            axes[1].scatter([p[0] for p in pts], [p[1] for p in pts], color=col, s=14, alpha=0.7,
                            label=f"{e} (per task θ, λ)")
            axes[1].plot(eps_mean, [np.nan if f["mean"] is None else f["mean"] for f in floors], color=col, lw=1)
        k0 = "predictive" if "predictive" in c["kernels"] else c["kernels"][0]
        cmap = viridis(len(lams))
        for j, lam in enumerate(lams):
            draw_band(axes[2], c["grid"], res[lambda_name(lam)][k0]["l1_oracle"], color=cmap[j], marker="o",
                      label=f"{k0}, λ={lam:g}")
            draw_band(axes[2], c["grid"], res[lambda_name(lam)]["bayes"]["l1_oracle"], color=cmap[j], ls="--",
                      label=f"Bayes, λ={lam:g}")
        N = c["grid"][-1]
        shift = [np.mean(v) for v in ex["rel_shift"]]
        axes[0].set_xticks(lams, [f"{lam:g}\n[{v:.2f}]" for lam, v in zip(lams, shift)])
        axes[0].set_xlabel("emission mixing λ (0 = in distribution) [‖Σ_qλ − Σ_θ‖_F / ‖Σ_θ‖_F]")
        axes[0].set_ylabel(f"floor: L1 to Oracle at n={N} (over labels)")
        axes[0].set_title("Floor vs how far demonstrations are drawn from p_pre", fontsize=10)
        for x, lam in zip(eps_mean, lams):
            axes[1].axvline(x, color="gray", ls=":", lw=0.8)
            axes[1].annotate(f"λ={lam:g}", (x, 1.0), xycoords=("data", "axes fraction"), rotation=90, fontsize=7,
                             va="top", ha="right", color="gray")
        axes[1].set_xlabel(f"ε_θ = ρ(Σ_pre⁺ − Σ_qλ⁺) (×{scale:.0e}, units of Σ⁻¹; lines: task means)")
        axes[1].set_ylabel(f"floor: L1 to Oracle at n={N} (over labels)")
        axes[1].set_title("Floor vs ε_θ (dots: one task θ at one λ)", fontsize=10)
        axes[2].set_yscale("log")
        axes[2].set_ylim(bottom=1e-4)
        log2_n_axis(axes[2], "L1 distance to Oracle (over labels; below 1e-4 not shown)",
                    f"Convergence by λ ({k0} kernel, Bayes dashed)")


def _nanmean_or_none(x) -> float | None:
    x = np.asarray(x, float)
    return float(np.nanmean(x)) if x.size else None


PHENOMENON = OOD()
