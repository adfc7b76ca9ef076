"""Fill an abstract (unallocated) model tensor by tensor from a stream of checkpoint arrays.

The model is built with ``nnx.eval_shape``, so no weights are allocated until each checkpoint
tensor is converted; host memory holds one checkpoint tensor (or one mmapped shard) at a time.
"""
from __future__ import annotations

from typing import Iterable

import jax.numpy as jnp
import numpy as np
from flax import nnx

from llm_check.errors import CheckpointError
from llm_check.loading.tables import IGNORED_SUFFIXES, Table


def abstract_model(model_cls, cfg, dtype):
    """``model_cls(cfg)`` with ShapeDtypeStruct leaves: nothing is allocated."""
    return nnx.eval_shape(lambda: model_cls(cfg, dtype=dtype, rngs=nnx.Rngs(0)))


def fill_model(abstract, table: Table, tensors: Iterable[tuple[str, np.ndarray]], dtype, source: str,
               table_name: str):
    """Assign every checkpoint tensor to its parameter; error on unknown, missing or mis-shaped ones.

    ``tensors`` yields ``(name, array)`` lazily; each array is transformed, cast to ``dtype``,
    placed on the default device and dropped before the next is read.
    """
    graphdef, state = nnx.split(abstract)
    params = {path: var for path, var in nnx.to_flat_state(state)}
    by_path = {}
    seen = set()
    for name, array in tensors:
        if name not in table:
            if name.endswith(IGNORED_SUFFIXES):
                continue
            raise CheckpointError(f"unexpected tensor {name!r} in {source}; not in the {table_name} weight table")
        if table[name] is None:
            continue
        if name in seen:
            raise CheckpointError(f"tensor {name!r} appears twice in {source}")
        path, transform = table[name]
        var = params[path]
        value = transform(array)
        if tuple(value.shape) != tuple(var.get_value().shape):
            raise CheckpointError(
                f"tensor {name!r} in {source} has shape {tuple(array.shape)}; expected "
                f"{_expected_ckpt_shape(transform, var.get_value().shape)} for this config")
        by_path[path] = jnp.asarray(value, dtype=dtype)
        seen.add(name)
        del value, array
    missing = [n for n in table if n not in seen and table[n] is not None]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"tensor {missing[0]!r}{more} missing from {source}")
    for path, var in params.items():
        var.set_value(by_path[path])
    return nnx.merge(graphdef, state)


def _expected_ckpt_shape(transform, shape):
    from llm_check.loading.tables import as_is
    shape = tuple(int(s) for s in shape)
    return shape if transform is as_is else shape[::-1]
