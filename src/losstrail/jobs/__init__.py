"""Jobs the faces run: the one job runner of `loss_landscape_anim` and `losstrail run`, a saved run's grid in
chunks, a checkpoint folder's path."""
