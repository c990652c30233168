r"""Runs an Auto-DeepLab search: `python -m deeplab_dpc.search.auto_deeplab`.

With no flags: the small synthetic search (`options.search_options`, a few
minutes on 2 CPU cores) into ./auto_deeplab_search; rerun the same command
after a kill or a stop to resume. Bad arguments: one line naming the flag,
exit code 2 (`deeplab_dpc.command_line.run`); Ctrl-C / SIGTERM: a checkpoint at the
step in flight, one line, exit code 130 / 0 (`interrupts`).
"""

from absl import flags

from deeplab_dpc import command_line
from deeplab_dpc.core.option_table import Option
from deeplab_dpc.search.auto_deeplab import options

PROG = "auto_deeplab"
FLAGS = flags.FLAGS
WORKDIR = Option(
    "workdir", "string", "auto_deeplab_search", "Output and checkpoint folder."
)
command_line.define_options((WORKDIR, *options.OPTIONS))


def options_from_flags():
    """The checked search options of the command line (SearchOptionsError names
    the option)."""
    values = command_line.option_values((WORKDIR, *options.OPTIONS))
    return options.search_options(**command_line.config_values(options.OPTIONS, values))


def main(argv):
    del argv
    try:  # a bad flag, or a resume with other options: one line naming the flag
        search_options = options_from_flags()  # checked before TensorFlow loads
        # (its C++ start-up lines would follow the error line otherwise)
        from absl import logging

        from deeplab_dpc.search.auto_deeplab import search

        logging.set_verbosity(logging.INFO)
        search.AutoDeepLabSearcher(FLAGS.workdir, search_options).run()
    except options.SearchOptionsError as e:
        raise ValueError(f"--{e}") from None


if __name__ == "__main__":
    command_line.run(main, PROG)
