"""Command-line tools: model statistics, weight import, prediction."""
