"""sweeps/progress.py: the table a user watches while a stage runs."""

from types import SimpleNamespace

from sweeps.progress import ProgressTable


def _trial(trial_id, epoch, target, diverged=0.0):
    return SimpleNamespace(trial_id=trial_id, status="RUNNING",
                           config={"arm": "selu-done-right", "activation": "selu", "lr": 1e-3,
                                   "epochs": target},
                           last_result={"epoch": float(epoch), "target_epochs": float(target),
                                        "val_accuracy": 0.5, "generalization_gap": 0.1,
                                        "diverged": diverged})


def test_table_counts_done_trials_and_names_how_each_ended(capsys):
    table = ProgressTable("search", total=4, every_s=3600)
    a, b, c = _trial("a", 5, 5), _trial("b", 2, 9), _trial("c", 1, 9, diverged=1.0)
    table.on_trial_start(0, [], a)
    for t in (a, b, c):
        table.on_trial_complete(0, [], t)
    out = capsys.readouterr().out.splitlines()
    assert out[-5] == "== search: 3/4 trials done =="
    header = out[-4].split()
    assert header == ["trial", "arm", "activation", "lr", "epochs", "epoch", "val_acc", "gap", "status"]
    rows = {line.split()[0]: line.split() for line in out[-3:]}
    assert rows["a"][-1] == "TERMINATED" and rows["b"][-1] == "STOPPED_EARLY" and rows["c"][-1] == "DIVERGED"
    assert rows["a"][1:3] == ["selu-done-right", "selu"]


def test_results_print_at_most_every_period(capsys):
    table = ProgressTable("confirm", total=1, every_s=3600)
    t = _trial("a", 1, 5)
    table.on_trial_result(0, [], t, {})
    table.on_trial_result(0, [], t, {})
    assert capsys.readouterr().out.count("== confirm") == 1
