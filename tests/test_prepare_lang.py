"""BPE models and tokens.txt (icefall's lang_bpe_500 layout; the german domain's lang_bpe_250_de)."""
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm
from lhotse import SupervisionSegment, SupervisionSet

from local.languages import GERMAN
from local.prepare_lang import read_manifest_texts, read_text_lines, train_bpe
from local.text_corpus import FORTUNES_DIR, sentences_from_file
from zipformer.core.errors import UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def source_text(tmp_path_factory) -> Path:
    if not (FORTUNES_DIR / "wisdom").is_file():
        pytest.skip("Debian fortunes not installed (run ./local/setup.sh)")
    path = tmp_path_factory.mktemp("text") / "source_train.tsv"
    sentences = [s for topic in ("wisdom", "love", "literature") for s in sentences_from_file(FORTUNES_DIR / topic)]
    path.write_text("".join(f"{s.text}\t{s.spoken}\n" for s in sentences))
    return path


def test_bpe_500_ids_tokens_and_determinism(source_text: Path, tmp_path: Path):
    model = train_bpe(read_text_lines([source_text]), tmp_path / "a", vocab_size=500)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    assert sp.get_piece_size() == 500
    assert [sp.id_to_piece(i) for i in range(3)] == ["<blk>", "<sos/eos>", "<unk>"]
    assert sp.bos_id() == -1 and sp.eos_id() == -1
    lines = (tmp_path / "a" / "tokens.txt").read_text().splitlines()
    assert len(lines) == 500
    assert lines[:3] == ["<blk> 0", "<sos/eos> 1", "<unk> 2"]
    assert all(line.rsplit(" ", 1)[1] == str(i) for i, line in enumerate(lines))
    ids = sp.encode("THE SUN IS SHINING")
    assert ids and all(3 <= i < 500 for i in ids)
    assert sp.decode(ids) == "THE SUN IS SHINING"
    again = train_bpe(read_text_lines([source_text]), tmp_path / "b", vocab_size=500)
    assert again.read_bytes() == model.read_bytes()
    assert (tmp_path / "a" / "unigram_500.model").read_bytes() == model.read_bytes()
    assert not list((tmp_path / "a").glob(".tmp*"))


def test_bpe_from_manifest_texts(tmp_path: Path):
    sups = SupervisionSet.from_segments(
        SupervisionSegment(id=f"u{i}", recording_id=f"u{i}", start=0, duration=1, text=text)
        for i, text in enumerate(["HELLO WORLD", "GOOD MORNING WORLD", "  "])
    )
    path = tmp_path / "sups.jsonl.gz"
    sups.to_file(path)
    assert read_manifest_texts([path]) == ["HELLO WORLD", "GOOD MORNING WORLD"]
    model = train_bpe(read_manifest_texts([path]) * 20, tmp_path / "lang", vocab_size=15)
    assert spm.SentencePieceProcessor(model_file=str(model)).get_piece_size() == 15


def test_too_little_text_is_a_clear_error(tmp_path: Path):
    with pytest.raises(UserError, match="could not train a 500-token model on 2 sentences"):
        train_bpe(["HELLO WORLD", "GOOD DAY"], tmp_path / "lang", vocab_size=500)
    assert not (tmp_path / "lang" / "bpe.model").exists()
    with pytest.raises(UserError, match="no training text"):
        train_bpe([], tmp_path / "lang2")


def test_cli_reports_missing_input(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, str(REPO / "local" / "prepare_lang.py"), "--lang-dir", str(tmp_path / "lang"), "--text", str(tmp_path / "nope.txt")],
        capture_output=True, text=True,
    )
    assert result.returncode != 0
    assert "error: text file" in result.stderr and "nope.txt not found" in result.stderr


def test_german_bpe_keeps_the_special_ids_and_its_letters(tmp_path: Path):
    if not (FORTUNES_DIR / "de" / "unfug").is_file():
        pytest.skip("Debian fortunes-de not installed (run ./local/setup.sh)")
    sentences = [s.text for topic in ("unfug", "witze", "sprueche") for s in sentences_from_file(FORTUNES_DIR / "de" / topic, GERMAN)]
    model = train_bpe(sentences, tmp_path / "lang_bpe_250_de", vocab_size=250)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    assert sp.get_piece_size() == 250 and [sp.id_to_piece(i) for i in range(3)] == ["<blk>", "<sos/eos>", "<unk>"]
    assert (tmp_path / "lang_bpe_250_de" / "tokens.txt").read_text().splitlines()[:3] == ["<blk> 0", "<sos/eos> 1", "<unk> 2"]
    ids = sp.encode("DIE GRÖßE ÜBER ALLES")
    assert ids and sp.unk_id() not in ids and sp.decode(ids) == "DIE GRÖßE ÜBER ALLES"
    pieces = {sp.id_to_piece(i) for i in range(sp.get_piece_size())}
    assert {"ß", "Ä", "Ö", "Ü"} <= {c for piece in pieces for c in piece}
