"""`auto` on Keras Tuner's chief/worker setup (KERASTUNER_* variables, localhost): the chief serves the
oracle and trains nothing, two workers share the trials, and all three hand back the same chain.

Keras Tuner's oracle creates at most `max_trials` trials, one at a time under its lock, and hands each
to the one worker that asked; how many each worker gets depends on who asks first, so only their sum
is checked. (Before auto declared its space up front, a second worker asking during the first trial
drew the same empty values, a duplicate, and was stopped: one worker ran every trial.)
"""

import pytest

from tests.tuner_cluster import run_chief_and_workers


@pytest.mark.slow
def test_a_chief_and_two_workers_run_each_trial_once_and_agree_on_the_chain(tmp_path):
    trials = 3
    summaries = run_chief_and_workers("tests.auto.auto_script", [str(tmp_path / "search"), str(trials)], workers=2)
    assert summaries["chief"]["ran"] == 0
    assert summaries["worker0"]["ran"] + summaries["worker1"]["ran"] == trials
    assert summaries["chief"] == {**summaries["worker0"], "ran": 0} == {**summaries["worker1"], "ran": 0}
    assert summaries["chief"]["trials"] == [str(i) for i in range(trials)]
    folders = sorted(path.name for path in (tmp_path / "search" / "auto").glob("trial_*"))
    assert folders == [f"trial_{i}" for i in range(trials)]
    assert all((tmp_path / "search" / "auto" / folder / "kstruct_auto_trial.json").exists() for folder in folders)
    assert (tmp_path / "search" / "kstruct_auto.json").exists()


@pytest.mark.parametrize("tuner", ["random", "bayesian", "hyperband"])
def test_a_second_worker_asking_during_the_first_trial_gets_a_trial_of_its_own(tmp_path, tuner):
    """The oracle as auto makes it, its space declared up front as `AutoSearch._declare_space` does:
    the first trial is the defaults, and a second one is created while the first runs."""
    import kstruct
    from kstruct.auto.run import _oracle

    oracle = _oracle(kstruct.Budget(params=100, trials=3, tuner=tuner), seed=1, max_epochs=2)
    oracle._set_project_dir(str(tmp_path), "auto")
    hp = oracle.get_space()
    hp.Choice("prune_channels", [0.0, 0.25, 0.5, 0.75], default=0.5)
    hp.Float("learning_rate", 1e-4, 1e-2, sampling="log", default=1e-3)
    oracle.update_space(hp)
    first, second = oracle.create_trial("worker0"), oracle.create_trial("worker1")
    assert (first.status, second.status) == ("RUNNING", "RUNNING")  # before: the second (Hyperband: both) STOPPED
    searched = ("prune_channels", "learning_rate")
    assert {name: first.hyperparameters.values[name] for name in searched} == {"prune_channels": 0.5, "learning_rate": 1e-3}
    assert {name: second.hyperparameters.values[name] for name in searched} != {"prune_channels": 0.5, "learning_rate": 1e-3}
