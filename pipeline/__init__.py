"""Audio I/O, features, the Tagger and the batch runner."""
