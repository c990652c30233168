"""Trials stored and scheduled by Optuna: storage, slots, heartbeat, claims, reuse.

The paper (Chen et al., NeurIPS 2018, Sec. 4.1) ran 28K candidates on 370
GPUs with Google Vizier keeping the trials. Here Optuna's `RDBStorage` keeps
them: an SQLite file in the work directory by default, or any server database
(`postgresql://...`, `mysql+pymysql://...`) shared by any number of workers.

How a study runs:

* **Slots.** The study is created once, before workers start, with one
  WAITING trial per requested candidate (user attr `slot`). A worker pops a
  WAITING trial atomically (WAITING -> RUNNING in one transaction, as
  `Study.ask` does), so N slots give exactly N candidates however many
  workers share them; a worker never creates trials of its own, so a late
  worker adds none.
* **Heartbeat.** A running trial records a heartbeat every
  `heartbeat_interval` seconds. Workers call `optuna.storages.
  fail_stale_trials` before each pop: a trial whose worker died (killed,
  preempted) goes stale after `grace_period`, is marked FAIL, and Optuna's
  `RetryHeartbeatStaleTrialCallback` re-queues a copy (same user attrs, so
  the same slot and the same spec) as WAITING. Nothing is lost or run twice.
* **Signals.** SIGINT or SIGTERM during a trial (`deeplab_dpc.core.interrupts`)
  marks it FAIL (user attr `interrupted`) and requeues its copy at once, as a
  stale one would be, and stops the worker: an interrupted trial is never
  scored. When the main thread is stuck in a long TensorFlow call, the
  interrupts watchdog requeues the trial before it ends the process.
* **Claims.** The policy's spec is written to the trial (user attrs `spec`,
  `key`) and then the other trials are read again; if another active trial
  claimed the same canonical key meanwhile, the policy proposes again. (Each
  worker writes before it reads, so of two racing workers at least one sees
  the other.)
* **Reuse.** A spec whose key already has a COMPLETE trial is not trained
  again: the trial takes that score and records `reused_from`.

Deviations: Vizier is replaced by our policies (`samplers.py`) inside an
Optuna ask/tell-style loop; the Optuna sampler of the study is unused. On
SQLite every transaction is opened with `BEGIN IMMEDIATE`, because pysqlite
otherwise reads outside the transaction and two processes could pop the same
WAITING trial; the file uses WAL journaling (readers never wait for the
writer; keep it on a local disk, not NFS).
"""

import contextlib
import os
import socket
import threading
import time
import uuid
import warnings

import numpy as np
import optuna
from optuna.trial import TrialState

from deeplab_dpc.core import artefacts, interrupts
from deeplab_dpc.formats import dpc_spec as spec_lib
from deeplab_dpc.search import SearchError
from deeplab_dpc.search.samplers import Scored

# --- Trial user attributes (one vocabulary for study, rerank and report) ----
SLOT = "slot"
SPEC = "spec"
KEY = "key"
ORIGIN = "origin"
WORKER = "worker"
REUSED_FROM = "reused_from"
ERROR = "error"
INTERRUPTED = "interrupted"
SECONDS = "seconds"
SLOT_COUNT = "slots"  # study attr: number of slots, set once they all exist

DEFAULT_HEARTBEAT_INTERVAL = 10
DEFAULT_GRACE_PERIOD = 60
DEFAULT_MAX_RETRY = 3
CLAIM_ATTEMPTS = 5
STORAGE_RETRIES = 20
# Errors of two processes creating Optuna's tables at once (the later one retries).
SCHEMA_RACE = ("already exists", "alembic_version", "database is locked")
ACTIVE = (TrialState.RUNNING, TrialState.WAITING, TrialState.COMPLETE)
CLAIMING = ACTIVE + (TrialState.PRUNED,)


class StorageError(SearchError):
    """A storage URL that cannot be opened."""


class StudyError(SearchError):
    """A study that is missing or does not match the requested search."""


# === Storage ===============================================================


