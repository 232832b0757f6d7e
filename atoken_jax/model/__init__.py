"""Flax modules of AToken and its 3D Gaussian decoder."""
