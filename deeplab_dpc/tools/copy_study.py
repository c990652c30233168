r"""Copies search studies between Optuna storages, e.g. SQLite to PostgreSQL.

    python -m deeplab_dpc.tools.copy_study \
        --from_storage=sqlite:///workdir/search/search.db \
        --to_storage=postgresql://user:pass@dbhost/dpc

Copies every study of the source (the search, `<name>.rerank`, ...) or the
ones named by `--study_name` (comma-separated), with their user attributes
(cache fingerprint, space, slots) and every trial (state, score, spec, key,
cost, intermediate values, heartbeat retries), through `optuna.copy_study`.
The copy is a working study: workers on the new storage join it with the
same `search.py` flags and only run the slots that are still waiting.

Stop the workers before copying (a RUNNING trial is refused: its worker
would keep writing to the old storage), and start them on the new storage
after the copy ends. A study that already exists in the destination is
refused; a copy that fails midway is deleted from the destination, so
nothing half-copied stays under the study's name. Bad input: one line on
stderr, exit code 2.
"""

import os
import sys
import warnings

import optuna
from optuna.trial import TrialState

from deeplab_dpc.search import SearchError
from deeplab_dpc.search import study as study_lib


class CopyError(SearchError):
    """A copy that cannot be made (bad storage, missing or existing study)."""


def _open(url, role):
    if not url:
        raise CopyError(f"--{role}_storage: required (an Optuna storage URL)")
    if url.startswith("sqlite:///") and role == "from":
        path = url[len("sqlite:///") :]
        if not os.path.isfile(path):
            raise CopyError(f"--from_storage: no such SQLite file {path}")
    try:
        return study_lib.open_storage(url)
    except (study_lib.StorageError, OSError) as e:
        raise CopyError(f"--{role}_storage: {e}") from None


def copy_studies(from_url, to_url, study_names=None):
    """Copies `study_names` (default: all) from one storage URL to another.

    Returns [(name, trial count, {state name: count})]. CopyError (or
    StorageError) names what is wrong; nothing is copied then.
    """
    if from_url == to_url:
        raise CopyError("--from_storage and --to_storage are the same storage")
    source = _open(from_url, "from")
    present = optuna.get_all_study_names(source)
    if study_names is not None and not [n for n in study_names if n.strip()]:
        raise CopyError("--study_name: empty; give study names or leave it out (all)")
    names = list(study_names or present)
    if not names:
        raise CopyError(f"no study in {study_lib._redact(from_url)}")
    for name in names:
        if name not in present:
            raise CopyError(
                f"--study_name: no study {name!r} in {study_lib._redact(from_url)}; "
                "it has: " + (", ".join(present) or "none")
            )
        study = optuna.load_study(study_name=name, storage=source)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if running:
            raise CopyError(
                f"study {name!r} has {len(running)} RUNNING trial(s)"
                f" ({', '.join(str(t.number) for t in running)}); stop its workers"
                " (or let their heartbeat go stale) before copying"
            )
    destination = _open(to_url, "to")  # opened (an SQLite file made) once all is known
    existing = set(optuna.get_all_study_names(destination))
    for name in names:
        if name in existing:
            raise CopyError(
                f"--to_storage: study {name!r} already exists in the destination "
                + study_lib._redact(to_url)
            )
    return [_copy_one(name, source, destination) for name in names]


def _copy_one(name, source, destination):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.copy_study(
                from_study_name=name, from_storage=source, to_storage=destination
            )
        trials = optuna.load_study(study_name=name, storage=destination).get_trials(
            deepcopy=False
        )
        expected = len(source.get_all_trials(source.get_study_id_from_name(name)))
        if len(trials) != expected:
            raise CopyError(
                f"study {name!r}: {len(trials)} of {expected} trials copied"
            )
    except BaseException:
        if name in optuna.get_all_study_names(destination):
            optuna.delete_study(study_name=name, storage=destination)
        raise
    states = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    return name, len(trials), states


def main(argv):
    from absl import flags

    from deeplab_dpc.core import console

    f = flags.FLAGS
    console.quiet_optuna(argv)  # no "A new study created in RDB" per study
    try:
        if len(argv) > 1:
            raise CopyError(f"unexpected arguments: {' '.join(argv[1:])}")
        copied = copy_studies(f.from_storage, f.to_storage, f.study_name)
    except SearchError as e:
        print(f"copy_study: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
    for name, count, states in copied:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        print(
            f"{name}: {count} trials ({counts}) copied to "
            + study_lib._redact(f.to_storage)
        )


def define_flags():
    from deeplab_dpc import command_line
    from deeplab_dpc.core.option_table import Option

    command_line.define_options((
        Option("from_storage", "string", None, "Source Optuna storage URL."),
        Option("to_storage", "string", None, "Destination Optuna storage URL."),
        Option("study_name", "list", None,
               "Studies to copy (comma-separated); default: all."),
    ))  # fmt: skip


if __name__ == "__main__":
    from deeplab_dpc import command_line

    define_flags()
    command_line.run(main, "copy_study")
