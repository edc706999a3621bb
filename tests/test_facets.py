"""Facet-decoupled attention: one pass equals P + Fk run alone, whatever the batch."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import numpy as np
import polars as pl

from flame_pipeline.config import load_profile
from flame_pipeline.files import write_parquet
from flame_pipeline.paths import Paths
from flame_pipeline.shards import iter_shards
from flame_pipeline.text import facets
from flame_pipeline.text.embed import embed
from flame_pipeline.llm_files import ModelNotFoundError
from flame_pipeline.text.llm import load_llm
from flame_pipeline.text.prompts import PromptBuilder, PromptTokens, prepare_caption
from profiles import profile_at

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
CAPTIONS = ["a red square",
            "two small blue circles to the left of a large green triangle on a white "
            "background, while a brown dog runs past them?"]
SETS = ["single", "short", "long"]


def load(llm: str, dtype: str = "fp32"):
    cfg = load_profile("tiny", PARAMS, overrides={"embed.llm": llm, "embed.dtype": dtype}).embed
    model, tok = load_llm(cfg)
    return cfg, model, PromptBuilder(tok, cfg.prompt_sets, cfg.max_tokens)


@pytest.fixture(scope="module", params=["fp32", "bf16"])
def tiny(request):
    return load("tiny-random", request.param)


def alone(model, row: PromptTokens, k: int, layer: int) -> torch.Tensor:
    """The reference: P + Fk as one plain causal sequence, no custom mask or positions."""
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([row.prefix + row.facets[k]]), output_hidden_states=True)
    return out.hidden_states[layer][0, -1].float()


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=0).item()


# the contract holds in fp32; bf16 keeps ~3 significant digits, so its bar is lower
BAR = {"fp32": 0.9999, "bf16": 0.999}


def check_equality(cfg, model, builder):
    for ps in SETS:
        rows = [builder.build(prepare_caption(c), ps) for c in CAPTIONS]
        got = facets.facet_embeddings(model, rows, cfg.layer)
        for row, emb in zip(rows, got):
            assert emb.shape == (len(row.facets), model.config.hidden_size)
            assert torch.allclose(emb.norm(dim=-1), torch.ones(len(row.facets)), atol=1e-5)
            for k in range(len(row.facets)):
                assert cos(emb[k], alone(model, row, k, cfg.layer)) >= BAR[cfg.dtype], (ps, k)


def test_a_list_of_layers_embeds_the_mean_of_their_hidden_states():
    """``embed.layer: [a, b]``: each facet's vector is the mean of hidden_states[a] and [b] at
    its last token, computed here with transformers on P + Fk alone, then normalised."""
    cfg, model, builder = load("tiny-random")
    rows = [builder.build(prepare_caption(c), "short") for c in CAPTIONS]
    got = facets.facet_embeddings(model, rows, [-2, 1])
    for row, emb in zip(rows, got):
        for k in range(len(row.facets)):
            a, b = alone(model, row, k, -2), alone(model, row, k, 1)
            want = torch.nn.functional.normalize((a + b) / 2, dim=0)
            assert torch.allclose(emb[k], want, atol=1e-5), k
            assert max(cos(emb[k], a), cos(emb[k], b)) < 0.999   # neither layer alone


def test_an_int_layer_is_the_hidden_state_of_that_layer_unchanged():
    """The single layer's vector, bit for bit as the one pass gives it before any averaging."""
    cfg, model, builder = load("tiny-random")
    rows = [builder.build(prepare_caption(c), "long") for c in CAPTIONS]
    b = facets.pack(rows)
    with torch.inference_mode():
        hidden = model(input_ids=b.input_ids, position_ids=b.position_ids, output_hidden_states=True,
                       attention_mask=facets.attention_mask(model, b, torch.device("cpu"),
                                                            torch.float32)).hidden_states[-2]
    want = torch.nn.functional.normalize(
        torch.stack([hidden[i, b.last[i]] for i in range(len(rows))]), dim=-1)
    for i, emb in enumerate(facets.facet_embeddings(model, rows, -2)):
        assert torch.equal(emb, want[i, :len(rows[i].facets)])


def test_mask_rules_on_a_small_layout():
    rows = [PromptTokens([1, 2], [[3, 4], [5]], False), PromptTokens([1], [[3]], False)]
    b = facets.pack(rows)
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 2], [0, 1, 0, 0, 0]]
    assert b.segments.tolist() == [[0, 0, 1, 1, 2], [0, 1, -1, -1, -1]]
    assert b.last.tolist() == [[3, 4], [1, 0]]
    ok = facets.allowed(b.segments, b.position_ids).int().tolist()
    assert ok[0] == [[1, 0, 0, 0, 0],
                     [1, 1, 0, 0, 0],
                     [1, 1, 1, 0, 0],
                     [1, 1, 1, 1, 0],
                     [1, 1, 0, 0, 1]]     # facet 2 sees P and itself, not facet 1
    assert ok[1] == [[1, 0, 0, 0, 0],
                     [1, 1, 0, 0, 0],
                     [0, 0, 1, 0, 0],     # pad queries see only themselves,
                     [0, 0, 0, 1, 0],     # no real query sees a pad key
                     [0, 0, 0, 0, 1]]
    mask = facets.additive_mask(torch.tensor(ok, dtype=torch.bool), torch.bfloat16)
    assert mask.shape == (2, 1, 5, 5) and mask.dtype == torch.bfloat16
    assert mask[0, 0, 0, 1].item() == torch.finfo(torch.bfloat16).min and mask[0, 0, 1, 0] == 0


