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
