"""Trains a DeepLab model with a DPC or ASPP head (DeepLab's train.py flags).

    python train.py                                  # synthetic data, CPU, minutes
    python train.py --dpc_spec=specs/top1.json --dataset=cityscapes \
        --dataset_dir=data/cityscapes/tfrecord --train_logdir=runs/cityscapes

Rerunning the same command after a crash or kill resumes from the last
checkpoint in --train_logdir. See g3doc/training.md.
"""

from absl import flags, logging

from deeplab_dpc import flags as dpc_flags
from deeplab_dpc.training import options as options_lib

FLAGS = flags.FLAGS
dpc_flags.define_model_flags()

dpc_flags.define_option_flags(options_lib.TRAIN_OPTIONS)


def main(argv):
    del argv
    info = dpc_flags.dataset_info()
    values = dpc_flags.option_values(options_lib.TRAIN_OPTIONS)
    values["dataset"] = info.name
    options = options_lib.train_options(values.pop("train_logdir"), **values)
    model_cfg = dpc_flags.model_config(info.num_classes)
    from deeplab_dpc.training import trainer

    try:
        result = trainer.train(model_cfg, options, info)
    except trainer.NonFiniteLossError as e:
        dpc_flags.fail(e)
    logging.info(
        "Finished at step %d, loss %.4f; checkpoint %s",
        result["step"], result["loss"], result["checkpoint"],
    )  # fmt: skip


if __name__ == "__main__":
    dpc_flags.run(main)
