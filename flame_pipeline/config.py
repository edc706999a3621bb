"""Typed configuration: params.yaml profiles validated into frozen pydantic models.

An unknown key, a wrong type or a float that is not finite (inf, NaN) is a ``ConfigError``
naming the key, and a YAML syntax error one naming the file (or the override), line and column,
raised before any work starts.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator,
                      model_serializer, model_validator)


class ConfigError(ValueError):
    """A params.yaml problem, with the dotted key that caused it."""


class Section(BaseModel):
    # allow_inf_nan=False: every float (rates, scales, sizes, fractions, timeouts) must be finite
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


# ---------------------------------------------------------------- download sources
class ScenesSource(Section):
    kind: Literal["scenes"] = "scenes"
    n_train: int = Field(2000, ge=0)
    n_test: int = Field(500, ge=0)
    image_size: int = Field(64, ge=16)
    languages: list[str] = ["en", "de", "fr", "es"]
    # fraction of training scenes captioned in a language other than English
    train_foreign_fraction: float = Field(0.0, ge=0.0, le=1.0)
    hard_negatives: bool = True


class EmojiSource(Section):
    kind: Literal["emoji"] = "emoji"
    limit: int = Field(1000, ge=0)          # emoji drawn; each gives one row per language
    image_size: int = Field(64, ge=16)
    languages: list[str] = Field(["en", "de", "fr", "es"], min_length=1)
    test_fraction: float = Field(0.2, ge=0.0, le=1.0)
    font: str = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"


EMOJI_LOCALES = ["en", "bn", "da", "de", "es", "es-mx", "et", "fi", "fr", "hi", "hu", "it", "ja", "ko",
                 "lt", "ms", "nb", "nl", "pl", "pt", "ru", "sv", "th", "uk", "vi", "zh", "zh-hant"]
Designer = Literal["apple", "google", "twitter", "facebook", "openmoji"]


class EmojiArtSource(Section):
    """Emoji drawn by several designers, CLDR names in many locales (data/emoji_art.py)."""
    kind: Literal["emoji_art"] = "emoji_art"
    root: str = "packages/npm"              # where scripts/setup.sh installs requirements-npm.txt
    designers: list[Designer] = Field(["apple", "google", "twitter", "facebook"], min_length=1)
    held_out_designer: Designer | None = "openmoji"   # never in training; its own test source
    locales: list[str] = Field(EMOJI_LOCALES, min_length=1)   # names of val/test concepts
    n_test: int = Field(300, ge=0)          # concepts held out for testing (all their styles)
    n_val: int = Field(200, ge=0)           # concepts held out for choosing settings
    n_train: int | None = Field(None, ge=1)  # training concepts (None: all the others)
    image_size: int = Field(64, ge=16)

    @model_validator(mode="after")
    def _check(self) -> "EmojiArtSource":
        if "en" not in self.locales:
            raise ValueError("locales must include 'en': training captions are English")
        if self.held_out_designer in self.designers:
            raise ValueError(f"held_out_designer {self.held_out_designer!r} is also in designers")
        if len(set(self.designers)) != len(self.designers) or len(set(self.locales)) != len(self.locales):
            raise ValueError("designers and locales must not repeat")
        return self


class OpenClipartSource(Section):
    kind: Literal["openclipart"] = "openclipart"
    limit: int = Field(1000, ge=0)          # PNG files, in a fixed hash order
    image_size: int = Field(64, ge=16)
    root: str = "/usr/share/openclipart"
    test_fraction: float = Field(0.1, ge=0.0, le=1.0)


class FashionMnistSource(Section):
    kind: Literal["fashion_mnist"] = "fashion_mnist"
    n_train: int = Field(1000, ge=0)
    n_test: int = Field(500, ge=0)
    root: str = "/usr/share/datasets/fashion-mnist"


class UrlListSource(Section):
    kind: Literal["url_list"] = "url_list"
    path: str
    header: bool = True             # false: columns are named column_1, column_2, ... (CC3M's TSV)
    url_column: str = "url"
    caption_column: str = "caption"
    workers: int = Field(16, ge=1)
    timeout_s: float = Field(10.0, gt=0)
    retries: int = Field(3, ge=0)
    backoff_s: float = Field(0.5, ge=0)
    max_bytes: int = Field(20_000_000, ge=1)
    group_column: str | None = None  # rows sharing its value go to one split (same product, concept)
    # recaptions (docs/DOWNLOAD.md#recaptions): columns holding a row's short and long caption,
    # the column holding its sample key (else its row number, as its key writes it) and a table
    short_caption_column: str | None = None
    long_caption_column: str | None = None
    key_column: str | None = None
    recaptions: str | None = None   # .json / .jsonl / .parquet: sample key -> short, long


class WebDatasetSource(Section):
    kind: Literal["webdataset"] = "webdataset"
    paths: list[str]
    max_bytes: int = Field(20_000_000, ge=1)  # a larger member rejects its sample unread
    group_key: str | None = None    # key of the sample's .json whose value groups samples for the split
    recaptions: str | None = None   # .json / .jsonl / .parquet: sample key (__key__) -> short, long


class FolderSource(Section):
    kind: Literal["folder"] = "folder"
    path: str
    max_bytes: int = Field(20_000_000, ge=1)  # a larger image or caption file is rejected unread
    group_key: str | None = None    # key of the image's sidecar .json whose value groups images for the split
    recaptions: str | None = None   # .json / .jsonl / .parquet: image path without suffix -> short, long


Source = Annotated[
    Union[ScenesSource, EmojiSource, EmojiArtSource, OpenClipartSource, FashionMnistSource, UrlListSource,
          WebDatasetSource, FolderSource],
    Field(discriminator="kind"),
]


class DownloadConfig(Section):
    sources: list[Source]
    max_side: int = Field(256, ge=8)          # stored images are resized to fit this
    max_pixels: int = Field(50_000_000, ge=1)  # decompression-bomb guard
    min_side: int = Field(8, ge=1)            # smaller images are rejected as "too small"
    chunk_size: int = Field(1000, ge=1)       # rows per resumable unit of work
    # how stored images are encoded (data/images.py): lossless WebP keeps PNG's pixels in fewer
    # bytes; JPEG or lossy WebP at a quality of 1-100 trade pixels for bytes
    image_format: Literal["png", "jpeg", "webp"] = "webp"
    image_quality: int | Literal["lossless"] = "lossless"

    @model_validator(mode="after")
    def _quality_fits(self) -> "DownloadConfig":
        q = self.image_quality
        if q != "lossless" and not 1 <= q <= 100:
            raise ValueError(f"image_quality {q}: give 1-100 or lossless")
        if self.image_format == "jpeg" and q == "lossless":
            raise ValueError("image_format jpeg has no lossless mode: set image_quality to 1-100 "
                             "(e.g. 90), or use webp or png")
        if self.image_format == "png" and q != "lossless":
            raise ValueError(f"image_format png is always lossless: image_quality {q} would be "
                             "ignored; use jpeg or webp, or image_quality lossless")
        return self


class CurateConfig(Section):
    min_chars: int = Field(3, ge=0)
    max_chars: int = Field(4000, ge=1)
    near_dup_threshold: float = Field(0.9, gt=0.0, le=1.0)
    long_tokens: int = Field(77, ge=1)         # captions longer than this count as "long"
    test_fraction: float = Field(0.1, ge=0.0, le=1.0)  # for rows whose source set no split
    val_fraction: float = Field(0.0, ge=0.0, le=1.0)   # likewise: a validation split ("val")
    boilerplate_patterns: list[str] = []

    @model_validator(mode="after")
    def _fractions_fit(self) -> "CurateConfig":
        if self.test_fraction + self.val_fraction > 1.0:
            raise ValueError(f"test_fraction + val_fraction = {self.test_fraction + self.val_fraction:g} "
                             "is more than 1")
        return self


class PromptSet(Section):
    prefix: str          # contains the literal {caption}
    facets: list[str]


CaptionField = Literal["caption", "short_caption", "long_caption"]
# (field, prompt set) or (field, prompt set, fallback field embedded where a sample has no field);
# Strict(False): params.yaml writes each entry as a list
PlanEntry = Union[Annotated[tuple[CaptionField, str], Strict(False)],
                  Annotated[tuple[CaptionField, str, CaptionField], Strict(False)]]


class EmbedConfig(Section):
    llm: str = "smollm2-135m"          # packaged name, hub id, local dir, .gguf file, or "tiny-random"
    # hidden_states index (-2 = second-to-last decoder layer output), or a list of them: the
    # embedding is then the mean of those layers' hidden states (docs/GPU.md#averaging-layers)
    layer: int | list[int] = -2
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
    # large LLMs on GPUs (docs/GPU.md#large-llms): weights in 8 or 4 bits (bitsandbytes, CUDA
    # only), and transformers' device_map to shard the LLM over the GPUs of one process
    quantization: Literal["none", "8bit", "4bit"] = "none"
    device_map: Literal["auto", "balanced", "balanced_low_0", "sequential"] | None = None
    batch_size: int = Field(16, ge=1)   # most prompts per forward pass
    # most padded tokens per forward pass (rows x longest prompt); 0 = no limit. On 2 CPU cores
    # Qwen2.5-0.5B embeds long 7-facet prompts (~250 tokens) ~12% faster two at a time than 16
    batch_tokens: int = Field(0, ge=0)
    max_tokens: int = Field(512, ge=8)  # captions longer are truncated and flagged
    prompt_sets: dict[str, PromptSet]
    # which prompt set embeds which caption field; order = stored embedding order. The short set
    # embeds the short recaption, or the caption where a sample has none (docs/METHOD.md#prompts-and-facets)
    plan: list[PlanEntry] = [("caption", "single"), ("short_caption", "short", "caption"),
                             ("long_caption", "long")]
    # position ids of each facet: "restart" right after the prefix (each facet as if run alone),
    # or "continue" across the facets as the reference code lays them out
    positions: Literal["restart", "continue"] = "restart"
    # center: subtract the train split's mean per (prompt set, facet), renormalise; the raw
    # last-token vectors of these LLMs share one dominant direction (mean cosine ~0.9)
    # whiten: center, then C^-1/2 of the train split's covariance per prompt set (text/postprocess.py)
    postprocess: Literal["none", "center", "whiten"] = "center"
    whiten_floor: float = Field(0.1, gt=0.0, le=1.0)   # eigenvalue floor / the largest eigenvalue
    init_seed: int = 0                  # seed of the "tiny-random" LLM's initialisation
    splits: list[Literal["train", "test", "val"]] = ["train", "test"]   # curated splits the stage stores

    @field_validator("layer")
    @classmethod
    def _layers(cls, layer: int | list[int]) -> int | list[int]:
        """A list of one layer is that layer (the same cache keys); a list must not repeat."""
        if isinstance(layer, int):
            return layer
        if not layer:
            raise ValueError("an empty list of layers")
        if len(set(layer)) != len(layer):
            raise ValueError(f"layers {layer} repeat")
        return layer[0] if len(layer) == 1 else layer

    @model_validator(mode="after")
    def _loaded_from_files(self) -> "EmbedConfig":
        if self.llm == "tiny-random" and (self.quantization != "none" or self.device_map is not None):
            raise ValueError("quantization and device_map apply to weights loaded from files; "
                             "tiny-random is built from a config")
        return self


class VisionConfig(Section):
    image_size: int = Field(64, ge=16)
    patch_size: int = Field(8, ge=1)
    hidden_size: int = Field(192, ge=8)
    layers: int = Field(4, ge=1)
    heads: int = Field(3, ge=1)
    mlp_size: int = Field(768, ge=8)
    gradient_checkpointing: bool = False
    # FLAME's projector hidden width is max(d_llm, this): 0 = d_llm; the reference code's 4096
    projector_min_width: int = Field(0, ge=0)


class TrainConfig(Section):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(128, ge=1)        # global batch
    lr: float = Field(5e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.5, ge=0)
    warmup_steps: int = Field(100, ge=0)
    # seed of training's randomness (initialisation, batches, drawn positives, crops); None = the
    # profile's seed, which also draws the data: another value retrains on the same data
    seed: int | None = None
    positives: int = Field(6, ge=1)           # M embeddings drawn per sample per step
    # FLAME's sigmoid loss: initial logit scale t and bias b (logit = t * cos + b). The reference's
    # 10 / -10 suit its batch of 3072 and 30k+ steps; in a short run they hardly move.
    logit_scale_init: float = Field(10.0, gt=0, le=100)   # training clamps the scale at 100
    logit_bias_init: float = -10.0
    # the stored embeddings M is drawn from: names of embed/meta.json ("short/0") or whole
    # prompt sets ("long"); empty = all of them
    pool: list[str] = []
    crop_scale: tuple[float, float] = (0.9, 1.0)
    # auto: bf16 on a GPU that has it, fp16 (with a gradient scaler) on one that does not, else fp32
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    grad_clip_norm: float | None = Field(None, gt=0)   # clip the gradients' global norm; None = off
    # each step's batch in this many micro-batches: the same loss and gradient (train/loop.py), less memory
    grad_accum_steps: int = Field(1, ge=1)
    checkpoint_every: int = Field(200, ge=1)
    keep_checkpoints: int = Field(1, ge=1)    # the latest checkpoint and the N - 1 before it
    log_every: int = Field(10, ge=1)
    num_workers: int = Field(0, ge=0)        # DataLoader workers: they decode and augment the images
    # training streams curated/train_shards (train/data.py); a remote copy of them instead (a URL
    # mosaicml-streaming reads: s3://, gs://, https://..., or a folder), cached under stream_cache/
    remote: str | None = None
    # mosaicml-streaming's canonical nodes: the shuffle's partition. Fixed, the sample order is the
    # same on any number of nodes and GPUs; a multiple of the largest node count a run will use
    canonical_nodes: int = Field(1, ge=1)
    # every N steps R@1 both ways on eval_rows held-out rows (train/check.py), logged beside the
    # loss; 0 = off. It reads the val split when the embed stage stored it, else training rows
    eval_every: int = Field(0, ge=0)
    eval_rows: int = Field(64, ge=2)


class BaselineConfig(Section):
    text_hidden_size: int = Field(256, ge=8)
    text_layers: int = Field(4, ge=1)
    text_heads: int = Field(4, ge=1)
    context_length: int = Field(77, ge=8)


# ---------------------------------------------------------------- evaluation benchmarks
# the benchmarks on the pipeline's own held-out split, written in params as their bare names
CURATED_BENCHMARKS = ("zeroshot", "retrieval", "long_retrieval", "multilingual", "linear_probe",
                      "interpretability")
# the prompt set a text query goes through: auto = by docs/METHOD.md#text-queries
PromptSetChoice = Literal["auto", "single", "short", "long"]
NAME_CHARS = re.compile(r"[A-Za-z0-9_.-]+")


class CuratedBenchmark(Section):
    """A benchmark of the curated held-out split; params (and dumps) name it by its kind alone."""
    kind: Literal[CURATED_BENCHMARKS]

    @model_serializer
    def _as_name(self) -> str:
        return self.kind


class CompositionalBenchmark(Section):
    """SugarCrepe's seven kinds of hard negatives on generated scenes (eval/compositional.py)."""
    kind: Literal["compositional"] = "compositional"
    n: int = Field(200, ge=1)            # probe scenes, each with its true caption and 7 negatives
    seed: int | None = None              # None: the profile's seed (a stream of its own)
    prompt_set: PromptSetChoice = "auto"


