"""A tiny Llama and its own tokenizer, built locally in about a second.

Tests and the laptop default train against this instead of a hub model: there
is no network to a model hub here, and a real model would not fit a test's
time budget. The result is an ordinary Hugging Face directory, so the engine
loads it exactly as it would load any base model.

    python -m workers.tinymodel OUT_DIR
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"

MAX_POSITIONS = 512

# Zephyr's layout: chat models ship a template like this, and the engine
# applies it to chat datasets (a model without one gets the engine's fallback).
# Newlines are expressions because templates render with trim_blocks.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>{{ '\\n' }}{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{{ '\\n' }}{% endif %}"
)

# Asked for, not promised: a BPE trained on a small corpus runs out of pairs
# to merge and stops short, so the model is sized from the tokenizer instead.
TARGET_VOCAB_SIZE = 512

DEFAULT_CORPUS: tuple[str, ...] = (
    "### Instruction:\nSay hello.\n\n### Response:\nHello! How can I help you today?",
    "### Instruction:\nName a primary colour.\n\n### Response:\nRed is a primary colour.",
    "### Instruction:\nAdd two and three.\n\n### Response:\nTwo plus three is five.",
    "### Instruction:\nTranslate to French.\n\n### Input:\nThank you\n\n### Response:\nMerci.",
    "### Instruction:\nSummarise the text.\n\n### Input:\nThe cat sat on the mat all day "
    "and did not move.\n\n### Response:\nA cat stayed on a mat.",
    "### Instruction:\nWhat is the capital of France?\n\n### Response:\nParis.",
    "### Instruction:\nWrite a short greeting for a team.\n\n### Response:\n"
    "Good morning, everyone. Let us have a great day.",
    "### Instruction:\nList three fruits.\n\n### Response:\nApple, banana and cherry.",
    "The quick brown fox jumps over the lazy dog.",
    "A model learns from data; a good dataset matters more than a large model.",
    "Fine-tuning adapts a pretrained language model to a task with a few examples.",
    "Low-rank adapters train a small number of weights next to frozen ones.",
    "The weather today is sunny with a light breeze from the west.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000.",
    "Punctuation: , . ; : ! ? ' \" ( ) [ ] { } - _ / \\ @ # $ % & * + = < >",
    "She asked him a question, and he answered it politely and at length.",
    "Please return the report by Friday so that we can review it together.",
    "def add(a, b):\n    return a + b\n",
)


def build_tiny_model(out_dir: Path, corpus: list[str] | None = None, *, seed: int = 0) -> Path:
    """Train a tokenizer on ``corpus``, build a matching tiny Llama, save both to ``out_dir``.

    The same corpus and seed give the same tokenizer and the same weights.
    Returns ``out_dir``, which ``AutoTokenizer``/``AutoModelForCausalLM.from_pretrained`` load.
    """
    # Imported here so that importing this module (e.g. for DEFAULT_CORPUS)
    # does not pull torch into a process that must not have it.
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(corpus if corpus is not None else DEFAULT_CORPUS),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        model_max_length=MAX_POSITIONS,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    # transformers wraps PreTrainedModel.to in functools.wraps, whose typeshed type never binds self.
    model = LlamaForCausalLM(config).to(torch.float32)  # type: ignore[arg-type]
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _train_tokenizer(corpus: Sequence[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    # Byte-level, so any text the engine later sees still encodes (no <unk>).
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TARGET_VOCAB_SIZE,
        special_tokens=[UNK, BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(corpus), trainer=trainer)
    # Like Llama: a sequence starts with <s>; the engine appends </s> itself.
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, tokenizer.token_to_id(BOS))],
    )
    return tokenizer


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers.tinymodel", description=__doc__)
    parser.add_argument("out_dir", type=Path, help="directory to write the model into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build_tiny_model(args.out_dir, seed=args.seed))


if __name__ == "__main__":
    main()
