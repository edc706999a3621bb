"""``flame benchmark --prompt-set``: ``auto`` picks the set the evaluate stage would, checked on
validation scenes, Fashion-MNIST captions and class names; an explicit set is used for every text."""
from __future__ import annotations

import pytest

from eval_oracle import OracleVision, oracle_text
from flame_pipeline import cli
from flame_pipeline.config import load_profile
from flame_pipeline.data.packaged import FASHION_CLASSES
from flame_pipeline.data.scenes import SCENE_CLASSES, class_text, validation_scenes
from flame_pipeline.eval.encoders import EvalModel
from flame_pipeline.eval.prompt_sets import auto_set, encode_by_set
from flame_pipeline.eval import manifest
from flame_pipeline.eval.benchmark_files import Loaded, Row
from flame_pipeline.eval.user_benchmark import spec_for
from flame_pipeline.llm_files import load_tokenizer
from profiles import PARAMS

CFG = load_profile("tiny", PARAMS)
TOKENIZER = load_tokenizer(CFG.embed)


def auto(text: str, language: str = "en", mode: str = "multi") -> str:
    n = len(TOKENIZER(text, add_special_tokens=False)["input_ids"])
    return auto_set(text, language, n, CFG.curate.long_tokens, mode)


def test_auto_agrees_with_the_evaluate_stage_on_validation_data():
    """What the evaluate stage embeds through ``short`` / ``long`` / ``single`` (English short
    captions, long captions, non-English captions and class names), auto tells apart by look."""
    src = load_profile("scenes", PARAMS).download.sources[0]
    rows = list(validation_scenes(src, 0, 60))
    english = [r for r in rows if r.language == "en"]
    foreign = [r for r in rows if r.language != "en"]
    assert len(english) >= 10 and len(foreign) >= 40
    assert [auto(r.caption) for r in english] == ["short"] * len(english)
    assert [auto(r.long_caption) for r in english] == ["long"] * len(english)
    assert {auto(r.caption, r.language) for r in foreign} == {"single"}
    assert {auto(r.long_caption, r.language) for r in foreign} == {"single"}
    names = [class_text(task, c) for task, classes in SCENE_CLASSES.items() for c in classes]
    names += [label for label, _ in FASHION_CLASSES]
    assert {auto(n) for n in names} == {"single"}, [(n, auto(n)) for n in names if auto(n) != "single"]
    assert auto("a photo of a sandal.") == "short"           # Fashion-MNIST's captions
    assert auto("a" + " red cube" * 40) == "long"           # one sentence over curate.long_tokens
    assert auto("A red cube. A blue ball.", mode="single") == "single"


def test_encode_by_set_calls_each_set_once_and_keeps_the_order():
    calls = []

    def encode(texts, name):
        calls.append((name, texts))
        return oracle_text(texts)
    texts = ["a", "b", "c", "d"]
    out = encode_by_set(encode, texts, ["long", "short", "long", "single"])
    assert sorted(calls) == [("long", ["a", "c"]), ("short", ["b"]), ("single", ["d"])]
    assert (out == oracle_text(texts)).all()


@pytest.mark.parametrize("prompt_set", ["auto", "single", "short", "long"])
def test_benchmark_embeds_queries_through_the_chosen_set(prompt_set):
    rows = list(validation_scenes(CFG.download.sources[0], 0, 12))
    texts = [(r.caption, r.language) for r in rows] + [(r.long_caption, r.language) for r in rows
                                                        if r.language == "en"]
    image = {r.caption: r.image for r in rows} | {r.long_caption: r.image for r in rows}
    vision = OracleVision([(image[t], t) for t, _ in texts], CFG.vision.image_size)
    seen: dict[str, set] = {}
    model = EvalModel("flame", vision.encode_image, vision.pooled_features,
                      lambda t, s: ([seen.setdefault(x, set()).add(s) for x in t], oracle_text(t))[1],
                      CFG.vision.image_size, batch_size=8)
    loaded = Loaded(PARAMS, "manifest", rows=[
        Row(i, image[t], str(hash(image[t])), text=t, language=lang) for i, (t, lang) in enumerate(texts)])
    spec = spec_for(PARAMS, "manifest", prompt_set=prompt_set)
    out = manifest.score(CFG, spec, model, loaded)
    want = {t: (auto(t, lang) if prompt_set == "auto" else prompt_set) for t, lang in texts}
    assert {t: s for t, (s,) in seen.items()} == want
    assert out["retrieval/en"]["i2t_R@1"] == 100.0


def test_cli_takes_the_prompt_set(capsys):
    parsed = cli._parser().parse_args(["benchmark", "m.csv", "--prompt-set", "long"])
    assert parsed.prompt_set == "long"
    assert cli._parser().parse_args(["benchmark", "m.csv"]).prompt_set == "auto"
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["benchmark", "m.csv", "--prompt-set", "medium"])
