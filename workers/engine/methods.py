"""Training methods: load the base model the way a method needs it, then wrap it with peft.

One function per method turns its spec class (``workers.spec``) into a peft
config; ``method_apply`` picks it by type. Full fine-tuning returns the model
as it is. QLoRA is the one method that changes how the base model is loaded
(4-bit NF4 through bitsandbytes), so loading lives here too.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from peft import (
    IA3Config,
    LoraConfig,
    PeftConfig,
    PeftModel,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptEncoderReparameterizationType,
    PromptTuningConfig,
    PromptTuningInit,
    TaskType,
    get_peft_model,
    prepare_model_for_kbit_training,
)
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from workers.engine import JobInputError
from workers.spec import (
    FullMethod,
    Ia3Method,
    LoraMethod,
    Method,
    PrefixTuningMethod,
    PromptTuningMethod,
    PTuningMethod,
    QLoraMethod,
)

if TYPE_CHECKING:
    from typing import TypeAlias

    from transformers import BitsAndBytesConfig, PreTrainedModel, PreTrainedTokenizerBase

    # A model the engine trains or scores: a transformers model, or one peft has wrapped
    # (a PeftModel forwards what it does not have itself to the model inside).
    Model: TypeAlias = PreTrainedModel | PeftModel


class BaseModelError(JobInputError):
    """The base model cannot be loaded or cannot take the chosen method."""


def model_load(
    base_model: Path | str, uri: str, method: Method, *, trust_remote_code: bool = False
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """The tokenizer and the base model, loaded as ``method`` needs it.

    A base model is data a user uploaded: its repository's Python runs only
    with ``trust_remote_code``, which a site admin allows per base model, and
    its weights load from safetensors only (a pickled checkpoint can run code
    when it is read).
    """
    quantization = _qlora_quantization(method) if isinstance(method, QLoraMethod) else None
    try:
        tokenizer = AutoTokenizer.from_pretrained(base_model, trust_remote_code=trust_remote_code)
        if quantization is None:
            # float32 on CPU (no fast half precision there); on a GPU, bf16 comes
            # from mixed precision in the Trainer, with float32 master weights.
            model = AutoModelForCausalLM.from_pretrained(
                base_model, trust_remote_code=trust_remote_code, use_safetensors=True, dtype=torch.float32
            )
        else:
            # The 4-bit weights live on the GPU from the start: the point of
            # QLoRA is a model too large to hold there in 16 bits.
            model = AutoModelForCausalLM.from_pretrained(
                base_model,
                trust_remote_code=trust_remote_code,
                use_safetensors=True,
                quantization_config=quantization,
                # The layers left unquantized (norms, embeddings) in the compute dtype too.
                dtype=quantization.bnb_4bit_compute_dtype,
                # Under torchrun each rank's own GPU (torch has not been told it yet).
                device_map={"": int(os.environ.get("LOCAL_RANK", "0"))},
            )
    except (OSError, ValueError) as exc:
        raise BaseModelError(f"cannot load base model {uri!r}: {first_line(exc)}") from exc
    return tokenizer, model


def _qlora_quantization(method: QLoraMethod) -> BitsAndBytesConfig:
    """The 4-bit NF4 loading config; refuses a host that cannot run it, before any download is read."""
    # The spec already refuses QLoRA for a job with no GPUs; this catches a
    # GPU job that landed on a host whose CUDA is missing or broken.
    if not torch.cuda.is_available():
        raise JobInputError("QLoRA needs a CUDA GPU, and this worker has none: run it on a GPU queue")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise JobInputError("QLoRA needs the bitsandbytes package, which is not installed on this worker")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=method.double_quant,
        # Matmuls in bf16 where the GPU has it: fp16 overflows more easily.
        bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16,
    )


def method_apply(
    model: PreTrainedModel,
    method: Method,
    *,
    base_model: Path | str,
    gradient_checkpointing: bool = False,
) -> Model:
    """``model`` ready to train with ``method``: wrapped in a PeftModel, or as it is for full fine-tuning."""
    if isinstance(method, FullMethod):
        return model
    if isinstance(method, QLoraMethod):
        # Casts norms to fp32 and makes the frozen 4-bit inputs carry gradients
        # to the adapters, as the QLoRA paper's recipe does.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    config = peft_config(method, base_model=base_model)
    try:
        return get_peft_model(model, config)
    except (ValueError, TypeError) as exc:
        # e.g. target modules that do not exist, or an architecture peft has no default for
        raise BaseModelError(f"cannot apply {method.name} to the base model: {first_line(exc)}") from exc


def peft_config(method: Method, *, base_model: Path | str) -> PeftConfig:
    """The peft config of an adapter method."""
    match method:
        case LoraMethod():  # QLoraMethod too: the same adapters, on a quantized base
            return LoraConfig(
                r=method.r,
                lora_alpha=method.alpha,
                lora_dropout=method.dropout,
                # None lets peft pick the usual projections for the architecture.
                target_modules=method.target_modules,
                task_type=TaskType.CAUSAL_LM,
            )
        case PrefixTuningMethod():
            return PrefixTuningConfig(
                task_type=TaskType.CAUSAL_LM,
                num_virtual_tokens=method.num_virtual_tokens,
                prefix_projection=method.projection,
                encoder_hidden_size=method.encoder_hidden_size,
            )
        case PTuningMethod():
            encoder = {
                "mlp": PromptEncoderReparameterizationType.MLP,
                "lstm": PromptEncoderReparameterizationType.LSTM,
            }[method.encoder_type]
            return PromptEncoderConfig(
                task_type=TaskType.CAUSAL_LM,
                num_virtual_tokens=method.num_virtual_tokens,
                encoder_hidden_size=method.encoder_hidden_size,
                encoder_reparameterization_type=encoder,
            )
        case PromptTuningMethod():
            if method.init_text is None:
                return PromptTuningConfig(
                    task_type=TaskType.CAUSAL_LM,
                    num_virtual_tokens=method.num_virtual_tokens,
                    prompt_tuning_init=PromptTuningInit.RANDOM,
                )
            return PromptTuningConfig(
                task_type=TaskType.CAUSAL_LM,
                num_virtual_tokens=method.num_virtual_tokens,
                prompt_tuning_init=PromptTuningInit.TEXT,
                prompt_tuning_init_text=method.init_text,
                # peft loads the tokenizer itself to embed the text: the local copy, not a hub id.
                tokenizer_name_or_path=str(base_model),
            )
        case Ia3Method():
            return IA3Config(
                task_type=TaskType.CAUSAL_LM,
                target_modules=method.target_modules,
                feedforward_modules=method.feedforward_modules,
            )
    raise BaseModelError(f"the method {method.name!r} trains no adapter")


def adapter_merge(
    adapter_dir: Path, base_model: Path | str, out_dir: Path, *, trust_remote_code: bool = False
) -> Path:
    """Fold a LoRA (or IA3) adapter into its base model and save the whole model as safetensors.

    The merged model needs no peft to serve. It is merged in float32 and saved
    in the base's own dtype (a bf16 base stays bf16), with the tokenizer the
    adapter was trained with (DPO, for one, gives it a pad token).
    Prompt-learning adapters (prefix, P-tuning, prompt tuning) add tokens
    instead of changing weights, so they cannot be merged.
    """
    try:
        tokenizer_source = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_model
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, trust_remote_code=trust_remote_code)
        saved_dtype = AutoConfig.from_pretrained(base_model, trust_remote_code=trust_remote_code).dtype
        base = AutoModelForCausalLM.from_pretrained(
            base_model, trust_remote_code=trust_remote_code, use_safetensors=True, dtype=torch.float32
        )
        model = PeftModel.from_pretrained(base, adapter_dir)
    except (OSError, ValueError) as exc:
        raise BaseModelError(f"cannot load the adapter with its base model: {first_line(exc)}") from exc
    if model.peft_config[model.active_adapter].is_prompt_learning:
        raise JobInputError("a prompt-learning adapter adds virtual tokens and cannot be merged into weights")
    merged = model.merge_and_unload()
    if isinstance(saved_dtype, torch.dtype) and saved_dtype.is_floating_point:
        merged = merged.to(saved_dtype)
    merged.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
