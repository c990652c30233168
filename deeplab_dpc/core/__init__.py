"""Layer 0: the plumbing every other layer uses; no TensorFlow.

`common` (the vocabulary: sample and prediction keys, TFRecord keys, module
names, output strides), `artefacts` (every file written beside an output:
names, atomic writes, one permission policy, reading them back), `errors`
(the exit-2 contract of the command lines), `console` (quiet logs, progress
bars), `interrupts` (SIGINT / SIGTERM: stop at a safe point), `devices` (GPU
memory growth for the entry points). See g3doc/architecture.md.
"""
