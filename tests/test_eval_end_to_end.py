"""`edge eval locomo` end to end on a tiny conversation, with the real bundled model and embedder."""
from __future__ import annotations

import dataclasses

import json
from pathlib import Path

import pytest

from edge.bundle import build_default
from edge.evaluation.runner import EvalSettings, LocomoRun
from edge.evaluation.scoring import is_unknown
from edge.evaluation.systems import EvalContext

TINY = [{
    "sample_id": "tiny-1",
    "conversation": {
        "speaker_a": "Ana",
        "speaker_b": "Ben",
        "session_1_date_time": "10:00 am on 3 March, 2023",
        "session_1": [
            {"speaker": "Ana", "dia_id": "D1:1", "text": "Hi Ben! I adopted a cat last week, her name is Luna."},
            {"speaker": "Ben", "dia_id": "D1:2", "text": "Congrats! I am training for the Lisbon marathon."},
            {"speaker": "Ana", "dia_id": "D1:3", "text": "Good luck. I work as a nurse at the city hospital."},
            {"speaker": "Ben", "dia_id": "D1:4", "text": "Nice. My sister Maya is a teacher."},
        ],
        "session_2_date_time": "4:30 pm on 20 April, 2023",
        "session_2": [
            {"speaker": "Ana", "dia_id": "D2:1", "text": "Luna knocked over my coffee this morning!"},
            {"speaker": "Ben", "dia_id": "D2:2", "text": "Ha! I finished the marathon in four hours."},
            {"speaker": "Ana", "dia_id": "D2:3", "text": "Amazing. I started painting landscapes."},
            {"speaker": "Ben", "dia_id": "D2:4", "text": "Send me a photo of your first painting.",
             "blip_caption": "a painting of mountains at sunset"},
        ],
        "session_3_date_time": "9:00 am on 1 May, 2023",
    },
    "qa": [
        {"question": "What is the name of Ana's cat?", "answer": "Luna", "evidence": ["D1:1"], "category": 4},
        {"question": "What does Ana do for work?", "answer": "nurse", "evidence": ["D1:3"], "category": 4},
        {"question": "What marathon did Ben run?", "answer": "Lisbon marathon", "evidence": ["D1:2", "D2:2"],
         "category": 1},
        {"question": "What is Ana's dog called?", "adversarial_answer": "Luna", "evidence": ["D1:1"],
         "category": 5},
    ],
}]


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory, minilm):
    bundle = build_default(tmp_path_factory.mktemp("bundle") / "default", log=lambda _: None)
    ctx = EvalContext.load(bundle, n_ctx=4096, answer_k=20)
    ctx.manager_max_tokens = 48  # keeps the test short: the untrained model can ramble to the limit
    yield ctx
    ctx.close()


