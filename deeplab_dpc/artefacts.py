"""Files the project writes beside its outputs: names, atomic writes, reading back.

TensorFlow-free, and importable from every layer. Every writer in the package
(specs, model configs, exports, imported weights, TFRecord shards, conversion
summaries, the synthetic dataset, checkpoints, feature caches) goes through
this module, so there is one permission policy and one way of never leaving
a half-written file under its final name:

- a file is written under a hidden temporary name in its target's folder
  (so the rename is atomic), then renamed into place;
- files get the usual permissions, 0666 less the umask, and staged
  directories 0777 less the umask (not mkstemp's 0600 / mkdtemp's 0700): the
  outputs are meant to be read by others.
"""

import json
import os
import shutil
import tempfile

# --- Names of the files written beside outputs --------------------------------
MODEL_CONFIG = "model_config.json"  # every checkpoint, export and search result
TRAIN_CONFIG = "train_config.json"  # the resolved training options (train_logdir)
RESULTS = "results.json"  # an evaluation's figures (eval_logdir)
IMPORT_REPORT = "import_report.json"  # what the weight importer mapped (checkpoint dir)
CACHE_INFO = "cache_info.json"  # a feature cache's identity; written last
SYNTHETIC_INFO = (
    "synthetic_info.json"  # the synthetic dataset's generator; written last
)
# An Auto-DeepLab search's workdir (deeplab_dpc.search.auto_deeplab.search)
SEARCH_ARCHITECTURE = "architecture.json"  # the decoded architecture (nas_spec)
SEARCH_HISTORY = "history.json"  # alpha, beta, entropies, decoded cell/path per log
SEARCH_CONFIG = "search_config.json"  # the resolved search options
SEARCH_TRELLIS_FIGURE = "trellis.png"
SEARCH_CELL_FIGURE = "cell.png"
SEARCH_ALPHA_FIGURE = "alpha.png"
EXPORT_CONFIG = (
    "deeplab_config.json"  # a SavedModel's asset; `<file>.tflite.json` beside TFLite
)


class ArtefactError(ValueError):
    """A file written by this project is missing or unreadable; names the file."""


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode():
    """The permission bits every written file gets (0666 less the umask)."""
    return 0o666 & ~_umask()


def dir_mode():
    """The permission bits every staged directory gets (0777 less the umask)."""
    return 0o777 & ~_umask()


def temporary_path(path):
    """The hidden name beside `path` this process writes it under before `commit`.

    Deterministic (so a cleanup can find it again) and never matching a glob
    for the final names; writers that need several writers per file use
    `write_bytes`, which picks a unique name.
    """
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".tmp.{name}.{os.getpid()}")


def commit(tmp, path):
    """Gives the finished temporary file `tmp` the policy's mode, renames it to `path`."""
    os.chmod(tmp, file_mode())
    os.replace(tmp, path)


def remove_quietly(path):
    """Removes a temporary file if it is there (cleanup after a failed write)."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def write_bytes(content, path):
    """Writes bytes to `path` atomically (temporary name beside it, then rename)."""
    directory, name = os.path.split(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".tmp.{name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        commit(tmp, path)
    finally:
        remove_quietly(tmp)


def write_text(text, path):
    """Writes UTF-8 text atomically (see `write_bytes`)."""
    write_bytes(text.encode("utf-8"), path)


def dump_json(data, indent=2, sort_keys=True):
    """The JSON text the project writes: indented, keys sorted, a final newline."""
    return json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n"


def write_json(data, path, indent=2, sort_keys=True):
    """Writes `dump_json(data)` atomically (see `write_bytes`)."""
    write_text(dump_json(data, indent=indent, sort_keys=sort_keys), path)


def read_json(path, error=ArtefactError, what="JSON file"):
    """Reads a JSON file; a missing or broken one raises `error` naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise error(f"{path}: no {what} here") from e
    except json.JSONDecodeError as e:
        raise error(
            f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from e


def make_staging_dir(parent, prefix):
    """A new hidden directory in `parent` with the policy's mode, to fill, then `install_dir`."""
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=prefix)
    os.chmod(tmp, dir_mode())
    return tmp


def install_dir(staged, path):
    """Renames the finished `staged` directory to `path`, replacing what was there."""
    path = os.path.abspath(path)
    if not os.path.lexists(path):
        os.replace(staged, path)
        return
    old = tempfile.mkdtemp(dir=os.path.dirname(path), prefix=".old_")
    os.replace(path, old)  # rename onto an empty directory replaces it
    os.replace(staged, path)
    shutil.rmtree(old, ignore_errors=True)


def model_config_path(directory):
    return os.path.join(directory, MODEL_CONFIG)


def train_config_path(directory):
    return os.path.join(directory, TRAIN_CONFIG)


def results_path(directory):
    return os.path.join(directory, RESULTS)


def conversion_summary_path(directory, split):
    """`conversion_<split>.json` beside converted shards: what was written and skipped."""
    return os.path.join(directory, f"conversion_{split}.json")


def read_train_config(directory):
    """The `train_config.json` of a train_logdir (or of a checkpoint prefix in it), or None."""
    if directory and not os.path.isdir(directory):
        directory = os.path.dirname(directory)
    path = train_config_path(directory or ".")
    if not os.path.isfile(path):
        return None
    return read_json(path, what=TRAIN_CONFIG)


def read_results(eval_logdir):
    """The `results.json` of an eval_logdir, as written by the evaluator."""
    return read_json(results_path(eval_logdir), what=RESULTS)
