"""`tf.distribute` strategies for training, and cross-replica batch norm.

DeepLab (TF1) replicated the model into `num_clones` clones on one machine and
used parameter servers (`num_ps_tasks`) across machines; it had no
cross-replica batch norm, so each clone normalised over its own slice of the
batch. Here the same jobs run on TF2 strategies:

- `one_device`: the first GPU, or the CPU.
- `mirrored`: every local GPU (every logical CPU device when there is no GPU,
  which is how the tests run it on one CPU).
- `multi_worker`: `MultiWorkerMirroredStrategy`, cluster from `TF_CONFIG`.
- `tpu`: `TPUStrategy` on the TPU named by `tpu` (a name or grpc address).

The global batch (`--train_batch_size`) is split evenly across replicas.
When batch norm is fine-tuned with more than one replica, every
BatchNormalization layer computes its moments over the global batch
(Keras 3 `synchronized=True`), as DeepLab2 and the paper's TPU training do.
"""

import json
import os

import keras
import tensorflow as tf

from deeplab_dpc.training.options import STRATEGIES


def _local_devices():
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def make_strategy(name, tpu=None):
    """The `tf.distribute.Strategy` called `name` (see the module docstring)."""
    if name not in STRATEGIES:
        raise ValueError(
            f"distribution_strategy: unknown {name!r}; known: {', '.join(STRATEGIES)}"
        )
    if name != "tpu" and tpu:
        raise ValueError(f"--tpu={tpu} needs --distribution_strategy=tpu (got {name})")
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(_local_devices()[0])
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(_local_devices())
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "distribution_strategy=multi_worker needs the TF_CONFIG "
                "environment variable (cluster and task of this worker)"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def task_info(strategy):
    """(task_type, task_id, is_chief) of this process under `strategy`."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None, 0, True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type is None:
        return None, 0, True
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    has_chief = "chief" in cluster
    is_chief = task_type == "chief" or (
        not has_chief and task_type == "worker" and task_id == 0
    )
    return task_type, task_id, is_chief


def per_replica_batch_size(global_batch_size, strategy):
    """The batch each replica gets; ValueError unless it divides evenly."""
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"train_batch_size {global_batch_size} does not split evenly over "
            f"{replicas} replicas; use a multiple of {replicas}"
        )
    return global_batch_size // replicas


def set_synchronized_batch_norm(model, synchronized):
    """Sets Keras 3 `synchronized` on every BatchNormalization layer; returns the count.

    `synchronized` is read at call time (in `moments`), so this must run
    before the train step is traced. A no-op outside a replica context.
    """
    count = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = bool(synchronized)
            count += 1
    return count


def _all_layers(layer):
    yield layer
    yield from layer._flatten_layers(include_self=False, recursive=True)
