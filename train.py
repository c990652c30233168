"""Trains a DeepLab model with a DPC or ASPP head (DeepLab's train.py flags).

    python train.py                                  # synthetic data, CPU, minutes
    python train.py --dpc_spec=specs/top1.json --dataset=cityscapes \
        --dataset_dir=data/cityscapes/tfrecord --train_logdir=runs/cityscapes

Rerunning the same command after a crash or kill resumes from the last
checkpoint in --train_logdir. See g3doc/training.md.
"""

from absl import flags, logging

from deeplab_dpc import flags as dpc_flags

FLAGS = flags.FLAGS
dpc_flags.define_model_flags()

flags.DEFINE_string("train_logdir", "runs/train", "Checkpoints and summaries.")
flags.DEFINE_string("train_split", "train", "Split to train on.")
flags.DEFINE_multi_string("train_crop_size", ["513", "513"], "Crop height,width.")
flags.DEFINE_integer("train_batch_size", 8, "Global batch size (all replicas).")
flags.DEFINE_integer("training_number_of_steps", 30000, "Steps to train.")
flags.DEFINE_enum("learning_policy", "poly", ["poly", "step", "cosine"], "LR policy.")
flags.DEFINE_float("base_learning_rate", 1e-4, "Base learning rate.")
flags.DEFINE_float("learning_power", 0.9, "Power of the poly policy.")
flags.DEFINE_float("end_learning_rate", 0.0, "Final rate of poly and cosine.")
flags.DEFINE_float("learning_rate_decay_factor", 0.1, "Step policy factor.")
flags.DEFINE_integer("learning_rate_decay_step", 2000, "Step policy period.")
flags.DEFINE_integer("slow_start_step", 0, "Steps at the slow-start rate.")
flags.DEFINE_float("slow_start_learning_rate", 1e-4, "Slow-start rate.")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
flags.DEFINE_float(
    "last_layer_gradient_multiplier", 1.0, "Gradient multiplier of the last layers."
)
flags.DEFINE_float("weight_decay", 4e-5, "L2 weight decay of conv kernels.")
flags.DEFINE_boolean("fine_tune_batch_norm", True, "Train batch norm (else frozen).")
flags.DEFINE_boolean(
    "freeze_backbone_batch_norm", False,
    "Backbone batch norm frozen, head's as --fine_tune_batch_norm (folded-BN imports).",
)  # fmt: skip
flags.DEFINE_float("min_scale_factor", 0.5, "Minimum random scale.")
flags.DEFINE_float("max_scale_factor", 2.0, "Maximum random scale.")
flags.DEFINE_float("scale_factor_step_size", 0.25, "Random scale step (0: any).")
flags.DEFINE_string("tf_initial_checkpoint", None, "Checkpoint to start from.")
flags.DEFINE_boolean("initialize_last_layer", True, "Also load the last layers.")
flags.DEFINE_boolean(
    "last_layers_contain_logits_only", False, "Last layers = logits only."
)
flags.DEFINE_multi_string("label_weights", [], "Per-class loss weights.")
flags.DEFINE_float("save_interval_secs", 1200, "Seconds between checkpoints.")
flags.DEFINE_float("save_summaries_secs", 600, "Seconds between summaries.")
flags.DEFINE_integer("log_steps", 10, "Steps between progress lines.")
flags.DEFINE_integer("max_checkpoints_to_keep", 5, "Checkpoints kept.")
flags.DEFINE_integer("seed", 0, "Input pipeline seed (exact resume needs one).")
flags.DEFINE_boolean("skip_bad_records", False, "Skip unreadable records.")
flags.DEFINE_enum(
    "distribution_strategy", "one_device",
    ["one_device", "mirrored", "multi_worker", "tpu"], "tf.distribute strategy.",
)  # fmt: skip
flags.DEFINE_string("tpu", None, "TPU name or grpc address (strategy tpu).")
flags.DEFINE_enum("mixed_precision", None, ["bf16", "fp16"], "Mixed precision.")
flags.DEFINE_boolean("jit_compile", False, "Compile the train step with XLA.")


def main(argv):
    del argv
    from deeplab_dpc.training import options as options_lib

    value = dpc_flags.value
    info = dpc_flags.dataset_info()
    weights = dpc_flags.multi_values(FLAGS.label_weights, float, "label_weights")
    options = options_lib.train_options(
        FLAGS.train_logdir,
        dataset_dir=FLAGS.dataset_dir,
        train_split=FLAGS.train_split,
        train_crop_size=dpc_flags.multi_values(
            value("train_crop_size"), int, "train_crop_size"
        ),
        train_batch_size=value("train_batch_size"),
        training_number_of_steps=value("training_number_of_steps"),
        learning_policy=FLAGS.learning_policy,
        base_learning_rate=value("base_learning_rate"),
        learning_power=FLAGS.learning_power,
        end_learning_rate=FLAGS.end_learning_rate,
        learning_rate_decay_factor=FLAGS.learning_rate_decay_factor,
        learning_rate_decay_step=FLAGS.learning_rate_decay_step,
        slow_start_step=FLAGS.slow_start_step,
        slow_start_learning_rate=FLAGS.slow_start_learning_rate,
        momentum=FLAGS.momentum,
        weight_decay=FLAGS.weight_decay,
        fine_tune_batch_norm=FLAGS.fine_tune_batch_norm,
        freeze_backbone_batch_norm=FLAGS.freeze_backbone_batch_norm,
        last_layer_gradient_multiplier=FLAGS.last_layer_gradient_multiplier,
        min_scale_factor=FLAGS.min_scale_factor,
        max_scale_factor=FLAGS.max_scale_factor,
        scale_factor_step_size=FLAGS.scale_factor_step_size,
        tf_initial_checkpoint=FLAGS.tf_initial_checkpoint,
        initialize_last_layer=FLAGS.initialize_last_layer,
        last_layers_contain_logits_only=FLAGS.last_layers_contain_logits_only,
        label_weights=weights or None,
        save_interval_secs=value("save_interval_secs"),
        save_summaries_secs=value("save_summaries_secs"),
        log_steps=FLAGS.log_steps,
        max_checkpoints_to_keep=FLAGS.max_checkpoints_to_keep,
        seed=FLAGS.seed,
        skip_bad_records=FLAGS.skip_bad_records,
        dataset=info.name,
        dataset_source=FLAGS.dataset_source,
        tfds_data_dir=FLAGS.tfds_data_dir,
        tfds_manual_dir=FLAGS.tfds_manual_dir,
        distribution_strategy=FLAGS.distribution_strategy,
        tpu=FLAGS.tpu,
        mixed_precision=FLAGS.mixed_precision,
        jit_compile=FLAGS.jit_compile,
    )
    model_cfg = dpc_flags.model_config(info.num_classes)
    from deeplab_dpc.training import trainer

    try:
        result = trainer.train(model_cfg, options, info)
    except trainer.NonFiniteLossError as e:
        dpc_flags.fail(e)
    verb = "Stopped" if result["stopped"] else "Finished"
    logging.info(
        "%s at step %d, loss %.4f; checkpoint %s",
        verb, result["step"], result["loss"], result["checkpoint"],
    )  # fmt: skip


if __name__ == "__main__":
    dpc_flags.run(main)