class DataBenchmark(Section):
    """A benchmark read from files: ``path`` inside ``eval.benchmark_dir`` (DVC's evaluate
    stages depend on that folder), metrics under ``manifest/<name>/``."""
    path: str
    name: str | None = None              # None: the path's last part without its suffix
    prompt_set: PromptSetChoice = "auto"

    @field_validator("path")
    @classmethod
    def _inside(cls, path: str) -> str:
        p = Path(path)
        if not path.strip() or p.is_absolute() or ".." in p.parts:
            raise ValueError(f"{path!r} must be a relative path inside eval.benchmark_dir, "
                             "without '..' (DVC tracks that folder)")
        return path

    @field_validator("name")
    @classmethod
    def _plain(cls, name: str | None) -> str | None:
        if name is not None and not NAME_CHARS.fullmatch(name):
            raise ValueError(f"{name!r}: a benchmark name has letters, digits, '_', '.' and '-' only")
        return name

    @property
    def title(self) -> str:
        return self.name or Path(self.path).name.split(".")[0]


class ClassFoldersBenchmark(DataBenchmark):
    """ImageNet style: a folder per class (eval/class_folders.py)."""
    kind: Literal["class_folders"] = "class_folders"
    classnames: str | None = None   # a file in the folder; None: classnames.txt if there, else folder names
    templates: str | None = None    # a shipped set (eval/templates/<name>.txt) or a file in the folder;
                                    # None: templates.txt if there, else eval.zeroshot_templates


