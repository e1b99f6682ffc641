"""Model registry, architectures, checkpoints and label lists."""
