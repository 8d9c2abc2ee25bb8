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


@pytest.mark.parametrize("seed", [0, 7])
def test_the_same_seed_draws_the_same_trials_seed_zero_included(tmp_path, seed):
    """Keras Tuner reads seed 0 as "no seed" and picks one at random: auto's default seed=0 gave a different
    search each run until kstruct shifted the seed it hands over."""
    import kstruct
    from kstruct.auto.run import _oracle

    def draws(folder):
        oracle = _oracle(kstruct.Budget(params=100, trials=4, tuner="random"), seed=seed, max_epochs=2)
        oracle._set_project_dir(str(tmp_path / folder), "auto")
        hp = oracle.get_space()
        hp.Choice("prune_channels", [0.0, 0.25, 0.5, 0.75], default=0.5)
        hp.Float("learning_rate", 1e-4, 1e-2, sampling="log", default=1e-3)
        oracle.update_space(hp)
        return [oracle.create_trial(f"worker{i}").hyperparameters.values for i in range(4)]

    first, again = draws("a"), draws("b")
    assert first == again
    assert len({value["learning_rate"] for value in first}) == 4  # four different draws, not one repeated


@pytest.mark.parametrize("tuner", ["random", "bayesian", "hyperband"])
def test_after_the_timeout_the_oracle_starts_no_trial_for_any_worker(tmp_path, tuner):
    """The timeout is kept where every worker asks, the (chief's) oracle: a worker's own oracle is a client."""
    import kstruct
    from kstruct.auto.run import _oracle

    oracle = _oracle(kstruct.Budget(params=100, trials=5, tuner=tuner), seed=1, max_epochs=2)
    oracle._set_project_dir(str(tmp_path), "auto")
    hp = oracle.get_space()
    hp.Float("learning_rate", 1e-4, 1e-2, sampling="log", default=1e-3)
    oracle.update_space(hp)
    assert oracle.create_trial("worker0").status == "RUNNING"
    oracle.timed_out = lambda: True
    assert [oracle.create_trial(worker).status for worker in ("worker1", "worker2")] == ["STOPPED", "STOPPED"]
    assert len(oracle.trials) == 1  # the trial started before the timeout still counts
