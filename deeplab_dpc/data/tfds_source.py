"""`dataset_source="tfds"`: samples from TensorFlow Datasets instead of our TFRecords.

Not in DeepLab (TF1, own records only). A `TfdsSpec` says which TFDS builder
holds a registry dataset and which of its features are the image, the label
and the name; the label goes through the same mapping as our converters
(Cityscapes labelIds -> train ids), so the samples are the ones
`preprocess.decode_example` makes from our records. Preparation uses TFDS's
manual download directory (`manual_dir`) for datasets that need one
(Cityscapes). Tested with `tfds.testing.mock_data`, never with a download.

Known limit: TFDS's `voc/2012` is a detection dataset (boxes, no
segmentation masks); asking for it raises an error that says so and points
to `datasets/build_voc2012_data.py`. A TFDS dataset of your own with an
image and a mask feature works through an explicit `TfdsSpec`.
"""

from typing import NamedTuple

import tensorflow as tf

from deeplab_dpc.core import common
from deeplab_dpc.data import registry


class TfdsSpec(NamedTuple):
    tfds_name: str
    image_key: str
    label_key: str
    name_key: str | None  # None: TFDS's own example id is the name
    split_map: dict  # our split -> TFDS split
    label_map: dict | None = None  # source id -> class id; others -> ignore


TFDS_SPECS = {
    "cityscapes": TfdsSpec(
        "cityscapes/semantic_segmentation",
        "image_left",
        "segmentation_label",
        "image_id",
        {"train_fine": "train", "val_fine": "validation", "test_fine": "test"},
        registry.CITYSCAPES_LABEL_ID_TO_TRAIN_ID,
    ),
    "ade20k": TfdsSpec(
        "scene_parse150",
        "image",
        "annotation",
        None,
        {"train": "train", "val": "validation"},
    ),
    "pascal_voc_seg": TfdsSpec(
        "voc/2012",
        "image",
        "segmentation_mask",
        "image/filename",
        {"train": "train", "val": "validation", "trainval": "train+validation"},
    ),
}


def _label_table(label_map, ignore_label):
    table = [ignore_label] * 256
    for source, target in label_map.items():
        table[source] = target
    return tf.constant(table, tf.int32)


def _to_sample_fn(spec, ignore_label):
    table = (
        None if spec.label_map is None else _label_table(spec.label_map, ignore_label)
    )

    def to_sample(example):
        image = example[spec.image_key]
        label = tf.cast(
            example[spec.label_key][..., :1], tf.int32
        )  # grey masks may be RGB
        if table is not None:
            label = tf.gather(table, label)
        name = example[spec.name_key] if spec.name_key else example["tfds_id"]
        shape = tf.shape(image)
        check = tf.debugging.assert_equal(
            tf.shape(label)[:2],
            shape[:2],
            message="TFDS label size differs from image size",
        )
        with tf.control_dependencies([check]):
            label = tf.identity(label)
        return {
            common.IMAGE: tf.cast(image, tf.uint8),
            common.LABEL: label,
            common.IMAGE_NAME: name,
            common.HEIGHT: shape[0],
            common.WIDTH: shape[1],
        }

    return to_sample


def _check_features(builder, spec):
    features = builder.info.features
    missing = [
        k
        for k in (spec.image_key, spec.label_key, spec.name_key)
        if k and k not in features
    ]
    if missing:
        raise ValueError(
            f"TFDS dataset {spec.tfds_name} has no feature {missing} (it has "
            f"{', '.join(sorted(features.keys()))}); it cannot feed segmentation"
            + (
                "; use datasets/build_voc2012_data.py"
                if spec.tfds_name.startswith("voc")
                else ""
            )
        )


def load_samples(
    info,
    split,
    data_dir=None,
    manual_dir=None,
    is_training=False,
    seed=None,
    shard=None,
    spec=None,
):
    """Decoded samples (uint8 image, int32 label [H, W, 1]) of `split` from TFDS."""
    import tensorflow_datasets as tfds

    if spec is None:
        if info.name not in TFDS_SPECS:
            raise ValueError(
                f"no TFDS source for dataset {info.name!r}; known: {', '.join(sorted(TFDS_SPECS))}"
            )
        spec = TFDS_SPECS[info.name]
    if split not in spec.split_map:
        raise ValueError(
            f"TFDS source {spec.tfds_name} has no split {split!r}; known: "
            f"{', '.join(sorted(spec.split_map))}"
        )
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    _check_features(builder, spec)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )
    read_config = tfds.ReadConfig(
        shuffle_seed=seed, input_context=shard, add_tfds_id=spec.name_key is None
    )
    dataset = builder.as_dataset(
        split=spec.split_map[split], shuffle_files=is_training, read_config=read_config
    )
    return dataset.map(
        _to_sample_fn(spec, info.ignore_label), num_parallel_calls=tf.data.AUTOTUNE
    )
