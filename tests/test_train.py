"""Recipes, configs, checkpoints and the training loop (tiny models, synthetic data)."""
import pytest
import torch
import yaml

from sepkit.train import CheckpointError, ConfigError, load_recipe, load_weights, resolve_checkpoint, save_checkpoint, train
from sepkit.train.builders import build_model
from sepkit.train.tasks import make_task
from sepkit.train.checkpoint import LATEST, load_state
from sepkit.train.config import recipes_dir

RECIPES = sorted(p.stem for p in recipes_dir().glob("*.yaml"))
# a few-second configuration of the demo preset
TINY = [
    "data.dataset=synthetic", "data.segment=0.25", "data.batch_size=2", "data.synthetic.num_train=8", "data.synthetic.num_valid=2",
    "data.synthetic.num_test=2", "data.synthetic.min_duration=0.3", "data.synthetic.max_duration=0.4",
    "model.args.n_filters=16", "model.args.bottleneck=8", "model.args.hidden=16", "model.args.skip=8",
    "model.args.layers=2", "model.args.repeats=1", "train.log_every=1", "train.eval_every=2", "train.ckpt_every=2",
]


def test_every_recipe_and_preset_loads_and_builds():
    """Every recipe and preset loads and its task accepts it; the separation recipes' demo
    models build and run (method recipes build theirs in their own tests: some need a
    prerequisite trained first)."""

    assert {"convtasnet", "dprnn", "sepformer", "bilstm"} <= set(RECIPES)
    for name in RECIPES:
        raw = yaml.safe_load((recipes_dir() / f"{name}.yaml").read_text())
        for preset in [None, *(raw.get("presets") or {})]:
            make_task(load_recipe(name, preset=preset))
        demo = load_recipe(name, preset="demo")
        assert demo.data.dataset in ("synthetic", "spoken"), name
        if demo.task == "separation":
            model = build_model(demo.model, demo.data)
            assert model(torch.randn(1, 1003)).shape == (1, demo.data.n_src, 1003)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(overrides=["train.max_step=3"]), "train has no key max_step"),
        (dict(overrides=["trainer.max_steps=3"]), "unknown section 'trainer'"),
        (dict(overrides=["train.max_steps"]), "not of the form key=value"),
        (dict(preset="huge"), "no preset 'huge'"),
    ],
)
def test_config_errors_name_the_key(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        load_recipe("convtasnet", **kwargs)


def test_unknown_key_in_a_config_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        load_recipe("convtasnet", config_file=bad)
    with pytest.raises(ConfigError, match="unknown recipe 'nope'"):
        load_recipe("nope")


def test_recipes_are_found_by_name_in_sepkit_recipes_or_by_path(tmp_path, monkeypatch):
    own = tmp_path / "mine"
    own.mkdir()
    text = (recipes_dir() / "convtasnet.yaml").read_text().replace("recipe: convtasnet-librimix", "recipe: mine")
    (own / "mytasnet.yaml").write_text(text)
    monkeypatch.setenv("SEPKIT_RECIPES", str(own))
    assert load_recipe("mytasnet").recipe == "mine"
    assert load_recipe(str(own / "mytasnet.yaml"), preset="demo").recipe == "convtasnet-demo"
    assert load_recipe("convtasnet").recipe == "convtasnet-librimix"  # the checkout's recipes still resolve
    with pytest.raises(ConfigError, match="mytasnet"):  # the error lists what is available
        load_recipe("mytasnett")


def test_overrides_parse_yaml_scalars():
    cfg = load_recipe("convtasnet", "demo", ["optim.lr=3e-4", "data.segment=null", "model.args.layers=2"])
    assert cfg.optim.lr == 3e-4 and cfg.data.segment is None and cfg.model.args["layers"] == 2


def _tiny(*extra):
    return load_recipe("convtasnet", "demo", TINY + list(extra))


def _weights(run_dir):
    from safetensors.torch import load_file

    return load_file(str(resolve_checkpoint(run_dir) / "model.safetensors"))


def test_resume_continues_bit_for_bit(tmp_path):
    straight = tmp_path / "straight"
    train(_tiny("train.max_steps=4"), straight, progress=False, test=False)
    split = tmp_path / "split"
    train(_tiny("train.max_steps=2"), split, progress=False, test=False)
    train(_tiny("train.max_steps=4"), split, resume=True, progress=False, test=False)
    a, b = _weights(straight), _weights(split)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (split / "metrics.csv").read_text().count("\n") > 4


def test_train_refuses_to_overwrite_a_run(tmp_path):
    train(_tiny("train.max_steps=2"), tmp_path, progress=False, test=False)
    before = _weights(tmp_path)
    with pytest.raises(CheckpointError, match="already holds a training run"):
        train(_tiny("train.max_steps=2"), tmp_path, progress=False, test=False)
    after = _weights(tmp_path)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_with_another_model_is_refused(tmp_path):
    train(_tiny("train.max_steps=2"), tmp_path, progress=False, test=False)
    with pytest.raises(CheckpointError, match="other arguments"):
        train(_tiny("train.max_steps=4", "model.args.hidden=32"), tmp_path, resume=True, progress=False, test=False)


def test_interrupted_save_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = _tiny()
    model = build_model(cfg.model, cfg.data)
    good = save_checkpoint(tmp_path, 1, model, make_task(cfg).model_meta(), cfg.to_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, model, make_task(cfg).model_meta(), cfg.to_dict())
    monkeypatch.undo()
    assert resolve_checkpoint(tmp_path) == good
    assert (tmp_path / "checkpoints" / LATEST).read_text().strip() == "step-0000001"
    fresh = build_model(cfg.model, cfg.data)
    load_weights(good, fresh)
    assert load_state(good)["step"] == 1
    assert not any(p.name.startswith(".step-0000002") for p in (tmp_path / "checkpoints").iterdir())


def test_corrupt_and_foreign_checkpoints_are_named(tmp_path):
    cfg = _tiny()
    model = build_model(cfg.model, cfg.data)
    ckpt = save_checkpoint(tmp_path, 1, model, make_task(cfg).model_meta(), cfg.to_dict())
    other = build_model(load_recipe("dprnn", "demo").model, cfg.data)
    with pytest.raises(CheckpointError, match="different model"):
        load_weights(ckpt, other)
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_weights(ckpt, model)
    (ckpt / "state.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_state(ckpt)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        resolve_checkpoint(tmp_path / "nowhere")


def test_config_types_are_checked():
    with pytest.raises(ConfigError, match="train.max_steps must be int"):
        load_recipe("convtasnet", overrides=["train.max_steps=many"])
    with pytest.raises(ConfigError, match="data.batch_size must be int"):
        load_recipe("convtasnet", overrides=["data.batch_size=2.5"])
