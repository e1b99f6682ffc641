"""Model registry, architectures, checkpoints and label lists."""

from calitag.models.checkpoints import cache_dir, fetch, import_checkpoint, resolve_checkpoint
from calitag.models.registry import (
    MODELS,
    CheckpointSpec,
    FrontendConfig,
    ModelSpec,
    available_models,
    get_spec,
    load_class_names,
)

__all__ = [
    "MODELS",
    "CheckpointSpec",
    "FrontendConfig",
    "ModelSpec",
    "available_models",
    "cache_dir",
    "fetch",
    "get_spec",
    "import_checkpoint",
    "load_class_names",
    "resolve_checkpoint",
]
