"""Simulator tests: float64 and two CPU devices, set before JAX touches a device.

These tests run in their own pytest process (see the Makefile) because both settings are
process-wide in JAX.
"""
import os

from simulate.runtime import setup

setup(int(os.environ.get("ICL_KERNEL_CPU_DEVICES", 2)))

from hypothesis import settings, HealthCheck  # noqa: E402

# JAX recompiles for every new shape: no deadline, few examples, few shapes.
settings.register_profile("jax", deadline=None, max_examples=12, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
# A longer random search for a local run: HYPOTHESIS_PROFILE=thorough make test
settings.register_profile("thorough", deadline=None, max_examples=100, derandomize=False,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "jax"))

import pytest  # noqa: E402

from simulate.presets import HanConfig, han_hmm  # noqa: E402


def tiny_hmm(seed=0, num_tasks=2, num_states=4, num_tokens=5, leak=0.1, emit_conc=1.0, trans_conc=1.0, delim_rate=0.2):
    return han_hmm(HanConfig(num_tasks=num_tasks, num_states=num_states, num_tokens=num_tokens, trans_conc=trans_conc,
                             emit_conc=emit_conc, delim_rate=delim_rate, leak=leak, seed=seed))


@pytest.fixture
def tiny():
    return tiny_hmm()
