r"""Experiments as data: a plan of training runs, run to completion across restarts.

    python -m deeplab_dpc.tools.experiment run experiments/camvid2/plan.json
    python -m deeplab_dpc.tools.experiment status experiments/camvid2/plan.json
    python -m deeplab_dpc.tools.experiment report experiments/camvid2/plan.json \
        --page=g3doc/camvid.md
    python -m deeplab_dpc.tools.experiment predictions experiments/camvid2/plan.json

A plan (JSON, see `load_plan` and g3doc/experiments.md) is a grid of rows
(architectures, each a set of `train.py` flags) x seeds, under one training
recipe, with the evaluations every run gets. `run` executes the runs that
have no record yet, one at a time, each through the project's entry points:

1. `train.py` into `<workdir>/runs/<run>/train`, with a checkpoint every
   `curve_every_steps` steps, all of them kept. A run cut off (SIGTERM,
   Ctrl-C, a machine that went away) resumes from its latest checkpoint
   when the same command is given again and the workdir is still there;
   without it, the run starts over.
2. `eval.py` on every kept checkpoint (the curve of val mIoU against steps)
   and the plan's other evaluations (multi-scale + flip) on the last one;
   an evaluation whose `results.json` exists is not redone.
3. `tools/model_stats` on the trained model (parameters, multiply-adds).
4. One small JSON record under the plan's `results/` folder: the plan entry
   and recipe, the commit, the seed, steps, wall time per phase (summed over
   restarts), host and load, every evaluation's mIoU and per-class IoU, the
   curve, the model's size. The records are meant to be committed; they
   are the results, and `report` reads nothing else.

`predictions` draws every row's final checkpoint of one seed (`--seed`) on a
few val images (`--images`) beside the image and its ground truth, into
`predictions.png` beside the plan; unlike `report` it needs the workdir's
checkpoints.

The committed records are the source of truth: a run is done when its record
exists. Checkpoints, TFRecords and the rest of the workdir stay out of git.
One `run` process at a time per workdir (an flock says so); SIGTERM or
Ctrl-C is passed on to the running `train.py` / `eval.py`, which saves its
checkpoint, and `run` stops with one line.

Deviation from the issue's suggestion of an Optuna study as the queue: the
queue here is the plan file and the records themselves (pending = no
record), which is what must survive a lost workdir; a study database would
be a second source of truth to keep in step with the committed records.
"""

import fcntl
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time

from deeplab_dpc.core import artefacts, errors, interrupts

PLAN_VERSION = 1
RUNNING = "running.json"  # in the workdir: the run in progress (pid, start)
STATE = "state.json"  # in a run's folder: wall time per phase so far
LOCK = ".experiment.lock"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class PlanError(ValueError):
    """A plan file that cannot be run; one line naming the file and field."""


# --- The plan ------------------------------------------------------------------


def _require(plan, key, kind, path):
    if key not in plan:
        raise PlanError(f"{path}: missing field {key!r}")
    if not isinstance(plan[key], kind):
        raise PlanError(f"{path}: field {key!r} must be a {kind.__name__}")
    return plan[key]


def _check_flags(flags, where, path):
    if not isinstance(flags, dict):
        raise PlanError(f"{path}: {where} must be an object of flag: value")
    for name, value in flags.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise PlanError(f"{path}: {where}: {name!r} is not a flag name")
        if not isinstance(value, (str, int, float, bool, list)):
            raise PlanError(f"{path}: {where}: --{name} has a value of type "
                            f"{type(value).__name__}")  # fmt: skip
        if name in ("train_logdir", "seed", "checkpoint_dir", "eval_logdir"):
            raise PlanError(f"{path}: {where}: --{name} is set by the tool")


