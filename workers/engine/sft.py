"""Supervised fine-tuning examples: rows to token ids and labels, with the prompt masked.

Each row becomes a list of text segments, each marked as learned (a response,
an assistant turn, a plain text) or given (an instruction, a user turn, the
chat template's role headers). The whole text is tokenized once, and a token
is learned when it starts inside a learned segment; every other token gets
the label ``IGNORE_INDEX``, so the loss is on the completion only. Tokenizing
the whole text (rather than each segment apart) keeps the ids exactly those
the model sees at inference.

No torch here: this runs before the model is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workers.engine import JobInputError
from workers.engine.data import (
    ChatRow,
    DatasetError,
    InstructionRow,
    PreferenceRow,
    TextRow,
    TrainingRow,
    format_example,
    instruction_prompt,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100  # label value the loss skips (prompt tokens and padding)

# For a base model whose tokenizer has no chat template (most base, non-chat
# models): the same role-headed layout the engine used for chats before it
# applied templates, so such a model trains as it did; the eos after each
# assistant turn teaches it where a turn stops.
# (Newlines are written as expressions: transformers renders templates with
# trim_blocks, which drops a newline that follows a block tag.) It writes no
# bos, so the tokenizer adds its own, as for any plain text.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if not loop.first %}{{ '\\n\\n' }}{% endif %}"
    "### {{ message['role'] | capitalize }}:{{ '\\n' }}{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n\\n### Assistant:\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Segment:
    text: str
    learned: bool


def sft_examples(
    rows: Sequence[TrainingRow],
    tokenizer: PreTrainedTokenizerBase,
    max_seq_length: int,
    *,
    completion_only_loss: bool,
) -> list[dict[str, list[int]]]:
    """``input_ids`` and ``labels`` per row, cut to ``max_seq_length`` including the end-of-sequence token.

    With ``completion_only_loss`` off, every token is learned (the labels are the ids).
    A row whose learned part is cut off entirely is left out: it would only add a zero loss.
    """
    if tokenizer.eos_token_id is None:
        raise JobInputError("the base model's tokenizer has no end-of-sequence token")
    if completion_only_loss and not tokenizer.is_fast:
        # The masking needs each token's character offsets, which only fast tokenizers give.
        raise JobInputError(
            "the base model's tokenizer is not a fast tokenizer, which completion-only loss needs: "
            "set completion_only_loss to false"
        )
    examples = []
    for row in rows:
        # A model's own chat template writes its bos (if the model uses one);
        # plain texts and the fallback template get the tokenizer's.
        own_template = isinstance(row, ChatRow) and tokenizer.chat_template is not None
        if completion_only_loss:
            segments = row_segments(row, tokenizer)
        else:
            # One learned piece: no need to find the turns (which some templates make impossible).
            segments = [
                Segment(chat_text(row, tokenizer) if isinstance(row, ChatRow) else format_example(row), True)
            ]
        example = _tokenize_segments(
            segments,
            tokenizer,
            max_seq_length,
            add_special_tokens=not own_template,
            # A chat template writes eos where a turn ends (the fallback one too).
            append_eos=not isinstance(row, ChatRow),
        )
        if not completion_only_loss:
            # Special tokens too; an end-of-sequence token appended to a cut text stays unlearned.
            last = example["labels"][-1:]
            example["labels"] = list(example["input_ids"])
            if not isinstance(row, ChatRow) and last == [IGNORE_INDEX]:
                example["labels"][-1] = IGNORE_INDEX
        if any(label != IGNORE_INDEX for label in example["labels"]):
            examples.append(example)
    if not examples:
        raise DatasetError(
            f"no row has a response within max_seq_length ({max_seq_length} tokens): raise it, "
            "or set completion_only_loss to false"
        )
    if len(examples) < len(rows):
        print(
            f"tuneyard: {len(rows) - len(examples)} rows left out with nothing to learn: a prompt that "
            "fills max_seq_length, or a chat with no assistant turn",
            flush=True,
        )
    return examples


def row_segments(row: TrainingRow, tokenizer: PreTrainedTokenizerBase) -> list[Segment]:
    """The row's text in given and learned pieces."""
    match row:
        case InstructionRow():
            return [Segment(instruction_prompt(row), False), Segment(row.output, True)]
        case ChatRow():
            return chat_segments(row, tokenizer)
        case PreferenceRow():
            # Supervised fine-tuning on a preference pair learns the chosen answer.
            return [Segment(f"{row.prompt}\n\n", False), Segment(row.chosen, True)]
        case TextRow():
            return [Segment(format_example(row), True)]


