"""scripts/check_pretrain_targets.py: exit 0 when every target passes, 1 when one fails, 2 on bad
input, on a real tiny sweep and hand-made pretrain / transformer-check summaries (the script reads
only the summaries' fields named below, and the sweep's HMM and prompts for the mass at n = 0)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from icl_kernel.cli import main as cli
from icl_kernel.runfolder import RunFolder

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check_pretrain_targets.py"
spec = importlib.util.spec_from_file_location("check_pretrain_targets", SCRIPT)
targets = importlib.util.module_from_spec(spec)
spec.loader.exec_module(targets)

GRID = [1, 2, 4, 8, 16]
# A transformer that meets every target: L1 to the Oracle halves, accuracy rises, L1 to Bayes <= 0.05.
GOOD = dict(l1_oracle=[0.4, 0.3, 0.2, 0.15, 0.1], acc_oracle=[0.6, 0.7, 0.8, 0.85, 0.9],
            l1_bayes=[0.2, 0.1, 0.04, 0.03, 0.02])


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    # 8 tasks, so that x_test alone leaves the task uncertain (mass on θ* at n = 0 well below 0.7)
    assert cli(["sweep", "-P", "num_tasks=8", "-P", "num_states=8", "-P", "num_tokens=6", "--n", "1,2",
                "--seeds", "0", "--prompts", "6", "--length", "1", "--num-labels", "2", "-q",
                "--kernels", "belief", "--name", "sw", "--runs-dir", str(runs)]) == 0
    return runs / "sw"


def _runs(tmp_path, sweep_dir, excess=0.01, **curves):
    pt, tc = tmp_path / "pt", tmp_path / "tc"
    with RunFolder.create(pt, command="pretrain", config={"size": "test"}) as rf:
        rf.write_json("summary.json", dict(final_excess_loss=excess, parameters=1000, tokens=5000))
    config = dict(grid=GRID, seeds=[0], labels=[1, 2], sweep_run=str(sweep_dir))
    with RunFolder.create(tc, command="transformer-check", config=config) as rf:
        rf.write_json("summary.json", dict(config=config, num_prompts=6, curves={"transformer": {**GOOD, **curves}}))
    return [str(pt), str(tc)]


def test_mass_at_zero_is_a_probability_below_target(sweep_dir):
    m = targets.mass_on_task_at_zero(sweep_dir, [0], [1, 2])
    assert 0.0 < m < 0.7


def test_all_targets_pass_exit_0(tmp_path, sweep_dir, capsys):
    assert targets.main(_runs(tmp_path, sweep_dir)) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == 5 and "FAIL" not in out and "5 of 5 targets pass" in out


@pytest.mark.parametrize("change,failing", [
    (dict(excess=0.05), "excess loss"),
    (dict(l1_bayes=[0.2, 0.1, 0.04, 0.09, 0.02]), "L1 to Bayes"),
    (dict(l1_oracle=[0.4, 0.3, 0.3, 0.3, 0.3]), "L1 to Oracle"),
    (dict(acc_oracle=[0.6, 0.7, 0.5, 0.85, 0.9]), "accuracy"),
    (dict(l1_bayes=[0.2, 0.1, float("nan"), 0.03, 0.02]), "L1 to Bayes"),
], ids=["excess", "l1-bayes", "l1-oracle", "accuracy-dips", "nan"])
def test_a_failed_target_exits_1(tmp_path, sweep_dir, capsys, change, failing):
    assert targets.main(_runs(tmp_path, sweep_dir, **change)) == 1
    out = capsys.readouterr().out
    fail_lines = [line for line in out.splitlines() if line.strip().startswith("FAIL")]
    assert len(fail_lines) == 1 and failing in fail_lines[0], out
    assert "4 of 5 targets pass" in out


def test_bad_input_exits_2_in_one_line(tmp_path, sweep_dir, capsys):
    pt, tc = _runs(tmp_path, sweep_dir)
    for argv, needle in [([str(tmp_path / "nowhere"), tc], "nowhere"),
                         ([tc, tc], "expected a run folder of `pretrain`"),
                         ([pt, str(sweep_dir)], "expected a run folder of `transformer-check`")]:
        assert targets.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and needle in err and err.startswith("check_pretrain_targets: error:"), err


def test_grid_without_n16_exits_2(tmp_path, sweep_dir, capsys):
    pt, tc = tmp_path / "pt", tmp_path / "tc"
    _runs(tmp_path, sweep_dir)
    config = dict(grid=[1, 2, 4, 8, 32], seeds=[0], labels=[1, 2], sweep_run=str(sweep_dir))
    with RunFolder.create(tc, command="transformer-check", config=config, overwrite=True) as rf:
        rf.write_json("summary.json", dict(config=config, num_prompts=6, curves={"transformer": GOOD}))
    assert targets.main([str(pt), str(tc)]) == 2
    assert "n = 16" in capsys.readouterr().err


def test_console_exit_status(tmp_path, sweep_dir):
    """The script run as a program returns the status (1 on a failed target), not only main()."""
    argv = _runs(tmp_path, sweep_dir, excess=0.5)
    done = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1, done.stderr
    assert "FAIL  held-out excess loss" in done.stdout
