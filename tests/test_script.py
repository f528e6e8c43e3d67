"""Conversation scripts (`edge run`): every line is read, run and reported, whatever happened before it."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge.agent import Agent
from edge.backends.scripted import ScriptedBackend
from edge.bank import MemoryBank
from edge.bundle import ADAPTER_ROLES
from edge.cli import cli
from edge.errors import BackendError
from edge.script import read_script

NOOP = json.dumps({"ops": [{"op": "NOOP"}]})
ANSWER = json.dumps({"answer": "unknown"})


class RoleBackend(ScriptedBackend):
    """A scripted backend that replies by what is asked: the Manager a NOOP, the Answer Agent "unknown"."""

    def complete(self, messages, *, schema=None, **kwargs):
        properties = (schema or {}).get("properties", {})
        self.add(NOOP if "ops" in properties else ANSWER if "answer" in properties else "ok")
        return super().complete(messages, schema=schema, **kwargs)


@pytest.fixture
def scripted_agent(monkeypatch: pytest.MonkeyPatch, default_bundle, tmp_path: Path):
    """`edge run` and `edge remember` on the default bundle's embedder and a real bank, with a scripted model."""
    import edge.commands.agent as commands

    def open_agent(bundle, db, user):
        return Agent(bundle=default_bundle, db=db or tmp_path / "bank.db", user=user,
                     backend=RoleBackend(check_schema=False, adapters=ADAPTER_ROLES))

    monkeypatch.setattr(commands, "open_agent", open_agent)


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- reading


def test_a_script_is_read_line_by_line_with_numbers_kinds_and_fields(tmp_path: Path) -> None:
    script = write(
        tmp_path / "s.txt",
        "# a comment",
        "Ana: I moved to Porto last week.",
        "",
        "? Where does Ana live?",
        '{"speaker": "Ben", "text": "I play the cello.", "time": "8 May 2023", "id": "D1:2"}',
        '{"ask": "What does Ben play?"}',
        '{"text": "No speaker given.", "id": 7}',
    )
    lines = read_script(script)
    assert [(l.number, l.kind) for l in lines] == [
        (2, "turn"), (4, "question"), (5, "turn"), (6, "question"), (7, "turn"),
    ]
    assert (lines[0].speaker, lines[0].text) == ("Ana", "I moved to Porto last week.")
    assert lines[1].text == "Where does Ana live?"
    assert (lines[2].speaker, lines[2].time, lines[2].turn_id) == ("Ben", "8 May 2023", "D1:2")
    assert (lines[4].speaker, lines[4].turn_id) == (None, "7")
    # A turn that names no id gets one from its speaker and text: the same on every read, a repeat told apart.
    assert lines[0].turn_id.startswith("s") and read_script(script)[0].turn_id == lines[0].turn_id
    twice = read_script(write(tmp_path / "t.txt", "Ana: ok", "Ben: ok", "Ana: ok"))
    assert twice[0].turn_id != twice[1].turn_id and twice[2].turn_id == twice[0].turn_id + "-2"


def test_bad_lines_come_back_with_their_number_and_reason_and_the_rest_is_still_read(tmp_path: Path) -> None:
    script = tmp_path / "s.txt"
    script.write_bytes(
        b"Ana: first\n"
        b"{not json\n"
        b"just words without a colon\n"
        b"?\n"
        b'{"text": 42}\n'
        b'{"speaker": ["x"], "text": "list speaker"}\n'
        b"Ana: caf\xe9 in Latin-1\n"
        b'[1, 2]\n'
        b"Ana: last\n"
    )
    lines = read_script(script)
    assert [(l.number, l.kind) for l in lines] == [
        (1, "turn"), (2, "invalid"), (3, "invalid"), (4, "invalid"), (5, "invalid"), (6, "invalid"),
        (7, "invalid"), (8, "invalid"), (9, "turn"),
    ]
    reasons = {l.number: l.error for l in lines if l.kind == "invalid"}
    assert "not valid JSON" in reasons[2]
    assert "Speaker: text" in reasons[3]
    assert "no question" in reasons[4]
    assert "'text'" in reasons[5]
    assert "'speaker' must be a string" in reasons[6]
    assert "not UTF-8" in reasons[7]
    assert lines[-1].text == "last"


