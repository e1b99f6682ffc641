"""Model registry, architectures, checkpoints and label lists (names load on first use)."""

from calitag._lazy import attach

_CHECKPOINTS = "calitag.models.checkpoints"
_REGISTRY = "calitag.models.registry"
_EXPORTS = {
    **dict.fromkeys(("cache_dir", "fetch", "import_checkpoint", "resolve_checkpoint"), _CHECKPOINTS),
    **dict.fromkeys(("MODELS", "CheckpointSpec", "FrontendConfig", "ModelSpec", "available_models", "get_spec",
                     "load_class_names"), _REGISTRY),
}
__all__ = sorted(_EXPORTS)
attach(__name__, _EXPORTS)