def load_plan(path):
    """The validated plan at `path`, with `runs` (the grid) and paths resolved.

    Fields: `name`, `workdir` (relative to the current directory; `{workdir}`
    in any string value stands for it), `train` (the recipe: flags every run
    gets), `rows` (each `name`, `train` (its own flags) and optionally
    `seeds`), `seeds`, `curve_every_steps`, `evaluations` ({name: eval.py
    flags}; the first is the one the curve uses), optional `setup` ([{creates,
    command}]: commands run once when `creates` is missing), `stats_crop_size`
    and `comparisons` ([[row, row], ...] tested for significance).
    """
    plan = artefacts.read_json(path, PlanError, what="experiment plan")
    if not isinstance(plan, dict):
        raise PlanError(f"{path}: a plan is a JSON object")
    if plan.get("version", PLAN_VERSION) != PLAN_VERSION:
        raise PlanError(
            f"{path}: version {plan.get('version')} (this tool reads {PLAN_VERSION})"
        )
    name = _require(plan, "name", str, path)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise PlanError(f"{path}: name {name!r}: letters, digits, '_', '-', '.' only")
    _require(plan, "workdir", str, path)
    _check_flags(_require(plan, "train", dict, path), "train", path)
    evaluations = _require(plan, "evaluations", dict, path)
    if not evaluations:
        raise PlanError(f"{path}: evaluations: at least one")
    for key, flags in evaluations.items():
        if not re.fullmatch(r"[a-z0-9_]+", key):
            raise PlanError(f"{path}: evaluations: {key!r}: lower case, digits, '_'")
        _check_flags(flags, f"evaluations.{key}", path)
    every = _require(plan, "curve_every_steps", int, path)
    if every < 1:
        raise PlanError(f"{path}: curve_every_steps must be >= 1, got {every}")
    seeds = plan.get("seeds", [0])
    rows = _require(plan, "rows", list, path)
    if not rows:
        raise PlanError(f"{path}: rows: at least one")
    names, grid = set(), []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            raise PlanError(f"{path}: rows[{i}]: an object with a 'name'")
        if not re.fullmatch(r"[A-Za-z0-9_.]+", row["name"]) or row["name"] in names:
            raise PlanError(f"{path}: rows[{i}]: name {row['name']!r} is not a "
                            "unique name of letters, digits, '_', '.'")  # fmt: skip
        names.add(row["name"])
        _check_flags(row.get("train", {}), f"rows[{i}].train", path)
        row_seeds = row.get("seeds", seeds)
        if (
            not isinstance(row_seeds, list)
            or not row_seeds
            or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0
                for s in row_seeds
            )
        ):
            raise PlanError(f"{path}: rows[{i}].seeds: a list of integers >= 0")
        grid.append((row["name"], row_seeds))
    # Seed-major order (every row's first seed, then every row's second, ...):
    # a plan cut short still has each row at the same number of seeds.
    runs = [
        {"id": f"{name}-seed{seeds_[k]}", "row": name, "seed": seeds_[k]}
        for k in range(max(len(s) for _, s in grid))
        for name, seeds_ in grid
        if k < len(seeds_)
    ]
    for pair in plan.get("comparisons", []):
        if not (isinstance(pair, list) and len(pair) == 2 and set(pair) <= names):
            raise PlanError(f"{path}: comparisons: {pair!r} is not a pair of row names")
    for i, step in enumerate(plan.get("setup", [])):
        if not (isinstance(step, dict) and isinstance(step.get("creates"), str)
                and isinstance(step.get("command"), list) and step["command"]):  # fmt: skip
            raise PlanError(f"{path}: setup[{i}]: needs 'creates' and a 'command' list")
    plan = dict(plan)
    plan["file"] = os.path.abspath(path)
    plan["results_dir"] = os.path.join(os.path.dirname(plan["file"]), "results")
    plan["runs"] = runs
    plan["rows_by_name"] = {row["name"]: row for row in rows}
    return plan


def _substitute(value, workdir):
    if isinstance(value, str):
        return value.replace("{workdir}", workdir)
    if isinstance(value, list):
        return [_substitute(v, workdir) for v in value]
    return value


def flag_args(flags, workdir):
    """`--name=value` arguments of a flag dict (booleans as --name / --noname)."""
    args = []
    for name, value in flags.items():
        value = _substitute(value, workdir)
        if isinstance(value, bool):
            args.append(f"--{name}" if value else f"--no{name}")
        elif isinstance(value, list):
            args.append(f"--{name}={','.join(str(v) for v in value)}")
        else:
            args.append(f"--{name}={value}")
    return args


def workdir_of(plan, override=None):
    return os.path.abspath(override or plan["workdir"])


def run_dir(workdir, run):
    return os.path.join(workdir, "runs", run["id"])


def record_path(plan, run):
    return os.path.join(plan["results_dir"], f"{run['id']}.json")


def read_records(plan):
    """{run id: record} of the plan's runs that have one."""
    records = {}
    for run in plan["runs"]:
        path = record_path(plan, run)
        if os.path.isfile(path):
            records[run["id"]] = artefacts.read_json(path, PlanError, what="record")
    return records


