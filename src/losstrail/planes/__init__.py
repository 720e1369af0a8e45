"""Planes through parameter space: directions, PCA and sketches, Hessian products, a path's projection."""
