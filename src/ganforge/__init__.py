"""ganforge: GAN research on PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