def train_args(plan, run, workdir):
    """The train.py command line of a run: recipe, row flags, seed, checkpoints."""
    row = plan["rows_by_name"][run["row"]]
    flags = {**plan["train"], **row.get("train", {})}
    steps = int(flags.get("training_number_of_steps", 30000))
    every = plan["curve_every_steps"]
    flags.update(
        train_logdir=os.path.join(run_dir(workdir, run), "train"),
        seed=run["seed"],
        save_interval_steps=every,
        max_checkpoints_to_keep=steps // every + 2,
    )
    return flag_args(flags, workdir), steps


# --- Running ---------------------------------------------------------------------


def _host():
    info = {"machine": platform.machine(), "cpus": os.cpu_count(), "cpu": None}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return info
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    info["cpu"] = model.group(1).strip() if model else None
    have = set(flags.group(1).split()) if flags else set()
    info["features"] = [
        f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in have
    ]
    return info


def _commit():
    try:
        head = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True,
            check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


class LoadSampler:
    """The 1-minute load average every `period` seconds while a run trains."""

    def __init__(self, period=60.0):
        self.period, self.samples = period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.wait(self.period):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self):
        self.samples.append(os.getloadavg()[0])
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()


def _run_child(args, log_path):
    """Runs `python args...` in the repository root, output appended to `log_path`.

    A SIGINT / SIGTERM of the tool is passed on; the child saves and stops;
    then `interrupts.Interrupted` is raised here.
    """
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ python {' '.join(args)}\n")
        log.flush()
        proc = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # a terminal's Ctrl-C reaches it through us, once
        )  # fmt: skip
        with interrupts.deferred():
            while True:
                try:
                    code = proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    pass
                signum = interrupts.requested()
                if signum is not None and proc.returncode is None:
                    proc.send_signal(signum)
                    code = proc.wait()
                    break
    signum = interrupts.requested()
    if signum is not None:
        raise interrupts.Interrupted(signum)
    if code != 0:
        tail = _tail(log_path)
        raise RunError(f"{args[0]} exited with {code} (log {log_path}): {tail}")


