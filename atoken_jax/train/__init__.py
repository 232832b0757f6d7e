"""Training the tokenizer: the loop (`trainer`), its step, objective, optimiser, checkpoints,
curriculum hand-offs (`stages`) and export; `atoken train` / `atoken sweep` (`launch`)."""
