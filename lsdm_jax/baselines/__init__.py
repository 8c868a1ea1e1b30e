"""Baselines compared with LSDM: latent diffusion in the stage-1 latent space, and others."""
