"""Flax Linen modules: stage-1 autoencoder, stage-2 generator and critic, conditioning."""
