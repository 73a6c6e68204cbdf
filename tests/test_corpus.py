import pytest

from harness.corpus import CorpusError, load_corpus


def test_default_corpus_is_pydoc_topics_prose():
    name, text = load_corpus()
    assert name == "pydoc_data.topics"
    assert len(text) > 300_000 and "for" in text
    assert load_corpus()[1] == text   # stable order


def test_corpus_file_and_errors(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("héllo world", encoding="utf-8")
    assert load_corpus(f)[1] == "héllo world"
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(CorpusError, match="UTF-8"):
        load_corpus(bad)
    with pytest.raises(CorpusError, match="not found"):
        load_corpus(tmp_path / "missing.txt")
