"""The archbench model zoo. Importing this package registers every family."""

from archbench.models import llama, mlp, mobilenet, resnet, rnn, vgg, vit  # noqa: F401  (registers the zoo)
from archbench.models._registry import (
    InputSpec,
    ModelEntry,
    create_model,
    get_entry,
    list_models,
    register_model,
)

__all__ = ["InputSpec", "ModelEntry", "create_model", "get_entry", "list_models", "register_model"]