class PairedBenchmark(DataBenchmark):
    """Records pointing at image files, in ``image_dir`` (a folder of the benchmark's)."""
    image_dir: str = ""

    @field_validator("image_dir")
    @classmethod
    def _below(cls, image_dir: str) -> str:
        if Path(image_dir).is_absolute() or ".." in Path(image_dir).parts:
            raise ValueError(f"{image_dir!r} must be a folder inside the benchmark's, without '..'")
        return image_dir


class KarpathyBenchmark(PairedBenchmark):
    """COCO / Flickr30k Karpathy JSON (eval/karpathy.py)."""
    kind: Literal["karpathy"] = "karpathy"
    split: str = "test"


class LongCaptionsBenchmark(PairedBenchmark):
    """Image + long text: Urban-1k, DCI, DOCCI, ShareGPT4V layouts (eval/long_captions.py)."""
    kind: Literal["long_captions"] = "long_captions"
    split: str | None = None        # keep the records of this split (DOCCI's ``split``); None: all


class Xm3600Benchmark(PairedBenchmark):
    """XM3600 JSONL, captions per language (eval/xm3600.py)."""
    kind: Literal["xm3600"] = "xm3600"
    languages: list[str] = []       # [] = every language of the file


class ManifestBenchmark(DataBenchmark):
    """CSV / Parquet / JSONL rows of image, text, language, label (eval/manifest.py)."""
    kind: Literal["manifest"] = "manifest"