def default_storage_url(workdir):
    """The embedded default: an SQLite file `search.db` in the work directory.

    SQLite needs a local file: a remote workdir (`gs://...`) needs a storage
    URL (StorageError otherwise).
    """
    if artefacts.is_remote(workdir):
        raise StorageError(
            f"the default SQLite database cannot live in the remote workdir {workdir};"
            " give a database URL (postgresql://... or sqlite:////local/search.db)"
        )
    return "sqlite:///" + os.path.join(artefacts.absolute(workdir), "search.db")


def _redact(url):
    try:
        import sqlalchemy

        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def _serialize_sqlite(storage):
    """Makes every SQLite transaction BEGIN IMMEDIATE (see module docstring)."""
    import sqlalchemy

    engine = storage.engine

    @sqlalchemy.event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, record):
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")  # readers never block
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")  # WAL-safe, fewer fsyncs

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made before the listeners are dropped


def _rdb_storage(url, engine_kwargs, heartbeat_interval, grace_period, max_retry):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
            grace_period=grace_period, heartbeat_stale_trial_callback=retry,
        )  # fmt: skip


def open_storage(
    url,
    heartbeat_interval=DEFAULT_HEARTBEAT_INTERVAL,
    grace_period=DEFAULT_GRACE_PERIOD,
    max_retry=DEFAULT_MAX_RETRY,
):
    """An `RDBStorage` with heartbeat and stale-trial retry; StorageError if unusable."""
    engine_kwargs = {"pool_pre_ping": True}
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 120}}
    for attempt in range(3):
        try:
            storage = _rdb_storage(
                url, engine_kwargs, heartbeat_interval, grace_period, max_retry
            )
            break
        except Exception as e:  # sqlalchemy, driver import and connection errors
            reason = (
                str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            )
            if isinstance(e, ImportError):  # optuna's message does not name the driver
                missing = getattr(e.__cause__ or e.__context__, "name", None)
                reason = (
                    f"no database driver for this URL"
                    f"{f' (no module {missing!r})' if missing else ''}; for "
                    f"postgresql:// install the 'postgres' extra: "
                    f"pip install -e '.[postgres]'"
                )
            if any(m in reason for m in SCHEMA_RACE) and attempt < 2:
                time.sleep(1.0)  # another worker was creating the schema
                continue
            raise StorageError(
                f"cannot open storage {_redact(url)}: {reason}"
            ) from None
    if storage.engine.name == "sqlite":
        _serialize_sqlite(storage)
    return storage


