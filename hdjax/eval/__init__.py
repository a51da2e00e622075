"""Evaluation of reconstructions against ground-truth meshes (`metrics`)."""
