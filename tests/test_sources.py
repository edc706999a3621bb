"""The source registry: one entry per configured kind, and what each watches and depends on."""
import typing

from flame_pipeline.config import FolderSource, Source, UrlListSource, WebDatasetSource
from flame_pipeline.data.sources import SOURCES, source_kind


def test_every_config_source_kind_has_exactly_one_registry_entry():
    classes = typing.get_args(typing.get_args(Source)[0])
    kinds = [cls.model_fields["kind"].default for cls in classes]
    assert sorted(kinds) == sorted(SOURCES)
    assert all(entry.description and "\n" not in entry.description for entry in SOURCES.values())


def test_user_sources_watch_their_paths_and_depend_on_their_contents(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.txt").write_text("a red square")
    urls = tmp_path / "urls.csv"
    urls.write_text("url,caption\nhttp://x/a.png,a\n")
    tar = tmp_path / "a.tar"
    tar.write_bytes(b"x" * 10)
    cases = [FolderSource(path=str(folder)), UrlListSource(path=str(urls)),
             WebDatasetSource(paths=[str(tar), str(tmp_path / "absent.tar")])]
    assert [source_kind(s.kind).watch(s) for s in cases] == [
        [folder], [urls], [tar, tmp_path / "absent.tar"]]
    before = [source_kind(s.kind).state(s) for s in cases]
    (folder / "b.txt").write_text("a blue circle")
    urls.write_text("url,caption\nhttp://x/b.png,b\n")
    tar.write_bytes(b"y" * 11)
    after = [source_kind(s.kind).state(s) for s in cases]
    assert all(b != a for b, a in zip(before, after))
    assert len(after[0]) == 2 and len(after[2]) == 1     # the absent tar is the reader's to report
    assert source_kind("scenes").watch(None) == [] and source_kind("scenes").state(None) == []