# the formats a benchmark read from files can have (eval/registry.py: FORMATS)
DATA_FORMATS = ("manifest", "class_folders", "karpathy", "long_captions", "xm3600")

Benchmark = Annotated[
    Union[CuratedBenchmark, CompositionalBenchmark, ClassFoldersBenchmark, KarpathyBenchmark,
          LongCaptionsBenchmark, Xm3600Benchmark, ManifestBenchmark],
    Field(discriminator="kind"),
]


class EvalConfig(Section):
    # one list: the curated split's benchmarks by name, the others as {kind: ..., ...}
    benchmarks: list[Benchmark] = Field(
        default_factory=lambda: [CuratedBenchmark(kind=k) for k in CURATED_BENCHMARKS])
    benchmark_dir: str = "benchmarks"   # where data benchmarks' paths start (DVC tracks it)
    batch_size: int = Field(256, ge=1)
    split: Literal["test", "val"] = "test"     # the curated split benchmarked (val: to choose settings)
    recall_ks: list[int] = [1, 5, 10]
    # "multi": short captions use the "short" facet set, long ones "long"; "single": all use
    # "single". Class names and non-English captions always use "single" (docs/METHOD.md#text-queries).
    prompt_mode: Literal["multi", "single"] = "multi"
    zeroshot_templates: list[str] = ["a photo of {}.", "a picture of {}.", "an image of {}.",
                                     "a drawing of {}.", "{}."]
    truncate_tokens: int = Field(77, ge=1)     # long captions cut to this many LLM tokens
    probe_max_iter: int = Field(1000, ge=1)
    interpret_images: int = Field(4, ge=1)
    interpret_cells: int = Field(4, ge=1)      # the patch grid is pooled to cells x cells

    @field_validator("benchmarks", mode="before")
    @classmethod
    def _names_to_kinds(cls, value: Any) -> Any:
        return [{"kind": b} if isinstance(b, str) else b for b in value] \
            if isinstance(value, list) else value

    @model_validator(mode="after")
    def _once_each(self) -> "EvalConfig":
        keys = [f"manifest/{b.title}" if isinstance(b, DataBenchmark) else b.kind for b in self.benchmarks]
        if repeated := sorted({k for k in keys if keys.count(k) > 1}):
            raise ValueError(f"benchmarks repeat {repeated} (give data benchmarks distinct names)")
        return self

    def has(self, kind: str) -> bool:
        return any(b.kind == kind for b in self.benchmarks)


