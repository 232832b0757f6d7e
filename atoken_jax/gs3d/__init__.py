"""The 3D reconstruction path: voxel features -> Gaussian decoder -> rendered views -> losses and
metrics; training the Gaussian decoder alone or jointly with the tokenizer. See docs/gs3d.md."""
