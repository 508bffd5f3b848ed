"""Training's data and configuration, without the model: the OpenI split, the abnormal-report weighting, --set."""

from pathlib import Path

from training.data import OPENI, load_split
from training.train import TrainConfig, parser


def test_openi_split_is_read_from_shared_and_cleaned():
    assert (OPENI / "reports.jsonl").is_file(), "CI must have ../shared beside the clone"
    valid = load_split("valid")
    assert len(valid) == 327
    assert all(len(r["findings"].split()) >= 10 and len(r["impression"].split()) >= 2 for r in valid)


def test_abnormal_reports_are_seen_more_often_when_asked():
    from training.train import epoch_pool

    records = [{"findings": "", "impression": "No acute cardiopulmonary abnormality."},
               {"findings": "", "impression": "Small left pleural effusion."},
               {"findings": "", "impression": "No pneumothorax or effusion."},
               {"findings": "", "impression": "Cardiomegaly. No edema."}]
    assert epoch_pool(TrainConfig(), records) == [0, 1, 2, 3]
    assert epoch_pool(TrainConfig(abnormal_weight=3), records) == [0, 1, 2, 3, 1, 3, 1, 3]


def test_every_set_override_is_kept():
    # Repeating --set used to keep only the last one, silently (a whole run trained with the config's weight).
    args = parser().parse_args(["--set", "abnormal_weight=6", "--set", "output_dir=runs/x", "epochs=1"])
    cfg = TrainConfig.load(Path(__file__).parents[2] / "training" / "configs" / "best.json", args.set)
    assert (cfg.abnormal_weight, cfg.output_dir, cfg.epochs) == (6, "runs/x", 1)


def test_every_config_and_gpu_spec_loads_and_says_what_it_updates():
    import pytest

    root = Path(__file__).parents[2] / "training"
    configs = {path.name: TrainConfig.load(path) for path in sorted((root / "configs").glob("*.json"))}
    assert {name for name, cfg in configs.items() if cfg.update == "full"} == {"full.json"}
    full = configs["full.json"]
    assert (full.learning_rate, full.epochs, full.abnormal_weight, full.weight_decay) == (5e-5, 3, 3, 0.0)
    # each line of a GPU spec is NAME CONFIG KEY=VALUE...: the runs many.sh would start must load here too
    for spec in sorted((root / "gpu").glob("*.spec")):
        for line in spec.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                name, config, *sets = line.split()
                TrainConfig.load(Path(__file__).parents[2] / config, sets)
    with pytest.raises(ValueError, match="update must be lora or full"):
        TrainConfig.from_dict({"update": "partial"})


def test_valid_parts_are_fixed_by_report_id_and_split_valid_in_two_halves():
    from training.data import valid_part

    valid = load_split("valid")
    parts = [valid_part(r["uid"]) for r in valid]
    assert set(parts) == {"tune", "confirm"}
    assert 140 <= parts.count("tune") <= 190  # about half (161 of 327)
    # a function of the id alone: the same answer in any order, from any file
    assert [valid_part(r["uid"]) for r in reversed(valid)] == parts[::-1]
    assert valid_part("CXR1000") == valid_part("CXR1000")


def test_length_buckets_cut_steps_from_sorted_windows_and_keep_every_example_once():
    from training.train import batch_plan

    lengths = [(i * 37) % 101 for i in range(256)]
    pool = list(range(256))
    plain = batch_plan(pool, TrainConfig(effective_batch=32, micro_batch=8), lengths, epoch=0)
    bucketed = batch_plan(pool, TrainConfig(effective_batch=32, micro_batch=8, length_buckets=8), lengths, epoch=0)
    for plan in (plain, bucketed):
        assert sorted(i for step in plan for mb in step for i in mb) == pool
    spread = lambda plan: sum(max(lengths[i] for mb in s for i in mb) - min(lengths[i] for mb in s for i in mb)  # noqa: E731
                              for s in plan)
    assert spread(bucketed) < spread(plain) / 4  # a step holds examples of similar length
    assert bucketed == batch_plan(pool, TrainConfig(effective_batch=32, micro_batch=8, length_buckets=8), lengths, 0)
    assert plain == batch_plan(pool, TrainConfig(effective_batch=32, micro_batch=8), lengths, 0)  # resumable

