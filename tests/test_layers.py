"""The import layers of the project, stated once here and checked on every import, at module
level or inside a function: a module imports only its own unit and lower layers."""
from __future__ import annotations

from import_graph import imports, modules

# Lower layers first. A unit is a top-level module or package of flame_pipeline (or `assets`,
# the Dagster front door); units in one layer do not import each other.
LAYERS: list[list[str]] = [
    ["config", "files", "store", "streaming_compat", "progress"],   # settings, atomic files,
                                                     # DuckDB, MDS, progress bars
    ["paths", "shards", "distributed"],                  # where files live, shard I/O, torchrun
    ["stage"],                                           # what a stage returns, recording it
    ["captions", "llm_files"],                           # caption rules; the LLM's files, tokenizer
    ["data", "text"],                                    # download + curate; the frozen LLM, embed
    ["vision"],                                          # pixels and the image towers
    ["train"],                                           # FLAME and CLIP training
    ["eval"],                                            # benchmarks and the report
    ["pipeline"],                                        # the stage spec and runner
    ["assets"],                                          # the Dagster front door
    ["cli"],                                             # the command line: reports to Dagster
]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def unit(module: str) -> str | None:
    """``flame_pipeline.text.embed`` -> ``text``; ``assets.checks`` -> ``assets``; the root
    package (no code) -> None."""
    parts = module.split(".")
    if parts[0] == "assets":
        return "assets"
    return parts[1] if len(parts) > 1 else None


def test_every_unit_has_a_layer():
    units = {unit(m) for m in modules()} - {None}
    assert units == set(RANK), f"not layered: {sorted(units - set(RANK))}; " \
                               f"gone: {sorted(set(RANK) - units)}"


def test_imports_go_down_the_layers_only():
    wrong = []
    for module in modules():
        for target in imports(module):
            a, b = unit(module), unit(target)
            if None in (a, b) or a == b:
                continue
            if RANK[b] >= RANK[a]:
                wrong.append(f"{module} ({a}, layer {RANK[a]}) imports {target} ({b}, layer {RANK[b]})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_modules():
    """Depth-first search over the whole graph, function-level imports included."""
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(imports(m)):
            if state.get(t) == 1:
                cycles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(modules()):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_the_checks_see_function_level_imports():
    assert "flame_pipeline.distributed" in imports("flame_pipeline.stage")   # inside record()
    assert "flame_pipeline.train.flame" in imports("flame_pipeline.eval.encoders")
