"""`icl-kernel`: one console command, thin dispatcher.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``. Those modules import only argparse-level things at top level and
pull in JAX / models inside ``run``, so ``icl-kernel --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "sweep": ("simulate.commands.sweep", "Convergence sweep over n: exact Bayes vs kernel regression on an HMM."),
    "plot": ("simulate.commands.plot", "Plot a sweep's run folder (distance and agreement vs n)."),
    "bound": ("simulate.commands.bound", "Theorem-1 constants and the bound curve for a preset or run folder."),
    "phenomena": ("simulate.commands.phenomena", "The paper's §4.2 phenomena run exactly: retrieval, labels, ood."),
    "model-info": ("llm_check.commands.model_info", "Load a model offline and print its config, size, load time."),
    "llm-check": ("llm_check.commands.llm_check", "Attention-as-kernel validation on real ICL data."),
    "pretrain": ("llm_check.commands.pretrain", "Train a GPT-J on an HMM pretraining distribution (loss vs exact Bayes)."),
    "transformer-check": ("llm_check.commands.transformer_check",
                          "A pretrained GPT-J on a sweep's prompts: Bayes, Oracle, kernels and attention."),
}


from icl_kernel.errors import UsageError, UserError, one_line  # noqa: F401  (UsageError re-exported)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (the value and what was expected), exit 2."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: error: {one_line(message)}\n")


def _available() -> dict[str, tuple[str, str]]:
    out = {}
    for name, (mod, help_) in COMMANDS.items():
        if importlib.util.find_spec(mod.rsplit(".", 1)[0]) is None:
            continue
        try:
            if importlib.util.find_spec(mod) is None:
                continue
        except ModuleNotFoundError:
            continue
        out[name] = (mod, help_)
    return out


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="icl-kernel",
        description=(
            "In-context learning as kernel regression (Han et al., TMLR 2025): exact Bayesian "
            "ICL on HMMs vs kernel estimators, and attention-as-kernel checks on real LMs."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    avail = _available()
    # Only the chosen subcommand's module is imported (others are listed by name).
    chosen = next((a for a in (argv or []) if a in avail), None)
    for name, (mod, help_) in avail.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == chosen:
            importlib.import_module(mod).add_arguments(p)
            p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a one-line usage error (2): a return code, not an exit
        return int(exc.code or 0)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("icl-kernel: interrupted; finished cells are kept in the run folder.", file=sys.stderr)
        return 130
    except UserError as exc:  # every user-facing error subclasses UserError: one line, exit 2
        print(f"icl-kernel {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
