"""Surrogate-gradient threshold calibration (SGL-Thresh), its baselines and the thresholds file."""
