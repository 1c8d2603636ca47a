"""Networks by name: the GAN pair, the model pool and the evaluation classifiers.

Importing the model modules here is what registers them, so `skdd.models.create_model` sees every
name no matter which submodule a caller happened to import first.
"""

from skdd.models import alexnet, convnet, gan, resnet, vgg  # noqa: F401  (imported for registration)
from skdd.models.registry import check_classifier_param, create_model, list_models, model_kind, register_model

__all__ = ["check_classifier_param", "create_model", "list_models", "model_kind", "register_model"]
