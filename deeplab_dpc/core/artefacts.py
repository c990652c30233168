"""Files the project writes beside its outputs: names, atomic writes, reading back.

TensorFlow-free for local paths, and importable from every layer. Every
output file the package writes itself (specs, model and training configs,
results, TFLite files and their configs, PNGs, search reports and figures,
TFRecord shards, conversion summaries, the synthetic dataset, feature caches)
goes through this module, either whole (`write_*`) or under `temporary_path`
and then `commit`, or into a directory staged here (`make_staging_dir`, then
`install_dir` or `move_files`); every local rename of the package is `rename`
here. TensorFlow writes checkpoint data, SavedModel contents and event files
itself (through tf.io.gfile), Optuna its study database; the run logs of
`tools/experiment.py` are appended to in place (a child's output, line by
line), not written whole. Some folders for
local-only outputs are still made with `os.makedirs` (the feature cache's
and TFRecord converters' output folders, the SQLite study's folder, the
experiment tool's run folders). So there is one permission policy, one way of
never leaving a half-written file under its final name, and one place that
knows remote file systems:

- a file is written under a hidden temporary name in its target's folder
  (so the rename is atomic), then renamed into place;
- files get the usual permissions, 0666 less the umask, and staged
  directories 0777 less the umask (not mkstemp's 0600 / mkdtemp's 0700): the
  outputs are meant to be read by others.

Remote paths. A path with a scheme (`gs://bucket/run`, `ram://...`, `s3://`,
`hdfs://`: anything `is_remote`) goes through `tf.io.gfile`, imported only
then, so TensorFlow is still not needed for local files. `absolute` leaves such
a path alone (`os.path.abspath` would turn `gs://b/x` into `<cwd>/gs:/b/x`).
What is atomic where:

- local files: temporary name beside the target, fsync, `os.replace`: atomic
  on POSIX file systems, as before;
- remote files: the same temporary name beside the target, then
  `tf.io.gfile.rename(overwrite=True)`. On TensorFlow's in-memory `ram://`
  the rename is one map update (atomic); on GCS it is a server-side copy then
  a delete, and a GCS object appears whole or not at all, so readers never see
  a half-written file. A file system without rename gets the bytes written
  under the final name directly (atomic only where the store publishes an
  object on close, as object stores do);
- directories (`make_staging_dir` + `install_dir`): one `os.replace` locally;
  remotely no store renames a directory atomically (GCS renames object by
  object, `ram://` does not move a directory's files at all), so the files are
  renamed one by one, those named in `last` at the end (the marker readers
  wait for: a SavedModel's `saved_model.pb`, a checkpoint's state file);
- permissions are a local notion: remote files get the store's own.
"""

import json
import os
import shutil
import tempfile
import uuid

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
SEARCH_HISTORY_FIGURE = "history.png"  # entropies, arch mIoU, decoding changes
EXPORT_CONFIG = (
    "deeplab_config.json"  # a SavedModel's asset; `<file>.tflite.json` beside TFLite
)


class ArtefactError(ValueError):
    """A file written by this project is missing or unreadable; names the file."""


def is_remote(path):
    """True for a path with a scheme (`gs://`, `ram://`, ...), handled by tf.io.gfile."""
    return "://" in os.fspath(path)


def _gfile():
    import tensorflow as tf  # only for remote paths: local ones need no TensorFlow

    return tf.io.gfile


def absolute(path):
    """`path` made absolute if local (os.path.abspath); a remote path unchanged.

    The one normalisation for every path the entry points write or record
    (logdirs, exports, workdirs, caches); None stays None.
    """
    if path is None:
        return None
    path = os.fspath(path)
    return path if is_remote(path) else os.path.abspath(path)


