from __future__ import annotations

import pytest
from pydantic import ValidationError

from workers.spec import (
    Heartbeat,
    JobOutcome,
    JobResult,
    JobSpec,
    LoraMethod,
    Resources,
    TrainingConfig,
)


def _spec(**overrides):
    fields = {
        "job_id": 1,
        "attempt": 1,
        "project": "demo",
        "base_model_uri": "runs:/abc/model",
        "dataset_uris": ["runs:/def/dataset/a.jsonl"],
        "config": {},
        "mlflow_experiment": "tuneyard/demo",
    }
    return JobSpec.model_validate(fields | overrides)


def test_defaults_are_a_lora_job_on_the_cpu_queue():
    spec = _spec()
    assert isinstance(spec.config.method, LoraMethod)
    assert spec.queue == "cpu"


def test_a_gpu_job_goes_to_the_gpu_queue_unless_a_queue_is_named():
    assert Resources(gpus=2).queue_name == "gpu"
    assert Resources(gpus=1, queue="h100").queue_name == "h100"


def test_the_method_is_chosen_by_name():
    assert TrainingConfig.model_validate({"method": {"name": "full"}}).method.name == "full"


@pytest.mark.parametrize(
    "method, defaults",
    [
        ({"name": "prefix_tuning"}, {"num_virtual_tokens": 20, "projection": False}),
        ({"name": "p_tuning"}, {"num_virtual_tokens": 20, "encoder_type": "mlp"}),
        ({"name": "prompt_tuning"}, {"num_virtual_tokens": 20, "init_text": None}),
        ({"name": "ia3"}, {"target_modules": None, "feedforward_modules": None}),
    ],
)
def test_every_method_has_sensible_defaults(method, defaults):
    chosen = TrainingConfig.model_validate({"method": method}).method
    assert {key: getattr(chosen, key) for key in defaults} == defaults


def test_the_default_objective_is_supervised_and_dpo_has_its_options():
    assert TrainingConfig().objective.name == "sft"
    dpo = TrainingConfig.model_validate({"objective": {"name": "dpo", "beta": 0.5, "loss_type": "ipo"}})
    assert (dpo.objective.beta, dpo.objective.loss_type) == (0.5, "ipo")


@pytest.mark.parametrize(
    "config, where",
    [
        ({"method": {"name": "qlora-9000"}}, "method"),
        ({"method": {"name": "lora", "r": 0}}, "r"),
        ({"method": {"name": "lora", "dropout": 1.5}}, "dropout"),
        ({"method": {"name": "lora", "target_modules": ["q_proj; rm -rf /"]}}, "target_modules"),
        (
            {"method": {"name": "ia3", "target_modules": ["k_proj"], "feedforward_modules": ["down_proj"]}},
            "down_proj",
        ),
        ({"method": {"name": "prefix_tuning", "num_virtual_tokens": 0}}, "num_virtual_tokens"),
        ({"method": {"name": "p_tuning", "encoder_type": "gru"}}, "encoder_type"),
        ({"method": {"name": "qlora"}}, "resources.gpus"),
        ({"objective": {"name": "dpo", "beta": 0}}, "beta"),
        ({"objective": {"name": "dpo", "loss_type": "magic"}}, "loss_type"),
        ({"objective": {"name": "ppo"}}, "objective"),
        ({"hyperparameters": {"learning_rate": -1}}, "learning_rate"),
        ({"hyperparameters": {"batch_size": 0}}, "batch_size"),
        ({"hyperparameters": {"epochs": "many"}}, "epochs"),
        ({"resources": {"gpus": -1}}, "gpus"),
        ({"resources": {"queue": "../etc"}}, "queue"),
        ({"unknown": 1}, "unknown"),
        ({"method": {"name": "full"}, "export": {"merge_adapter": True}}, "lora, ia3, not full"),
        (
            {"method": {"name": "qlora"}, "resources": {"gpus": 1}, "export": {"merge_adapter": True}},
            "not qlora",
        ),
        ({"method": {"name": "prefix_tuning"}, "export": {"merge_adapter": True}}, "merge_adapter"),
        ({"export": {"merge_adapter": "please"}}, "merge_adapter"),
    ],
)
def test_bad_configs_are_refused_naming_the_field(config, where):
    with pytest.raises(ValidationError) as info:
        TrainingConfig.model_validate(config)
    assert where in str(info.value)


def test_a_lora_or_ia3_adapter_can_be_merged_for_export():
    for method in ("lora", "ia3"):
        config = TrainingConfig.model_validate(
            {"method": {"name": method}, "export": {"merge_adapter": True}}
        )
        assert config.export is not None and config.export.merge_adapter


def test_a_spec_without_datasets_is_refused():
    with pytest.raises(ValidationError):
        _spec(dataset_uris=[])


def test_a_spec_from_another_schema_version_is_refused():
    with pytest.raises(ValidationError):
        _spec(schema_version=2)


def test_specs_are_frozen_and_round_trip_through_json():
    spec = _spec()
    with pytest.raises(ValidationError):
        spec.attempt = 2  # type: ignore[misc]
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec


def test_a_failed_result_must_say_why():
    with pytest.raises(ValidationError):
        JobResult(attempt=1, worker="w", outcome=JobOutcome.FAILED)
    assert JobResult(attempt=1, worker="w", outcome=JobOutcome.FAILED, error="boom").error == "boom"


