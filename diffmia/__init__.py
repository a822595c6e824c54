"""diffmia: membership-inference audits of diffusion-model training recipes."""

__version__ = "0.1.0"
