"""Process-level JAX set-up, done explicitly by entry points (CLI, tests, benchmarks).

Kept in one place so that library functions stay pure: they take dtypes and shardings as
arguments and never flip global flags themselves.
"""
from __future__ import annotations

import os

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def setup(num_cpu_devices: int | None = None, enable_x64: bool = True) -> None:
    """Enable float64 (exactness tests, float64 option) and split the CPU into devices.

    ``num_cpu_devices`` defaults to ``$ICL_KERNEL_CPU_DEVICES`` or the number of cores (≤ 8).
    Must run before JAX first touches a device; later calls are harmless no-ops for the
    device count.
    """
    if num_cpu_devices is None:
        num_cpu_devices = int(os.environ.get("ICL_KERNEL_CPU_DEVICES", min(os.cpu_count() or 1, 8)))
    try:
        jax.config.update("jax_num_cpu_devices", int(num_cpu_devices))
    except Exception:  # backend already initialised: keep what we have
        pass
    jax.config.update("jax_enable_x64", bool(enable_x64))
    # Persistent compilation cache: XLA's CPU compile of the samplers and sweeps takes seconds,
    # so reruns (resumed sweeps, tests, benchmarks) reuse the executables. Off with ICL_KERNEL_JAX_CACHE="".
    cache = os.environ.get("ICL_KERNEL_JAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "icl-kernel", "jax"))
    if cache:
        try:
            jax.config.update("jax_compilation_cache_dir", cache)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        except Exception:
            pass


def batch_sharding(batch_axis_size: int | None = None):
    """A 1-D mesh over all local devices and the NamedSharding that splits axis 0 over it."""
    devices = jax.local_devices()
    mesh = Mesh(devices, ("batch",))
    return NamedSharding(mesh, PartitionSpec("batch")), len(devices)
