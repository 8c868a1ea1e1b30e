"""Command-line entry points (absl apps) and experiment configs."""
