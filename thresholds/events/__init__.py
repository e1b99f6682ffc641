"""The decision stage for frame scores: post-processing stack, its tuner, event/segment metrics."""