def _tail(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [ln.strip() for ln in f.read().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class RunError(RuntimeError):
    """An entry point of a run failed; names the command and its log."""


def _checkpoint_steps(train_dir):
    steps = []
    if os.path.isdir(train_dir):
        for name in os.listdir(train_dir):
            found = re.fullmatch(r"ckpt-(\d+)\.index", name)
            if found:
                steps.append(int(found.group(1)))
    return sorted(steps)


class _State:
    """Wall time per phase of a run, summed over restarts (`state.json`)."""

    def __init__(self, directory):
        self.path = os.path.join(directory, STATE)
        data = {}
        if os.path.isfile(self.path):
            data = artefacts.read_json(self.path, PlanError, what=STATE)
        self.seconds = data.get("seconds", {})
        self.starts = data.get("starts", 0)
        self.load = data.get("load_samples", [])
        self.commits = data.get("commits", [])  # the code of each process start
        # Training steps covered by the timed processes: a process killed
        # outright (SIGKILL, a machine gone) saves neither its seconds nor
        # its steps, so seconds / timed_steps stays a true seconds per step.
        self.timed_steps = data.get("timed_steps", 0)

    def add(self, phase, seconds):
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def save(self):
        artefacts.write_json(
            {
                "seconds": self.seconds,
                "starts": self.starts,
                "load_samples": self.load,
                "commits": self.commits,
                "timed_steps": self.timed_steps,
            },  # fmt: skip
            self.path,
        )


def _timed(state, phase, fn):
    start = time.monotonic()
    try:
        return fn()
    finally:
        state.add(phase, time.monotonic() - start)
        state.save()


def _evaluate(plan, run, workdir, key, step, log):
    """Runs (or reads back) evaluation `key` of checkpoint `step`; its results."""
    directory = run_dir(workdir, run)
    eval_dir = os.path.join(directory, "eval", f"{key}-{step}")
    if not os.path.isfile(artefacts.results_path(eval_dir)):
        prefix = os.path.join(directory, "train", f"ckpt-{step}")
        args = ["eval.py", f"--checkpoint_dir={prefix}", f"--eval_logdir={eval_dir}",
                "--max_number_of_evaluations=1",
                *flag_args(plan["evaluations"][key], workdir)]  # fmt: skip
        _run_child(args, log)
    results = artefacts.read_results(eval_dir)
    return {
        k: results[k]
        for k in (
            "step",
            "miou",
            "pixel_accuracy",
            "per_class_iou",
            "num_images",
            "scales",
            "flip",
            "output_stride",
        )  # fmt: skip
        if k in results
    }


def _model_stats(plan, run, workdir, log):
    out = os.path.join(run_dir(workdir, run), "model_stats.json")
    crop = plan.get("stats_crop_size")
    if crop is None:
        return None
    if not os.path.isfile(out):
        args = ["-m", "deeplab_dpc.tools.model_stats",
                f"--model_config={os.path.join(run_dir(workdir, run), 'train')}",
                f"--crop_size={crop[0]},{crop[1]}", "--json"]  # fmt: skip
        proc = subprocess.run(
            [sys.executable, *args], cwd=ROOT, capture_output=True, text=True
        )
        if proc.returncode != 0:
            with open(log, "a", encoding="utf-8") as f:
                f.write(proc.stdout + proc.stderr)
            raise RunError(f"model_stats exited with {proc.returncode} (log {log})")
        artefacts.write_text(proc.stdout, out)
    with open(out, encoding="utf-8") as f:
        rows = json.load(f)
    return {
        "crop_size": list(crop),
        "params": sum(r["params"] + r["bn_params"] for r in rows),
        "conv_params": sum(r["params"] for r in rows),
        "madds": sum(r["madds"] for r in rows),
    }


def run_setup(plan, workdir, say=print):
    """Runs the plan's setup commands whose `creates` path is missing."""
    for step in plan.get("setup", []):
        target = _substitute(step["creates"], workdir)
        if not os.path.isabs(target):
            target = os.path.join(workdir, target)
        if os.path.exists(target):
            continue
        command = _substitute(step["command"], workdir)
        say(f"setup: {' '.join(command)}")
        if command[0] == "python":
            command = command[1:]
        _run_child(command, os.path.join(workdir, "setup.log"))
        if not os.path.exists(target):
            raise RunError(f"setup: {' '.join(command)} did not create {target}")


def run_one(plan, run, workdir, say=print):
    """Trains, evaluates and records one run (resuming what its workdir holds)."""
    directory = run_dir(workdir, run)
    os.makedirs(directory, exist_ok=True)
    log = os.path.join(directory, "log.txt")
    state = _State(directory)
    state.starts += 1
    commit = _commit()
    if commit not in state.commits:
        state.commits.append(commit)
    state.save()
    args, steps = train_args(plan, run, workdir)
    done = _checkpoint_steps(os.path.join(directory, "train"))
    say(f"{run['id']}: training to step {steps}"
        + (f" (resuming from step {done[-1]})" if done else ""))  # fmt: skip
    with LoadSampler() as load:
        try:
            _timed(state, "train", lambda: _run_child(["train.py", *args], log))
        finally:
            state.load.extend(load.samples)
            reached = _checkpoint_steps(os.path.join(directory, "train"))
            state.timed_steps += max(
                0, (reached[-1] if reached else 0) - (done[-1] if done else 0)
            )
            state.save()
    every = plan["curve_every_steps"]
    steps_kept = _checkpoint_steps(os.path.join(directory, "train"))
    if not steps_kept or steps_kept[-1] != steps:
        raise RunError(f"{run['id']}: no checkpoint at step {steps} after training")
    curve_key, *other = list(plan["evaluations"])
    curve_steps = [s for s in steps_kept if s % every == 0 or s == steps]
    say(f"{run['id']}: evaluating {len(curve_steps)} checkpoints ({curve_key})"
        + (f" and the last one ({', '.join(other)})" if other else ""))  # fmt: skip
    curve, results = [], {}

    def evaluate_all():
        for step in curve_steps:
            r = _evaluate(plan, run, workdir, curve_key, step, log)
            curve.append([step, r["miou"]])
        results[curve_key] = r
        for key in other:
            results[key] = _evaluate(plan, run, workdir, key, steps, log)

    _timed(state, "eval", evaluate_all)
    stats = _model_stats(plan, run, workdir, log)
    train_dir = os.path.join(directory, "train")
    row = plan["rows_by_name"][run["row"]]
    record = {
        "version": PLAN_VERSION,
        "plan": {
            "name": plan["name"],
            "file": os.path.relpath(plan["file"], ROOT),
            "row": row,
            "train": plan["train"],
            "evaluations": plan["evaluations"],
        },  # fmt: skip
        "run": run["id"],
        "row": run["row"],
        "seed": run["seed"],
        "commit": state.commits[-1],  # the code the run finished with
        "commits": state.commits,  # every start's, when it was resumed on other code
        "train_command": ["train.py", *[a.replace(workdir, "{workdir}") for a in args]],
        "steps": steps,
        "wall_seconds": {k: round(v, 1) for k, v in state.seconds.items()},
        # Over the steps the timed processes trained (a resumed run's
        # earlier, killed process left no time): not the wall time / steps.
        "seconds_per_step": round(
            state.seconds.get("train", 0.0) / max(1, state.timed_steps), 4
        ),
        "timed_steps": state.timed_steps,
        "process_starts": state.starts,
        "host": _host(),
        "load": {
            "mean_1min": round(sum(state.load) / len(state.load), 2)
            if state.load
            else None,
            "max_1min": round(max(state.load), 2) if state.load else None,
            "samples": len(state.load),
            "note": "1-minute load average while training, this run's own training included",
        },
        "results": results,
        "curve": curve,
        "model": stats,
        "model_config": artefacts.read_json(artefacts.model_config_path(train_dir)),
        "train_config": artefacts.read_train_config(train_dir),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    artefacts.write_json(record, record_path(plan, run))
    ss = results[curve_key]["miou"]
    say(f"{run['id']}: done, val mIoU {ss:.4f} ({curve_key})"
        + "".join(f", {results[k]['miou']:.4f} ({k})" for k in other)
        + f"; record {os.path.relpath(record_path(plan, run))}")  # fmt: skip
    return record


class _WorkdirLock:
    """One `run` per workdir at a time (an flock, released when the process ends)."""

    def __init__(self, workdir):
        os.makedirs(workdir, exist_ok=True)
        self.path = os.path.join(workdir, LOCK)
        self.file = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115

    def __enter__(self):
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise PlanError(
                f"{os.path.dirname(self.path)}: another 'experiment run' works here"
            ) from None
        return self

    def __exit__(self, *exc):
        self.file.close()


def run_plan(plan, workdir, only=None, say=print):
    """Runs every run without a record (or those in `only`); returns how many ran."""
    with _WorkdirLock(workdir):
        records = read_records(plan)
        pending = [r for r in plan["runs"] if r["id"] not in records]
        if only:
            unknown = sorted(set(only) - {r["id"] for r in plan["runs"]})
            if unknown:
                raise PlanError(f"--only: no run {', '.join(unknown)} in the plan")
            pending = [r for r in pending if r["id"] in only]
        say(f"{plan['name']}: {len(records)} of {len(plan['runs'])} runs have a record; "
            f"running {len(pending)}")  # fmt: skip
        if pending:
            run_setup(plan, workdir, say)
        running = os.path.join(workdir, RUNNING)
        for run in pending:
            artefacts.write_json(
                {"run": run["id"], "pid": os.getpid(), "started": time.time()}, running
            )
            try:
                run_one(plan, run, workdir, say)
            finally:
                artefacts.remove_quietly(running)
        return len(pending)


# --- Status ---------------------------------------------------------------------------


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def status(plan, workdir):
    """Lines: each run done / running / pending, and an estimate of the time left."""
    records = read_records(plan)
    running = None
    path = os.path.join(workdir, RUNNING)
    if os.path.isfile(path):
        info = artefacts.read_json(path, PlanError, what=RUNNING)
        if _pid_alive(int(info.get("pid", -1))):
            running = info.get("run")
    per_row = {}
    for record in records.values():
        per_row.setdefault(record["row"], []).append(
            sum(record["wall_seconds"].values())
        )
    every = [t for times in per_row.values() for t in times]
    lines, left, unknown = [], 0.0, 0
    for run in plan["runs"]:
        record = records.get(run["id"])
        estimate = per_row.get(run["row"]) or every
        guess = sum(estimate) / len(estimate) if estimate else None
        if record is not None:
            first = next(iter(plan["evaluations"]))  # the curve's evaluation
            miou = record["results"][first]["miou"]
            minutes = sum(record["wall_seconds"].values()) / 60
            lines.append(
                f"done     {run['id']}: val mIoU {miou:.4f} ({first}), {minutes:.0f} min"
            )
            continue
        _, steps = train_args(plan, run, workdir)
        kept = _checkpoint_steps(os.path.join(run_dir(workdir, run), "train"))
        at = kept[-1] if kept else 0
        word = "running " if run["id"] == running else "pending "
        text = f"{word} {run['id']}" + (
            f": checkpoint at step {at} of {steps}" if at else ""
        )
        if guess is None:
            unknown += 1
        else:
            left += guess * (1 - 0.8 * at / steps)  # evaluation is the last ~20%
        lines.append(text)
    if unknown:
        lines.append(
            f"time left: unknown until a run has finished ({unknown} runs without an estimate)"
        )
    else:
        lines.append(f"time left: about {left / 3600:.1f} h at the finished runs' pace")
    return lines


# --- Command line -------------------------------------------------------------------

ACTIONS = ("run", "status", "report", "predictions")
PREDICTIONS_FIGURE = "predictions.png"  # beside the plan, as the report's figures


def predictions(plan, workdir, seed, image_indices, say=print):
    """Writes `predictions.png` beside the plan: every row's final checkpoint of
    `seed` (from the workdir: checkpoints are not committed) on the val images
    at `image_indices`, beside the image and its ground truth."""
    from deeplab_dpc.data import registry
    from deeplab_dpc.evaluation import visualizer
    from deeplab_dpc.reporting import colormaps

    models = []
    for name in plan["rows_by_name"]:
        run = next(
            (r for r in plan["runs"] if r["row"] == name and r["seed"] == seed), None
        )
        if run is None:
            raise PlanError(f"--seed: row {name} has no seed {seed} in {plan['file']}")
        train_dir = os.path.join(run_dir(workdir, run), "train")
        _, steps = train_args(plan, run, workdir)
        if steps not in _checkpoint_steps(train_dir):
            raise PlanError(
                f"{run['id']}: no final checkpoint (step {steps}) under {train_dir}; "
                "run the plan first"
            )
        models.append((name, os.path.join(train_dir, f"ckpt-{steps}")))
    train = {k: _substitute(v, workdir) for k, v in plan["train"].items()}
    info = registry.get_dataset_info(train["dataset"])
    data = registry.DataSource.from_config(train)
    figure = visualizer.comparison_figure(
        models, data, info, split="val", image_indices=image_indices, downsample=2
    )
    path = os.path.join(os.path.dirname(plan["file"]), PREDICTIONS_FIGURE)
    colormaps.save_png(figure, path)
    say(f"wrote {os.path.relpath(path, ROOT)}: {len(models)} rows (seed {seed}) on "
        f"val images {', '.join(map(str, image_indices))}")  # fmt: skip


def main(argv):
    from absl import flags

    f = flags.FLAGS
    if len(argv) != 3 or argv[1] not in ACTIONS:
        raise PlanError(
            f"usage: python -m deeplab_dpc.tools.experiment {{{'|'.join(ACTIONS)}}} PLAN"
        )
    action, path = argv[1], argv[2]
    plan = load_plan(path)
    workdir = workdir_of(plan, f.workdir)
    if action == "status":
        print("\n".join(status(plan, workdir)))
        return
    if action == "predictions":
        predictions(plan, workdir, f.seed, [int(i) for i in f.images])
        return
    if action == "report":
        from deeplab_dpc.tools import experiment_report

        for line in experiment_report.report(plan, read_records(plan), page=f.page):
            print(line)
        return
    only = [r for r in (f.only or []) if r]
    try:
        run_plan(plan, workdir, only=only or None)
    except RunError as e:  # a failed training is not bad input: exit code 1
        print(f"experiment: error: {errors.one_line(e)}", file=sys.stderr)
        sys.exit(1)
    print(f"{plan['name']}: every run has its record" if not only else "done")


def define_flags():
    from deeplab_dpc import command_line
    from deeplab_dpc.core.option_table import Option

    command_line.define_options((
        Option("workdir", "string", None,
               "Overrides the plan's workdir (checkpoints, logs)."),
        Option("only", "list", None, "run: only these run ids (e.g. aspp-seed0)."),
        Option("page", "string", None,
               "report: also rewrite the marked report block of this Markdown page."),
        Option("seed", "integer", 0, "predictions: the seed whose runs are shown.",
               low=0),
        Option("images", "list", ["0", "50", "100"],
               "predictions: positions of the val images shown."),
    ))  # fmt: skip


if __name__ == "__main__":
    from deeplab_dpc import command_line

    define_flags()
    # A stop waits for the running train.py to save its checkpoint (tens of
    # seconds on a loaded machine), not interrupts' default 10 s; a second
    # signal still ends the tool at once (the child goes on saving).
    interrupts.install(grace_seconds=600, prog="experiment")
    command_line.run(main, "experiment", positional=2)
