"""How often do random HMMs meet the theorem's distinguishability assumption (D[θ*, θ] > 0)?

D is the expected per-demonstration log-likelihood ratio of θ* against θ under θ*'s demonstration
law (docs/theory.md, Lemma 3). It can be negative although the KL between the two demonstration
laws is positive: then the Bayes posterior leaves θ* as n grows. Exact by enumeration.

    .venv/bin/python scripts/theory_census.py --seeds 50
"""
from __future__ import annotations

import argparse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--length", type=int, default=3)
    ap.add_argument("--num-labels", type=int, default=3)
    args = ap.parse_args()
    from simulate.runtime import setup

    setup(1)
    import numpy as np
    from simulate.presets import HanConfig, han_hmm
    from theory import bounds as tb

    labels = list(range(1, args.num_labels + 1))
    print("tasks states tokens  delim  emit_conc  seeds  frac(D_min<=0)  frac(KL_min<=0)  median D_min")
    for K, d, m, rate, conc in [(2, 4, 5, 0.2, 0.1), (3, 6, 5, 0.2, 0.1), (4, 16, 8, 0.05, 0.1),
                                (2, 4, 5, 0.2, 1.0), (3, 6, 5, 0.2, 0.5), (3, 6, 5, 0.2, 1.0), (4, 16, 8, 0.05, 1.0)]:
        dmins, klmins = [], []
        for seed in range(args.seeds):
            h = han_hmm(HanConfig(num_tasks=K, num_states=d, num_tokens=m, delim_rate=rate, emit_conc=conc, seed=seed))
            sets = [tb.exact_demo_set(h, k, args.length, labels) for k in range(K)]
            dist = tb.distinguishability(h, sets, labels)
            off = ~np.eye(K, dtype=bool)
            dmins.append(dist.D[off].min())
            klmins.append(dist.kl[off].min())
        dmins, klmins = np.array(dmins), np.array(klmins)
        print(f"{K:5d} {d:6d} {m:6d} {rate:6.2f} {conc:10.1f} {args.seeds:6d} {np.mean(dmins <= 0):15.2f} "
              f"{np.mean(klmins <= 0):16.2f} {np.median(dmins):13.3f}")


if __name__ == "__main__":
    main()