def test_line_separators_inside_json_strings_crlf_and_a_bom_do_not_break_lines(tmp_path: Path) -> None:
    turn = json.dumps({"speaker": "Ana", "text": "one\u2028two\u0085three \U0001FAE9"}, ensure_ascii=False)
    script = tmp_path / "s.jsonl"
    script.write_bytes(("\ufeff" + turn + "\r\n? Who?\r\n").encode("utf-8"))
    lines = read_script(script)
    assert [(l.number, l.kind) for l in lines] == [(1, "turn"), (2, "question")]
    assert lines[0].text == "one\u2028two\u0085three \U0001FAE9"
    assert lines[1].text == "Who?"


# ----------------------------------------------------------------------------- running


def test_a_refused_line_is_reported_with_its_number_and_the_run_goes_on(tmp_path: Path, scripted_agent) -> None:
    long_turn = "I kept a diary that day. " * 160  # 4,000 characters, 4,004 with "Ana:"
    script = write(
        tmp_path / "s.jsonl",
        json.dumps({"speaker": "Ana", "text": "I moved to Porto last week."}),
        json.dumps({"speaker": "Ana", "text": long_turn.strip() + " The end."}),
        json.dumps({"speaker": "Ana", "text": "a NUL \u0000 is not text"}),
        "{broken json",
        json.dumps({"ask": "Where does Ana live?"}),
    )
    out = CliRunner().invoke(cli, ["run", str(script), "--json", "--db", str(tmp_path / "bank.db"), "--user", "ana"])
    document = json.loads(out.stdout)
    assert out.exit_code == 1
    lines = {line["line"]: line for line in document["lines"]}
    assert sorted(lines) == [1, 2, 3, 4, 5]
    assert lines[1]["status"] == "done" and lines[1]["result"]["turn"]["text"] == "I moved to Porto last week."
    assert lines[2]["status"] in ("done", "refused")  # a long turn is run or refused on its own, never the run
    assert lines[3]["status"] == "refused" and lines[3]["reason"]
    assert lines[4]["status"] == "refused" and lines[4]["kind"] == "invalid" and "JSON" in lines[4]["reason"]
    assert lines[5]["status"] == "done" and lines[5]["kind"] == "question"
    assert lines[5]["result"]["question"] == "Where does Ana live?"
    refused = sum(line["status"] == "refused" for line in document["lines"])
    assert document["summary"] == {"done": 5 - refused, "refused": refused, "failed": 0, "skipped": 0}
    assert document["error"] is None


def test_a_failing_model_fails_its_line_and_the_next_lines_still_run(tmp_path: Path, monkeypatch, default_bundle) -> None:
    import edge.commands.agent as commands

    class FailsOnce(RoleBackend):
        """The model fails on the first call (as a crashed server or a broken model file would)."""

        failed = False

        def complete(self, messages, *, schema=None, **kwargs):
            if not self.failed:
                self.failed = True
                raise BackendError("The model stopped answering.", hint="restart it")
            return super().complete(messages, schema=schema, **kwargs)

    monkeypatch.setattr(commands, "open_agent", lambda bundle, db, user: Agent(
        bundle=default_bundle, db=tmp_path / "bank.db", user=user, backend=FailsOnce(check_schema=False, adapters=ADAPTER_ROLES)))
    script = write(tmp_path / "s.txt", "Ana: I play the cello.", "Ana: I also sing.", "? What does Ana play?")
    out = CliRunner().invoke(cli, ["run", str(script), "--json"])
    document = json.loads(out.stdout)
    assert [l["status"] for l in document["lines"]] == ["failed", "done", "done"]
    assert "stopped answering" in document["lines"][0]["reason"]
    assert out.exit_code == 1


def test_a_clean_script_exits_zero_and_prints_every_line(tmp_path: Path, scripted_agent) -> None:
    script = write(tmp_path / "s.txt", "Ana: I play the cello.", "? What does Ana play?")
    out = CliRunner().invoke(cli, ["run", str(script)])
    assert out.exit_code == 0, out.output
    assert "Ana: I play the cello." in out.output and "? What does Ana play?" in out.output
    assert "2 lines: 2 done, 0 refused, 0 failed" in out.output


def test_json_output_is_one_document_even_when_the_agent_cannot_open(tmp_path: Path) -> None:
    script = write(tmp_path / "s.txt", "Ana: hello")
    out = CliRunner().invoke(cli, ["run", str(script), "--json", "--bundle", str(tmp_path / "no-such-bundle")])
    document = json.loads(out.stdout)
    assert out.exit_code == 1
    assert document["lines"] == [] and "No bundle folder" in document["error"]["message"]


