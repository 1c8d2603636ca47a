"""skdd: generative dataset distillation with self-knowledge distillation (Li et al., ICASSP 2025)."""

__version__ = "0.1.0"