def _data(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def test_rag_turns_and_manager_run_end_to_end_and_resume(tmp_path: Path, context) -> None:
    data = _data(tmp_path)
    out = tmp_path / "out"
    settings = EvalSettings(data=data, out=out, systems=["rag-turns", "manager-prompted"], limit=2,
                            n_ctx=4096, answer_k=20, progress=False)
    run = LocomoRun(settings, context=context, log=lambda _: None)
    results = run.run()

    assert (out / "results.json").is_file() and (out / "report.md").is_file()
    assert {"f1.png", "bleu1.png", "evidence_recall.png", "latency.png"} <= set(results["charts"])
    report = (out / "report.md").read_text()
    assert "1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop, 5 adversarial" in report
    for name in ("rag-turns", "manager-prompted"):
        system = results["systems"][name]
        assert system["turns"] == 8 and system["questions"] == 2
        for scores in system["categories"].values():
            for metric in ("f1", "bleu1", "em", "evidence_recall"):
                assert 0.0 <= scores[metric] <= 1.0
        assert system["ingest_s"]["p50"] > 0 and system["answer_s"]["p95"] >= system["answer_s"]["p50"]
        assert system["prompt_tokens"]["mean"] > 0 and system["peak_rss_mb"] > 0
        assert f"| {name} | **overall** | 2 |" in report
        # Question 0 is a dev question (every fifth is held out from training), question 1 is not.
        assert system["split"]["dev"]["n"] == 1 and system["split"]["trained"]["n"] == 1
        assert f"| {name} | dev | 1 |" in report and f"| {name} | trained | 1 |" in report
    rag = results["systems"]["rag-turns"]
    assert rag["bank"]["memories"] == 8 and rag["bank"]["bytes"] > 0
    # Eight raw turns, top-20: every evidence turn is in the context.
    assert rag["categories"]["overall"]["evidence_recall"] == 1.0
    rows = [json.loads(x) for x in (out / "rag-turns" / "tiny-1" / "answers.jsonl").read_text().splitlines()]
    assert [r["qa_index"] for r in rows] == [0, 1]
    assert "D2:4" in rows[0]["context_turns"]

    # Rerun with one more question: ingest and the two answered questions are skipped.
    calls: list[str] = []
    original = context.backend.complete

    def counting(*args, **kwargs):
        calls.append(kwargs.get("schema", {}).get("required", ["?"])[0])
        return original(*args, **kwargs)

    context.backend.complete = counting
    try:
        settings.limit = 3
        results = LocomoRun(settings, context=context, log=lambda _: None).run()
    finally:
        del context.backend.complete
    assert calls == ["answer", "answer"]  # one new answer per system, no Manager call
    for name in ("rag-turns", "manager-prompted"):
        lines = (out / name / "tiny-1" / "ingest.jsonl").read_text().splitlines()
        assert len(lines) == 8
        assert results["systems"][name]["questions"] == 3
        assert set(results["systems"][name]["categories"]) == {"1", "4", "overall"}


def test_full_context_keeps_the_newest_turns_that_fit(tmp_path: Path, context) -> None:
    from edge.evaluation.systems import FullContext
    from edge.locomo import load_locomo

    conversation = load_locomo(_data(tmp_path))[0]
    system = FullContext(context)
    system.open(conversation, tmp_path / "fc")
    system.ingest(conversation)
    assert [m.id for m in system.window()] == [t.dia_id for _, t in conversation.turns()]
    generation = context.generation
    context.generation = dataclasses.replace(generation, n_ctx=420)  # room for only a few turns
    try:
        window = [m.id for m in system.window()]
    finally:
        context.generation = generation
    assert 0 < len(window) < 8 and window[-1] == "D2:4"


def test_a_changed_setting_refuses_to_resume(tmp_path: Path, context) -> None:
    from edge.errors import EdgeError

    data = _data(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"fingerprint": {"answer_k": 99}}))
    settings = EvalSettings(data=data, out=out, systems=["rag-turns"], limit=1, n_ctx=4096, answer_k=20,
                            progress=False)
    with pytest.raises(EdgeError, match="other settings"):
        LocomoRun(settings, context=context, log=lambda _: None).run()


def test_answers_given_with_another_adapter_of_the_same_name_are_not_resumed(tmp_path: Path, context) -> None:
    """The fingerprint holds each adapter's checksum: a retrained answer.gguf is another run, not a resumption."""
    from edge.errors import EdgeError

    settings = EvalSettings(data=_data(tmp_path), out=tmp_path / "out", systems=["rag-turns"], limit=1, n_ctx=4096,
                            answer_k=20, progress=False)
    run = LocomoRun(settings, context=context, log=lambda _: None)
    recorded = run.fingerprint()
    assert set(recorded["adapters"]) == {"manager", "answer"}
    assert all(len(digest) == 64 for digest in recorded["adapters"].values())
    settings.out.mkdir()
    (settings.out / "run.json").write_text(json.dumps({"fingerprint": {**recorded, "adapters": {
        **recorded["adapters"], "answer": "0" * 64}}}))
    with pytest.raises(EdgeError, match="adapters differ"):
        run.run()


def test_summary_statistics_without_a_model() -> None:
    from edge.evaluation.runner import evidence_recall, percentile, summarise_system

    assert percentile([], 50) is None
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)
    assert evidence_recall([], ["D1:1"]) is None
    assert evidence_recall(["D1:1", "D2:2"], ["D2:2", "D3:3"]) == 0.5
    rows = [
        {"qa_index": 10, "category": 4, "f1": 1.0, "bleu1": 1.0, "em": 1.0, "evidence_recall": 1.0, "seconds": 1.0,
         "prompt_tokens": 100, "shown": 5},
        {"qa_index": 11, "category": 1, "f1": 0.0, "bleu1": 0.0, "em": 0.0, "evidence_recall": None, "seconds": 3.0,
         "prompt_tokens": 300, "shown": 5, "error": "unparsable"},
    ]
    summary = summarise_system("rag-turns", rows, [{"turn": "D1:1", "seconds": 0.5}],
                               [{"bank": {"memories": 1, "bytes": 10}, "peak_rss_mb": 99.0}])
    overall = summary["categories"]["overall"]
    assert overall["n"] == 2 and overall["f1"] == 0.5 and overall["evidence_recall"] == 1.0
    assert overall["judge"] is None
    assert summary["categories"]["1"]["f1"] == 0.0 and summary["answer_errors"] == 1
    assert summary["answer_s"]["p50"] == 2.0 and summary["prompt_tokens"]["mean"] == 200
    assert summary["split"]["dev"]["f1"] == 1.0 and summary["split"]["trained"]["f1"] == 0.0  # question 10 is dev