def test_heartbeat_progress_is_a_fraction():
    with pytest.raises(ValidationError):
        Heartbeat(attempt=1, worker="w", progress=1.5)


def test_a_sweep_driver_and_only_a_sweep_driver_carries_a_sweep():
    sweep = {
        "search_space": {"hyperparameters.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2}},
        "objective_metric": "train_loss",
        "intermediate_metric": "loss",
        "direction": "minimize",
        "sampler": "tpe",
        "scheduler": "asha",
        "n_trials": 4,
        "max_concurrent_trials": 2,
        "seed": 0,
    }
    driver = _spec(kind="sweep-driver", sweep=sweep)
    assert JobSpec.model_validate_json(driver.model_dump_json()) == driver
    for kind, carried in [("sweep-driver", None), ("finetune", sweep)]:
        with pytest.raises(ValidationError, match="a sweep-driver job, and only one, carries 'sweep'"):
            _spec(kind=kind, sweep=carried)


def test_several_gpus_or_cpu_processes_launch_under_torchrun_and_one_does_not():
    assert (Resources().processes, Resources().launched) == (1, False)
    assert (Resources(gpus=1).processes, Resources(gpus=1).launched) == (1, False)
    assert (Resources(gpus=4).processes, Resources(gpus=4).launched) == (4, True)
    assert (Resources(cpu_processes=2).processes, Resources(cpu_processes=2).launched) == (2, True)
    assert Resources(gpus=4).distributed.name == "ddp"
    offloaded = Resources.model_validate({"gpus": 1, "distributed": {"name": "fsdp", "cpu_offload": True}})
    assert (offloaded.processes, offloaded.launched) == (1, True)
    zero = Resources.model_validate({"gpus": 8, "distributed": {"name": "deepspeed"}}).distributed
    assert (zero.stage, zero.cpu_offload) == (2, False)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"resources": {"gpus": 2, "cpu_processes": 2}}, "cpu_processes is for jobs without GPUs"),
        ({"resources": {"distributed": {"name": "deepspeed"}}}, "DeepSpeed needs CUDA GPUs"),
        ({"resources": {"gpus": 1, "distributed": {"name": "fsdp"}}}, "give it 2 or more, or cpu_offload"),
        (
            {"resources": {"cpu_processes": 2, "distributed": {"name": "fsdp", "cpu_offload": True}}},
            "a job without GPUs has none",
        ),
        ({"resources": {"gpus": 2, "distributed": {"name": "deepspeed", "stage": 4}}}, "stage"),
        ({"resources": {"gpus": 2, "distributed": {"name": "horovod"}}}, "horovod"),
        (
            {"resources": {"gpus": 2}, "hyperparameters": {"auto_find_batch_size": True}},
            "auto_find_batch_size works with one process",
        ),
        (
            {"method": {"name": "qlora"}, "resources": {"gpus": 2, "distributed": {"name": "fsdp"}}},
            "QLoRA's 4-bit weights cannot be sharded by FSDP",
        ),
        (
            {
                "resources": {"gpus": 2, "distributed": {"name": "deepspeed", "stage": 3}},
                "hyperparameters": {"validation_fraction": 0.1},
                "evaluation": {"metrics": ["perplexity"]},
            },
            "which DeepSpeed ZeRO stage 3 does not keep",
        ),
    ],
)
def test_a_distributed_setup_that_cannot_run_is_refused_with_the_reason(config, message):
    with pytest.raises(ValidationError, match=message):
        TrainingConfig.model_validate(config)


def test_a_ray_sweep_refuses_trials_of_several_processes():
    sweep = {
        "search_space": {"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3}},
        "objective_metric": "train_loss",
        "intermediate_metric": "loss",
        "direction": "minimize",
        "sampler": "tpe",
        "scheduler": "fifo",
        "n_trials": 2,
        "max_concurrent_trials": 1,
        "seed": 0,
    }
    with pytest.raises(ValidationError, match="train in one process each"):
        _spec(kind="sweep-driver", sweep=sweep, config={"resources": {"gpus": 2}})
    assert _spec(kind="sweep-driver", sweep=sweep, config={"resources": {"gpus": 1}}).sweep is not None


def test_each_methods_traits_live_on_its_class_and_decide_what_a_config_may_ask():
    from workers.spec import METHOD_CLASSES, method_names

    assert method_names("mergeable") == ["lora", "ia3"]
    assert method_names("trains_with_dpo") == ["lora", "qlora", "full"]
    assert method_names("quantized") == ["qlora"]
    assert method_names("prompt_learning") == ["prefix_tuning", "p_tuning", "prompt_tuning"]
    assert all(cls.title for cls in METHOD_CLASSES)
    merged = {"export": {"merge_adapter": True}}
    with pytest.raises(ValidationError, match="merge_adapter works with the methods lora, ia3, not full"):
        TrainingConfig.model_validate({"method": {"name": "full"}, **merged})
    with pytest.raises(ValidationError, match="DPO works with the methods lora, qlora, full, not p_tuning"):
        TrainingConfig.model_validate({"method": {"name": "p_tuning"}, "objective": {"name": "dpo"}})
    sharded = {"gpus": 2, "distributed": {"name": "fsdp"}}
    with pytest.raises(ValidationError, match="QLoRA's 4-bit weights cannot be sharded by FSDP"):
        TrainingConfig.model_validate({"method": {"name": "qlora"}, "resources": sharded})