def _retrying(fn, *args, **kwargs):
    """Calls a storage function, retrying transient database errors (locks)."""
    for attempt in range(STORAGE_RETRIES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return fn(*args, **kwargs)
        except optuna.exceptions.StorageInternalError:
            if attempt == STORAGE_RETRIES - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


# === Studies ===============================================================


def create_study(storage, study_name, slots, attrs, seed=0, wait_seconds=120):
    """Creates the study with one WAITING trial per slot, or joins it.

    `slots`: a list of (slot id, user attrs) pairs. `attrs`: study user attrs
    that every later worker must match (e.g. the cache fingerprint).

    The process whose `create_study` succeeds (the database makes the name
    unique) adds every slot, then marks the study ready (study attr `slots`);
    others wait until it is ready, so workers started together neither race
    nor duplicate. Slots missing from an existing study (a larger
    `--num_trials` on a later run) are added too: do that from one process.
    """
    try:
        study = optuna.create_study(
            storage=storage, study_name=study_name, direction="maximize",
            sampler=optuna.samplers.RandomSampler(seed=seed),
        )  # fmt: skip
        _check_attrs(study, attrs, create=True)
    except optuna.exceptions.DuplicatedStudyError:
        study = load_study(storage, study_name, attrs, wait_seconds=wait_seconds)
    present = {t.user_attrs.get(SLOT) for t in study.get_trials(deepcopy=False)}
    for slot, prefill in slots:
        if slot not in present:
            trial = optuna.trial.create_trial(
                state=TrialState.WAITING, user_attrs={SLOT: slot, **prefill}
            )
            _retrying(study.add_trial, trial)
    if study.user_attrs.get(SLOT_COUNT) != len(present | {s for s, _ in slots}):
        study.set_user_attr(SLOT_COUNT, len(present | {s for s, _ in slots}))
    return study


def load_study(storage, study_name, attrs, pruner=None, wait_seconds=120):
    """The existing, ready study `study_name`; StudyError if missing or different.

    Waits up to `wait_seconds` for a study that another process is creating.
    """
    try:
        study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
    except KeyError:
        raise StudyError(
            f"no study {study_name!r} in the storage; create it first (stage 'create')"
        ) from None
    deadline = time.time() + wait_seconds
    while SLOT_COUNT not in study.user_attrs:
        if time.time() > deadline:
            raise StudyError(
                f"study {study_name!r} exists but its slots were never completed"
                " (its creator died?); delete it or use another --study_name"
            )
        time.sleep(0.5)
    _check_attrs(study, attrs, create=False)
    return study


def _check_attrs(study, attrs, create):
    existing = study.user_attrs
    for name, value in attrs.items():
        if name not in existing:
            if create:
                study.set_user_attr(name, value)
            continue
        if existing[name] != value:
            raise StudyError(
                f"study {study.study_name!r} was made with {name}={existing[name]!r},"
                f" this run has {name}={value!r}; use another --study_name"
            )


# === One worker ============================================================


class Heartbeat:
    """Records the trial's heartbeat now and every `interval` seconds in a thread."""

    def __init__(self, storage, trial_id, interval):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):  # the next beat retries
                self.storage.record_heartbeat(self.trial_id)

    def __enter__(self):
        _retrying(self.storage.record_heartbeat, self.trial_id)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def pop_waiting(study, storage):
    """Moves one WAITING trial to RUNNING atomically; its id, or None if none."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if _retrying(
                storage.set_trial_state_values, trial._trial_id, TrialState.RUNNING
            ):
                return trial._trial_id
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


def scored_history(study):
    """COMPLETE trials with a spec, in completion order, one per key."""
    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if KEY in t.user_attrs
    ]
    done.sort(key=lambda t: (t.datetime_complete, t.number))
    seen, history = set(), []
    for t in done:
        if t.user_attrs[KEY] not in seen:
            seen.add(t.user_attrs[KEY])
            history.append(
                Scored(t.number, t.user_attrs[KEY], t.user_attrs[SPEC], t.value)
            )
    return history


def _others(study, trial_id, states):
    return [
        t
        for t in study.get_trials(deepcopy=False, states=states)
        if t._trial_id != trial_id and KEY in t.user_attrs
    ]


def claim_spec(study, storage, trial_id, sampler, rng_seed):
    """Proposes a spec, writes it to the trial, re-reads; returns (spec, key)."""
    for attempt in range(CLAIM_ATTEMPTS):
        claimed = {t.user_attrs[KEY] for t in _others(study, trial_id, CLAIMING)}
        rng = np.random.default_rng([*rng_seed, attempt])
        spec, info = sampler.propose(scored_history(study), rng, claimed)
        key = spec_lib.canonical_key(spec)
        for name, value in ((SPEC, spec), (KEY, key), (ORIGIN, info)):
            _retrying(storage.set_trial_user_attr, trial_id, name, value)
        if key not in {t.user_attrs[KEY] for t in _others(study, trial_id, CLAIMING)}:
            break
    return spec, key


def _reusable(study, trial_id, number, key, poll_seconds):
    """A COMPLETE trial with `key` (None if none).

    If an earlier-numbered trial is training the same key right now, waits for
    it (the earliest trains, the later ones reuse; no two wait on each other).
    """
    while True:
        same = [t for t in _others(study, trial_id, ACTIVE) if t.user_attrs[KEY] == key]
        done = [t for t in same if t.state == TrialState.COMPLETE]
        if done:
            return min(done, key=lambda t: t.number)
        if not any(t.state == TrialState.RUNNING and t.number < number for t in same):
            return None
        time.sleep(poll_seconds)


def worker_id():
    """host:pid:random, unique per worker process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _finish(storage, trial_id, state, value=None, attrs=None):
    for name, v in (attrs or {}).items():
        _retrying(storage.set_trial_user_attr, trial_id, name, v)
    values = None if value is None else [float(value)]
    _retrying(storage.set_trial_state_values, trial_id, state, values)


def _requeue(study, storage, trial_id):
    """Marks an interrupted trial FAIL and queues its copy, as a stale one would be."""
    frozen = storage.get_trial(trial_id)
    _finish(storage, trial_id, TrialState.FAIL, attrs={INTERRUPTED: True})
    callback = storage.get_heartbeat_stale_trial_callback()
    if callback is not None:
        callback(study, frozen)


