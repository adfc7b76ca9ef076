"""A changed label format (§4.2 (b)).

The demonstration labels are sent through a bijection π: Y → Y' (default: the next |Y| emittable
non-delimiter tokens outside Y). Bayes on the mapped prompt is read over Y' (renormalised) and
compared with the Oracle transported through π; kernel regression is label-agnostic, so its
estimate transports exactly.

Conditions: ``original`` (the prompts as sampled) and ``mapped`` (labels sent through π). The
evaluator works over the whole vocabulary; each condition is read on its own label set. Bayes
also has ``mass_Y`` and ``mass_piY`` ``[P, G]`` (next-token mass of Y and π(Y), not renormalised);
``mapped`` has the estimator ``bayes@Y`` (the mapped prompt's Bayes read on Y vs the Oracle).
"""
from __future__ import annotations

import numpy as np

from simulate.phenomena.common import (Context, Phenomenon, PhenomenaError, SeedResult, compare, draw_band,
                                       estimator_metrics, header, label_n_axes, renorm, rows_by_n)
from simulate.sampling import sample_prompts
from simulate.sweep import prompt_key
from theory.hmm import HMM

MAPPINGS = ("other", "permute", "identity")


def label_mapping(hmm: HMM, labels, mode: str) -> list[int]:
    """π(Y) as a list aligned with ``labels``: ``other`` (next emittable tokens outside Y), ``permute``
    (the cyclic shift y_i → y_{i+1}, a derangement for |Y| ≥ 2) or ``identity``."""
    labels = [int(y) for y in labels]
    if mode == "identity":
        return list(labels)
    if mode == "permute":
        if len(labels) < 2:
            raise PhenomenaError(f"--mapping permute needs at least 2 labels, got {labels}")
        return labels[1:] + labels[:1]
    if mode != "other":
        raise PhenomenaError(f"mapping {mode!r}, expected one of {', '.join(MAPPINGS)}")
    B = np.asarray(hmm.B)
    free = [o for o in range(hmm.num_tokens)
            if o != int(hmm.delim) and o not in labels and np.any(B[:, o] > 0)]
    after = [o for o in free if o > max(labels)] + [o for o in free if o < max(labels)]
    if len(after) < len(labels):
        raise PhenomenaError(f"--mapping other needs {len(labels)} emittable non-delimiter tokens outside the labels "
                             f"{labels}, the vocabulary has {len(after)}; use fewer labels or --mapping permute")
    return after[:len(labels)]


