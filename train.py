"""Trains a DeepLab model with a DPC or ASPP head (DeepLab's train.py flags).

    python train.py                                  # synthetic data, CPU, minutes
    python train.py --dpc_spec=specs/top1.json --dataset=cityscapes \
        --dataset_dir=data/cityscapes/tfrecord --train_logdir=runs/cityscapes

Rerunning the same command after a crash or kill resumes from the last
checkpoint in --train_logdir. See g3doc/training.md.
"""

from absl import flags, logging

from deeplab_dpc import command_line
from deeplab_dpc.training import options as options_lib

FLAGS = flags.FLAGS
command_line.define_model_flags()

command_line.define_options(options_lib.TRAIN_OPTIONS)


def main(argv):
    del argv
    info = command_line.dataset_info()
    command_line.option_values(
        command_line.MODEL_OPTIONS + command_line.DATASET_OPTIONS
    )
    values = command_line.option_values(options_lib.TRAIN_OPTIONS)
    values["dataset"] = info.name
    options = options_lib.train_options(values.pop("train_logdir"), **values)
    model_cfg = command_line.model_config(info.num_classes)
    from deeplab_dpc.training import trainer

    try:
        result = trainer.train(model_cfg, options, info)
    except trainer.NonFiniteLossError as e:
        command_line.fail(e)
    logging.info(
        "Finished at step %d, loss %.4f; checkpoint %s",
        result["step"], result["loss"], result["checkpoint"],
    )  # fmt: skip


if __name__ == "__main__":
    command_line.run(main)