def test_one_pass_equals_each_facet_alone_tiny_random(tiny):
    check_equality(*tiny)


def test_position_reset_is_what_makes_it_equal(tiny):
    """The reference's defect (positions not reset per facet) fails the same check."""
    cfg, model, builder = tiny
    row = builder.build(prepare_caption(CAPTIONS[0]), "short")
    b = facets.pack([row])
    with torch.inference_mode():
        out = model(input_ids=b.input_ids, position_ids=torch.arange(b.input_ids.shape[1])[None],
                    attention_mask=facets.attention_mask(model, b, b.input_ids.device,
                                                         model.dtype),
                    output_hidden_states=True)
    wrong = out.hidden_states[cfg.layer][0, b.last[0, 2]]
    assert cos(wrong, alone(model, row, 2, cfg.layer)) < BAR[cfg.dtype]


def reference_layout(model, row: PromptTokens, k: int, layer: int) -> torch.Tensor:
    """The reference code's layout, written out plainly for one facet: P + Fk as one causal
    sequence whose facet positions continue from where facets 1..k-1 end in the packed row."""
    start = len(row.prefix) + sum(len(f) for f in row.facets[:k])
    positions = list(range(len(row.prefix))) + list(range(start, start + len(row.facets[k])))
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([row.prefix + row.facets[k]]),
                    position_ids=torch.tensor([positions]), output_hidden_states=True)
    return out.hidden_states[layer][0, -1].float()


def test_continued_positions_equal_the_reference_layout(tiny):
    """``embed.positions: continue``: the one pass equals each facet run alone at the positions
    the reference gives it; the default (restart) does not, past the first facet."""
    cfg, model, builder = tiny
    for ps in SETS:
        rows = [builder.build(prepare_caption(c), ps) for c in CAPTIONS]
        got = facets.facet_embeddings(model, rows, cfg.layer, positions="continue")
        default = facets.facet_embeddings(model, rows, cfg.layer)
        for row, emb, restart in zip(rows, got, default):
            for k in range(len(row.facets)):
                want = reference_layout(model, row, k, cfg.layer)
                assert cos(emb[k], want) >= BAR[cfg.dtype], (ps, k)
                assert (cos(restart[k], want) >= BAR[cfg.dtype]) == (k == 0), (ps, k)


def test_reference_compat_stores_the_reference_layouts_raw_vectors(tmp_path):
    """``reference_compat: true`` (whatever the sections say) embeds every text of every plan
    entry as the reference lays it out, and stores the raw last-token vectors."""
    cfg = profile_at(tmp_path / "data", {"reference_compat": True, "embed.postprocess": "whiten"})
    assert (cfg.embed.positions, cfg.embed.postprocess, cfg.vision.projector_min_width) == (
        "continue", "none", 4096)
    table = pl.DataFrame({"key": ["a", "b"], "split": ["train", "train"], "caption": CAPTIONS,
                          "short_caption": ["A red square on white.", None],
                          "long_caption": [None, "Two blue circles sit left of a green triangle. "
                                                 "A brown dog runs past them."]})
    write_parquet(Paths.of(cfg).captions, table)
    embed(cfg)
    model, tok = load_llm(cfg.embed)
    builder = PromptBuilder(tok, cfg.embed.prompt_sets, cfg.embed.max_tokens)
    stored = {r["key"]: r for r in iter_shards(Paths.of(cfg).embed_shards)}
    for row in table.iter_rows(named=True):
        emb, valid, at = stored[row["key"]]["emb"].astype(np.float32), stored[row["key"]]["valid"], 0
        for entry in cfg.embed.plan:
            text = next((row[f] for f in (entry[0], *entry[2:]) if row[f] is not None), None)
            built = builder.build(prepare_caption(text), entry[1]) if text else None
            for k in range(len(cfg.embed.prompt_sets[entry[1]].facets)):
                assert valid[at] == (built is not None)
                if built is not None:
                    want = torch.nn.functional.normalize(reference_layout(model, built, k, cfg.embed.layer),
                                                       dim=0)
                    np.testing.assert_allclose(emb[at], want.numpy(), atol=2e-3)
                at += 1


