"""Checkpoint save/load/averaging against hand-computed tensors; plain-data files that load without pickle."""
import collections
import copy
import errno
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from zipformer.checkpoints.averaging import (
    average_checkpoints,
    average_checkpoints_with_averaged_model,
    load_averaged_state_dict,
    update_averaged_model,
)
from zipformer.checkpoints.checkpoint import (
    copy_checkpoint,
    find_checkpoints,
    load_checkpoint,
    read_checkpoint_file,
    read_checkpoint_metadata,
    read_model_file,
    remove_checkpoints,
    save_checkpoint,
    strip_ddp_prefix,
)
from zipformer.core.errors import UserError
from zipformer.core.params import AttributeDict
from zipformer.training.grad_scale import create_grad_scaler
from zipformer.training.optim import Eden, ScaledAdam


class _Tiny(nn.Module):
    """Two float parameters and an integer buffer (to exercise the integer rules)."""

    def __init__(self, extra: bool = False) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.register_buffer("count", torch.zeros(2, dtype=torch.int64))
        if extra:
            self.adapter = nn.Linear(2, 2)


def _with_values(weight: list, bias: list, count: list) -> _Tiny:
    model = _Tiny()
    with torch.no_grad():
        model.lin.weight.copy_(torch.tensor(weight))
        model.lin.bias.copy_(torch.tensor(bias))
        model.count.copy_(torch.tensor(count))
    return model


class _Sampler:
    def __init__(self) -> None:
        self.state = {"epoch": 0, "position": 0}

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state = dict(state)


def _write(path: Path, model: nn.Module, model_avg=None, **state) -> None:
    save_checkpoint(path, model, model_avg=model_avg, state=state)


# ---------------------------------------------------------------- save


def test_saved_checkpoint_has_the_reference_keys(tmp_path: Path) -> None:
    model = _Tiny()
    model_avg = copy.deepcopy(model).to(torch.float64)
    opt = ScaledAdam(model.parameters(), lr=0.045)
    scheduler = Eden(opt, lr_batches=7500, lr_epochs=3.5)
    state = {"batch_idx_train": 1234, "average_period": 200, "best_valid_loss": 1.5}
    metadata = {
        "model_config": {"encoder_dim": (192, 256), "causal": False},
        "vocabulary": {"size": 500, "fingerprint": "0123456789abcdef"},
        "train_config": {"exp_dir": tmp_path, "finetune_ckpt": None},
    }
    sampler = _Sampler()
    save_checkpoint(
        tmp_path / "epoch-1.pt", model, model_avg=model_avg, state=state, metadata=metadata, optimizer=opt,
        scheduler=scheduler, scaler=create_grad_scaler(False, "cpu"), sampler=sampler,
    )
    # Plain data only: no pickle is needed to read it back.
    saved = torch.load(tmp_path / "epoch-1.pt", weights_only=True)
    assert set(saved) == {
        "model", "optimizer", "scheduler", "grad_scaler", "sampler", "model_avg",
        "batch_idx_train", "average_period", "best_valid_loss", "model_config", "vocabulary", "train_config",
    }
    assert saved["scheduler"] == {"epoch": 0, "batch": 0}
    assert saved["sampler"] == sampler.state
    assert saved["batch_idx_train"] == 1234
    assert saved["model_config"] == {"encoder_dim": [192, 256], "causal": False}
    assert saved["train_config"] == {"exp_dir": str(tmp_path), "finetune_ckpt": None}
    assert saved["model_avg"]["lin.weight"].dtype == torch.float32
    assert saved["model_avg"]["count"].dtype == torch.int64
    # The live running average keeps float64 (the upstream in-place conversion is a bug).
    assert model_avg.lin.weight.dtype == torch.float64


def test_state_may_not_shadow_component_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model_avg"):
        save_checkpoint(tmp_path / "x.pt", _Tiny(), state={"model_avg": 1})
    assert list(tmp_path.iterdir()) == []


