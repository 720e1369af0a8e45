"""Evaluation: batches, the loss rule, parameter layouts, the Evaluator, grids, adaptive grids and the cost plan."""
