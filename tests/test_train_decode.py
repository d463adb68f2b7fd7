"""zipformer/train.py and zipformer/decode.py, run as a user runs them, on a tiny synthesized corpus."""
from pathlib import Path

import pytest
import torch

from zipformer.decoding.scoring import read_hypotheses

from conftest import TINY_MODEL_FLAGS, data_flags, run_script

# Every test here starts training, decoding or data-preparation subprocesses.
pytestmark = pytest.mark.slow


def train(corpus: dict, exp_dir: Path, *extra: str, check: bool = True):
    return run_script(
        "zipformer/train.py",
        "--exp-dir", exp_dir,
        "--tensorboard", "0",
        "--average-period", "2",
        "--log-interval", "1",
        "--base-lr", "0.04",
        *TINY_MODEL_FLAGS,
        *data_flags(corpus),
        *extra,
        check=check,
    )


def decode(corpus: dict, exp_dir: Path, *extra: str, check: bool = True):
    """No model-shape flags: the checkpoints carry their configuration."""
    return run_script(
        "zipformer/decode.py",
        "--exp-dir", exp_dir,
        *data_flags(corpus),
        *extra,
        check=check,
    )


def train_log(exp_dir: Path) -> str:
    logs = sorted((exp_dir / "log").glob("log-train-*"))
    assert logs, f"no training log in {exp_dir}/log"
    return "\n".join(p.read_text() for p in logs)


def test_training_writes_icefall_checkpoints_and_logs(tiny_base_exp: Path):
    for name in ("epoch-1.pt", "epoch-2.pt", "best-train-loss.pt", "best-valid-loss.pt"):
        assert (tiny_base_exp / name).is_file(), name
    # Plain data: every checkpoint loads without pickle.
    checkpoint = torch.load(tiny_base_exp / "epoch-2.pt", map_location="cpu", weights_only=True)
    for key in ("model", "model_avg", "optimizer", "scheduler", "grad_scaler", "sampler", "batch_idx_train",
                "best_train_loss", "best_valid_loss", "average_period", "cur_epoch",
                "model_config", "vocabulary", "train_config"):
        assert key in checkpoint, key
    assert checkpoint["cur_epoch"] == 2 and checkpoint["batch_idx_train"] > 0
    assert checkpoint["model_config"]["encoder_dim"] == [32, 32, 48, 48, 48, 32]
    assert checkpoint["vocabulary"]["size"] == checkpoint["train_config"]["vocab_size"] == 40
    assert all(v.dtype == torch.float32 for v in checkpoint["model_avg"].values() if v.is_floating_point())
    log = train_log(tiny_base_exp)
    assert "Number of model parameters:" in log
    assert "Epoch 1, batch 0, loss[loss=" in log and "tot_loss[" in log and "over " in log
    assert "s of audio/s" in log and "peak memory" in log
    assert "validation on dev" in log
    assert not list(tiny_base_exp.glob(".tmp-*")), "a temporary checkpoint file was left behind"


def first_batch_loss_scales(log: str) -> tuple:
    """(loss, simple_loss, pruned_loss) of the first logged training batch."""
    line = next(line for line in log.splitlines() if "Epoch 1, batch 0, loss[" in line)
    fields = line.split("loss[")[1].split(", over")[0]
    values = dict(item.split("=") for item in fields.split(", "))
    return float(values["loss"]), float(values["simple_loss"]), float(values["pruned_loss"])


def test_training_loss_goes_down(tiny_base_exp: Path):
    log = train_log(tiny_base_exp)
    valid = [float(line.split("validation on dev: loss=")[1].split(",")[0]) for line in log.splitlines() if "validation on dev: loss=" in line]
    assert len(valid) == 2
    assert valid[1] < valid[0]


