"""Each metric against its reference: the library the field uses, or the computation written out by hand.

The model is the tiny Llama built locally; its weights are random, so the
numbers mean nothing in themselves, but every one of them must equal what the
reference computes on the same model.
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from rouge_score.rouge_scorer import RougeScorer
from sacrebleu import corpus_bleu
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from tests.workers.engine.evaluation.by_hand import accuracy_by_hand, choice_loglikelihood_by_hand
from workers.engine import JobInputError
from workers.engine.data import tokenize
from workers.engine.evaluation import EvaluationDataError, multiple_choice
from workers.engine.evaluation.generation import generate
from workers.engine.evaluation.likelihood import perplexity
from workers.engine.evaluation.multiple_choice import (
    MultipleChoiceExample,
    encode_pair,
    fewshot_contexts,
    multiple_choice_accuracy,
    predicted_choices,
)
from workers.engine.evaluation.suite import EvaluationData, GenerationExample, evaluate
from workers.engine.evaluation.text import bleu, exact_match, normalize_answer, rouge
from workers.spec import EvaluationConfig, EvaluationMetric, JobOutcome, JobResult, SpecialTokens

# sacrebleu's own documented example: two reference streams, BLEU 48.53.
SACREBLEU_HYPOTHESES = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
SACREBLEU_REFERENCE_STREAMS = [
    ["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
    ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."],
]

SUMMARIES = [
    ("The quick brown dog jumps on the log.", "The quick brown fox jumps over the lazy dog"),
    ("A cat stayed on a mat.", "The cat sat on the mat all day and did not move."),
    ("Two plus three is five.", "Two plus three is five."),
    ("Merci.", "Thank you."),
]

VALIDATION_TEXTS = [
    "### Instruction:\nSay hello.\n\n### Response:\nHello! How can I help you today?",
    "Paris.",
    "The quick brown fox jumps over the lazy dog, and then it jumps back over it again.",
]

QUESTIONS = [
    MultipleChoiceExample(
        "Question: What is the capital of France?\nAnswer:", ("Paris", "London", "Rome"), 0
    ),
    MultipleChoiceExample("Question: How many legs has a cat?\nAnswer:", ("two", "four", "a great many"), 1),
    MultipleChoiceExample("Two plus three is", ("five", "six"), 0),
    MultipleChoiceExample("The weather today is", ("sunny", "a primary colour", "Friday"), 0),
    MultipleChoiceExample("Fine-tuning adapts a", ("pretrained model", "fox", "mat"), 0),
]
FEWSHOT_POOL = [
    MultipleChoiceExample("Question: Name a primary colour.\nAnswer:", ("Red", "Green tea"), 0),
    MultipleChoiceExample("Question: Translate 'Thank you' to French.\nAnswer:", ("Danke", "Merci"), 1),
    MultipleChoiceExample("Question: Which is a fruit?\nAnswer:", ("apple", "brick", "cloud"), 0),
    MultipleChoiceExample("One plus one is", ("two", "three"), 0),
]


@pytest.fixture(scope="module")
def tiny(demo_model_dir: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    model = AutoModelForCausalLM.from_pretrained(demo_model_dir, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(demo_model_dir)


# --- BLEU, ROUGE, exact match ------------------------------------------------


def test_bleu_is_sacrebleus_corpus_bleu_on_its_documented_example():
    per_prediction = [list(refs) for refs in zip(*SACREBLEU_REFERENCE_STREAMS, strict=True)]

    result = bleu(SACREBLEU_HYPOTHESES, per_prediction)

    assert result == {"bleu": corpus_bleu(SACREBLEU_HYPOTHESES, SACREBLEU_REFERENCE_STREAMS).score}
    assert round(result["bleu"], 2) == 48.53


def test_bleu_takes_a_single_reference_as_a_string_not_as_its_characters():
    result = bleu(SACREBLEU_HYPOTHESES, SACREBLEU_REFERENCE_STREAMS[0])

    assert result["bleu"] == corpus_bleu(SACREBLEU_HYPOTHESES, SACREBLEU_REFERENCE_STREAMS[:1]).score


def test_bleu_skips_the_missing_references_of_a_prediction_with_fewer():
    references = [["The dog bit the man.", "The dog had bit the man."], ["It was not unexpected."]]

    result = bleu(SACREBLEU_HYPOTHESES[:2], references)

    expected = corpus_bleu(
        SACREBLEU_HYPOTHESES[:2], [[refs[0] for refs in references], [references[0][1], None]]
    )
    assert result["bleu"] == expected.score


def test_rouge_is_rouge_scores_mean_f_measure():
    predictions = [prediction for prediction, _ in SUMMARIES]
    references = [reference for _, reference in SUMMARIES]
    scorer = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    scores = [scorer.score(reference, prediction) for prediction, reference in SUMMARIES]

    result = rouge(predictions, references)

    assert result == {
        name: sum(score[name].fmeasure for score in scores) / len(scores)
        for name in ("rouge1", "rouge2", "rougeL")
    }


def test_rouge_of_one_pair_is_its_hand_counted_overlap():
    # 9 reference and 8 predicted words: 6 shared words, 2 shared bigrams, a common subsequence of 5.
    result = rouge(["The quick brown dog jumps on the log."], ["The quick brown fox jumps over the lazy dog"])

    assert result["rouge1"] == pytest.approx(2 * 6 / (8 + 9), rel=1e-12)
    assert result["rouge2"] == pytest.approx(2 * 2 / (7 + 8), rel=1e-12)
    assert result["rougeL"] == pytest.approx(2 * 5 / (8 + 9), rel=1e-12)


def test_rouge_with_stemming_is_rouge_scores_with_stemming():
    scorer = RougeScorer(["rouge1"], use_stemmer=True)

    result = rouge(["the cats were jumping"], ["a cat jumps"], use_stemmer=True)

    assert result["rouge1"] == scorer.score("a cat jumps", "the cats were jumping")["rouge1"].fmeasure
    assert result["rouge1"] > rouge(["the cats were jumping"], ["a cat jumps"])["rouge1"]


def test_rouge_scores_each_prediction_against_its_best_reference():
    scorer = RougeScorer(["rougeL"])

    result = rouge(["Paris is the capital."], [["London is big.", "The capital is Paris."]])

    assert (
        result["rougeL"] == scorer.score("The capital is Paris.", "Paris is the capital.")["rougeL"].fmeasure
    )


def test_normalize_answer_strips_and_collapses_whitespace_and_case_folds_only_when_asked():
    assert normalize_answer("  Paris \n is\tbig  ") == "Paris is big"
    assert normalize_answer("Straße", ignore_case=True) == normalize_answer("STRASSE", ignore_case=True)
    assert normalize_answer("Paris") != normalize_answer("paris")


def test_exact_match_counts_predictions_equal_to_any_reference_after_normalization():
    predictions = [" Paris ", "paris", "Paris.", "five", "Merci"]
    references = ["Paris", "Paris", "Paris", ["5", "five"], "Danke"]

    assert exact_match(predictions, references) == {"exact_match": 2 / 5}
    assert exact_match(predictions, references, ignore_case=True) == {"exact_match": 3 / 5}


@pytest.mark.parametrize(
    ("predictions", "references", "reason"),
    [
        ([], [], "no predictions"),
        (["a", "b"], ["a"], "2 predictions but 1 references"),
        (["a"], [[]], "example 1 has no reference"),
    ],
)
def test_text_metrics_reject_what_they_cannot_score(predictions, references, reason):
    for metric in (bleu, rouge, exact_match):
        with pytest.raises(EvaluationDataError, match=reason) as error:
            metric(predictions, references)
        # The job's own data is wrong: it fails for good instead of being retried.
        assert isinstance(error.value, JobInputError)


def test_the_text_metrics_import_and_run_without_torch():
    code = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('django', 'torch', 'transformers'):\n"
        "            raise ImportError(name + ' is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from workers.engine.evaluation.text import bleu\n"
        "print(round(bleu(['the cat sat on the mat'], ['the cat sat on the mat'])['bleu'], 6))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "100.0"


# --- perplexity ---------------------------------------------------------------


def test_perplexity_is_exp_of_the_models_own_loss_weighted_by_predicted_tokens(tiny):
    model, tokenizer = tiny
    total_nll = predicted = 0.0
    with torch.no_grad():
        for example in tokenize(VALIDATION_TEXTS, tokenizer, max_seq_length=64):
            ids = torch.tensor([example["input_ids"]])
            # The model's loss is the mean over the tokens after the first.
            total_nll += model(input_ids=ids, labels=ids).loss.item() * (ids.shape[1] - 1)
            predicted += ids.shape[1] - 1

    result = perplexity(model, tokenizer, VALIDATION_TEXTS, max_seq_length=64, batch_size=2)

    assert result["eval_loss"] == pytest.approx(total_nll / predicted, rel=1e-6)
    assert result["perplexity"] == pytest.approx(math.exp(total_nll / predicted), rel=1e-6)


def test_perplexity_is_torch_cross_entropy_over_all_the_texts_as_one_corpus(tiny):
    model, tokenizer = tiny
    logits, targets = [], []
    with torch.no_grad():
        for example in tokenize(VALIDATION_TEXTS, tokenizer, max_seq_length=16):
            ids = torch.tensor(example["input_ids"])
            logits.append(model(input_ids=ids.unsqueeze(0)).logits[0, :-1])
            targets.append(ids[1:])
    expected = torch.nn.functional.cross_entropy(torch.cat(logits), torch.cat(targets)).item()

    result = perplexity(model, tokenizer, VALIDATION_TEXTS, max_seq_length=16, batch_size=3)

    assert result["eval_loss"] == pytest.approx(expected, rel=1e-6)


def test_perplexity_does_not_depend_on_the_batch_size(tiny):
    model, tokenizer = tiny

    one_by_one = perplexity(model, tokenizer, VALIDATION_TEXTS, max_seq_length=64, batch_size=1)
    together = perplexity(model, tokenizer, VALIDATION_TEXTS, max_seq_length=64, batch_size=8)

    assert together["perplexity"] == pytest.approx(one_by_one["perplexity"], rel=1e-6)


def test_scoring_leaves_a_training_model_training_and_computes_no_gradient(tiny):
    model, tokenizer = tiny
    model.train()
    try:
        perplexity(model, tokenizer, VALIDATION_TEXTS[:1], max_seq_length=64)
        assert model.training
        assert all(parameter.grad is None for parameter in model.parameters())
    finally:
        model.eval()


def test_perplexity_needs_validation_texts(tiny):
    model, tokenizer = tiny

    with pytest.raises(EvaluationDataError, match="no validation texts"):
        perplexity(model, tokenizer, [], max_seq_length=64)


# --- generation ---------------------------------------------------------------


def _greedy_by_hand(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, steps: int
) -> str:
    ids = tokenizer(prompt)["input_ids"]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            token = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
            new.append(token)
            if token == tokenizer.eos_token_id:
                break
    return tokenizer.decode(new, skip_special_tokens=True)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_generation_is_the_greedy_continuation_up_to_max_new_tokens(tiny, batch_size):
    model, tokenizer = tiny
    prompts = ["### Instruction:\nSay hello.\n\n### Response:\n", "Paris", "The quick brown fox jumps over"]

    predictions = generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=batch_size)

    assert predictions == [_greedy_by_hand(model, tokenizer, prompt, 6) for prompt in prompts]


# --- multiple choice ----------------------------------------------------------


def _model_picks(model, tokenizer, examples: list[MultipleChoiceExample]) -> list[int]:
    picks = []
    for example in examples:
        scores = [choice_loglikelihood_by_hand(model, tokenizer, example.context, c) for c in example.choices]
        picks.append(scores.index(max(scores)))
    return picks


@pytest.mark.parametrize("special_tokens", list(SpecialTokens))
def test_zero_shot_accuracy_equals_an_independent_per_choice_loop(tiny, special_tokens):
    model, tokenizer = tiny

    result = multiple_choice_accuracy(
        model, tokenizer, QUESTIONS, batch_size=4, special_tokens=special_tokens
    )

    assert result == accuracy_by_hand(
        model,
        tokenizer,
        [q.context for q in QUESTIONS],
        QUESTIONS,
        add_special_tokens=special_tokens is SpecialTokens.TOKENIZER,
    )


def test_by_default_the_tokenizers_bos_is_scored_and_the_old_convention_scores_without_it(tiny):
    model, tokenizer = tiny
    context, choice = QUESTIONS[0].context, " " + QUESTIONS[0].choices[0]

    with_bos = encode_pair(tokenizer, context, choice)
    without = encode_pair(tokenizer, context, choice, special_tokens=SpecialTokens.NONE)

    assert with_bos[0] == [tokenizer.bos_token_id, *without[0]]
    assert with_bos[1] == without[1]
    # A context that already starts with the BOS text is not given a second one.
    assert encode_pair(tokenizer, tokenizer.bos_token + context, choice) == with_bos
    scores = {
        convention: multiple_choice.choice_loglikelihoods(
            model, tokenizer, [context], [QUESTIONS[0]], batch_size=2, special_tokens=convention
        )
        for convention in SpecialTokens
    }
    assert scores[SpecialTokens.TOKENIZER] != scores[SpecialTokens.NONE]


def test_a_planted_wrong_answer_lowers_accuracy_by_one_example(tiny):
    model, tokenizer = tiny
    picks = _model_picks(model, tokenizer, QUESTIONS)
    # Every answer made the model's own pick, then one made another choice.
    agreed = [replace(question, answer=pick) for question, pick in zip(QUESTIONS, picks, strict=True)]
    planted = [*agreed[:-1], replace(agreed[-1], answer=(picks[-1] + 1) % len(agreed[-1].choices))]

    assert multiple_choice_accuracy(model, tokenizer, agreed)["mc_acc"] == 1.0
    assert multiple_choice_accuracy(model, tokenizer, planted)["mc_acc"] == (len(QUESTIONS) - 1) / len(
        QUESTIONS
    )


def test_k_shot_prompts_are_solved_pool_examples_drawn_with_the_seed():
    rng = random.Random(7)
    expected = []
    for question in QUESTIONS:
        shots = rng.sample(FEWSHOT_POOL, 2)
        expected.append("".join(f"{s.context} {s.choices[s.answer]}\n\n" for s in shots) + question.context)

    contexts = fewshot_contexts(QUESTIONS, FEWSHOT_POOL, num_fewshot=2, seed=7)

    assert contexts == expected
    solved = {f"{s.context} {s.choices[s.answer]}" for s in FEWSHOT_POOL}
    for context, question in zip(contexts, QUESTIONS, strict=True):
        *shots, own = context.split("\n\n")
        assert own == question.context
        assert len(set(shots)) == 2 and set(shots) <= solved
    assert fewshot_contexts(QUESTIONS, FEWSHOT_POOL, num_fewshot=2, seed=8) != contexts


def test_k_shot_accuracy_equals_the_independent_loop_on_the_k_shot_prompts(tiny):
    model, tokenizer = tiny
    contexts = fewshot_contexts(QUESTIONS, FEWSHOT_POOL, num_fewshot=3, seed=1234)

    result = multiple_choice_accuracy(
        model, tokenizer, QUESTIONS, fewshot_pool=FEWSHOT_POOL, num_fewshot=3, seed=1234, batch_size=5
    )

    assert result == accuracy_by_hand(model, tokenizer, contexts, QUESTIONS)


def test_acc_norm_divides_each_score_by_the_choices_length_in_characters():
    # Raw log-likelihood favours the short choice; per character, the long one.
    assert predicted_choices([-10.0, -12.0], ["a", "much longer"]) == (0, 1)
    # Characters, not UTF-8 bytes: "éé" is 2 long, so -7/2 loses to -3/1 (by its 4 bytes it would win).
    assert predicted_choices([-3.0, -7.0], ["x", "éé"]) == (0, 0)
    # Ties go to the first choice, as numpy.argmax does.
    assert predicted_choices([-1.0, -1.0], ["ab", "cd"]) == (0, 0)


def test_whitespace_ending_a_context_moves_to_the_continuation(tiny):
    _, tokenizer = tiny

    assert encode_pair(tokenizer, "Answer: ", "Paris") == encode_pair(tokenizer, "Answer:", " Paris")


def test_a_sequence_longer_than_the_context_window_loses_tokens_on_the_left(tiny, monkeypatch):
    model, tokenizer = tiny
    context, choice = "The quick brown fox jumps over the lazy dog. " * 3 + "Paris is", "the capital"
    whole = tokenizer(f"{context} {choice}", add_special_tokens=False)["input_ids"]
    continuation = len(whole) - len(tokenizer(context, add_special_tokens=False)["input_ids"])
    # Room for the choice and a few tokens of its context, of the dozens there are.
    window = continuation + 4
    monkeypatch.setattr(multiple_choice, "context_window", lambda model: window)
    kept = whole[-(window + 1) :]  # the window, plus the last token, which is predicted but never read
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([kept[:-1]])).logits[0], dim=-1)
    expected = sum(logprobs[i - 1, kept[i]].item() for i in range(len(kept) - continuation, len(kept)))

    [[score, _]] = multiple_choice.choice_loglikelihoods(
        model, tokenizer, [context], [MultipleChoiceExample(context, (choice, "x"), 0)], batch_size=2
    )

    assert score == pytest.approx(expected, rel=1e-5)


def test_an_empty_context_is_the_bos_token(tiny):
    _, tokenizer = tiny

    context_ids, continuation_ids = encode_pair(tokenizer, "", " Paris")

    assert context_ids == [tokenizer.bos_token_id]
    assert continuation_ids == tokenizer(" Paris", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize(
    ("examples", "num_fewshot", "reason"),
    [
        ([], 0, "there is no example"),
        ([MultipleChoiceExample("Q", ("a", "b"), 2)], 0, "example 1's answer 2 is not one of its choices"),
        ([MultipleChoiceExample("Q", ("a",), 0)], 0, "fewer than two choices"),
        ([MultipleChoiceExample("Q", ("a", ""), 0)], 0, "an empty choice"),
        (QUESTIONS, 5, "5-shot needs 5 few-shot examples; the pool has 4"),
    ],
)
def test_multiple_choice_rejects_what_it_cannot_score(tiny, examples, num_fewshot, reason):
    model, tokenizer = tiny

    with pytest.raises(EvaluationDataError, match=reason):
        multiple_choice_accuracy(
            model, tokenizer, examples, fewshot_pool=FEWSHOT_POOL, num_fewshot=num_fewshot
        )


# --- the whole evaluation -------------------------------------------------------


def test_evaluate_returns_every_chosen_metric_as_floats_a_job_result_accepts(tiny):
    model, tokenizer = tiny
    config = EvaluationConfig(metrics=list(EvaluationMetric), max_new_tokens=5, num_fewshot=2, seed=3)
    generation = [
        GenerationExample("### Instruction:\nSay hello.\n\n### Response:\n", ("Hello!",)),
        GenerationExample("What is the capital of France?", ("Paris.", "Paris")),
    ]
    data = EvaluationData(VALIDATION_TEXTS, generation, QUESTIONS, FEWSHOT_POOL)

    metrics = evaluate(model, tokenizer, config, data)

    predictions = generate(model, tokenizer, [g.prompt for g in generation], max_new_tokens=5)
    references = [g.references for g in generation]
    assert metrics == {
        **perplexity(model, tokenizer, VALIDATION_TEXTS, max_seq_length=config.max_seq_length),
        **bleu(predictions, references),
        **rouge(predictions, references),
        **exact_match(predictions, references),
        **multiple_choice_accuracy(
            model, tokenizer, QUESTIONS, fewshot_pool=FEWSHOT_POOL, num_fewshot=2, seed=3
        ),
        # Whole answers compared exactly, as exact match compares them.
        "answer_accuracy": exact_match(predictions, references)["exact_match"],
    }
    assert all(type(value) is float for value in metrics.values())
    JobResult(attempt=1, worker="w", outcome=JobOutcome.SUCCEEDED, metrics=metrics)


def test_evaluate_computes_only_the_chosen_metrics(tiny):
    model, tokenizer = tiny
    config = EvaluationConfig(metrics=[EvaluationMetric.MULTIPLE_CHOICE])

    metrics = evaluate(model, tokenizer, config, EvaluationData(multiple_choice=QUESTIONS))

    assert set(metrics) == {"mc_acc", "mc_acc_norm"}


def test_a_chosen_generation_metric_without_generation_examples_fails_with_a_reason(tiny):
    model, tokenizer = tiny
    config = EvaluationConfig(metrics=[EvaluationMetric.ROUGE])

    with pytest.raises(EvaluationDataError, match="need generation examples"):
        evaluate(model, tokenizer, config, EvaluationData(validation_texts=VALIDATION_TEXTS))


def test_evaluation_config_is_strict_and_frozen():
    config = EvaluationConfig()
    assert config.metrics == [EvaluationMetric.PERPLEXITY]
    assert not config.generates
    assert EvaluationConfig(metrics=["exact_match"]).generates
    with pytest.raises(ValidationError, match="listed twice"):
        EvaluationConfig(metrics=["bleu", "bleu"])
    with pytest.raises(ValidationError):
        EvaluationConfig(metrics=["accuracy"])
    with pytest.raises(ValidationError):
        EvaluationConfig(temperature=0.7)
    with pytest.raises(ValidationError):
        config.num_fewshot = 5
