"""argparse value types shared by every subcommand: each refuses a bad value in one line.

A type raises ``argparse.ArgumentTypeError``; the dispatcher's parser prints it as one line and
exits with code 2 before anything runs.
"""
from __future__ import annotations

import argparse
import math

MAX_DEVICES = 64


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer ({what})") from None


def positive_int(text: str) -> int:
    v = _int(text, "expected an integer >= 1")
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v}, expected an integer >= 1")
    return v


def nonnegative_int(text: str) -> int:
    v = _int(text, "expected an integer >= 0")
    if v < 0:
        raise argparse.ArgumentTypeError(f"{v}, expected an integer >= 0")
    return v


def devices(text: str) -> int:
    """A CPU device count: 1..64 (JAX splits the host into that many devices)."""
    v = _int(text, f"expected a device count 1..{MAX_DEVICES}")
    if not 1 <= v <= MAX_DEVICES:
        raise argparse.ArgumentTypeError(f"{v} devices, expected 1..{MAX_DEVICES}")
    return v


def finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r}, expected a finite number")
    return v


def probability(text: str) -> float:
    """A number in [0, 1]."""
    v = finite_float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{v:g}, expected a number in [0, 1]")
    return v


def open_probability(text: str) -> float:
    """A number in (0, 1)."""
    v = finite_float(text)
    if not 0.0 < v < 1.0:
        raise argparse.ArgumentTypeError(f"{v:g}, expected a probability in (0, 1)")
    return v


def int_list(text: str) -> list[int]:
    """Comma-separated integers, e.g. ``1,2,4,8``."""
    try:
        vals = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not vals:
        raise argparse.ArgumentTypeError(f"{text!r} is empty; expected e.g. 1,2,4,8")
    return vals


def _int_list_at_least(text: str, low: int) -> list[int]:
    vals = int_list(text)
    bad = [v for v in vals if v < low]
    if bad:
        raise argparse.ArgumentTypeError(f"{text!r} contains {bad}; expected integers >= {low}")
    return vals


def positive_int_list(text: str) -> list[int]:
    return _int_list_at_least(text, 1)


def nonnegative_int_list(text: str) -> list[int]:
    return _int_list_at_least(text, 0)


def seed_list(text: str) -> list[int]:
    """Seeds as a list ``0,1,2`` or a range ``a:b``; distinct and non-negative."""
    if ":" in text:
        a, _, b = text.partition(":")
        try:
            vals = list(range(int(a), int(b)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a seed range like 0:5") from None
        if not vals:
            raise argparse.ArgumentTypeError(f"{text!r} is an empty range; expected a:b with a < b")
    else:
        vals = int_list(text)
    if any(v < 0 for v in vals):
        raise argparse.ArgumentTypeError(f"{text!r}: seeds must be >= 0")
    if len(set(vals)) != len(vals):
        raise argparse.ArgumentTypeError(f"{text!r} repeats a seed; expected distinct seeds")
    return vals


def number_list(text: str) -> list[float]:
    """Comma-separated finite numbers, e.g. ``0,0.5,1``."""
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not vals:
        raise argparse.ArgumentTypeError(f"{text!r} is empty; expected e.g. 0,0.5,1")
    bad = [v for v in vals if not math.isfinite(v)]
    if bad:
        raise argparse.ArgumentTypeError(f"{text!r} contains {bad}; expected finite numbers")
    return vals


def key_value(text: str) -> tuple[str, float | int]:
    """``KEY=VALUE`` with a finite numeric VALUE (int when it has no '.', 'e' or 'E')."""
    k, eq, v = text.partition("=")
    if not eq or not k:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        val = float(v) if any(c in v for c in ".eEn") else int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {v!r} is not a number") from None
    if not math.isfinite(val):
        raise argparse.ArgumentTypeError(f"{text!r}: {v!r}, expected a finite number")
    return k, val


def run_name(text: str) -> str:
    from icl_kernel.runfolder import RunFolderError, safe_name

    try:
        return safe_name(text)
    except RunFolderError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
