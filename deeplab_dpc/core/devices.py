"""GPU memory growth for the entry points: TensorFlow's own switch, set before it starts.

TensorFlow-free and importable from every layer, like `console`. By default
TensorFlow's GPU allocator reserves nearly all of a GPU's memory when the
first op runs, so a second process on the same GPU (`eval.py` or `vis.py`
beside `train.py`, as the README shows, or several `search.py --stages=run`
workers) fails to allocate. With memory growth the allocator takes memory as
the process needs it. The switch is TensorFlow's environment variable
`TF_FORCE_GPU_ALLOW_GROWTH`, which it reads when it creates its GPU devices
(the first op, not the import), so setting it costs nothing on a CPU and
needs no TensorFlow import.

`--gpu_memory_growth` (on by default) sets it; `--nogpu_memory_growth`
gives the whole GPU to the process from the start (one process per GPU,
less fragmentation). A value the user exported wins over the default, the
flag given on the command line wins over both.
"""

import os

from absl import flags

ENV = "TF_FORCE_GPU_ALLOW_GROWTH"
FLAG = "gpu_memory_growth"


def define_flag(flag_values=flags.FLAGS):
    """Defines `--gpu_memory_growth` (once per flag set)."""
    if FLAG not in flag_values:
        flags.DEFINE_boolean(
            FLAG, True,
            "Let TensorFlow take GPU memory as needed (several processes per "
            "GPU); --nogpu_memory_growth reserves the whole GPU at start.",
            flag_values=flag_values,
        )  # fmt: skip


def apply_flag(flag_values=flags.FLAGS, environ=None):
    """Sets TF_FORCE_GPU_ALLOW_GROWTH from the flag; call before TensorFlow's first op."""
    environ = os.environ if environ is None else environ
    if FLAG not in flag_values:
        return
    if flag_values[FLAG].present or ENV not in environ:
        environ[ENV] = "true" if flag_values[FLAG].value else "false"