def test_stored_embeddings_of_averaged_layers_record_the_list(tmp_path):
    """The embed stage with ``embed.layer: [-2, -3]`` stores the mean's vectors and records the
    list; training reads them with that list and refuses them with one of its layers."""
    from flame_pipeline.train.data import DataError, StoredEmbeddings

    cfg = profile_at(tmp_path / "data", {"embed.layer": [-2, -3], "embed.postprocess": "none",
                                         "embed.plan": [["caption", "single"]]})
    write_parquet(Paths.of(cfg).captions, pl.DataFrame({"key": ["a", "b"], "split": ["train"] * 2,
                                                        "caption": CAPTIONS}))
    embed(cfg)
    model, tok = load_llm(cfg.embed)
    builder = PromptBuilder(tok, cfg.embed.prompt_sets, cfg.embed.max_tokens)
    for row, caption in zip(iter_shards(Paths.of(cfg).embed_shards), CAPTIONS):
        want = facets.facet_embeddings(model, [builder.build(prepare_caption(caption), "single")],
                                       [-2, -3])[0]
        np.testing.assert_allclose(row["emb"].astype(np.float32), want.numpy(), atol=2e-3)
    assert StoredEmbeddings(cfg).meta["layer"] == [-2, -3]
    one = cfg.model_copy(update={"embed": cfg.embed.model_copy(update={"layer": -2})})
    with pytest.raises(DataError, match=r"'layer': \[-2, -3\]"):
        StoredEmbeddings(one)


def test_batch_independence(tiny):
    """A caption's embeddings do not change with the lengths of its batch mates."""
    cfg, model, builder = tiny
    target = builder.build(prepare_caption(CAPTIONS[1]), "long")
    short = builder.build(prepare_caption("a dot"), "long")
    longer = builder.build(prepare_caption(" ".join([CAPTIONS[1]] * 4)), "long")
    assert longer.n_tokens - target.n_tokens >= 60 and target.n_tokens - short.n_tokens >= 20
    solo = facets.facet_embeddings(model, [target], cfg.layer)[0]
    for mates in ([short, target, short], [longer, target], [short, longer, target]):
        got = facets.facet_embeddings(model, mates, cfg.layer)[mates.index(target)]
        assert min(cos(a, b) for a, b in zip(solo, got)) >= BAR[cfg.dtype]


def test_rows_with_different_facet_counts_share_a_batch(tiny):
    cfg, model, builder = tiny
    a = builder.build(prepare_caption(CAPTIONS[0]), "single")
    b = builder.build(prepare_caption(CAPTIONS[0]), "long")
    mixed = facets.facet_embeddings(model, [a, b], cfg.layer)
    assert [m.shape[0] for m in mixed] == [1, 7]
    assert cos(mixed[0][0], facets.facet_embeddings(model, [a], cfg.layer)[0][0]) >= BAR[cfg.dtype]


def test_sliding_window_layers_get_the_window_in_position_space():
    """Gemma 3's sliding layers: the one pass still equals each facet alone (window 4 is
    shorter than every sequence, so a mask without the window would differ)."""
    from transformers import AutoModel, Gemma3TextConfig

    config = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
                              head_dim=16, sliding_window=4, max_position_embeddings=128,
                              layer_types=["sliding_attention", "full_attention",
                                           "sliding_attention"])
    torch.manual_seed(0)
    model = AutoModel.from_config(config, attn_implementation="sdpa").eval()
    rows = [PromptTokens([1, 5, 6, 7, 8, 9, 10], [[11, 12, 13], [14, 15, 16, 17, 18]], False),
            PromptTokens([1, 5], [[11], [14, 15, 16, 17, 18, 19, 20]], False)]
    assert isinstance(facets.attention_mask(model, facets.pack(rows), torch.device("cpu"),
                                            torch.float32), dict)
    for row, emb in zip(rows, facets.facet_embeddings(model, rows, -2)):
        for k in range(len(row.facets)):
            assert cos(emb[k], alone(model, row, k, -2)) >= 0.9999
    b = facets.pack(rows[:1])     # control: the same mask without the window differs
    full = facets.additive_mask(facets.allowed(b.segments, b.position_ids), torch.float32)
    with torch.inference_mode():
        out = model(input_ids=b.input_ids, position_ids=b.position_ids, output_hidden_states=True,
                    attention_mask={"full_attention": full, "sliding_attention": full})
    assert cos(out.hidden_states[-2][0, b.last[0, 1]], alone(model, rows[0], 1, -2)) < 0.9999


@pytest.mark.slow
@pytest.mark.parametrize("llm,dtype", [("smollm2-135m", "fp32"), ("smollm2-135m", "bf16"),
                                       ("qwen2.5-0.5b", "fp32"), ("gemma3-270m", "fp32")])
def test_one_pass_equals_each_facet_alone_packaged_llm(llm, dtype):
    """Real weights (Llama, Qwen2 and Gemma 3 architectures), converted once from GGUF."""
    try:
        cfg, model, builder = load(llm, dtype)
    except ModelNotFoundError as err:   # the default LLM must be there; the others may not
        if llm == "smollm2-135m":
            raise
        pytest.skip(str(err))
    check_equality(cfg, model, builder)
    target = builder.build(prepare_caption(CAPTIONS[1]), "short")
    mates = [builder.build(prepare_caption("a dot"), "short"), target,
             builder.build(prepare_caption(" ".join([CAPTIONS[1]] * 6)), "short")]
    solo = facets.facet_embeddings(model, [target], cfg.layer)[0]
    got = facets.facet_embeddings(model, mates, cfg.layer)[1]
    assert min(cos(a, b) for a, b in zip(solo, got)) >= BAR[cfg.dtype]
