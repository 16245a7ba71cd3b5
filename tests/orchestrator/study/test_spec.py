import pytest

from orchestrator.study.spec import load_spec, parse_spec, presets
from trainables.errors import ConfigError

SPEC = """
name: tiny
trial: {dataset: faces, momentum: 0.9}
search_space:
  lr: {loguniform: [1.0e-4, 1.0e-1]}
  batch_size: {choice: [32, 64]}
coarse: {trials: 6, epochs: 3, scheduler: {grace_period: 1}}
fine: {trials: 2, epochs: 4}
"""


def test_presets_keep_the_seed_budget_and_search_the_knobs_beside_lr_and_l2():
    """cifar10 and faces search the network's knobs within the seed's stages; the -seed
    presets are the report's lr and l2 search, kept for comparison (faces-seed takes its lr
    range from the lr probe: the report's [1e-6, 1e-3] lies below the rates that learn faces)."""
    assert presets() == ["cifar10", "cifar10-seed", "faces", "faces-seed", "imagefolder"]
    assert load_spec("faces-seed").lr_auto
    assert load_spec("cifar10-seed").search_space["lr"] == {"loguniform": [1e-6, 1e-3]}
    for name in presets():
        spec = load_spec(name, data="/data/digits")
        assert spec.base_config().dataset == name.removesuffix("-seed")
        assert (spec.rounds, spec.cv, spec.min_rung_steps) == (2, "auto", 40)
        assert (spec.coarse.trials, spec.coarse.epochs) == (100, 5)
        assert (spec.fine.trials, spec.fine.epochs) == (30, 15)
        assert spec.narrowing.top_k == 10 and spec.coarse.scheduler.type == "asha"
        knobs = set(spec.search_space) - {"lr", "l2"}
        if name in ("cifar10", "faces"):
            assert spec.lr_auto and knobs == {"batch_norm", "augment", "lr_schedule", "width"}
            assert spec.search_space["width"] == {"choice": [1, 2]}
        else:
            assert not knobs and spec.search_space["l2"] == {"loguniform": [1e-5, 10.0]}


def test_a_budget_caps_trials_epochs_and_images_and_is_recorded():
    spec = load_spec("faces")
    smoke = spec.with_budget("smoke", train_images=5000)
    assert (smoke.coarse.trials, smoke.coarse.epochs, smoke.fine.trials) == (4, 1, 2)
    assert smoke.trial["train_subset"] == 600 and smoke.final_epochs == 2
    assert smoke.coarse.scheduler.grace_period <= smoke.coarse.epochs
    assert "budget: smoke" in smoke.to_yaml()
    demo = spec.with_budget("demo", train_images=5023)
    assert "train_subset" not in demo.trial  # the cap (10,000) is above the split's size
    assert spec.with_budget("full") == spec.model_copy(update={"budget": "full"})


def test_a_spec_needs_only_what_differs_from_the_recipe():
    """Own data in one line: the rest is the recipe (the presets' stages and ranges, lr from
    the lr probe), and the study is named after its data folder."""
    spec = parse_spec("trial: {dataset: imagefolder, data: /data/my digits.tar.gz}", "d.yaml")
    recipe = load_spec("faces-seed")
    assert spec.name == "my-digits" and spec.lr_auto
    assert (spec.search_space, spec.coarse, spec.fine) == (
        recipe.search_space,
        recipe.coarse,
        recipe.fine,
    )
    assert (spec.narrowing, spec.final_epochs) == (recipe.narrowing, recipe.final_epochs)
    assert load_spec("imagefolder", data="/d/faces-200/").name == "faces-200"
    assert parse_spec("coarse: {trials: 8, epochs: 3}", "s").name == "faces"  # the data set's


def test_every_mistake_of_a_spec_is_said_at_once():
    text = "trial: {dataset: imagefolder}\ncoarse: {trials: 0, epochs: 3}\nfin: {}\n"
    with pytest.raises(ConfigError) as info:
        parse_spec(text, "mine.yaml")
    assert str(info.value) == (
        "mine.yaml: trial: dataset imagefolder needs its folder of class folders: pass --data "
        "DIR or write trial.data; coarse.trials=0: Input should be greater than or equal to 1; "
        "unknown key 'fin'; remove it or fix the spelling"
    )


