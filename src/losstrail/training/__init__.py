"""Training with the path recorded: fit, optimizers, recorders (own loop, Lightning, Hugging Face), checkpoints."""
