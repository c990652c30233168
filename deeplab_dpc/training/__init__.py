"""Training: losses, learning-rate schedules, distribution strategies, the loop."""