def chat_template(tokenizer: PreTrainedTokenizerBase) -> str | None:
    """None: the tokenizer's own (which may be a set of named templates); else the fallback."""
    return None if tokenizer.chat_template else FALLBACK_CHAT_TEMPLATE


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], **kwargs: Any) -> str:
    from jinja2 import TemplateError

    try:
        text = tokenizer.apply_chat_template(
            messages, chat_template=chat_template(tokenizer), tokenize=False, **kwargs
        )
    except TemplateError as exc:
        # e.g. roles that do not alternate, or a system turn the template does not take: the data's fault.
        raise DatasetError(f"the base model's chat template refuses a conversation: {exc}") from exc
    # Untokenized, the template renders one string (transformers types every return form at once).
    assert isinstance(text, str)
    return text


def chat_text(row: ChatRow, tokenizer: PreTrainedTokenizerBase) -> str:
    """The whole conversation as the chat template renders it."""
    return _render(tokenizer, [{"role": m.role, "content": m.content} for m in row.messages])


def chat_prompt(row: ChatRow, tokenizer: PreTrainedTokenizerBase) -> tuple[str, str]:
    """The conversation up to its last assistant turn's generation prompt, and that turn's content."""
    messages = [{"role": m.role, "content": m.content} for m in row.messages]
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        return _render(tokenizer, messages), ""
    return _render(tokenizer, messages[:last], add_generation_prompt=True), messages[last]["content"]


def chat_segments(row: ChatRow, tokenizer: PreTrainedTokenizerBase) -> list[Segment]:
    """The conversation rendered by the chat template; each assistant turn is a learned segment.

    A turn's text is what rendering the conversation up to and including it
    adds to rendering it up to that turn's generation prompt, which is exactly
    what the model writes at inference.
    """
    messages = [{"role": m.role, "content": m.content} for m in row.messages]

    def render(upto: int, generation_prompt: bool) -> str:
        return _render(tokenizer, messages[:upto], add_generation_prompt=generation_prompt)

    segments: list[Segment] = []
    done = ""  # the text already covered by segments
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, through = render(index, True), render(index + 1, False)
        if not (before.startswith(done) and through.startswith(before)):
            # Some templates rewrite earlier turns (e.g. drop past reasoning), so
            # a turn cannot be located by prefixes.
            raise JobInputError(
                "the base model's chat template renders earlier turns differently as a chat grows, "
                "so assistant turns cannot be found: set completion_only_loss to false"
            )
        segments += [Segment(before[len(done) :], False), Segment(through[len(before) :], True)]
        done = through
    whole = render(len(messages), False)
    if not whole.startswith(done):
        raise JobInputError("the base model's chat template renders a conversation inconsistently")
    segments.append(Segment(whole[len(done) :], False))
    return [segment for segment in segments if segment.text]


def _tokenize_segments(
    segments: list[Segment],
    tokenizer: PreTrainedTokenizerBase,
    max_seq_length: int,
    *,
    add_special_tokens: bool,
    append_eos: bool,
) -> dict[str, list[int]]:
    text = "".join(segment.text for segment in segments)
    room = max_seq_length - 1 if append_eos else max_seq_length
    learned_spans = []
    start = 0
    for segment in segments:
        if segment.learned:
            learned_spans.append((start, start + len(segment.text)))
        start += len(segment.text)
    if not tokenizer.is_fast:
        # No character offsets: every token is learned (completion-only loss refused such a tokenizer).
        whole = tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
        ids = list(whole[:room])
        return _eos_append(ids, list(ids), tokenizer.eos_token_id, append_eos, cut=len(whole) > room)
    encoded = tokenizer(
        text,
        truncation=True,
        max_length=room,
        return_offsets_mapping=True,
        add_special_tokens=add_special_tokens,
    )
    ids = list(encoded["input_ids"])
    offsets = encoded["offset_mapping"]
    labels = [
        token if end > begin and any(a <= begin < b for a, b in learned_spans) else IGNORE_INDEX
        for token, (begin, end) in zip(ids, offsets, strict=True)
    ]
    # Whether max_seq_length cut the text: its last token ends before the text does.
    cut = max((end for _, end in offsets), default=0) < len(text.rstrip())
    return _eos_append(ids, labels, tokenizer.eos_token_id, append_eos, cut=cut)


def _eos_append(
    ids: list[int], labels: list[int], eos: int, append_eos: bool, *, cut: bool
) -> dict[str, list[int]]:
    """Appended by hand because most causal-LM tokenizers do not add it, and
    without it the model never learns where a response stops. It is learned
    after a learned token of a text that was not cut only: a text cut short
    must not teach the model to stop there."""
    if append_eos and (not ids or ids[-1] != eos):
        ids.append(eos)
        labels.append(eos if labels and labels[-1] != IGNORE_INDEX and not cut else IGNORE_INDEX)
    return {"input_ids": ids, "labels": labels}
