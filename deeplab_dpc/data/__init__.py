"""Data: dataset registry, record format, converters, preprocessing, `tf.data` pipeline.

Modules (import the one you need; TensorFlow loads only with those that use it):
`registry` (dataset facts), `records` (Example encode, atomic shards),
`preprocess` (DeepLab preprocessing, pure functions), `pipeline`
(`build_dataset`), `synthetic` (the default generated dataset), `convert`
(converter machinery for `datasets/build_*_data.py`), `tfds_source` (TFDS).
"""