def makedirs(path):
    """Creates the directory `path` and its parents if missing (local or remote)."""
    path = os.fspath(path)
    if is_remote(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def exists(path):
    path = os.fspath(path)
    return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def isdir(path):
    path = os.fspath(path)
    return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def isfile(path):
    path = os.fspath(path)
    if is_remote(path):
        return _gfile().exists(path) and not _gfile().isdir(path)
    return os.path.isfile(path)


def listdir(path):
    """The names in directory `path` (remote listings lose their trailing '/')."""
    path = os.fspath(path)
    if is_remote(path):
        return [n.rstrip("/") for n in _gfile().listdir(path)]
    return os.listdir(path)


def open_file(path, mode="r"):
    """`open` for local paths (UTF-8 in text mode), `tf.io.gfile.GFile` for remote ones.

    Missing files raise FileNotFoundError on both.
    """
    path = os.fspath(path)
    if not is_remote(path):
        return open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"}))
    if "r" in mode and not _gfile().exists(path):
        raise FileNotFoundError(path)
    return _gfile().GFile(path, mode)


def remove_tree(path):
    """Removes the directory `path` and its content if it is there."""
    path = os.fspath(path)
    if is_remote(path):
        _remove_remote_tree(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _remove_remote_tree(path):
    import tensorflow as tf

    gfile = _gfile()
    if not gfile.exists(path):
        return
    try:
        gfile.rmtree(path)
    except tf.errors.NotFoundError:
        # ram:// lists `ram://d/model.tflite` as a child `.tflite` of
        # `ram://d/model` and its rmtree then fails on it: delete what exists.
        for root, _, names in gfile.walk(path):
            for name in names:
                if not gfile.exists(f"{root.rstrip('/')}/{name}"):
                    continue
                gfile.remove(f"{root.rstrip('/')}/{name}")


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
    directory, name = os.path.split(absolute(path))
    return os.path.join(directory, f".tmp.{name}.{os.getpid()}")


def commit(tmp, path):
    """Gives the finished temporary file `tmp` the policy's mode, renames it to `path`."""
    if is_remote(path):
        _gfile().rename(os.fspath(tmp), os.fspath(path), overwrite=True)
        return
    os.chmod(tmp, file_mode())
    rename(tmp, path)


def rename(src, dst):
    """Renames local `src` to `dst` in one step: the package's one `os.replace`.

    Atomic on POSIX file systems. Replaces a file, or an empty directory with a
    directory; onto a directory that holds files it raises OSError.
    """
    os.replace(src, dst)


def move_files(staged, path, last=()):
    """Moves each entry of the local directory `staged` into the directory `path`.

    Same-named entries of `path` are replaced, the others kept; the names in
    `last` move at the end (the marker readers wait for). For a target that
    may hold other files, where `install_dir` would replace them.
    """
    for name in sorted(os.listdir(staged), key=lambda n: (n in last, n)):
        rename(os.path.join(staged, name), os.path.join(path, name))


def remove_quietly(path):
    """Removes a temporary file if it is there (cleanup after a failed write)."""
    if is_remote(path):
        if _gfile().exists(os.fspath(path)):
            _gfile().remove(os.fspath(path))
        return
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def write_bytes(content, path):
    """Writes bytes to `path` atomically (temporary name beside it, then rename).

    Remote paths: see the module docstring for what is atomic on which store.
    """
    if is_remote(path):
        _write_remote(content, os.fspath(path))
        return
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


def _write_remote(content, path):
    gfile = _gfile()
    if not isinstance(content, bytes):
        raise TypeError(f"write_bytes: bytes expected, not {type(content).__name__}")
    directory, name = path.rsplit("/", 1)
    gfile.makedirs(directory)
    tmp = f"{directory}/.tmp.{name}.{uuid.uuid4().hex}"
    import tensorflow as tf

    try:
        with gfile.GFile(tmp, "wb") as f:
            f.write(content)
        try:
            gfile.rename(tmp, path, overwrite=True)
        except tf.errors.UnimplementedError:  # no rename: publish under the name
            with gfile.GFile(path, "wb") as f:
                f.write(content)
    finally:
        if gfile.exists(tmp):
            gfile.remove(tmp)


def write_text(text, path):
    """Writes UTF-8 text atomically (see `write_bytes`)."""
    write_bytes(text.encode("utf-8"), path)


def write_figure(fig, path, **savefig_kwargs):
    """Writes a Matplotlib figure as PNG atomically (local or remote; see `write_bytes`)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", **savefig_kwargs)
    write_bytes(buffer.getvalue(), path)


def dump_json(data, indent=2, sort_keys=True):
    """The JSON text the project writes: indented, keys sorted, a final newline."""
    return json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n"


def write_json(data, path, indent=2, sort_keys=True):
    """Writes `dump_json(data)` atomically (see `write_bytes`)."""
    write_text(dump_json(data, indent=indent, sort_keys=sort_keys), path)


def read_json(path, error=ArtefactError, what="JSON file"):
    """Reads a JSON file; a missing or broken one raises `error` naming the file."""
    try:
        with open_file(path) as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise error(f"{path}: no {what} here") from e
    except json.JSONDecodeError as e:
        raise error(
            f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from e


def make_staging_dir(parent, prefix):
    """A new hidden directory in `parent` with the policy's mode, to fill, then `install_dir`."""
    if is_remote(parent):
        tmp = f"{os.fspath(parent).rstrip('/')}/{prefix}{uuid.uuid4().hex}"
        _gfile().makedirs(tmp)
        return tmp
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=prefix)
    os.chmod(tmp, dir_mode())
    return tmp


def install_dir(staged, path, last=()):
    """Renames the finished `staged` directory to `path`, replacing what was there.

    Local: atomic (one rename). Remote: file by file, the names in `last`
    (relative to `staged`) at the end; see the module docstring.
    """
    if is_remote(path):
        _install_remote(os.fspath(staged), os.fspath(path), last)
        return
    path = os.path.abspath(path)
    if not os.path.lexists(path):
        rename(staged, path)
        return
    old = tempfile.mkdtemp(dir=os.path.dirname(path), prefix=".old_")
    rename(path, old)  # rename onto an empty directory replaces it
    rename(staged, path)
    shutil.rmtree(old, ignore_errors=True)


def _install_remote(staged, path, last):
    gfile = _gfile()
    _remove_remote_tree(path)
    files = []
    for root, _, names in gfile.walk(staged):
        rel = root[len(staged) :].strip("/")
        files += [f"{rel}/{n}" if rel else n for n in names]
    files.sort(key=lambda f: (f in last, f))
    for rel in files:
        target = f"{path}/{rel}"
        gfile.makedirs(target.rsplit("/", 1)[0])
        gfile.rename(f"{staged}/{rel}", target, overwrite=True)
    gfile.makedirs(path)  # an empty staged directory still installs one
    _remove_remote_tree(staged)


def is_checkpoint_prefix(path):
    """True when `path` is a TF checkpoint prefix (`<path>.index` exists), not a folder.

    Asked before `isdir`: TensorFlow's `ram://` file system calls any string
    prefix of a stored name a directory (`ram://run/ckpt-2` "is" one because
    `ram://run/ckpt-2.index` exists).
    """
    return bool(path) and exists(os.fspath(path) + ".index")


def checkpoint_directory(path):
    """The directory of a checkpoint directory or of a ckpt-N prefix in it."""
    path = os.fspath(path)
    if is_checkpoint_prefix(path) or not isdir(path):
        return os.path.dirname(path)
    return path


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
    if directory:
        directory = checkpoint_directory(directory)
    path = train_config_path(directory or ".")
    if not isfile(path):
        return None
    return read_json(path, what=TRAIN_CONFIG)


def read_results(eval_logdir):
    """The `results.json` of an eval_logdir, as written by the evaluator."""
    return read_json(results_path(eval_logdir), what=RESULTS)
