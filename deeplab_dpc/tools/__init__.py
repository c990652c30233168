"""Command-line tools: model statistics, weight import, prediction.

The libraries they drive live below (`deeplab_dpc.model_stats`,
`deeplab_dpc.export`, ...); nothing in the package imports a tool.
"""
