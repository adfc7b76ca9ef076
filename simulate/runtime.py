"""Process-level JAX set-up, done explicitly by entry points (CLI, tests, benchmarks).

Kept in one place so that library functions stay pure: they take dtypes and shardings as
arguments and never flip global flags themselves.
"""
from __future__ import annotations

import os

import jax
import numpy as np
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
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
        except Exception:
            pass


def batch_sharding(batch_axis_size: int | None = None):
    """A 1-D mesh over all local devices and the NamedSharding that splits axis 0 over it."""
    devices = jax.local_devices()
    mesh = Mesh(devices, ("batch",))
    return NamedSharding(mesh, PartitionSpec("batch")), len(devices)


# ------------------------------------------------------------------ several processes (hosts)


def init_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> None:
    """``jax.distributed.initialize`` (after :func:`setup`, before any device is touched).

    With no arguments JAX detects them on a supported cluster (SLURM, Open MPI, Kubernetes, cloud
    TPU/GPU VMs); else give all three. On CPU the cross-process collectives go through gloo.
    Every process must then run the same program on the same configuration (SPMD).
    """
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # an older JAX without the flag: its default
        pass
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)


def prompt_sharding():
    """The prompt-batch sharding of the simulator: a 1-D mesh over every device of every process
    (``jax.devices()``; with one process, its local devices, as :func:`batch_sharding`)."""
    if jax.process_count() == 1:
        return batch_sharding()
    devices = jax.devices()
    return NamedSharding(Mesh(devices, ("batch",)), PartitionSpec("batch")), len(devices)


def replicate(tree, sharding=None):
    """Every array leaf of ``tree`` placed once on every device of the prompt mesh (replicated).

    Parameters of a jitted function called on sharded batches should live there: an array left on
    the default device (uncommitted) is copied to the other devices on *every* call (the restart
    factorisation's ~20 MB end tables made a 2-device Bayes pass ~1.8x slower than one device).
    ``sharding``: a NamedSharding whose mesh to use (default :func:`prompt_sharding`'s).
    """
    rep = NamedSharding((sharding or prompt_sharding()[0]).mesh, PartitionSpec())
    return jax.tree_util.tree_map(lambda x: put_batch(x, rep), tree)


def put_batch(x, sharding):
    """A host array (the same on every process) as a global array laid out by ``sharding`` (split
    along axis 0, or replicated); each process places only its own devices' part."""
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def fetch(tree):
    """Numpy copies of a pytree of (possibly globally sharded) arrays, whole on every process."""
    if jax.process_count() == 1:
        return jax.tree_util.tree_map(np.asarray, tree)
    from jax.experimental import multihost_utils

    return jax.tree_util.tree_map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def broadcast_from_first(x):
    """Process 0's value of the numpy array ``x`` on every process (``x`` itself with one process)."""
    if jax.process_count() == 1:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(x)))
