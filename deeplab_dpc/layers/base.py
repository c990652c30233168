"""The base of every layer of the package: constructor arguments written once.

A layer's config is its constructor's arguments (Keras 3: `get_config` is the
base config plus the layer's own arguments, `from_config` calls the
constructor with them). `ConfigLayer` reads the argument names from the
signature of the class's own `__init__` (its named parameters; `**kwargs`
go to `keras.layers.Layer`: name, dtype, trainable) and the values from the
attributes of the same names, which `__init__` sets once, normalised (ints,
pairs, a parsed spec). So a layer lists its arguments once, in its
signature, and an argument without an attribute fails the layer contract
test (tests/test_layer_contract.py) instead of going missing from the
config. Tuples come back as lists and Keras objects (initializers) in their
serialised form, as JSON would carry them, so that
`from_config(get_config()).get_config() == get_config()`.
"""

import contextlib
import functools
import inspect

import keras

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@functools.cache
def config_arguments(cls):
    """The names of the named parameters of `cls.__init__` (its config keys)."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    return tuple(p.name for p in params if p.kind in _NAMED)


def _plain(value):
    """`value` as JSON carries it: lists for tuples, Keras objects serialised."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, keras.initializers.Initializer):
        return keras.initializers.serialize(value)
    return value


class ConfigLayer(keras.layers.Layer):
    """A Keras layer whose config is its constructor's arguments (see the module)."""

    def get_config(self):
        config = super().get_config()
        for name in config_arguments(type(self)):
            config[name] = _plain(getattr(self, name))
        return config


@contextlib.contextmanager
def dtype_policy(name):
    """Layers made inside run under the Keras dtype policy `name` (e.g. mixed_bfloat16)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