def test_the_eval_command_runs_a_system_and_rewrites_its_report(tmp_path: Path, default_bundle) -> None:
    from click.testing import CliRunner

    from edge.cli import cli

    out = tmp_path / "out"
    missing = CliRunner().invoke(cli, ["eval", "locomo", "--out", str(out)], env={"EDGE_LOCOMO_DATA": None})
    assert missing.exit_code == 2 and "Missing --data" in missing.output
    args = ["eval", "locomo", "--data", str(_data(tmp_path)), "--bundle", str(default_bundle.root),
            "--system", "rag-turns", "--limit", "1", "--n-ctx", "4096", "--out", str(out), "--quiet"]
    ran = CliRunner().invoke(cli, args)
    assert ran.exit_code == 0, ran.output
    assert "| rag-turns | **overall** | 1 |" in ran.output
    results = json.loads((out / "results.json").read_text())
    assert results["systems"]["rag-turns"]["questions"] == 1 and results["systems"]["rag-turns"]["turns"] == 8
    (out / "report.md").unlink()
    rewritten = CliRunner().invoke(cli, ["eval", "report", str(out)])
    assert rewritten.exit_code == 0, rewritten.output
    assert "| rag-turns | **overall** | 1 |" in (out / "report.md").read_text()


# --------------------------------------------------------------------------- the ceiling, the Manager, abstention

CONV_26 = Path("/work/shared/data/locomo/conv-26.json")
OFFERED_FIELDS = ("offered", "best_offered", "best_offered_f1", "best_offered_locomo_f1", "gold_offered")


def _answers(out: Path, system: str, sample: str = "tiny-1") -> list[dict]:
    return [json.loads(line) for line in (out / system / sample / "answers.jsonl").read_text().splitlines()]


def _check_ceiling(row: dict) -> None:
    """An extractive answer is one of the spans it was offered, so it never scores above the best of them."""
    assert row["offered"] >= 1 and row["gold_offered"] in (0.0, 1.0) and row["unknown"] in (0.0, 1.0)
    assert 0.0 <= row["best_offered_locomo_f1"] <= 1.0
    if row["error"] is None:  # an unparsable reply keeps its raw text, which no span need match
        assert row["f1"] <= row["best_offered_f1"] <= 1.0
    assert (row["best_offered"] is None) == (row["best_offered_f1"] == 0.0)
    if row["gold_offered"]:
        assert row["best_offered_f1"] == 1.0
    assert row["unknown"] == float(is_unknown(row["prediction"]))


def _episodic_log(path: Path, embedder) -> list[tuple]:
    from edge.bank import MemoryBank
    from edge.evaluation.systems import BANK_USER

    with MemoryBank.open(path, embedder, user=BANK_USER) as bank:
        memories = bank.list(user=BANK_USER, include_deleted=True, include_superseded=True)
    return [(m.tier, m.text, m.event_time, m.source_turns, m.metadata) for m in memories]