class Labels(Phenomenon):
    kind = "labels"
    help = "demonstration labels mapped to other tokens (changed label format)"
    grid = (1, 2, 4, 8, 16, 32, 64)
    length = 3
    kernels = ("predictive", "gram")
    options = dict(mapping="other")  # other | permute | identity

    def resolve(self, hmm, resolved, options):
        mode = options["mapping"]
        return dict(mapping=mode, mapped_labels=label_mapping(hmm, resolved.labels, mode))

    def conditions(self, resolved):
        return ["original", "mapped"]

    def evaluation_labels(self, hmm, resolved):
        return list(range(hmm.num_tokens))

    def run_seed(self, ctx: Context, seed: int) -> SeedResult:
        r = ctx.resolved
        Y, Yp = list(r.sweep.labels), r.options["mapped_labels"]
        pr = sample_prompts(prompt_key(seed), ctx.hmm, Y, r.sweep.prompts_per_seed, ctx.max_n, r.sweep.length)
        lut = np.arange(ctx.hmm.num_tokens)
        lut[Y] = Yp
        out = {}
        for cond, dy, lab in (("original", pr.demos_y, Y), ("mapped", lut[pr.demos_y], Yp)):
            ev = ctx.evaluate(pr._replace(demos_y=dy))
            # Over the whole vocabulary: read on the condition's label set; the Oracle is carried along π.
            est = estimator_metrics(renorm(ev.bayes, lab), renorm(ev.oracle, Y), ev.task_mass,
                                    [renorm(k.yhat, lab) for k in ev.kernels], ctx.names)
            # Next-token probability of the original and the mapped label sets (whole vocabulary, not renormalised).
            est["bayes"].update(mass_Y=ev.bayes[..., Y].sum(-1), mass_piY=ev.bayes[..., Yp].sum(-1))
            if cond == "mapped":
                est["bayes@Y"] = compare(renorm(ev.bayes, Y), renorm(ev.oracle, Y), "oracle")
            out[cond] = est
        return SeedResult(out, {})

    def table(self, summary: dict) -> str:
        c = summary["config"]
        res = summary["results"]
        o, m = res["original"], res["mapped"]
        lines = [header(summary) + f", mapping {c['mapping']}: {c['labels']} -> {c['mapped_labels']}"]
        rows = [("Bayes orig vs Oracle: L1", o["bayes"]["l1_oracle"]),
                ("Bayes mapped vs π(Oracle): L1", m["bayes"]["l1_oracle"]),
                ("Bayes mapped read on Y vs Oracle", m["bayes@Y"]["l1_oracle"]),
                ("Bayes orig vs Oracle: agree", o["bayes"]["agree_oracle"]),
                ("Bayes mapped vs π(Oracle): agree", m["bayes"]["agree_oracle"]),
                ("posterior mass θ*: orig", o["bayes"]["task_mass"]),
                ("posterior mass θ*: mapped", m["bayes"]["task_mass"]),
                ("next-token mass on Y: orig", o["bayes"]["mass_Y"]),
                ("next-token mass on Y: mapped", m["bayes"]["mass_Y"]),
                ("next-token mass on π(Y): orig", o["bayes"]["mass_piY"]),
                ("next-token mass on π(Y): mapped", m["bayes"]["mass_piY"])]
        for k in c["kernels"]:
            rows.append((f"{k} vs Oracle L1 (orig = mapped)", o[k]["l1_oracle"]))
            rows.append((f"{k} vs Bayes L1: orig", o[k]["l1_bayes"]))
            rows.append((f"{k} vs Bayes L1: mapped", m[k]["l1_bayes"]))
        return "\n".join([*lines, *rows_by_n(summary, rows)])

    def plot(self, summary: dict, axes) -> None:
        res = summary["results"]
        grid = summary["config"]["grid"]
        o, m = res["original"], res["mapped"]
        draw_band(axes[0], grid, o["bayes"]["l1_oracle"], color="tab:blue", marker="o", label="Bayes, original labels")
        draw_band(axes[0], grid, m["bayes"]["l1_oracle"], color="tab:red", marker="o",
                  label="Bayes, mapped labels (vs π(Oracle))")
        draw_band(axes[0], grid, m["bayes@Y"]["l1_oracle"], color="tab:purple", ls="--",
                  label="Bayes, mapped prompt read on Y")
        for k, ls in zip(summary["config"]["kernels"], (":", "-.", "--")):
            draw_band(axes[0], grid, o[k]["l1_oracle"], color="black", ls=ls, label=f"{k} kernel (identical under π)")
        draw_band(axes[1], grid, o["bayes"]["task_mass"], color="tab:blue", marker="o", label="original labels")
        draw_band(axes[1], grid, m["bayes"]["task_mass"], color="tab:red", marker="o", label="mapped labels")
        draw_band(axes[2], grid, o["bayes"]["mass_Y"], color="tab:blue", marker="o", label="original prompt: mass on Y")
        draw_band(axes[2], grid, m["bayes"]["mass_Y"], color="tab:red", ls="--", label="mapped prompt: mass on Y")
        draw_band(axes[2], grid, o["bayes"]["mass_piY"], color="tab:blue", marker="s", ls=":",
                  label="original prompt: mass on π(Y)")
        draw_band(axes[2], grid, m["bayes"]["mass_piY"], color="tab:red", marker="s", label="mapped prompt: mass on π(Y)")
        label_n_axes(axes, [("L1 distance to the (transported) Oracle (over labels)", "Changed label format"),
                            ("posterior mass on the true task θ* (probability)", "Task identification"),
                            ("Bayes next-token probability of the label set", "Where the output goes")])


PHENOMENON = Labels()