def test_only_rank_0_writes(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "epoch-1.pt", _Tiny(), rank=1)
    save_checkpoint(tmp_path / "checkpoint-4000.pt", _Tiny(), rank=1)
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_the_previous_file_and_no_temp(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "epoch-1.pt"
    save_checkpoint(path, _with_values([[1, 2], [3, 4]], [5, 6], [7, 8]))
    before = path.read_bytes()

    def crash_mid_write(obj, f) -> None:
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(UserError, match=r"\(No space left on device\): it needs about 0\.0 MB .*the last checkpoint, which is kept"):
        save_checkpoint(path, _Tiny())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-1.pt"]


def test_copy_checkpoint(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "epoch-2.pt", _Tiny())
    copy_checkpoint(tmp_path / "epoch-2.pt", tmp_path / "best-valid-loss.pt")
    assert (tmp_path / "best-valid-loss.pt").read_bytes() == (tmp_path / "epoch-2.pt").read_bytes()


def test_find_and_remove_checkpoints(tmp_path: Path) -> None:
    for n in (100, 200, 900, 1000, 1100):
        save_checkpoint(tmp_path / f"checkpoint-{n}.pt", _Tiny())
    for name in ("epoch-1.pt", "checkpoint-abc.pt", ".tmp-123-0123abcd-checkpoint-1200.pt"):
        (tmp_path / name).write_bytes(b"")
    names = lambda files: [Path(f).name for f in files]  # noqa: E731
    # Numeric order, newest first (not lexicographic: 1100 > 900).
    newest_first = [f"checkpoint-{n}.pt" for n in (1100, 1000, 900, 200, 100)]
    assert names(find_checkpoints(tmp_path)) == newest_first
    assert names(find_checkpoints(tmp_path, iteration=950)) == newest_first[2:]
    remove_checkpoints(tmp_path, topk=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        newest_first[:2] + ["epoch-1.pt", "checkpoint-abc.pt", ".tmp-123-0123abcd-checkpoint-1200.pt"]
    )


# ---------------------------------------------------------------- load


def test_strip_ddp_prefix() -> None:
    stripped = strip_ddp_prefix({"module.lin.weight": 1, "module.count": 2, "other.module.x": 3})
    assert stripped == {"lin.weight": 1, "count": 2, "other.module.x": 3}


def test_load_checkpoint_restores_everything_and_returns_the_rest(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, model_avg = _Tiny(), _Tiny().to(torch.float64)
    opt = ScaledAdam(model.parameters(), lr=0.045)
    model.lin.weight.grad = torch.ones(2, 2)
    model.lin.bias.grad = torch.ones(2)
    opt.step()
    scheduler = Eden(opt, lr_batches=7500, lr_epochs=3.5)
    scheduler.step_batch(77)
    sampler = _Sampler()
    sampler.state["position"] = 5
    save_checkpoint(
        tmp_path / "epoch-3.pt", model, model_avg=model_avg,
        state={"batch_idx_train": 77, "cur_epoch": 3},
        optimizer=opt, scheduler=scheduler, sampler=sampler,
    )

    model2, model_avg2 = _Tiny(), _Tiny().to(torch.float64)
    opt2 = ScaledAdam(model2.parameters(), lr=0.045)
    scheduler2 = Eden(opt2, lr_batches=7500, lr_epochs=3.5)
    rest = load_checkpoint(
        tmp_path / "epoch-3.pt", model2, model_avg=model_avg2, optimizer=opt2, scheduler=scheduler2
    )
    for (k, v), v2 in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(v, v2), k
    torch.testing.assert_close(model_avg2.lin.weight, model_avg.lin.weight.float().double())
    assert model_avg2.lin.weight.dtype == torch.float64
    assert scheduler2.batch == 77 and scheduler2.get_last_lr() == scheduler.get_last_lr()
    assert opt2.state_dict()["state"][0]["step"] == 1
    # The sampler was not given: its state is handed back for the dataloader built later.
    assert rest == {
        "batch_idx_train": 77, "cur_epoch": 3, "sampler": sampler.state, "grad_scaler": None
    }


def test_states_of_components_not_given_are_handed_back(tmp_path: Path) -> None:
    model_avg = _with_values([[1.0, 2.0], [3.0, 4.0]], [0.0, 0.0], [0, 0]).to(torch.float64)
    save_checkpoint(tmp_path / "epoch-1.pt", _Tiny(), model_avg=model_avg, state={"x": 1})
    rest = load_checkpoint(tmp_path / "epoch-1.pt", _Tiny())
    assert set(rest) == {"optimizer", "scheduler", "grad_scaler", "sampler", "model_avg", "x"}
    assert torch.equal(rest["model_avg"]["lin.weight"], model_avg.lin.weight.float())


def test_load_accepts_ddp_prefixed_keys(tmp_path: Path) -> None:
    model = _with_values([[1, 2], [3, 4]], [5, 6], [7, 8])
    prefixed = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model": prefixed}, tmp_path / "pretrained.pt")
    target = _Tiny()
    load_checkpoint(tmp_path / "pretrained.pt", target)
    assert torch.equal(target.lin.weight, model.lin.weight)


def test_strict_mismatch_names_the_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    save_checkpoint(tmp_path / "epoch-1.pt", _Tiny(extra=True))
    with pytest.raises(UserError) as err:
        load_checkpoint(tmp_path / "epoch-1.pt", _Tiny())
    message = str(err.value)
    assert "unexpected keys: adapter.weight, adapter.bias (2)" in message
    assert "epoch-1.pt" in message and "the recipe that trained it" in message

    save_checkpoint(tmp_path / "epoch-2.pt", _Tiny())
    with pytest.raises(UserError, match="missing keys: adapter.weight, adapter.bias"):
        load_checkpoint(tmp_path / "epoch-2.pt", _Tiny(extra=True))

    # Non-strict loading is allowed only on request, and still says what it skipped.
    caplog.set_level(logging.WARNING)
    target = _Tiny(extra=True)
    load_checkpoint(tmp_path / "epoch-2.pt", target, strict=False)
    assert "missing keys: adapter.weight, adapter.bias" in caplog.text


def test_many_mismatched_keys_are_summarised(tmp_path: Path) -> None:
    big = nn.Sequential(*[nn.Linear(1, 1) for _ in range(8)])
    torch.save({"model": big.state_dict()}, tmp_path / "big.pt")
    with pytest.raises(UserError, match=r"unexpected keys: 0\.weight, .*\.\.\. \(16 in total\)"):
        load_checkpoint(tmp_path / "big.pt", nn.Sequential())


def test_shape_mismatch_is_a_user_error(tmp_path: Path) -> None:
    torch.save({"model": nn.Linear(3, 2).state_dict()}, tmp_path / "m.pt")
    with pytest.raises(UserError, match=r"weight \(2, 3\) vs model \(2, 2\)"):
        load_checkpoint(tmp_path / "m.pt", nn.Linear(2, 2), strict=False)


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"epoch-9\.pt does not exist: check --exp-dir and --epoch"):
        load_checkpoint(tmp_path / "epoch-9.pt", _Tiny())


class _Pickled:
    """Any Python object: a file holding one needs pickle (and could run code) to load."""


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "is empty"),
        (b"not a checkpoint at all", "not a readable checkpoint"),
        ("truncated", "not a readable checkpoint"),
        ("pickled", "only pickle can load"),
    ],
)
def test_unreadable_or_unsafe_files_are_refused_by_name(tmp_path: Path, content, message) -> None:
    path = tmp_path / "epoch-1.pt"
    if content == "truncated":
        save_checkpoint(path, _Tiny())
        path.write_bytes(path.read_bytes()[:200])
    elif content == "pickled":
        torch.save({"model": _Tiny().state_dict(), "params": _Pickled()}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(UserError, match=message) as err:
        read_checkpoint_file(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_model_file_and_metadata_are_read_without_the_tensors(tmp_path: Path) -> None:
    path = tmp_path / "pretrained.pt"
    config = {"encoder_dim": [32, 48], "causal": False}
    vocabulary = {"size": 40, "fingerprint": "00ff00ff00ff00ff"}
    save_checkpoint(path, _Tiny(), metadata={"model_config": config, "vocabulary": vocabulary})
    weights = read_model_file(path, flag="--checkpoint")
    assert set(weights.state_dict) == {"lin.weight", "lin.bias", "count"}
    assert weights.model_config == config and weights.vocabulary == vocabulary
    assert read_checkpoint_metadata(path)["model_config"] == config
    # icefall's pretrained.pt: weights only, no configuration.
    torch.save({"model": _Tiny().state_dict()}, path)
    weights = read_model_file(path)
    assert weights.model_config is None and weights.vocabulary is None


# ---------------------------------------------------------------- averaging


def test_average_checkpoints_plain_mean_with_integer_floor(tmp_path: Path) -> None:
    values = [
        ([[1.0, 2.0], [3.0, 4.0]], [0.0, 1.0], [1, -1]),
        ([[2.0, 2.0], [0.0, 4.0]], [3.0, 1.0], [2, 0]),
        ([[0.0, 5.0], [3.0, 1.0]], [3.0, 4.0], [4, 0]),
    ]
    files = []
    for i, (w, b, c) in enumerate(values):
        files.append(tmp_path / f"epoch-{i + 1}.pt")
        _write(files[-1], _with_values(w, b, c))
    avg = average_checkpoints(files)
    torch.testing.assert_close(avg["lin.weight"], torch.tensor([[1.0, 3.0], [2.0, 3.0]]))
    torch.testing.assert_close(avg["lin.bias"], torch.tensor([2.0, 2.0]))
    # 7 // 3 = 2 and floor(-1 / 3) = -1.
    assert avg["count"].tolist() == [2, -1] and avg["count"].dtype == torch.int64
    assert avg["lin.weight"].dtype == torch.float32


def test_average_checkpoints_rejects_different_models(tmp_path: Path) -> None:
    _write(tmp_path / "a.pt", _Tiny())
    _write(tmp_path / "b.pt", _Tiny(extra=True))
    with pytest.raises(UserError, match="keys differ"):
        average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"])


def _write_with_avg(path: Path, avg_weight: list, batch_idx_train: int, count: list) -> None:
    model_avg = _with_values(avg_weight, [0.0, 0.0], count).to(torch.float64)
    _write(path, _Tiny(), model_avg=model_avg, batch_idx_train=batch_idx_train, average_period=200)


def test_average_with_averaged_model_formula(tmp_path: Path) -> None:
    # s = floor(450/200)·200 = 400, t = floor(1030/200)·200 = 1000:
    # avg = (1000·M_end − 400·M_start) / 600.
    _write_with_avg(tmp_path / "start.pt", [[1.0, 2.0], [3.0, 4.0]], 450, [1, 1])
    _write_with_avg(tmp_path / "end.pt", [[2.0, 2.0], [6.0, 0.0]], 1030, [5, 6])
    avg = average_checkpoints_with_averaged_model(tmp_path / "start.pt", tmp_path / "end.pt")
    expected = torch.tensor(
        [[(2000 - 400) / 600, (2000 - 800) / 600], [(6000 - 1200) / 600, -1600 / 600]]
    )
    torch.testing.assert_close(avg["lin.weight"], expected)
    assert avg["count"].tolist() == [5, 6]


def test_average_with_averaged_model_needs_a_non_empty_range(tmp_path: Path) -> None:
    _write_with_avg(tmp_path / "start.pt", [[1.0, 2.0], [3.0, 4.0]], 410, [1, 1])
    _write_with_avg(tmp_path / "end.pt", [[2.0, 2.0], [6.0, 0.0]], 590, [1, 1])
    with pytest.raises(UserError, match="nothing to average"):
        average_checkpoints_with_averaged_model(tmp_path / "start.pt", tmp_path / "end.pt")
    _write(tmp_path / "plain.pt", _Tiny(), batch_idx_train=800, average_period=200)
    with pytest.raises(UserError, match="no 'model_avg'.*--use-averaged-model 0"):
        average_checkpoints_with_averaged_model(tmp_path / "start.pt", tmp_path / "plain.pt")


def test_update_averaged_model_is_the_running_mean_of_snapshots() -> None:
    snapshots = [[[1.0, 2.0], [3.0, 4.0]], [[3.0, 0.0], [0.0, 4.0]], [[2.0, 7.0], [6.0, 1.0]]]
    model_avg = _with_values(snapshots[0], [0.0, 0.0], [9, 9]).to(torch.float64)
    # avg = avg·(1 − P/b) + cur·(P/b); at b = 400 that is (snapshot 0 + snapshot 1) / 2.
    cur = _with_values(snapshots[1], [1.0, 1.0], [0, 0])
    update_averaged_model({"average_period": 200, "batch_idx_train": 400}, cur, model_avg)
    expected = torch.tensor([[2.0, 1.0], [1.5, 4.0]], dtype=torch.float64)
    torch.testing.assert_close(model_avg.lin.weight, expected)
    torch.testing.assert_close(model_avg.lin.bias, torch.tensor([0.5, 0.5], dtype=torch.float64))
    cur = _with_values(snapshots[2], [1.0, 1.0], [0, 0])
    update_averaged_model({"average_period": 200, "batch_idx_train": 600}, cur, model_avg)
    expected = torch.tensor(snapshots, dtype=torch.float64).mean(dim=0)
    torch.testing.assert_close(model_avg.lin.weight, expected)
    assert model_avg.count.tolist() == [9, 9]  # integer buffers are not averaged
    with pytest.raises(ValueError, match="average_period"):
        update_averaged_model({"average_period": 200, "batch_idx_train": 100}, _Tiny(), model_avg)


# ---------------------------------------------------------------- decode-time selection


def _decode_params(exp_dir: Path, epoch=3, iter=0, avg=1, use_averaged_model=False) -> AttributeDict:
    return AttributeDict(
        epoch=epoch, iter=iter, avg=avg, use_averaged_model=use_averaged_model, exp_dir=exp_dir
    )


@pytest.fixture
def exp_dir(tmp_path: Path) -> Path:
    """epoch-{e}.pt, e = 1..3, at batch 100·e (average_period 10), model weight e, model_avg 10·e;
    checkpoint-{n}.pt, n = 50, 150, 250, model weight n / 50, model_avg n / 5."""
    for e in (1, 2, 3):
        model = _with_values([[float(e)] * 2] * 2, [0.0, 0.0], [e, e])
        model_avg = _with_values([[10.0 * e] * 2] * 2, [0.0, 0.0], [e, e]).to(torch.float64)
        _write(
            tmp_path / f"epoch-{e}.pt", model, model_avg=model_avg,
            batch_idx_train=100 * e, average_period=10,
        )
    for n in (50, 150, 250):
        model = _with_values([[n / 50] * 2] * 2, [0.0, 0.0], [0, 0])
        model_avg = _with_values([[n / 5] * 2] * 2, [0.0, 0.0], [0, 0]).to(torch.float64)
        save_checkpoint(
            tmp_path / f"checkpoint-{n}.pt", model, model_avg=model_avg,
            state={"batch_idx_train": n, "average_period": 10},
        )
    return tmp_path


def _weight(state: dict) -> float:
    assert torch.all(state["lin.weight"] == state["lin.weight"][0, 0])
    return state["lin.weight"][0, 0].item()


def test_decode_modes_select_the_documented_files(exp_dir: Path) -> None:
    weights = load_averaged_state_dict(_decode_params(exp_dir, epoch=3, avg=1))
    state, description = weights.state_dict, weights.description
    assert _weight(state) == 3.0 and "epoch-3.pt" in description
    weights = load_averaged_state_dict(_decode_params(exp_dir, epoch=3, avg=2))
    state = weights.state_dict
    assert _weight(state) == 2.5
    # model_avg range (100, 300]: (300·30 − 100·10) / 200 = 40.
    flags = _decode_params(exp_dir, epoch=3, avg=2, use_averaged_model=True)
    weights = load_averaged_state_dict(flags)
    state, description = weights.state_dict, weights.description
    assert _weight(state) == pytest.approx(40.0) and "epoch-1.pt" in description
    weights = load_averaged_state_dict(_decode_params(exp_dir, iter=200, avg=2))
    state = weights.state_dict
    assert _weight(state) == 2.0  # mean of checkpoint-150 (3) and checkpoint-50 (1)
    # model_avg range (50, 250]: (250·50 − 50·10) / 200 = 60.
    flags = _decode_params(exp_dir, iter=300, avg=2, use_averaged_model=True)
    weights = load_averaged_state_dict(flags)
    state = weights.state_dict
    assert _weight(state) == pytest.approx(60.0)


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            dict(epoch=3, avg=3, use_averaged_model=True),
            r"needs epoch-0\.pt.*with --epoch 3 use --avg <= 2",
        ),
        (
            dict(epoch=1, avg=1, use_averaged_model=True),
            r"with --epoch 1 use --use-averaged-model 0",
        ),
        (dict(epoch=3, avg=4), r"use --avg <= 3"),
        (dict(epoch=5, avg=1), r"epoch-5\.pt, which does not exist \(available epochs: 1, 2, 3\)"),
        (dict(iter=200, avg=3), r"found 2: use --avg <= 2 or a larger --iter"),
        (
            dict(iter=200, avg=2, use_averaged_model=True),
            r"needs 3 checkpoint-\*\.pt .* use --avg <= 1",
        ),
        (dict(epoch=3, avg=0), r"--avg must be >= 1"),
    ],
)
def test_decode_mode_errors_say_what_to_change(exp_dir: Path, flags: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_averaged_state_dict(_decode_params(exp_dir, **flags))


def test_file_name_prefix_selects_a_separate_family(tmp_path: Path) -> None:
    """E.g. adapter-only adapter-epoch-{e}.pt / adapter-checkpoint-{n}.pt beside the full files."""
    for e in (1, 2):
        model = _with_values([[float(e)] * 2] * 2, [0.0, 0.0], [0, 0])
        _write(tmp_path / f"adapter-epoch-{e}.pt", model, batch_idx_train=e, average_period=1)
    _write(tmp_path / "epoch-2.pt", _Tiny())
    for n in (10, 20):
        save_checkpoint(tmp_path / f"adapter-checkpoint-{n}.pt", _Tiny())
    save_checkpoint(tmp_path / "checkpoint-30.pt", _Tiny())

    names = [Path(f).name for f in find_checkpoints(tmp_path, prefix="adapter-")]
    assert names == ["adapter-checkpoint-20.pt", "adapter-checkpoint-10.pt"]
    assert [Path(f).name for f in find_checkpoints(tmp_path)] == ["checkpoint-30.pt"]
    flags = _decode_params(tmp_path, epoch=2, avg=2)
    weights = load_averaged_state_dict(flags, prefix="adapter-")
    state, description = weights.state_dict, weights.description
    assert _weight(state) == 1.5 and "adapter-epoch-1.pt" in description
    with pytest.raises(UserError, match=r"adapter-epoch-3\.pt.*available epochs: 1, 2"):
        load_averaged_state_dict(_decode_params(tmp_path, epoch=3, avg=1), prefix="adapter-")
    remove_checkpoints(tmp_path, topk=1, prefix="adapter-")
    assert not (tmp_path / "adapter-checkpoint-10.pt").exists()
    assert (tmp_path / "checkpoint-30.pt").exists()


def test_decode_mode_names_a_missing_start_file(exp_dir: Path) -> None:
    (exp_dir / "epoch-1.pt").unlink()
    flags = _decode_params(exp_dir, epoch=3, avg=2, use_averaged_model=True)
    with pytest.raises(UserError, match=r"--use-averaged-model \(the start point\) needs .*epoch-1"):
        load_averaged_state_dict(flags)


def test_a_save_that_does_not_fit_keeps_the_old_file_and_says_how_much_was_needed(tmp_path: Path, monkeypatch):
    import zipformer.checkpoints.checkpoint as checkpoint_module

    path = tmp_path / "epoch-1.pt"
    save_checkpoint(path, _Tiny())
    before = path.read_bytes()
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoint_module.shutil, "disk_usage", lambda _: usage(10**6, 10**6 - 1, 1))
    with pytest.raises(UserError, match=r"could not save .*epoch-1\.pt \(not enough free space\): it needs about "
                                        r"0\.0 MB and 0\.0 MB are free"):
        save_checkpoint(path, _Tiny())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["epoch-1.pt"]

