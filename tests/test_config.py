import pytest

from flame_pipeline.config import ConfigError, Profile, load_profile

PARAMS = "params.yaml"


@pytest.mark.parametrize("name", ["tiny", "default", "scenes", "paper"])
def test_every_profile_loads(name):
    cfg = load_profile(name, PARAMS)
    assert isinstance(cfg, Profile) and cfg.name == name
    assert cfg.data_dir == f"data/{name}"
    # the reference's prompt sets: 1 single, 3 short, 7 long facets
    assert {k: len(v.facets) for k, v in cfg.embed.prompt_sets.items()} == {"single": 1, "short": 3, "long": 7}


def test_paper_profile_is_the_reference_recipe():
    cfg = load_profile("paper", PARAMS)
    assert (cfg.vision.image_size, cfg.vision.patch_size, cfg.vision.hidden_size) == (224, 16, 768)
    assert cfg.train.batch_size == 3072 and cfg.train.warmup_steps == 2000
    assert cfg.train.betas == (0.9, 0.95) and cfg.train.weight_decay == 0.5 and cfg.train.positives == 6


def test_override_changes_value_and_hash():
    base = load_profile("tiny", PARAMS)
    cfg = load_profile("tiny", PARAMS, ["train.steps=9", "embed.layer=-3"])
    assert (cfg.train.steps, cfg.embed.layer) == (9, -3)
    assert cfg.params_hash() != base.params_hash()
    assert load_profile("tiny", PARAMS).params_hash() == base.params_hash()


@pytest.mark.parametrize("override, key", [
    (["train.stepz=3"], "train.stepz"),
    (["train.steps=abc"], "train.steps"),
    (["train.steps=-1"], "train.steps"),
    (["embed.dtype=fp64"], "embed.dtype"),
    (["download.sources=[{kind: nope}]"], "download.sources.0"),
    (["vision.image_size=3.5"], "vision.image_size"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_profile("tiny", PARAMS, override)
    assert key in str(err.value)


def test_a_list_of_layers_and_the_large_llm_options():
    cfg = load_profile("tiny", PARAMS, ["embed.layer=[-2, -4]"])
    assert cfg.embed.layer == [-2, -4]
    one = load_profile("tiny", PARAMS, ["embed.layer=[-2]"])   # one layer: the int, the same hash
    assert one.embed.layer == -2 and one.params_hash() == load_profile("tiny", PARAMS).params_hash()
    for bad, why in (("[]", "empty"), ("[-2, -2]", "repeat"), ("[-2, x]", "embed.layer")):
        with pytest.raises(ConfigError, match=why):
            load_profile("tiny", PARAMS, [f"embed.layer={bad}"])
    big = load_profile("default", PARAMS, ["embed.quantization=4bit", "embed.device_map=auto"])
    assert (big.embed.quantization, big.embed.device_map) == ("4bit", "auto")
    for over in (["embed.quantization=8bit"], ["embed.device_map=auto"]):
        with pytest.raises(ConfigError, match="tiny-random is built from a config"):
            load_profile("tiny", PARAMS, over)
    with pytest.raises(ConfigError, match="embed.quantization"):
        load_profile("default", PARAMS, ["embed.quantization=3bit"])


def test_unknown_profile_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        load_profile("huge", PARAMS)
    with pytest.raises(ConfigError, match="not found"):
        load_profile("tiny", tmp_path / "nope.yaml")
    bad = tmp_path / "p.yaml"
    bad.write_text("common: {}\nprofilez: {}\n")
    with pytest.raises(ConfigError, match="profilez"):
        load_profile("tiny", bad)


def test_override_syntax_error():
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_profile("tiny", PARAMS, ["train.steps"])


def test_query_prompt_sets_must_be_in_the_embedding_plan():
    """Queries go through sets whose post-processing is fitted on the plan's embeddings."""
    single = ["embed.plan=[[caption, single]]"]
    with pytest.raises(ConfigError, match=r"prompt set\(s\) \['long', 'short'\], which embed.plan does not"):
        load_profile("tiny", PARAMS, single)
    assert load_profile("tiny", PARAMS, single + ["eval.prompt_mode=single"]).embed.plan == [("caption", "single")]
    assert load_profile("tiny", PARAMS, single + ["embed.postprocess=none"]).eval.prompt_mode == "multi"
    with pytest.raises(ConfigError, match=r"\['long'\]"):
        load_profile("tiny", PARAMS, single + ["eval.prompt_mode=single",
                                               "eval.benchmarks=[{kind: compositional, prompt_set: long}]"])
