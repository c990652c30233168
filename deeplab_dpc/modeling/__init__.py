"""Layer 4: the model and what is done with a built one.

`model` (the model config and `build_model`), `inference` (multi-scale /
flipped prediction), `complexity` (per-unit parameters and multiply-adds),
`naming` (layer paths and their DeepLab variable scopes), `checkpoints`
(writing, resolving and restoring checkpoints with their
`model_config.json`; partial loading). See g3doc/model.md.
"""
