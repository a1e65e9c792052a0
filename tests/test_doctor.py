"""`duetto doctor` reports every missing piece as one line and never crashes."""

from __future__ import annotations

import json

from app import doctor


def _texts(sections):
    return {s.title: [f.text for f in s.findings] for s in sections}


def test_a_failing_check_becomes_a_finding_and_the_rest_still_run(monkeypatch):
    def explode(section):
        raise RuntimeError("device server went away")

    checks = tuple((title, explode if title == "Camera" else fn) for title, fn in doctor.CHECKS)
    monkeypatch.setattr(doctor, "CHECKS", checks)
    texts = _texts(doctor.collect())
    assert texts["Camera"] == ["could not check: RuntimeError: device server went away"]
    assert any("transformers" in line for line in texts["Libraries"])


def test_no_gpu_is_one_clear_line(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    section = doctor.Section("GPU")
    doctor.check_gpu(section)
    missing = [f.text for f in section.findings if f.status is doctor.Status.MISSING]
    assert missing == ["GPU: none (models run on the CPU, far slower than real time)"]


def test_models_folder_contents_are_listed(tmp_path, monkeypatch):
    models = tmp_path / "models"
    (models / "qwen2.5-omni-3b").mkdir(parents=True)
    (models / "qwen2.5-omni-3b" / "model.safetensors").write_bytes(b"\0" * 2048)
    monkeypatch.setenv("DUETTO_MODELS_DIR", str(models))
    section = doctor.Section("Models")
    doctor.check_models(section)
    assert any(f.text.startswith("qwen2.5-omni-3b:") for f in section.findings)


def test_empty_models_folder_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("DUETTO_MODELS_DIR", str(tmp_path / "nothing-here"))
    section = doctor.Section("Models")
    doctor.check_models(section)
    assert any("duetto models get" in f.text for f in section.findings)


def test_json_output_is_machine_readable(capsys):
    class Args:
        json = True

    assert doctor.run(Args()) == 0
    data = json.loads(capsys.readouterr().out)
    assert {s["title"] for s in data} >= {"Audio", "Camera", "GPU", "Models"}
