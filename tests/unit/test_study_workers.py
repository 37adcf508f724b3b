"""The pieces that let many workers share one study (issue 22, points 2-3), without a dlrun process: leases on
a journal file, admission by trial number, the race for the one parent run, per-trial sampler seeds."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest

from dlrun.sweeping.study import HEARTBEAT_ATTR, Lease, StudyRef, fail_stale, open_leased, shared_parent


def test_a_journal_trial_whose_heartbeat_stops_is_failed_by_another_handle(tmp_path: Path) -> None:
    from dlrun._upstream import optuna_heartbeat

    url = f"journal://{tmp_path / 'study.log'}"
    found: list[int] = []
    owner = optuna.create_study(study_name="j", storage=open_leased(url, Lease(1, 2)))
    held, dropped = owner.ask(), owner.ask()
    with optuna_heartbeat(owner, held):
        # The other handle (another worker) sees ``dropped`` renewed once, then silent.
        other = optuna.load_study(
            study_name="j", storage=open_leased(url, Lease(1, 2), lambda study, trial: found.append(trial.number))
        )
        with optuna_heartbeat(owner, dropped):
            time.sleep(0.2)
        fail_stale(other)
        assert found == []  # both fresh
        time.sleep(2.6)
        fail_stale(other)
    assert found == [dropped.number]  # only the trial whose heartbeat stopped
    states = {t.number: t.state.name for t in other.trials}
    assert states == {held.number: "RUNNING", dropped.number: "FAIL"}
    assert HEARTBEAT_ATTR in other.trials[held.number].system_attrs
    fail_stale(other)
    assert found == [dropped.number]  # failed once, by one finder


def test_an_asked_trial_runs_only_while_fewer_than_n_trials_live_ones_precede_it(tmp_path: Path) -> None:
    from optuna.trial import TrialState

    from dlrun.sweeping.sweeper import OptunaSearch

    search = OptunaSearch(None, "maximize", None, None, 2, None, 0.0, None, None)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", direction="maximize")
    done, running = study.ask(), study.ask()
    study.tell(done, 1.0)
    # Two workers asked at once when one trial was left: the later number steps back, unrun.
    late_a, late_b = study.ask(), study.ask()
    assert search._admitted(study, [late_a]) == [] and search._admitted(study, [late_b]) == []
    unused = [t for t in study.trials if "dlrun.unused" in t.user_attrs]
    assert [t.number for t in unused] == [late_a.number, late_b.number]
    assert all(t.state == TrialState.FAIL for t in unused)
    # The running trial fails: the next asked one may run in its place.
    study.tell(running, state=TrialState.FAIL)
    again = study.ask()
    assert search._admitted(study, [again]) == [again]


def test_workers_starting_at_the_same_moment_get_one_parent(tmp_path: Path) -> None:
    ref = StudyRef(f"sqlite:///{tmp_path / 'o.db'}", "race")
    made: list[str] = []
    got: list[tuple[str, bool]] = []
    start = threading.Barrier(4)

    def create() -> str:
        time.sleep(0.3)  # an MLflow run takes a moment to create: the others must wait for its name
        made.append(uuid.uuid4().hex)
        return made[-1]

    def worker() -> None:
        start.wait()
        got.append(shared_parent(ref, "maximize", lambda: None, create))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 1
    assert sorted(got, key=lambda g: not g[1]) == [(made[0], True)] + [(made[0], False)] * 3
    # The same study continued later: the same parent, made nowhere.
    assert shared_parent(ref, "maximize", lambda: None, create) == (made[0], False) and len(made) == 1


def test_a_seeded_sampler_draws_per_trial_number_whichever_worker_runs_it() -> None:
    from optuna.distributions import FloatDistribution

    from dlrun.sweeping.samplers import TrialSeeded

    space = {"lr": FloatDistribution(1e-4, 1.0, log=True)}
    study = optuna.create_study()  # two workers of one study: samplers built alike, same seed
    one = TrialSeeded(lambda seed: optuna.samplers.RandomSampler(seed=seed), 7)
    two = TrialSeeded(lambda seed: optuna.samplers.RandomSampler(seed=seed), 7)
    drawn = []
    for sampler in (one, two, one, two):
        study.sampler = sampler
        drawn.append(study.ask(space).params["lr"])
    assert len(set(drawn)) == 4, drawn
    # Trial k draws with seed + k: the same study again draws the same values.
    again = optuna.create_study(sampler=TrialSeeded(lambda seed: optuna.samplers.RandomSampler(seed=seed), 7))
    assert [again.ask(space).params["lr"] for _ in range(4)] == drawn


def test_heartbeat_settings_are_checked() -> None:
    from dlrun.errors import ConfigError
    from dlrun.sweeping.sweeper import OptunaSearch

    args = (None, "maximize", None, None, 2, None, 0.0, None, None)
    with pytest.raises(ConfigError, match="hydra.sweeper.grace_period"):
        OptunaSearch(*args, heartbeat_interval=5, grace_period=5)
    with pytest.raises(ConfigError, match="hydra.sweeper.workers"):
        OptunaSearch(*args, workers=0)
    assert OptunaSearch(*args, heartbeat_interval=3).lease == Lease(3, 6)
