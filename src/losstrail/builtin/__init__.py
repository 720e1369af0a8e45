"""Built-in models and datasets (spirals, moons, digits, MNIST IDX)."""
