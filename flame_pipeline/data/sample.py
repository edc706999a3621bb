"""One input row of the download stage, as a source yields it (before validation)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RawSample:
    key: str                       # unique and stable across runs, e.g. "scenes/train/000123"
    source: str                    # the source kind: scenes, emoji, fashion_mnist, url_list, ...
    source_ref: str                # where it came from: URL, file path, tar member, index
    image: bytes | None            # encoded image bytes as found (None: the source could not get it)
    caption: str | bytes | None    # the alt-text (bytes when the source could not decode it)
    long_caption: str | bytes | None = None    # a long recaption, when the source has one
    short_caption: str | bytes | None = None   # a short recaption, when the source has one
    language: str = "en"
    split: str | None = None       # "train"/"test"/"val" when the source dictates it, else curation assigns
    labels: dict[str, str] = field(default_factory=dict)  # task -> class, for zero-shot/probes
    group: str | None = None       # links related samples (a scene and its hard negatives)
    reject_reason: str | None = None  # set by a source that already knows the row is bad (e.g. HTTP 404)
    # the key the source itself gives the sample (a WebDataset __key__, a folder image's path
    # without suffix, a URL list's key column or row number): a recaption table joins on it
    sample_key: str | None = None