def test_resume_continues_the_same_run(tiny_corpus, tiny_base_exp: Path, tmp_path: Path):
    """Epoch 1, then --start-epoch 2, gives the weights of an uninterrupted 2-epoch run."""
    (tmp_path / "epoch-1.pt").write_bytes((tiny_base_exp / "epoch-1.pt").read_bytes())
    train(tiny_corpus, tmp_path, "--num-epochs", "2", "--start-epoch", "2")
    assert "Resuming from" in train_log(tmp_path)
    resumed = torch.load(tmp_path / "epoch-2.pt", map_location="cpu", weights_only=True)
    straight = torch.load(tiny_base_exp / "epoch-2.pt", map_location="cpu", weights_only=True)
    assert resumed["batch_idx_train"] == straight["batch_idx_train"]
    for key, value in straight["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    for key, value in straight["model_avg"].items():
        torch.testing.assert_close(resumed["model_avg"][key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_mid_epoch_resume_reports_progress_of_the_whole_epoch(tiny_corpus, tmp_path: Path):
    """After --start-batch, progress counts the audio trained before the interruption (so the ETA is what is left)."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(tiny_corpus, straight, "--num-epochs", "1", "--save-every-n", "1")
    resumed.mkdir()
    (resumed / "checkpoint-1.pt").write_bytes((straight / "checkpoint-1.pt").read_bytes())
    train(tiny_corpus, resumed, "--num-epochs", "1", "--start-batch", "1")

    def progress(exp_dir: Path, batch: int) -> str:
        lines = train_log(exp_dir).splitlines()
        index = next(i for i, line in enumerate(lines) if f"Epoch 1, batch {batch}, loss[" in line)
        return lines[index + 1].split("Progress: ")[1].split(" of epoch")[0]

    assert progress(resumed, 1) == progress(straight, 1)
    assert "Epoch 1, batch 0, loss[" not in train_log(resumed)


def logged_batches(exp_dir: Path) -> dict:
    """{batch number: the 'over N frames' of its tot_loss} from the training log."""
    found = {}
    for line in train_log(exp_dir).splitlines():
        if "Epoch 1, batch " in line and "tot_loss[" in line:
            number = int(line.split("Epoch 1, batch ")[1].split(",")[0])
            found[number] = line.split("tot_loss[")[1].split("over ")[1].split(" frames")[0]
    return found


@pytest.mark.slow
def test_mid_epoch_resume_with_workers_trains_exactly_the_remaining_batches(tiny_corpus, tmp_path: Path):
    """Workers prefetch batches; the saved sampler state must count only those trained, and the log continues."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(tiny_corpus, straight, "--num-epochs", "1", "--save-every-n", "1", "--num-workers", "2")
    resumed.mkdir()
    (resumed / "checkpoint-1.pt").write_bytes((straight / "checkpoint-1.pt").read_bytes())
    train(tiny_corpus, resumed, "--num-epochs", "1", "--start-batch", "1", "--num-workers", "2")

    batches = logged_batches(straight)
    assert len(batches) >= 3
    # The same batch numbers and the same running-loss frame totals: tot_loss went on from the checkpoint.
    assert logged_batches(resumed) == {n: frames for n, frames in batches.items() if n >= 1}
    done = [torch.load(d / "epoch-1.pt", map_location="cpu", weights_only=False)["batch_idx_train"] for d in (straight, resumed)]
    assert done[0] == done[1] == len(batches)

def test_decode_writes_result_files(tiny_corpus, tiny_base_exp: Path):
    decode(tiny_corpus, tiny_base_exp, "--epoch", "2", "--avg", "1", "--use-averaged-model", "1")
    res_dir = tiny_base_exp / "greedy_search"
    suffix = "epoch-2-avg-1-context-2-max-sym-per-frame-1-use-averaged-model"
    for test_set in ("source", "target"):
        for kind in ("recogs", "errs", "wer-summary"):
            assert (res_dir / f"{kind}-{test_set}-greedy_search-{suffix}.txt").is_file(), (kind, test_set)
    errs = (res_dir / f"errs-source-greedy_search-{suffix}.txt").read_text()
    assert errs.startswith("%WER = ")
    assert "PER-UTT DETAILS: corr or (ref->hyp)" in errs
    logs = list(res_dir.glob(f"log-decode-{suffix}-*"))
    assert logs and "%WER" in logs[0].read_text() and "best for source" in logs[0].read_text()


@pytest.mark.parametrize("method", ["modified_beam_search", "beam_search"])
def test_decode_beam_methods_run(tiny_corpus, tiny_base_exp: Path, method: str):
    decode(tiny_corpus, tiny_base_exp, "--epoch", "2", "--avg", "2", "--use-averaged-model", "0",
           "--decoding-method", method, "--beam-size", "2")
    assert list((tiny_base_exp / method).glob("wer-summary-source-beam_size_2-epoch-2-avg-2-*"))


def test_ddp_with_gloo_writes_one_set_of_checkpoints(tiny_corpus, tmp_path: Path):
    train(tiny_corpus, tmp_path, "--num-epochs", "1", "--world-size", "2", "--master-port", "29517")
    assert (tmp_path / "epoch-1.pt").is_file()
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["best-train-loss.pt", "best-valid-loss.pt", "epoch-1.pt"]
    logs = sorted((tmp_path / "log").glob("log-train-*"))
    assert len(logs) == 2 and {p.name[-2:] for p in logs} == {"-0", "-1"}
    assert "Using DDP" in logs[0].read_text()


def test_fp16_on_cpu_says_so_and_trains_in_float32(tiny_corpus, tmp_path: Path):
    proc = train(tiny_corpus, tmp_path, "--num-epochs", "1", "--use-fp16", "1")
    assert "need a CUDA GPU" in proc.stderr
    assert (tmp_path / "epoch-1.pt").is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--epoch", "9", "--avg", "1", "--use-averaged-model", "0"], "epoch-9.pt"),
        (["--epoch", "2", "--avg", "5", "--use-averaged-model", "1"], "--avg"),
        (["--epoch", "2", "--avg", "1", "--decoding-method", "fast_beam_search"], "use one of greedy_search"),
        (["--epoch", "2", "--avg", "1", "--encoder-dim", "64"], "--encoder-dim 64 contradicts"),
    ],
)
def test_decode_bad_input_is_one_clear_line(tiny_corpus, tiny_base_exp: Path, extra, message):
    proc = decode(tiny_corpus, tiny_base_exp, *extra, check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, proc.stderr[-2000:]


@pytest.mark.parametrize(
    "vocab_size, texts, message",
    [
        (35, "source", "trained with 40 tokens but --bpe-model"),
        (40, "other", "another BPE model of the same size"),  # decoded without a word before
    ],
)
def test_decode_with_another_bpe_model_is_refused(tiny_corpus, tiny_base_exp: Path, tmp_path: Path,
                                                  vocab_size, texts, message):
    from local.prepare_lang import train_bpe

    from conftest import SOURCE_TEXTS

    sentences = SOURCE_TEXTS if texts == "source" else [t[::-1] + " " + t for t in SOURCE_TEXTS]
    other = train_bpe([t.upper() for t in sentences], tmp_path / "lang", vocab_size=vocab_size)
    proc = decode(tiny_corpus, tiny_base_exp, "--epoch", "2", "--avg", "1", "--use-averaged-model", "0",
                  "--bpe-model", other, check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last and "the model was trained with" in last


def test_training_on_a_missing_cut_file_is_one_clear_line(tiny_corpus, tmp_path: Path):
    proc = train(tiny_corpus, tmp_path, "--num-epochs", "1", "--train-cuts", str(tmp_path / "nope.jsonl.gz"), check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "nope.jsonl.gz" in last and "prepare.sh" in last


def test_pretrained_py_transcribes_audio_files_like_decode_py(tiny_corpus, tiny_base_exp: Path):
    decode(tiny_corpus, tiny_base_exp, "--epoch", "2", "--avg", "1", "--use-averaged-model", "0")
    recogs = next((tiny_base_exp / "greedy_search").glob("recogs-source-greedy_search-epoch-2-avg-1-*[0-9].txt"))
    expected = {cut_id.rsplit("-", 1)[0]: " ".join(words) for cut_id, words in read_hypotheses(recogs).items()}
    audio = sorted((Path(tiny_corpus["source_test"]).parent / "audio").glob("*.flac"))
    proc = run_script(
        "zipformer/pretrained.py", "--checkpoint", tiny_base_exp / "epoch-2.pt",
        "--bpe-model", tiny_corpus["bpe_model"], *audio,
    )
    lines = proc.stdout.strip().split("\n")
    got = {Path(lines[i].rstrip(":")).stem: lines[i + 1] if i + 1 < len(lines) and not lines[i + 1].endswith(":") else ""
           for i in range(len(lines)) if lines[i].endswith(":")}
    assert set(got) == set(expected) and got == expected


def test_pretrained_py_refuses_a_missing_audio_file(tiny_corpus, tiny_base_exp: Path):
    proc = run_script("zipformer/pretrained.py", "--checkpoint", tiny_base_exp / "epoch-2.pt",
                      "--bpe-model", tiny_corpus["bpe_model"], "nope.wav", check=False)
    assert proc.returncode != 0 and proc.stderr.strip().splitlines()[-1] == "error: audio file nope.wav not found"


def nan_feature_cuts(corpus: dict, tmp_path: Path) -> Path:
    """The tiny source set with every feature matrix replaced by NaN."""
    import dataclasses

    import numpy as np
    from lhotse import CutSet, NumpyFilesWriter, load_manifest

    cuts = []
    with NumpyFilesWriter(tmp_path / "nan_feats") as writer:
        for cut in load_manifest(corpus["source_train"]):
            key = writer.write(cut.id, np.full_like(cut.load_features(), np.nan))
            features = dataclasses.replace(
                cut.features, storage_type=writer.name, storage_path=str(writer.storage_path), storage_key=key
            )
            cuts.append(dataclasses.replace(cut, features=features))
    path = tmp_path / "nan_cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    return path


def test_non_finite_losses_are_skipped_then_training_stops_with_the_batch_saved(tiny_corpus, tmp_path: Path):
    proc = train(tiny_corpus, tmp_path / "exp", "--num-epochs", "1", "--max-bad-batches", "2",
                 "--train-cuts", nan_feature_cuts(tiny_corpus, tmp_path), check=False)
    assert proc.returncode != 0
    assert "Non-finite loss at batch 1, skipping it" in proc.stderr
    assert "2 batches in a row had a non-finite loss" in proc.stderr
    assert len(list((tmp_path / "exp").glob("batch-*.pt"))) == 1


def test_torchrun_runs_the_same_script(tiny_corpus, tmp_path: Path):
    import os
    import subprocess
    import sys

    from conftest import REPO_DIR

    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        str(REPO_DIR / "zipformer/train.py"), "--num-epochs", "1", "--exp-dir", str(tmp_path),
        "--tensorboard", "0", "--log-interval", "1", *TINY_MODEL_FLAGS, *map(str, data_flags(tiny_corpus)),
    ]
    proc = subprocess.run(cmd, cwd=REPO_DIR, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "epoch-1.pt").is_file()
    logs = sorted((tmp_path / "log").glob("log-train-*"))
    assert len(logs) == 2 and "Using DDP" in logs[0].read_text()


def test_full_finetuning_from_a_pretrained_file(tiny_corpus, tiny_base_exp: Path, tmp_path: Path):
    pretrained = tmp_path / "pretrained.pt"
    base = torch.load(tiny_base_exp / "epoch-2.pt", map_location="cpu", weights_only=True)["model"]
    torch.save({"model": {f"module.{k}": v for k, v in base.items()}}, pretrained)  # as DDP saved it
    train(tiny_corpus, tmp_path / "exp", "--num-epochs", "1", "--finetune-ckpt", pretrained, "--base-lr", "0.0045",
          "--train-cuts", tiny_corpus["source_train"])
    log = train_log(tmp_path / "exp")
    assert f"Initialised the model from {pretrained}" in log
    assert "trainable parameters (100.000% of the whole model)" in log
    # From scratch the first batch weighs the simple loss 1.0 and the pruned loss 0.1 (warm-up);
    # a fine-tune starts at the final scales, 0.5 and 1.0.
    loss, simple, pruned = first_batch_loss_scales(train_log(tiny_base_exp))
    assert loss == pytest.approx(simple + 0.1 * pruned, rel=2e-3)
    loss, simple, pruned = first_batch_loss_scales(log)
    assert loss == pytest.approx(0.5 * simple + pruned, rel=2e-3)
    tuned = torch.load(tmp_path / "exp" / "epoch-1.pt", map_location="cpu", weights_only=True)["model"]
    assert tuned.keys() == base.keys()
    assert any(not torch.equal(tuned[k], base[k]) for k in base)


def test_decode_gigaspeech_runs_the_seeds_command(tiny_corpus, tiny_base_exp: Path):
    """The seed's first command, with only the data paths changed (GigaSpeech is not here)."""
    test_cuts = f"dev={tiny_corpus['source_dev']},test={tiny_corpus['source_test']}"
    run_script(
        "zipformer/decode_gigaspeech.py", "--epoch", "2", "--avg", "1", "--exp-dir", tiny_base_exp,
        "--use-averaged-model", "0", "--max-duration", "1000", "--decoding-method", "greedy_search",
        "--bpe-model", tiny_corpus["bpe_model"], "--test-cuts", test_cuts,
    )
    res_dir = tiny_base_exp / "greedy_search_giga"
    for test_set in ("dev", "test"):
        assert list(res_dir.glob(f"wer-summary-{test_set}-greedy_search-epoch-2-avg-1-*.txt")), test_set
@pytest.mark.slow
def test_start_epoch_past_num_epochs_says_so_and_fails(tiny_corpus, tiny_base_exp: Path, tmp_path: Path):
    (tmp_path / "epoch-2.pt").write_bytes((tiny_base_exp / "epoch-2.pt").read_bytes())
    proc = train(tiny_corpus, tmp_path, "--num-epochs", "2", "--start-epoch", "3", check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "error: nothing to train: the run starts at epoch 3, past --num-epochs 2; raise --num-epochs to train more epochs"


@pytest.mark.slow
def test_first_ctrl_c_saves_a_checkpoint_and_stops(tiny_corpus, tmp_path: Path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO_DIR

    cmd = [sys.executable, str(REPO_DIR / "zipformer/train.py"), "--num-epochs", "100", "--exp-dir", str(tmp_path),
           "--tensorboard", "0", "--log-interval", "1", *TINY_MODEL_FLAGS, *map(str, data_flags(tiny_corpus))]
    proc = subprocess.Popen(cmd, cwd=REPO_DIR, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (tmp_path / "epoch-1.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-3000:]
    saved = list(tmp_path.glob("checkpoint-*.pt"))
    assert len(saved) == 1
    number = saved[0].stem.split("-")[1]
    assert f"resume with --start-batch {number}" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / ".train.lock").exists()


@pytest.mark.slow
def test_ctrl_c_under_ddp_stops_every_rank_after_one_batch_and_rank_0_saves(tiny_corpus, tmp_path: Path):
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO_DIR

    flags = ["--exp-dir", str(tmp_path), "--tensorboard", "0", "--log-interval", "1", "--world-size", "2",
             "--master-port", "29541", *TINY_MODEL_FLAGS, *map(str, data_flags(tiny_corpus))]
    # Its own process group, as a terminal's foreground job: the Ctrl-C below reaches both ranks.
    proc = subprocess.Popen([sys.executable, str(REPO_DIR / "zipformer/train.py"), "--num-epochs", "100", *flags],
                            cwd=REPO_DIR, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    while not (tmp_path / "epoch-1.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert not (tmp_path / ".train.lock").exists()
    saved = list(tmp_path.glob("checkpoint-*.pt"))
    assert len(saved) == 1
    number = int(saved[0].stem.split("-")[1])
    assert f"resume with --start-batch {number}" in stderr
    last_batches = []
    for log in sorted((tmp_path / "log").glob("log-train-*")):
        last = [line for line in log.read_text().splitlines() if "loss[" in line][-1]
        last_batches.append(re.search(r"Epoch \d+, batch \d+", last).group(0))
    assert len(last_batches) == 2 and last_batches[0] == last_batches[1]  # both ranks stopped after one batch

    checkpoint = torch.load(saved[0], map_location="cpu", weights_only=True)
    assert checkpoint["batch_idx_train"] == number
    resumed = train(tiny_corpus, tmp_path, "--num-epochs", str(checkpoint["cur_epoch"]), "--start-batch", str(number),
                    "--world-size", "2", "--master-port", "29542")
    assert resumed.returncode == 0
    assert (tmp_path / f"epoch-{checkpoint['cur_epoch']}.pt").is_file()


@pytest.mark.slow
def test_training_with_a_missing_feature_file_stops_before_the_first_batch(tiny_corpus, tmp_path: Path):
    import dataclasses

    from lhotse import CutSet, load_manifest

    cuts = list(load_manifest(tiny_corpus["source_train"]))
    cuts[0] = dataclasses.replace(cuts[0], features=dataclasses.replace(cuts[0].features, storage_path=str(tmp_path / "gone.lca")))
    CutSet.from_cuts(cuts).to_file(tmp_path / "cuts.jsonl.gz")
    proc = train(tiny_corpus, tmp_path / "exp", "--num-epochs", "1", "--train-cuts", tmp_path / "cuts.jsonl.gz", check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 of the ") and f"{tmp_path / 'gone.lca'} (cut {cuts[0].id})" in last
    assert "batch 0" not in proc.stderr


@pytest.mark.slow
def test_pretrained_py_resamples_8k_and_downmixes_44k_stereo(tiny_corpus, tiny_base_exp: Path, tmp_path: Path):
    import numpy as np
    import soundfile as sf
    from lhotse import load_manifest
    from lhotse.augmentation.resample import resample

    cut = next(iter(load_manifest(tiny_corpus["source_test"])))
    audio = torch.from_numpy(cut.load_audio())
    reference = tmp_path / "16k.wav"
    sf.write(reference, audio[0].numpy(), 16000)
    sf.write(tmp_path / "8k.wav", resample(audio, 16000, 8000)[0].numpy(), 8000)
    stereo = resample(audio, 16000, 44100)[0].numpy()
    sf.write(tmp_path / "44k-stereo.wav", np.stack([stereo, stereo], axis=1), 44100)
    proc = run_script(
        "zipformer/pretrained.py", "--checkpoint", tiny_base_exp / "epoch-2.pt", "--bpe-model", tiny_corpus["bpe_model"],
        *TINY_MODEL_FLAGS, reference, tmp_path / "8k.wav", tmp_path / "44k-stereo.wav", check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().split("\n")
    headers = [line for line in lines if line.endswith(".wav:")]
    assert [Path(h.rstrip(":")).name for h in headers] == ["16k.wav", "8k.wav", "44k-stereo.wav"]
    texts = {Path(lines[i].rstrip(":")).name: lines[i + 1] for i in range(len(lines) - 1) if lines[i] in headers}
    assert texts["44k-stereo.wav"] == texts["16k.wav"]


@pytest.mark.slow
def test_decoding_an_utterance_with_nan_features_warns(tiny_corpus, tiny_base_exp: Path, tmp_path: Path):
    from lhotse import load_manifest

    nan_cuts = nan_feature_cuts(tiny_corpus, tmp_path)
    proc = decode(tiny_corpus, tiny_base_exp, "--epoch", "2", "--avg", "1", "--use-averaged-model", "0",
                  "--test-cuts", f"nan={nan_cuts}")
    first = next(iter(load_manifest(nan_cuts))).id
    assert f"[nan] cut {first} has non-finite (NaN/inf) features" in proc.stderr
