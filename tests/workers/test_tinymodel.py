from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from workers.tinymodel import build_tiny_model, main


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_tiny_model_loads_with_the_auto_classes(tiny_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)

    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tokenizer)
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token, tokenizer.unk_token) == (
        "<s>",
        "</s>",
        "<pad>",
        "<unk>",
    )
    assert model.config.eos_token_id == tokenizer.eos_token_id
    encoded = tokenizer("### Instruction:\nSay hello, café ☕", return_tensors="pt")
    assert encoded["input_ids"][0, 0] == tokenizer.bos_token_id
    assert tokenizer.unk_token_id not in encoded["input_ids"][0].tolist()
    logits = model(**encoded).logits
    assert logits.shape == (1, encoded["input_ids"].shape[1], len(tokenizer))


def test_tiny_model_is_saved_as_safetensors(tiny_model: Path) -> None:
    assert (tiny_model / "model.safetensors").is_file()
    assert not list(tiny_model.glob("*.bin"))


def test_tiny_model_is_the_same_for_the_same_seed(tmp_path: Path, tiny_model: Path) -> None:
    again = build_tiny_model(tmp_path / "again")
    other_seed = build_tiny_model(tmp_path / "other", seed=1)

    assert (again / "tokenizer.json").read_text() == (tiny_model / "tokenizer.json").read_text()
    first, second = (
        load_file(tiny_model / "model.safetensors"),
        load_file(again / "model.safetensors"),
    )
    assert first.keys() == second.keys()
    assert all(first[name].equal(second[name]) for name in first)
    different = load_file(other_seed / "model.safetensors")
    assert not all(first[name].equal(different[name]) for name in first)


def test_tiny_model_vocabulary_is_sized_from_a_small_corpus(tmp_path: Path) -> None:
    out = build_tiny_model(tmp_path / "small", ["abc abc abd"])

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    # 256 bytes + 4 special tokens + the few merges such a corpus allows.
    assert 260 < len(tokenizer) < 300
    assert model.config.vocab_size == len(tokenizer)


def test_tiny_model_command_line_writes_the_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main([str(tmp_path / "cli")])

    assert capsys.readouterr().out.strip() == str(tmp_path / "cli")
    assert (tmp_path / "cli" / "config.json").is_file()
    assert (tmp_path / "cli" / "tokenizer.json").is_file()
