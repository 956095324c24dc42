"""Hydra's config tree, installed as ``recon_lightning.conf`` so every entry point finds it."""
