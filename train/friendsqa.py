"""FriendsQA scenes and questions, read as conversations edge could have heard.

FriendsQA (Yang and Choi, "FriendsQA: Open-Domain Question Answering on TV
Show Transcripts", SIGDIAL 2019; emorynlp/FriendsQA, annotations Apache-2.0)
asks what/who/where/why/how/when questions over 249 multiparty scenes; every
answer is a span of one utterance or a speaker's name: the action space of
the extractive Answer Agent, in language no template wrote.

The published files are SQuAD-like (`data` → scenes → one paragraph with
`"utterances:"` and `qas`) and tokenised with a space before punctuation
("you 're", "Hi !"). Here:

- utterances are detokenised with nltk's `TreebankWordDetokenizer` (the
  tokenisation the corpus uses is Penn Treebank's), and so are the gold
  answers, so a gold answer is a span of the text edge stores;
- `#NOTE#` utterances (stage directions: "( Ross and Susan leave . )") are
  not speech and are left out: edge hears what people say. A question whose
  every answer lies in one is left out too (`Scene.questions`);
- each scene gets its own day (`SCENE_EPOCH` plus its index), so its
  utterances can be logged as the runtime logs turns (speaker, time).

Scenes are split by scene, never by question: `split_scenes` holds out
every fifth scene of a file for dev, and the test file (`friendsqa_tst.json`)
is never trained on or used to choose a checkpoint.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from edge.errors import EdgeError

NOTE_SPEAKER = "#NOTE#"
SCENE_EPOCH = datetime(2024, 1, 1, 20, 0)  # scene i is dated this day + i days (the corpus gives no dates)
FILES = {"train": "friendsqa_dev.json", "dev": "friendsqa_dev.json", "test": "friendsqa_tst.json"}
DEV_EVERY = 5  # every fifth scene of the training file is dev


class FriendsQAFormatError(EdgeError):
    """A file that is not in FriendsQA's published layout."""


@dataclass(frozen=True)
class Utterance:
    uid: int
    speaker: str
    text: str
    turn_id: str
    time: str


@dataclass(frozen=True)
class SceneQuestion:
    qid: str
    question: str
    answers: tuple[str, ...]  # the annotators' answers, detokenised; one question may have several
    utterance_ids: tuple[int, ...]  # where each answer lies (its uid)


@dataclass(frozen=True)
class Scene:
    scene_id: str
    index: int
    utterances: tuple[Utterance, ...]  # speech only, in order
    questions: tuple[SceneQuestion, ...]  # those with an answer in speech or a speaker's name

    def text(self) -> str:
        """Every utterance, one a line, as "Speaker: text"."""
        return "\n".join(f"{u.speaker}: {u.text}" for u in self.utterances)


@lru_cache(maxsize=1)
def _detokenizer() -> Any:
    from nltk.tokenize.treebank import TreebankWordDetokenizer

    return TreebankWordDetokenizer()


def detokenize(text: str) -> str:
    """Penn-Treebank-tokenised text as written: "you 're right !" -> "you're right!" (nltk)."""
    return _detokenizer().detokenize(text.split())


def load_friendsqa(path: Path | str) -> list[Scene]:
    """The scenes of one FriendsQA file, in file order.

    Raises `FriendsQAFormatError` for a file that is not FriendsQA's layout
    and `EdgeError` for one that cannot be read.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgeError(f"Cannot read FriendsQA file {path}: {exc}",
                        hint="pass friendsqa_dev.json or friendsqa_tst.json from emorynlp/FriendsQA") from exc
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise FriendsQAFormatError(f"{path} is not a FriendsQA file: no top-level 'data' list.")
    return [_scene(raw, i) for i, raw in enumerate(data["data"])]


def _scene(raw: dict[str, Any], index: int) -> Scene:
    try:
        paragraph = raw["paragraphs"][0]
        raw_utterances = paragraph["utterances:"]
        raw_questions = paragraph["qas"]
        scene_id = str(raw.get("title") or f"scene{index}")
    except (KeyError, IndexError, TypeError) as exc:
        raise FriendsQAFormatError(f"scene {index} is not in FriendsQA's layout ({exc!r} missing).") from exc
    day = SCENE_EPOCH + timedelta(days=index)
    utterances: dict[int, Utterance] = {}
    notes: set[int] = set()
    for u in raw_utterances:
        uid = int(u["uid"])
        speakers = [s for s in u.get("speakers") or [] if s]
        if NOTE_SPEAKER in speakers or not speakers:
            notes.add(uid)
            continue
        text = detokenize(str(u.get("utterance", "")))
        if not text.strip():
            continue
        when = (day + timedelta(seconds=10 * uid)).isoformat(timespec="minutes")
        utterances[uid] = Utterance(uid, " and ".join(speakers), text, f"{scene_id}:u{uid}", when)
    questions = []
    for q in raw_questions:
        heard = [a for a in q.get("answers") or []
                 if a.get("is_speaker") or int(a.get("utterance_id", -1)) in utterances]
        if not heard:
            continue  # answered only by stage directions, which edge never hears
        answers = tuple(dict.fromkeys(detokenize(str(a["answer_text"])) for a in heard))
        questions.append(SceneQuestion(str(q["id"]), detokenize(str(q["question"])), answers,
                                       tuple(int(a["utterance_id"]) for a in heard)))
    return Scene(scene_id, index, tuple(utterances[k] for k in sorted(utterances)), tuple(questions))


def split_scenes(scenes: Sequence[Scene], split: str) -> list[Scene]:
    """The scenes of `split` ("train": four of every five; "dev": every fifth; "test": all of the test file's)."""
    if split == "test":
        return list(scenes)
    if split not in ("train", "dev"):
        raise ValueError(f"split must be 'train', 'dev' or 'test', not {split!r}")
    return [s for s in scenes if (s.index % DEV_EVERY == DEV_EVERY - 1) == (split == "dev")]


def split_file(root: Path | str, split: str) -> Path:
    """The FriendsQA file a split is drawn from, in the folder `root` that holds both published files.

    A folder, not a file: train and dev come from one file and test from
    the other, and a single file named for all three would train on its test.
    """
    path = Path(root) / FILES[split]
    if not path.is_file():
        raise EdgeError(f"No FriendsQA file {path}.",
                        hint="point friendsqa_path at the folder holding friendsqa_dev.json and friendsqa_tst.json")
    return path


def load_split(root: Path | str, split: str) -> list[Scene]:
    """The scenes of a split: train and dev from `friendsqa_dev.json` (split by scene), test from the test file."""
    return split_scenes(load_friendsqa(split_file(root, split)), split)