# what ``reference_compat: true`` sets, whatever the sections say (docs/METHOD.md#where-this-project-departs-from-the-reference-code)
REFERENCE_COMPAT = {"embed.positions": "continue", "embed.postprocess": "none",
                    "vision.projector_min_width": 4096}


class Profile(Section):
    name: str
    seed: int = 0
    # reproduce the reference code's choices (REFERENCE_COMPAT) instead of this project's defaults
    reference_compat: bool = False
    data_dir: str
    download: DownloadConfig
    curate: CurateConfig = CurateConfig()
    embed: EmbedConfig
    vision: VisionConfig = VisionConfig()
    train: TrainConfig = TrainConfig()
    baseline: BaselineConfig = BaselineConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _query_sets_in_plan(self) -> "Profile":
        """Evaluation embeds its queries through prompt sets whose post-processing the embed
        stage fits on the plan's training embeddings, so each must be in ``embed.plan``."""
        if self.embed.postprocess == "none":
            return self
        planned = {entry[1] for entry in self.embed.plan}
        needed = {"single"} | ({"short", "long"} if self.eval.prompt_mode == "multi" else set())
        needed |= {b.prompt_set for b in self.eval.benchmarks if getattr(b, "prompt_set", "auto") != "auto"}
        if missing := sorted(needed - planned):
            raise ValueError(f"evaluation embeds queries through prompt set(s) {missing}, which "
                             f"embed.plan does not (it has {sorted(planned)}): add them to the plan, "
                             "or set eval.prompt_mode: single")
        return self

    def params_hash(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def train_seed(self) -> int:
        return self.seed if self.train.seed is None else self.train.seed

    @property
    def root(self) -> Path:
        return Path(self.data_dir)


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
    node[keys[-1]] = value


def _read_yaml(text: str, where: str) -> Any:
    """``text`` parsed; a syntax error names ``where`` and the 1-based line and column."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        raise ConfigError(f"{where}: line {mark.line + 1}, column {mark.column + 1}: YAML syntax "
                          f"error: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: YAML error: {err}") from None


def parse_override(item: str) -> tuple[str, Any]:
    """``key.sub=value`` with the value read as YAML (so 3 is an int, [a, b] a list)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    return key.strip(), _read_yaml(raw, f"override {item!r}")


def _format_error(err: ValidationError, profile: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    return f"params profile {profile!r}: {loc}: {first['msg']}"


def load_profile(name: str, params_path: str | Path = "params.yaml",
                 overrides: dict[str, Any] | list[str] | None = None) -> Profile:
    """Read ``params.yaml``, merge ``common`` with ``profiles.<name>`` and overrides, validate."""
    path = Path(params_path)
    if not path.exists():
        raise ConfigError(f"params file not found: {path}")
    doc = _read_yaml(path.read_text(), str(path)) or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping with 'common' and 'profiles'")
    unknown = set(doc) - {"common", "profiles"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(unknown)}; "
                          "expected 'common' and 'profiles'")
    profiles = doc.get("profiles") or {}
    if name not in profiles:
        raise ConfigError(f"unknown profile {name!r}; {path} defines {sorted(profiles)}")
    tree = _deep_merge(doc.get("common") or {}, profiles[name] or {})
    if isinstance(overrides, list):
        overrides = dict(parse_override(o) for o in overrides)
    for key, value in (overrides or {}).items():
        _set_dotted(tree, key, value)
    tree["name"] = name
    if tree.get("reference_compat") is True:
        for key, value in REFERENCE_COMPAT.items():
            _set_dotted(tree, key, value)
    try:
        return Profile.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_error(err, name)) from None
