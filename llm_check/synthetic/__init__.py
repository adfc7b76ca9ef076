"""The synthetic check: pretrain a GPT-J on the simulator's HMM pretraining distribution
(:mod:`.train`) and score it, its attention and the kernels against exact Bayes on the same
prompts (:mod:`.transformer_check`, figures in :mod:`.plots`)."""