def run_trial(study, storage, trial_id, evaluate, sampler, seed, poll_seconds):
    """Runs one popped trial to a finished state; returns a result dict for logging.

    `evaluate(spec, trial)` returns {"value": score, "user_attrs": {...}};
    it may raise `optuna.TrialPruned`. Any other exception fails the trial
    (its one-line message in user attr `error`) and is not re-raised.
    """
    frozen = storage.get_trial(trial_id)
    number, attrs = frozen.number, frozen.user_attrs
    _retrying(storage.set_trial_user_attr, trial_id, WORKER, worker_id())
    if KEY in attrs:  # a retried trial or a pre-filled slot (re-ranking)
        spec, key = attrs[SPEC], attrs[KEY]
    else:
        spec, key = claim_spec(study, storage, trial_id, sampler, [seed, attrs[SLOT]])
    result = {"number": number, "key": key, "spec": spec, "slot": attrs.get(SLOT)}
    source = _reusable(study, trial_id, number, key, poll_seconds)
    if source is not None:
        copied = {k: v for k, v in source.user_attrs.items() if k not in (SLOT, WORKER)}
        copied.update({REUSED_FROM: source.number, SECONDS: 0.0})
        _finish(storage, trial_id, TrialState.COMPLETE, source.value, copied)
        return {**result, "state": "reused", "value": source.value, "seconds": 0.0}
    start = time.perf_counter()
    requeue = interrupts.once(lambda: _requeue(study, storage, trial_id))
    try:
        with interrupts.on_abort(requeue):
            out = evaluate(spec, optuna.Trial(study, trial_id))
        interrupts.check(f"trial {number} not recorded, it is retried")
    except optuna.TrialPruned as e:
        seconds = time.perf_counter() - start
        _finish(storage, trial_id, TrialState.PRUNED, None, {SECONDS: seconds})
        return {
            **result,
            "state": "pruned",
            "value": None,
            "seconds": seconds,
            "why": str(e),
        }
    except (KeyboardInterrupt, SystemExit):  # interrupts.Interrupted included
        requeue()
        raise
    except Exception as e:  # a bad candidate must not stop the worker
        line = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        _finish(storage, trial_id, TrialState.FAIL, None, {ERROR: line})
        return {**result, "state": "failed", "value": None, "seconds": 0.0, "why": line}
    seconds = time.perf_counter() - start
    with interrupts.deferred():  # a signal now waits until the score is written
        _finish(
            storage, trial_id, TrialState.COMPLETE, out["value"],
            {**out.get("user_attrs", {}), SECONDS: seconds},
        )  # fmt: skip
    return {**result, "state": "complete", "value": out["value"], "seconds": seconds}


def run_worker(
    study,
    storage,
    evaluate,
    sampler=None,
    seed=0,
    poll_seconds=1.0,
    on_result=None,
):
    """Pulls WAITING trials of `study` until none is waiting or running.

    While other workers still run trials, waits (their trials may go stale
    and come back as WAITING). `on_result(result)` is called after each trial
    this worker finishes. Returns the list of those results.
    """
    results = []
    interval = storage.get_heartbeat_interval() or DEFAULT_HEARTBEAT_INTERVAL
    while True:
        interrupts.check()  # a safe point between trials
        _retrying(optuna.storages.fail_stale_trials, study)
        trial_id = pop_waiting(study, storage)
        if trial_id is None:
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                return results
            time.sleep(poll_seconds)
            continue
        with Heartbeat(storage, trial_id, interval):
            result = run_trial(
                study, storage, trial_id, evaluate, sampler, seed, poll_seconds
            )
        results.append(result)
        if on_result is not None:
            on_result(result)


def progress_counts(study):
    """(finished slots, all slots) of a study, for progress bars."""
    trials = study.get_trials(deepcopy=False)
    slots = {t.user_attrs.get(SLOT) for t in trials if SLOT in t.user_attrs}
    finished = {
        t.user_attrs.get(SLOT)
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and ERROR in t.user_attrs)
    }
    return len(finished & slots), len(slots)
