"""Multiple-choice scores against lm-evaluation-harness itself, not against a copy of its rules.

The same 60 questions, zero- and two-shot, are scored by the engine and by
lm-evaluation-harness's own Hugging Face model class (``HFLM``) on the tiny
model: the same contexts and continuations go to its ``loglikelihood``, and
its log-likelihoods, ``acc`` and ``acc_norm`` (numpy's argmax, ``acc_norm``
dividing by the choice's length) must be the engine's. Both conventions: its
default since 0.4.9.2 (the tokenizer's own special tokens, the tiny Llama's
BOS) against ``SpecialTokens.TOKENIZER``, and ``add_bos_token=False`` against
``SpecialTokens.NONE``.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from transformers import AutoModelForCausalLM, AutoTokenizer

from workers.engine.evaluation.multiple_choice import (
    TARGET_DELIMITER,
    MultipleChoiceExample,
    choice_loglikelihoods,
    fewshot_contexts,
    multiple_choice_accuracy,
)
from workers.spec import SpecialTokens

# float32 on the CPU: batching and padding move the last digits, never by this much.
LOGLIKELIHOOD_TOLERANCE = 5e-6
NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve".split()
COLOURS = ["red", "green", "blue", "yellow", "black", "white"]
CAPITALS = {"France": "Paris", "Spain": "Madrid", "Italy": "Rome", "Germany": "Berlin", "Japan": "Tokyo"}


def _questions(count: int, seed: int) -> list[MultipleChoiceExample]:
    """Questions of three shapes, two to four choices, the answer anywhere among them."""
    rng = random.Random(seed)
    questions = []
    for number in range(count):
        match number % 3:
            case 0:
                a, b = rng.randint(0, 6), rng.randint(0, 6)
                right = NUMBER_WORDS[a + b]
                wrong = rng.sample([w for w in NUMBER_WORDS if w != right], 3)
                context = f"Question: What is {a} plus {b}?\nAnswer:"
            case 1:
                country = rng.choice(list(CAPITALS))
                right = CAPITALS[country]
                wrong = [city for city in CAPITALS.values() if city != right][:2]
                context = f"Question: What is the capital of {country}?\nAnswer:"
            case _:
                right = rng.choice(COLOURS)
                wrong = [f"a {c} {rng.choice(['cat', 'mat', 'fox'])}" for c in COLOURS if c != right][:1]
                context = f"The colour of the {rng.choice(['sky', 'report', 'team'])} today is"
        choices = [right, *wrong]
        rng.shuffle(choices)
        questions.append(MultipleChoiceExample(context, tuple(choices), choices.index(right)))
    return questions


QUESTIONS = _questions(60, seed=0)
FEWSHOT_POOL = _questions(12, seed=1)


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def harness(tiny_model_dir: Path) -> dict[SpecialTokens, HFLM]:
    """lm-evaluation-harness's model, as it is run with its defaults, and with ``add_bos_token=False``."""
    return {
        convention: HFLM(
            pretrained=str(tiny_model_dir),
            backend="causal",
            device="cpu",
            dtype="float32",
            batch_size=8,
            add_bos_token=None if convention is SpecialTokens.TOKENIZER else False,
        )
        for convention in SpecialTokens
    }


def _harness_loglikelihoods(lm: HFLM, contexts: list[str]) -> list[list[float]]:
    requests = [
        Instance(
            request_type="loglikelihood", doc={}, arguments=(context, TARGET_DELIMITER + choice), idx=index
        )
        for context, question in zip(contexts, QUESTIONS, strict=True)
        for index, choice in enumerate(question.choices)
    ]
    flat = [loglikelihood for loglikelihood, _ in lm.loglikelihood(requests, disable_tqdm=True)]
    scores = []
    for question in QUESTIONS:
        scores.append(flat[: len(question.choices)])
        flat = flat[len(question.choices) :]
    return scores


def _harness_accuracy(scores: list[list[float]]) -> dict[str, float]:
    # As its multiple_choice process_results computes acc and acc_norm.
    acc, acc_norm = [], []
    for lls, question in zip(scores, QUESTIONS, strict=True):
        lengths = np.array([float(len(choice)) for choice in question.choices])
        acc.append(float(np.argmax(lls) == question.answer))
        acc_norm.append(float(np.argmax(np.array(lls) / lengths) == question.answer))
    return {"mc_acc": float(np.mean(acc)), "mc_acc_norm": float(np.mean(acc_norm))}


@pytest.mark.parametrize("num_fewshot", [0, 2])
@pytest.mark.parametrize("convention", list(SpecialTokens))
def test_loglikelihoods_and_accuracies_are_lm_evaluation_harnesss(engine, harness, convention, num_fewshot):
    model, tokenizer = engine
    contexts = fewshot_contexts(QUESTIONS, FEWSHOT_POOL, num_fewshot=num_fewshot, seed=1234)

    ours = choice_loglikelihoods(
        model, tokenizer, contexts, QUESTIONS, batch_size=8, special_tokens=convention
    )
    theirs = _harness_loglikelihoods(harness[convention], contexts)

    differences = [
        abs(a - b) for mine, its in zip(ours, theirs, strict=True) for a, b in zip(mine, its, strict=True)
    ]
    assert len(differences) == sum(len(q.choices) for q in QUESTIONS)
    assert max(differences) < LOGLIKELIHOOD_TOLERANCE
    accuracy = multiple_choice_accuracy(
        model,
        tokenizer,
        QUESTIONS,
        fewshot_pool=FEWSHOT_POOL,
        num_fewshot=num_fewshot,
        seed=1234,
        batch_size=8,
        special_tokens=convention,
    )
    assert accuracy == _harness_accuracy(theirs)


def test_the_two_conventions_score_differently_so_the_check_tells_them_apart(engine, harness):
    model, tokenizer = engine
    contexts = [question.context for question in QUESTIONS]

    with_bos = _harness_loglikelihoods(harness[SpecialTokens.TOKENIZER], contexts)
    ours_without = choice_loglikelihoods(
        model, tokenizer, contexts, QUESTIONS, batch_size=8, special_tokens=SpecialTokens.NONE
    )

    differences = [
        abs(a - b)
        for mine, its in zip(ours_without, with_bos, strict=True)
        for a, b in zip(mine, its, strict=True)
    ]
    assert max(differences) > 1e-3