def test_remember_reports_each_turn_and_a_refused_one_does_not_hide_the_others(tmp_path: Path, scripted_agent) -> None:
    out = CliRunner().invoke(cli, ["remember", "I play the cello.", "a NUL \x00 here", "I also sing.", "--json"])
    turns = json.loads(out.stdout)
    assert [t["status"] for t in turns] == ["done", "refused", "done"]
    assert turns[1]["reason"] and turns[1]["turn"]["text"] == "a NUL \x00 here"
    assert out.exit_code == 1


@pytest.mark.parametrize("when, reason", [("04.03.2025", "is ambiguous"), ("2025-13-01T10:00", "Cannot read"),
                                          ("", "Not a turn time")])
def test_a_turn_time_that_reads_two_ways_or_not_at_all_is_refused_and_nothing_is_kept(
        tmp_path: Path, default_bundle, when: str, reason: str) -> None:
    """"04.03.2025" was read as 3 April and "2025-13-01" as 13 January: "When did Ana adopt Pip?" then got a
    date nobody said. The time is read before a bank is made or a model loaded, and the error says the forms
    that are read."""
    from edge.errors import InvalidInputError

    db = tmp_path / "bank.db"
    out = CliRunner().invoke(cli, ["remember", "I adopted Pip yesterday.", "--time", when, "--json", "--bundle",
                                   str(default_bundle.root), "--db", str(db), "--user", "ana"])
    assert out.exit_code == 1 and isinstance(out.exception, InvalidInputError), out.output
    assert reason in out.exception.message and out.exception.hint  # the forms that are read
    assert not db.exists()


def test_run_plays_turns_and_a_question_on_the_default_bundle(tmp_path: Path, default_bundle) -> None:
    script = write(
        tmp_path / "s.txt",
        "Ana: I just adopted a cat named Luna.",
        "Ana: I work as a nurse in Lisbon.",
        "? What is the name of Ana's cat?",
    )
    out = CliRunner().invoke(cli, ["run", str(script), "--json", "--bundle", str(default_bundle.root),
                                   "--db", str(tmp_path / "bank.db"), "--user", "ana"])
    assert out.exit_code == 0, out.output
    document = json.loads(out.stdout)
    assert document["error"] is None and document["summary"] == {"done": 3, "refused": 0, "failed": 0, "skipped": 0}
    assert [(l["line"], l["kind"], l["status"]) for l in document["lines"]] == [
        (1, "turn", "done"), (2, "turn", "done"), (3, "question", "done"),
    ]
    turn = document["lines"][0]["result"]
    assert turn["turn"]["speaker"] == "Ana" and turn["prompt_tokens"] > 0
    answer = document["lines"][2]["result"]
    assert answer["question"] == "What is the name of Ana's cat?" and isinstance(answer["answer"], str)
    with MemoryBank.open(tmp_path / "bank.db", user="ana", create=False) as bank:
        assert all(bank.get(memory_id).owner == "ana" for memory_id in answer["memory_ids"])


