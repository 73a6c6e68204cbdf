"""The compile configuration is chosen by measurement once and remembered on disk (CPU, fake engines)."""
import json

import pytest

from harness.backends.pytorch import compile_choice as cc


class FakeEngine:
    def __init__(self, name, step):
        self.name, self.step = name, step


def _run(tmp_path, steps, key="k", fail=()):
    built, released = [], []

    def build(name):
        built.append(name)
        if name in fail:
            raise RuntimeError(f"{name} failed to compile")
        return FakeEngine(name, steps[name])

    eng, choice = cc.choose(key, build, lambda e: e.step, released.append, cc.ChoiceCache(tmp_path / "c.json"))
    return eng, choice, built, [e.name for e in released]


def test_fastest_candidate_is_kept_and_the_choice_cached(tmp_path):
    eng, choice, built, released = _run(tmp_path, {"untuned": 4.7e-3, "tuned": 5.2e-3, "flex": 4.9e-3})
    assert eng.name == "untuned" and choice.name == "untuned" and choice.source == "measured in this run"
    assert built == ["untuned", "tuned", "flex"] and released == ["tuned", "flex"]
    assert choice.step_s == {"untuned": 4.7e-3, "tuned": 5.2e-3, "flex": 4.9e-3}
    # a second process builds only the winner, and says the choice came from the cache
    eng2, choice2, built2, released2 = _run(tmp_path, {"untuned": 9.0, "tuned": 1.0, "flex": 1.0})
    assert eng2.name == "untuned" and built2 == ["untuned"] and released2 == []
    assert "cached" in choice2.source and choice2.step_s["tuned"] == 5.2e-3


def test_a_faster_later_candidate_replaces_the_first(tmp_path):
    eng, choice, built, released = _run(tmp_path, {"untuned": 6e-3, "tuned": 5e-3, "flex": 5.5e-3})
    assert eng.name == "tuned" and released == ["untuned", "flex"]
    eng, choice, built, released = _run(tmp_path, {"untuned": 6e-3, "tuned": 5e-3, "flex": 4.5e-3}, key="k2")
    assert eng.name == "flex" and released == ["untuned", "tuned"]


def test_the_flex_candidate_is_the_untuned_step_with_flex_attention():
    assert cc.CANDIDATES["flex"] == {"tune": False, "decode_attention": "flex"}
    assert cc.CANDIDATES["untuned"] == {"tune": False}


def test_keys_separate_shapes_and_versions(tmp_path):
    k1 = cc.choice_key("NVIDIA H200", "synthetic:llama-3.1-8b", "baseline", 1, 128, 64, "default", {"torch": "2.11"})
    k2 = cc.choice_key("NVIDIA H200", "synthetic:llama-3.1-8b", "baseline", 8, 128, 64, "default", {"torch": "2.11"})
    k3 = cc.choice_key("NVIDIA H200", "synthetic:llama-3.1-8b", "baseline", 1, 128, 64, "default", {"torch": "2.12"})
    assert len({k1, k2, k3}) == 3
    _run(tmp_path, {"untuned": 1.0, "tuned": 2.0, "flex": 3.0}, key=k1)
    _, choice, built, _ = _run(tmp_path, {"untuned": 2.0, "tuned": 1.0, "flex": 3.0}, key=k3)
    assert built == ["untuned", "tuned", "flex"] and choice.name == "tuned"   # new versions: measured again


def test_a_failing_candidate_is_skipped_and_not_cached(tmp_path):
    eng, choice, built, _ = _run(tmp_path, {"untuned": 1.0, "tuned": 0.5, "flex": 2.0}, fail=("tuned",))
    assert eng.name == "untuned" and "tuned failed to compile" in choice.source
    assert not (tmp_path / "c.json").exists()
    with pytest.raises(RuntimeError, match="no compile configuration"):
        _run(tmp_path, {"untuned": 1.0, "tuned": 0.5, "flex": 0.5}, fail=("tuned", "untuned", "flex"))


def test_a_corrupt_cache_is_ignored_and_rewritten(tmp_path):
    (tmp_path / "c.json").write_text("{not json")
    _, choice, built, _ = _run(tmp_path, {"untuned": 1.0, "tuned": 2.0, "flex": 3.0})
    assert built == ["untuned", "tuned", "flex"]
    assert json.loads((tmp_path / "c.json").read_text())["k"]["name"] == "untuned"
    (tmp_path / "c.json").write_text(json.dumps({"k": {"name": "no-such-config"}}))
    _, _, built, _ = _run(tmp_path, {"untuned": 1.0, "tuned": 2.0, "flex": 3.0})
    assert built == ["untuned", "tuned", "flex"]
