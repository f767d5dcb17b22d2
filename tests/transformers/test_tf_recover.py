"""Recovery by distillation on tiny random LLaMAs (``secateurs.recover``): the loss falls,
the zeros of an unstructured student stay exactly where they were, a killed and resumed run
ends on the same weights as an uninterrupted one, a depth-pruned student trains with its
hidden states matched to the teacher layers it kept, and the command works end to end."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from cli_run import run_cli
from secateurs.errors import SecateursError
from secateurs.loading import load
from secateurs.plugins import get_manager
from secateurs.recover import distil, unit_masks
from secateurs.recover_run import RecoverJob, recover_model
from secateurs.recover_spec import RecoverSpec
from secateurs.run import prune


def _recover_table(text_file, **extra):
    table = {"tokens": 20 * 64, "seqlen": 32, "batch_size": 2, "lr": 3e-3, "warmup": 0, "corpus": str(text_file),
             "eval": {"name": "perplexity", "corpus": str(text_file), "max_windows": 2}}
    return table | extra


def _wanda(folder, text_file, output=None, **extra):
    recipe = {"model": str(folder), "scorer": "wanda", "sparsity": 0.5,
              "calibration": {"name": "text", "corpus": str(text_file), "nsamples": 4, "seqlen": 32}} | extra
    if output is not None:
        recipe["output"] = str(output)
    return recipe


def _pruned_folder(tmp_path, tiny_lm_dir, text_file, **extra):
    out = tmp_path / "pruned"
    prune(_wanda(tiny_lm_dir, text_file, out, **extra), progress=False)
    return out


def test_distillation_loss_falls_on_a_wanda_student(tiny_lm_dir, text_file):
    outcome = prune(_wanda(tiny_lm_dir, text_file, recover=_recover_table(text_file)), progress=False)
    record = outcome.result.records["recover"]
    losses = [loss for _, loss in record["loss"]["curve"]]
    assert record["steps"] == 20 and len(losses) == 20
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5]), losses
    evaluation = record["evaluation"]  # a random teacher: its perplexity says nothing, only that it was measured
    assert {"teacher", "before", "after"} <= evaluation.keys() and evaluation["after"]["perplexity"] > 1


@pytest.mark.parametrize("pattern", [None, "2:4"])
def test_the_zeros_stay_exactly_where_pruning_put_them(tiny_lm_dir, text_file, pattern):
    manager = get_manager()
    applier = {"applier": {"name": "zero", "pattern": pattern}} if pattern else {}
    student = prune(_wanda(tiny_lm_dir, text_file, **applier), progress=False).loaded
    before = {name: mask.clone() for name, mask in unit_masks(student).items()}
    weights = {k: v.clone() for k, v in student.model.state_dict().items()}
    teacher = load(str(tiny_lm_dir))
    table = _recover_table(text_file, tokens=5 * 64, eval=False, gradient_checkpointing=True)
    spec = RecoverSpec.from_dict(table).with_seed(0)
    distil(student, teacher, spec, manager, progress=False)
    after = unit_masks(student)
    assert len(before) == 14 and before.keys() == after.keys()  # 7 units in each of 2 blocks
    for name, mask in before.items():
        assert torch.equal(mask, after[name]), name
        assert 0.4 < 1 - mask.float().mean() < 0.6
        if pattern:  # 2:4: every group of 4 keeps 2
            assert (mask.reshape(-1, 4).sum(dim=1) == 2).all()
    changed = [k for k, v in student.model.state_dict().items() if not torch.equal(v, weights[k])]
    assert any(name in changed for name in before)  # it trained


def test_a_killed_run_resumed_ends_on_the_same_weights(tmp_path, tiny_lm_dir, text_file):
    pruned = _pruned_folder(tmp_path, tiny_lm_dir, text_file)
    table = _recover_table(text_file, tokens=6 * 64, checkpoint_every=2, eval=False)
    straight = RecoverJob(student=str(pruned), output=str(tmp_path / "straight"), recover=table)
    recover_model(straight, progress=False)

    class Killed(Exception):
        pass

    def kill_at_step_5(step, loss):
        if step == 5:
            raise Killed

    job = RecoverJob(student=str(pruned), output=str(tmp_path / "resumed"), recover=table)
    with pytest.raises(Killed):
        recover_model(job, progress=False, on_step=kill_at_step_5)
    checkpoint = tmp_path / "resumed.recover-checkpoint"
    assert checkpoint.is_dir() and not (tmp_path / "resumed").exists()  # step 4's checkpoint, no output
    with pytest.raises(SecateursError, match="resume it"):
        recover_model(job, progress=False)
    done = recover_model(job, progress=False, resume=True)
    assert done.record["resumed_from_step"] == 4 and done.record["steps"] == 6
    assert not checkpoint.exists()
    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name  # bit for bit


def test_resuming_with_other_settings_is_refused(tmp_path, tiny_lm_dir, text_file):
    pruned = _pruned_folder(tmp_path, tiny_lm_dir, text_file)
    table = _recover_table(text_file, tokens=4 * 64, checkpoint_every=1, eval=False)

    def stop(step, loss):
        if step == 2:
            raise KeyboardInterrupt

    job = RecoverJob(student=str(pruned), output=str(tmp_path / "out"), recover=table)
    with pytest.raises(KeyboardInterrupt):
        recover_model(job, progress=False, on_step=stop)
    other = RecoverJob(student=str(pruned), output=str(tmp_path / "out"), recover=table | {"lr": 1e-3})
    with pytest.raises(SecateursError, match="made with \\[recover\\] lr = 0.003"):
        recover_model(other, progress=False, resume=True)


def test_a_depth_pruned_student_recovers_with_hidden_states_matched(tmp_path, tiny_lm_dir, text_file):
    recipe = {"model": str(tiny_lm_dir), "sparsity": 0.5, "granularity": "layers", "scorer": "block-influence",
              "calibration": {"name": "text", "corpus": str(text_file), "nsamples": 4, "seqlen": 32},
              "output": str(tmp_path / "shallow")}
    prune(recipe, progress=False)
    table = _recover_table(text_file, hidden_mse=1.0)
    done = recover_model(RecoverJob(student=str(tmp_path / "shallow"), output=str(tmp_path / "rec"), recover=table),
                         progress=False)
    assert len(done.loaded.adapter.blocks(done.loaded.model)) == 1 and done.record["masked_units"] == 0
    losses = [loss for _, loss in done.record["loss"]["curve"]]
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5]), losses
    report = json.loads((tmp_path / "rec" / "report.json").read_text())
    assert report["teacher"] == str(tiny_lm_dir)  # from the pruning report
    # without the report, the layer map must be given
    (tmp_path / "shallow" / "report.json").unlink()
    job = RecoverJob(student=str(tmp_path / "shallow"), teacher=str(tiny_lm_dir), output=str(tmp_path / "rec2"),
                     recover=table)
    with pytest.raises(SecateursError, match="give \\[recover\\] layer_map"):
        recover_model(job, progress=False)
    recover_model(_with_table(job, table | {"layer_map": [1], "tokens": 64}), progress=False)


def _with_table(job, table):
    """``job`` with another [recover] table."""
    import attrs

    return attrs.evolve(job, recover=RecoverSpec.from_dict(table))


def test_the_command_end_to_end(tmp_path, tiny_lm_dir, text_file, capsys):
    pruned = _pruned_folder(tmp_path, tiny_lm_dir, text_file)
    out = tmp_path / "recovered"
    code, stdout, err = run_cli(
        ["recover", str(pruned), "-o", str(out), "-q", "--tokens", "256", "--set", "seqlen=32", "--set", "batch_size=2",
         "--set", "corpus=" + json.dumps(str(text_file)), "--set", "eval.corpus=" + json.dumps(str(text_file)),
         "--set", "eval.max_windows=2"],
        capsys,
    )
    assert code == 0, err
    assert stdout.count("\n") == 1 and stdout.startswith(f"recovered {pruned} from {tiny_lm_dir}: 4 steps, 256 tokens")
    assert "perplexity" in stdout and f"saved to {out}" in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["recover"]["steps"] == 4 and report["pruning"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert not (tmp_path / "recovered.recover-checkpoint").exists()
    reloaded = load(str(out))
    assert unit_masks(reloaded).keys() == unit_masks(load(str(pruned))).keys()


def test_a_recovery_file(tmp_path, tiny_lm_dir, text_file, capsys):
    pruned = _pruned_folder(tmp_path, tiny_lm_dir, text_file)
    file = tmp_path / "recover.toml"
    file.write_text(
        f'student = "{pruned}"\nteacher = "{tiny_lm_dir}"\noutput = "{tmp_path / "rec"}"\n\n'
        f'[recover]\ntokens = 128\nseqlen = 32\nbatch_size = 2\ncorpus = "{text_file}"\neval = false\n'
    )
    code, stdout, err = run_cli(["recover", str(file), "-q"], capsys)
    assert code == 0, err
    assert "2 steps, 128 tokens" in stdout and (tmp_path / "rec" / "model.safetensors").is_file()


def test_lora_adapters_are_merged_back_and_the_zeros_kept(tiny_lm_dir, text_file):
    pytest.importorskip("peft")
    table = _recover_table(text_file, tokens=5 * 64, eval=False, lora={"rank": 4, "alpha": 8})
    outcome = prune(_wanda(tiny_lm_dir, text_file), progress=False)
    student = outcome.loaded
    before = unit_masks(student)
    weights = {k: v.clone() for k, v in student.model.state_dict().items()}
    distil(student, load(str(tiny_lm_dir)), RecoverSpec.from_dict(table).with_seed(0), get_manager(), progress=False)
    state = student.model.state_dict()
    assert state.keys() == weights.keys()  # no LoRA tensors left
    after = unit_masks(student)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(not torch.equal(state[k], weights[k]) for k in weights if "proj" in k)


def test_a_sized_prune_run_recovers_before_its_after_evaluation(tmp_path, tiny_lm_dir, text_file, capsys):
    recipe = tmp_path / "sized.toml"
    recipe.write_text(
        f'model = "{tiny_lm_dir}"\noutput = "{tmp_path / "out"}"\n\n[sizes]\nnum_hidden_layers = 1\nintermediate_size = 64\n\n'
        f'[calibration]\nname = "text"\ncorpus = "{text_file}"\nnsamples = 4\nseqlen = 32\n\n'
        f'[evaluate]\nname = "perplexity"\ncorpus = "{text_file}"\nseqlen = 32\nmax_windows = 2\n\n'
        f'[recover]\ntokens = 320\nseqlen = 32\nbatch_size = 2\ncorpus = "{text_file}"\ncheckpoint_every = 2\neval = false\n'
    )
    code, stdout, err = run_cli(["prune", str(recipe), "-q"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["records"]["recover"]["steps"] == 5 and report["recipe"]["recover"]["tokens"] == 320
    assert "recovered: 5 steps, 320 tokens" in stdout
    assert not (tmp_path / "out.recover-checkpoint").exists()
    reloaded = load(str(tmp_path / "out"))
    assert reloaded.model.config.num_hidden_layers == 1 and reloaded.model.config.intermediate_size == 64


def test_a_killed_prune_run_resumes_its_recovery(tmp_path, tiny_lm_dir, text_file, capsys, monkeypatch):
    from secateurs import recover

    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'model = "{tiny_lm_dir}"\noutput = "{tmp_path / "out"}"\nsparsity = 0.5\nscorer = "wanda"\n\n'
        f'[calibration]\nname = "text"\ncorpus = "{text_file}"\nnsamples = 4\nseqlen = 32\n\n'
        f'[recover]\ntokens = 320\nseqlen = 32\nbatch_size = 2\ncorpus = "{text_file}"\ncheckpoint_every = 2\neval = false\n'
    )
    step = recover._Run.step

    def interrupted_at_3(self, state):
        loss = step(self, state)
        if state.step == 3:
            raise KeyboardInterrupt
        return loss

    monkeypatch.setattr(recover._Run, "step", interrupted_at_3)
    code, _, err = run_cli(["prune", str(recipe), "-q"], capsys)
    assert code == 130 and "nothing was written" in err
    assert (tmp_path / "out.recover-checkpoint").is_dir() and not (tmp_path / "out").exists()
    monkeypatch.setattr(recover._Run, "step", step)
    monkeypatch.setattr("secateurs.run.load_for", lambda *a, **k: pytest.fail("the model was loaded"))
    code, _, err = run_cli(["prune", str(recipe), "-q"], capsys)
    assert code == 2 and "a checkpoint of an interrupted recovery is in" in err and "--resume" in err
    monkeypatch.undo()
    code, stdout, err = run_cli(["prune", str(recipe), "-q", "--resume"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["records"]["recover"]["resumed_from_step"] == 2 and report["records"]["recover"]["steps"] == 5
    assert not (tmp_path / "out.recover-checkpoint").exists()