def test_the_installed_command_exits_with_the_status_the_command_sets(tmp_path: Path) -> None:
    """`edge` (edge.cli:main, not click's test runner) passes a command's exit status on to the shell."""
    import subprocess
    import sys

    script = write(tmp_path / "s.txt", "Ana: hello")
    done = subprocess.run([sys.executable, "-m", "edge.cli", "run", str(script), "--json", "--bundle",
                           str(tmp_path / "no-such-bundle")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "No bundle folder" in json.loads(done.stdout)["error"]["message"]


def wait_for_turns(db: Path, user: str, n: int, timeout: float = 120) -> None:
    """Until `user`'s conversation log in `db` holds `n` turns (a command in another process is writing it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.3)
        if db.exists():
            with MemoryBank.open(db, create=False, user=user) as bank:
                if bank.count(tier=("episodic",)) >= n:
                    return


def default_sigint() -> None:
    """In the child: Ctrl-C as a terminal delivers it (a shell running the tests in the background ignores it,
    and a child inherits that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_on_run_says_what_was_done_keeps_the_turn_under_way_and_resume_goes_on(tmp_path: Path,
                                                                                     default_bundle) -> None:
    """Ctrl-C on `edge run --json` printed nothing although two turns were saved, and lost the turn under way;
    running the script again logged the finished turns a second time."""
    from edge.agent import pending_records

    texts = [f"I visited museum number {i} in Lisbon today." for i in range(12)]
    script = write(tmp_path / "s.txt", *[f"Ana: {text}" for text in texts])
    db = tmp_path / "bank.db"
    process = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", str(script), "--json", "--bundle",
                                str(default_bundle.root), "--db", str(db), "--user", "ana"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_sigint)
    wait_for_turns(db, "ana", 2)  # at least one turn saved, then Ctrl-C
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    document = json.loads(out)
    assert document["error"]["message"].startswith("interrupted after") and "kept" in document["error"]["message"]
    done = [line for line in document["lines"] if line["status"] == "done"]
    assert len(done) >= 1 and len(document["lines"]) < 12
    with MemoryBank.open(db, create=False, user="ana") as bank:
        logged = [m.text for m in bank.list(tier=("episodic",))]
        pending = [record["text"] for _, record in pending_records(bank, "ana")]
    assert logged == texts[:len(logged)]  # each once, in order
    assert len(logged) == len(done) + len(pending) and len(pending) <= 1, (len(logged), len(done), pending)

    again = CliRunner().invoke(cli, ["run", str(script), "--resume", "--json", "--bundle", str(default_bundle.root),
                                     "--db", str(db), "--user", "ana"])
    assert again.exit_code == 0, again.output
    resumed = json.loads(again.stdout)
    assert resumed["summary"] == {"done": 12 - len(logged), "refused": 0, "failed": 0, "skipped": len(logged)}
    with MemoryBank.open(db, create=False, user="ana") as bank:
        assert [m.text for m in bank.list(tier=("episodic",))] == texts  # every turn once
        assert pending_records(bank, "ana") == []  # the kept one was gone over first


def test_sigterm_ends_remember_as_ctrl_c_does_and_keeps_the_turn_under_way(tmp_path: Path, default_bundle) -> None:
    """SIGTERM (a service manager, `kill`) on `edge remember` ended it with no message and lost the turn under way."""
    from edge.agent import pending_records

    texts = [f"I visited gallery number {i} in Porto today." for i in range(12)]
    db = tmp_path / "bank.db"
    process = subprocess.Popen([sys.executable, "-m", "edge.cli", "remember", *texts, "--bundle",
                                str(default_bundle.root), "--db", str(db), "--user", "ana"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_turns(db, "ana", 2)  # at least one turn saved, then SIGTERM
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "interrupted after" in err and "kept" in err, err
    with MemoryBank.open(db, create=False, user="ana") as bank:
        logged = [m.text for m in bank.list(tier=("episodic",))]
        pending = [record["text"] for _, record in pending_records(bank, "ana")]
    assert 2 <= len(logged) < 12 and logged == texts[:len(logged)]
    assert len(pending) <= 1 and set(pending) <= set(logged)


def test_an_interrupt_a_native_library_swallows_is_still_seen() -> None:
    """llama.cpp's load callback prints a KeyboardInterrupt and goes on: the flag keeps the Ctrl-C."""
    import os

    from edge.commands import interrupt_signals

    before = signal.getsignal(signal.SIGTERM)
    with interrupt_signals() as signals:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs between bytecodes: well before this ends
        except KeyboardInterrupt:
            pass  # what a library's callback would swallow
        assert signals["hit"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_pathological_lines_are_refused_when_read_before_any_model_call(tmp_path: Path) -> None:
    """A deeply nested JSON line aborted `edge run` with a RecursionError; a 150,000-character line was refused
    only after 79 s of model calls."""
    deep = '{"speaker": "Ana", "text": ' + "[" * 5000 + "]" * 5000 + "}"
    script = write(tmp_path / "s.jsonl", json.dumps({"speaker": "Ana", "text": "I like tea."}), deep,
                   json.dumps({"speaker": "Ana", "text": "tea " * 37_500}), "Ana: " + "tea " * 37_500,
                   json.dumps({"speaker": "Ana", "text": "I like coffee."}))
    lines = read_script(script)
    assert [(line.number, line.kind) for line in lines] == [(1, "turn"), (2, "invalid"), (3, "invalid"),
                                                          (4, "invalid"), (5, "turn")]
    assert "nested too deeply" in lines[1].error
    assert all("at most 100000" in line.error for line in lines[2:4])