def test_a_valid_spec_parses_into_one_typed_object():
    spec = parse_spec(SPEC.replace("momentum: 0.9", "momentum: 0.9, lr: 3e-2"), "tiny.yaml")
    assert spec.base_config().lr == 0.03
    assert spec.space()["batch_size"].values == (32, 64)
    assert spec.base_config().momentum == 0.9
    assert spec.final_epochs == 4 and spec.retries == 2 and spec.resources.cpus_per_trial == 1


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("coarse: {", "coarse: {trails: 3, "), "unknown key 'coarse.trails'"),
        (("epochs: 3,", "epochs: three,"), "coarse.epochs='three'"),
        (("1.0e-4, 1.0e-1", "1.0e-1, 1.0e-4"), "need finite low < high"),
        (("{loguniform: [1.0e-4", "{loguniform: [0.0"), "a log range needs low > 0"),
        (("{choice: [32, 64]}", "{choice: [32, 0]}"), "allows 0: invalid batch_size=0"),
        (("  batch_size:", "  epochs:"), "'epochs' cannot be searched"),
        (("{loguniform:", "{lognormal:"), "unknown kind 'lognormal'"),
        (("momentum: 0.9", "momentum: 1.5"), "invalid momentum=1.5"),
        (("momentum: 0.9", "mementum: 0.9"), "unknown setting 'mementum'"),
        (("grace_period: 1", "grace_period: 5"), "grace_period=5 is more than coarse.epochs=3"),
        (
            ("grace_period: 1", "grace_period: 1, within: lr"),
            "coarse.scheduler.within=lr: must name a searched choice (searched choices: "
            "batch_size); write it as {choice: [...]} or drop within",
        ),
        (("epochs: 3,", "epochs: 0,"), "coarse.epochs=0: Input should be greater than"),
        (("search_space:", "search_space: ]"), "not valid YAML"),
        (("fine:", "sanity: {probe_steps: 2}\nfine:"), "sanity.probe_steps=2"),
        (("fine:", "outputs: {report: maybe}\nfine:"), "outputs.report='maybe'"),
    ],
)
def test_bad_specs_fail_with_one_line_naming_the_key_and_rule(edit, message):
    old, new = edit
    assert old in SPEC
    with pytest.raises(ConfigError) as info:
        parse_spec(SPEC.replace(old, new, 1), "tiny.yaml")
    text = str(info.value)
    assert text.startswith("tiny.yaml") and message in text and "\n" not in text


def test_outputs_and_default_sanity_settings_leave_the_study_the_same_study():
    """What tells studies apart (the MLflow spec_hash, the resume check) ignores the outputs
    and the sanity section when it says the defaults, as a spec written before them."""
    plain = parse_spec(SPEC, "s")
    same = parse_spec(SPEC + "outputs: {report: false}\nsanity: {probe_steps: 50}\n", "s")
    quicker = parse_spec(SPEC + "sanity: {probe_steps: 20}\n", "s")
    assert plain.digest() == same.digest() != quicker.digest()
    assert not same.outputs.report and plain.outputs.report and plain.outputs.mlflow_model


def test_an_unknown_study_names_the_presets(tmp_path):
    with pytest.raises(
        ConfigError,
        match="a preset \\(cifar10, cifar10-seed, faces, faces-seed, imagefolder\\) nor a spec",
    ):
        load_spec(str(tmp_path / "nope.yaml"))


def test_search_algorithms_are_checked_against_the_space():
    grid = SPEC.replace("{choice: [32, 64]}", "{grid: [32, 64]}")
    with pytest.raises(ConfigError, match="optuna cannot run grid parameters"):
        parse_spec(grid.replace("trials: 6,", "trials: 6, search: optuna,"), "s")
    with pytest.raises(ConfigError, match="needs at least one"):
        parse_spec(SPEC.replace("trials: 6,", "trials: 6, search: grid,"), "s")


def test_a_name_that_climbs_out_of_the_studies_folder_is_refused():
    with pytest.raises(ConfigError, match="name"):
        parse_spec(SPEC.replace("name: tiny", "name: ../../x"), "climb.yaml")


def test_a_yaml_alias_bomb_is_refused_without_being_expanded():
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        bomb.append(f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 9) + "]")
    with pytest.raises(ConfigError, match=r"bomb\.yaml: "):  # 9**9 leaves, never built
        parse_spec("\n".join(bomb) + "\n", "bomb.yaml")