def test_the_bundle_with_and_without_its_manager_and_the_share_of_its_ceiling(tmp_path: Path, context) -> None:
    out = tmp_path / "out"
    settings = EvalSettings(data=_data(tmp_path), out=out, systems=["bundle", "bundle-log-only"],
                            include_adversarial=True, n_ctx=4096, answer_k=20, progress=False)
    results = LocomoRun(settings, context=context, log=lambda _: None).run()

    for name in ("bundle", "bundle-log-only"):
        rows = _answers(out, name)
        assert [r["category"] for r in rows] == [4, 4, 1, 5]
        for row in rows:
            _check_ceiling(row)
        system = results["systems"][name]
        for scores in [*system["categories"].values(), *system["split"].values()]:
            assert scores["best_offered_f1"] >= scores["f1"] - 1e-9 or any(r["error"] for r in rows)
            assert scores["taken"] is None or 0.0 <= scores["taken"] <= 1.0
        abstention = system["abstention"]
        assert abstention["unanswerable"] == 1 and abstention["answerable"] == 3
        assert abstention["abstained_unanswerable"] == rows[3]["unknown"]
        assert abstention["false_unknown"] == pytest.approx(sum(r["unknown"] for r in rows[:3]) / 3)

    # No Manager: the bank is the episodic log alone, written entry for entry as the runtime writes it.
    alone = results["systems"]["bundle-log-only"]
    assert alone["bank"]["memories"] == 8 and alone["facts"]["stored"] == 0
    log = _episodic_log(out / "bundle-log-only" / "tiny-1" / "bank.db", context.embedder)
    assert {entry[0] for entry in log} == {"episodic"}
    full = [entry for entry in _episodic_log(out / "bundle" / "tiny-1" / "bank.db", context.embedder)
            if entry[0] == "episodic"]
    assert log == full
    assert ("D1:1",) in [entry[3] for entry in log] and all(entry[4]["speaker"] in ("Ana", "Ben") for entry in log)

    report = (out / "report.md").read_text()
    assert "## What the Answer Agent takes of what it is offered" in report
    # overall is over the answerable questions (categories 1-4): the adversarial one is scored by abstention
    assert "| bundle-log-only | **overall** | 3 |" in report
    assert "## The Manager's contribution" in report and "| **overall** | 3/3 |" in report
    assert "## Abstention" in report
    assert "offered.png" in results["charts"] and (out / "offered.png").stat().st_size > 0

    # The results.json of an older run (no ceiling, no abstention) still renders, with those sections left out.
    from edge.evaluation.report import regenerate

    saved = json.loads((out / "results.json").read_text())
    for system in saved["systems"].values():
        del system["abstention"]
        for scores in [*system["categories"].values(), *system["split"].values()]:
            for metric in ("best_offered_f1", "best_offered_locomo_f1", "gold_offered", "taken"):
                del scores[metric]
    (out / "results.json").write_text(json.dumps(saved))
    path, charts = regenerate(out)
    old = path.read_text()
    assert "| bundle | **overall** | 3 |" in old and "## The Manager's contribution" in old
    assert "What the Answer Agent takes" not in old and "## Abstention" not in old and "offered.png" not in charts


def test_free_text_answers_have_no_ceiling_and_old_answers_are_not_given_one(tmp_path: Path, context) -> None:
    from edge.evaluation.runner import backfill

    out = tmp_path / "out"
    settings = EvalSettings(data=_data(tmp_path), out=out, systems=["rag-turns"], limit=1, n_ctx=4096, answer_k=20,
                            progress=False)
    generation = context.generation
    context.generation = generation.override(text_mode="free")
    try:
        results = LocomoRun(settings, context=context, log=lambda _: None).run()
    finally:
        context.generation = generation
    row = _answers(out, "rag-turns")[0]
    assert all(row[field] is None for field in OFFERED_FIELDS) and row["unknown"] in (0.0, 1.0)
    overall = results["systems"]["rag-turns"]["categories"]["overall"]
    assert overall["best_offered_f1"] is None and overall["taken"] is None and overall["f1"] is not None
    assert "What the Answer Agent takes" not in (out / "report.md").read_text()
    assert results["systems"]["rag-turns"]["abstention"]["answerable"] == 1
    # An answer written before the ceiling was recorded stays without one: what was offered is not known.
    old = [{k: v for k, v in row.items() if k not in (*OFFERED_FIELDS, "unknown")}]
    assert not backfill(old, None) and not any(field in old[0] for field in OFFERED_FIELDS)


@pytest.mark.skipif(not CONV_26.is_file(), reason="conv-26.json is not on this machine")
def test_the_ceiling_on_a_few_locomo_questions(tmp_path: Path, context) -> None:
    """conv-26's first session and a few of its questions: real turns offer many spans, the answer is one."""
    out = tmp_path / "out"
    settings = EvalSettings(data=CONV_26, out=out, systems=["rag-turns", "bundle-log-only"], sessions=1, limit=3,
                            n_ctx=4096, answer_k=20, progress=False)
    results = LocomoRun(settings, context=context, log=lambda _: None).run()
    for name in ("rag-turns", "bundle-log-only"):
        rows = _answers(out, name, "conv-26")
        assert len(rows) == 3
        for row in rows:
            _check_ceiling(row)
            assert row["offered"] > 10  # the spans of up to 20 real turns
        assert results["systems"][name]["facts"]["stored"] == 0
