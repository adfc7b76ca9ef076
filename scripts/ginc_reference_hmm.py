"""Write GINC's published pretraining HMM (its 5 ID concepts) as a custom-HMM ``.npz`` for
``icl-kernel pretrain --preset custom --hmm-file``.

    .venv/bin/python scripts/ginc_reference_hmm.py runs/ginc_ref_custom.npz [--reference PATH]

The block-diagonal union of the concepts' hmmlearn arrays (``id_transmat``, ``id_emissionprob``,
``id_startprob`` of ``../shared/data/ginc/ginc_reference.npz``), with R = T (GINC's documents: '/' is an
ordinary emission, the chain moves on with T), one task per concept starting at its ``startprob``
and p0 their mean (a document picks its concept uniformly). ``--preset ginc -P reference=1`` builds
the same arrays (to 1e-18); this file is how the GINC model of docs/ginc.md was trained.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="the .npz to write")
    p.add_argument("--reference", default=str(Path(__file__).resolve().parents[2] / "shared/data/ginc/ginc_reference.npz"))
    a = p.parse_args(argv)
    if not a.out.endswith(".npz"):
        print(f"ginc_reference_hmm: error: output {a.out!r}; expected a path ending in .npz", file=sys.stderr)
        return 2
    try:
        with np.load(a.reference) as z:
            T3, B3, s = z["id_transmat"], z["id_emissionprob"], z["id_startprob"]
    except (OSError, KeyError, ValueError) as exc:
        print(f"ginc_reference_hmm: error: cannot read GINC's reference {a.reference} ({exc}); expected "
              "ginc_reference.npz with id_transmat, id_emissionprob, id_startprob", file=sys.stderr)
        return 2
    C, d, V = B3.shape
    T, B, starts = np.zeros((C * d, C * d)), np.zeros((C * d, V)), np.zeros((C, C * d))
    for c in range(C):
        blk = slice(c * d, (c + 1) * d)
        T[blk, blk], B[blk], starts[c, blk] = T3[c], B3[c], s[c]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".npz")
    os.close(fd)
    np.savez(tmp, T=T, B=B, R=T, delim=0, task_of_state=np.repeat(np.arange(C), d), task_start=starts,
             p0=starts.mean(0))
    os.replace(tmp, out)
    print(f"wrote {out}: {C} concepts x {d} states, {V} symbols, R = T")
    return 0


if __name__ == "__main__":
    sys.exit(main())
