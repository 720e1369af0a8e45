"""Jobs the faces run: a saved run's grid in chunks, a checkpoint folder's path."""
