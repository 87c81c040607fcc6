"""Where child processes come from: one file per isolation mode, the seam in ``base``."""
