"""FriendsQA as Answer Agent episodes, unanswerable questions, and the mixed training data."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from edge.embedder import HashEmbedder
from edge.evaluation.scoring import normalize_answer
from edge.prompts import UNKNOWN

FRIENDSQA = Path(__file__).resolve().parents[2] / "shared" / "data" / "friendsqa"
CONV_26 = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "conv-26.json"


@pytest.fixture(scope="module")
def friendsqa_dir() -> Path:
    if not (FRIENDSQA / "friendsqa_dev.json").is_file():
        pytest.skip(f"FriendsQA data not found at {FRIENDSQA}")
    return FRIENDSQA


def test_utterances_are_stored_as_written_and_stage_directions_are_not_speech(friendsqa_dir):
    from edge.train.friendsqa import detokenize, load_split

    assert detokenize("No - no - no . I do n't have a son named Jordie") == \
        "No - no - no. I don't have a son named Jordie"
    assert detokenize("Jamie was the name of Susan 's first girlfriend") == "Jamie was the name of Susan's first girlfriend"
    scene = load_split(friendsqa_dir, "train")[0]
    assert scene.utterances[0].speaker == "Ross Geller" and scene.utterances[0].text == "Breathe."
    assert all("#NOTE#" not in u.speaker and not u.text.startswith("(") for u in scene.utterances)
    heard = {u.uid for u in scene.utterances}
    # Every question kept has an answer in what was said (or a speaker's name), and it is a span of it.
    for q in scene.questions:
        assert q.answers and all(uid in heard for uid in q.utterance_ids if uid >= 0)
    jordie = next(q for q in scene.questions if q.question == "What does Ross want to name his son?")
    assert jordie.answers == ("Jamie", "Jordie.")
    times = [u.time for u in scene.utterances]
    assert times == sorted(times) and len({t[:10] for t in times}) == 1  # one day per scene


def test_scenes_are_split_by_scene_and_the_test_file_is_apart(friendsqa_dir):
    from edge.train.friendsqa import load_split

    train, dev, test = (load_split(friendsqa_dir, s) for s in ("train", "dev", "test"))
    assert len(train) + len(dev) == 136 and len(test) == 113
    assert len(dev) == 27  # every fifth scene
    ids = [{s.scene_id for s in split} for split in (train, dev, test)]
    assert not ids[0] & ids[1] and not (ids[0] | ids[1]) & ids[2]
    assert sum(len(s.questions) for s in test) > 800  # those answered only by stage directions are left out


def test_friendsqa_episodes_keep_offered_golds_and_ask_unanswerable_questions_of_other_scenes(friendsqa_dir):
    from edge.train.episodes import friendsqa_answer_episodes
    from edge.train.friendsqa import load_split

    scenes = load_split(friendsqa_dir, "dev")[:6]
    every = friendsqa_answer_episodes(scenes, HashEmbedder(), k=12, only_offered=False)
    kept = friendsqa_answer_episodes(scenes, HashEmbedder(), k=12, only_offered=True, unanswerable=0.5, seed=3)
    answerable = [e for e in kept if e.answerable]
    assert len(every) == sum(len(s.questions) for s in scenes)
    assert 0 < len(answerable) < len(every)  # some golds are not offered spans: those are left out
    assert {e.episode_id for e in answerable} <= {e.episode_id for e in every}
    for e in answerable:
        assert e.gold_offered() and e.best_offered()[1] == 1.0
        assert json.loads(e.gold_reply())["answer"] in e.spans()
        assert e.kind == "friendsqa"
    unanswerable = [e for e in kept if not e.answerable]
    assert unanswerable and all(e.answer == UNKNOWN and json.loads(e.gold_reply())["answer"] == UNKNOWN
                                for e in unanswerable)
    by_id = {s.scene_id: s for s in scenes}
    questions = {q.qid: q for s in scenes for q in s.questions}
    for e in unanswerable:
        scene_id, _, qid = e.episode_id.removeprefix("friendsqa:").partition(":asks:")
        assert qid not in {q.qid for q in by_id[scene_id].questions}  # asked of another scene
        heard = f" {normalize_answer(by_id[scene_id].text())} "
        assert not any(f" {normalize_answer(a)} " in heard for a in questions[qid].answers)
    again = friendsqa_answer_episodes(scenes, HashEmbedder(), k=12, only_offered=True, unanswerable=0.5, seed=3)
    assert [e.episode_id for e in again] == [e.episode_id for e in kept]  # seeded


def test_a_question_with_several_annotated_answers_takes_the_one_offered():
    from edge.train.episodes import friendsqa_answer_episodes
    from edge.train.friendsqa import Scene, SceneQuestion, Utterance

    said = [("Ross Geller", "My son's name is Jamie, we all agreed."), ("Carol Willick", "We went back to Jordie.")]
    scene = Scene("s1", 0, tuple(Utterance(i, who, text, f"s1:u{i}", "2024-01-01T20:00") for i, (who, text)
                                 in enumerate(said)),
                  (SceneQuestion("s1_q", "What does Ross want to name his son?", ("the name Jamie Geller", "Jamie"),
                                 (0, 0)),))
    [episode] = friendsqa_answer_episodes([scene], HashEmbedder(), k=5, only_offered=True)
    assert episode.answer == "Jamie"  # the first annotator's answer is no offered span; this one is
    assert [episode.shown()[int(i)].text for i in episode.relevant] == [said[0][1]]


def test_untold_events_ask_when_about_what_was_never_said():
    from edge.train.episodes import synthetic_time_episodes
    from edge.train.synthetic import dated_events, generate, untold_events

    conversations = generate("dev", 4)
    episodes = synthetic_time_episodes(conversations, HashEmbedder(), per_conversation=3, k=20, unanswerable=1.0)
    untold = [e for e in episodes if not e.answerable]
    assert len(untold) == 12 and all(e.kind == "time" and e.question.startswith("When did ") for e in untold)
    for conv in conversations:
        told = dated_events(conv, 3)
        asked = untold_events(conv, told, 3)
        told_questions = {e.question.question.split(" ", 3)[3] for e in told}  # "go to a pottery class?"
        assert all(q.question.split(" ", 3)[3] not in told_questions for q in asked)
        assert all(q.answer == UNKNOWN for q in asked)
    assert [e.episode_id for e in episodes if e.answerable] == \
        [e.episode_id for e in synthetic_time_episodes(conversations, HashEmbedder(), per_conversation=3, k=20)]


def test_locomo_adversarial_questions_are_answered_unknown():
    if not CONV_26.is_file():
        pytest.skip("LoCoMo data not found")
    from edge.locomo import load_locomo
    from edge.train.episodes import locomo_answer_episodes

    episodes = locomo_answer_episodes(load_locomo(CONV_26), HashEmbedder(), k=8, include_adversarial=True)
    adversarial = [e for e in episodes if e.category == 5]
    assert len(episodes) == 199 and len(adversarial) == 47
    assert all(e.answer == UNKNOWN and not e.answerable for e in adversarial)
    assert all(e.answerable for e in episodes if e.category != 5)


def test_mix_gives_each_source_its_share():
    from edge.train.recipe import mix

    groups = {"a": list(range(100)), "b": [f"b{i}" for i in range(10)], "c": ["c0"]}
    mixed = mix(groups, {"a": 1, "b": 2, "c": 0}, seed=1)
    counts = Counter("a" if isinstance(x, int) else "b" for x in mixed)
    assert len(mixed) == 110 and counts["b"] == round(110 * 2 / 3)  # c weighs nothing and is left out
    assert Counter(x for x in mixed if isinstance(x, str)).most_common()[-1][1] >= 7  # b repeated evenly
    assert mixed == mix(groups, {"a": 1, "b": 2, "c": 0}, seed=1) != mix(groups, {"a": 1, "b": 2, "c": 0}, seed=2)


def test_mixed_config_builds_every_source_and_refuses_what_it_lacks(friendsqa_dir):
    from edge.train.config import ConfigError, load_config
    from edge.train.recipe import build_data

    overrides = {"data.embedder": "hash", "data.train_conversations": 2, "data.dev_conversations": 1,
                 "data.locomo_path": str(CONV_26), "data.friendsqa_path": str(friendsqa_dir), "data.answer_k": 8}
    data = build_data(load_config("smollm2-135m-answer", **overrides), HashEmbedder())
    kinds = Counter(e.kind for e in data.train)
    assert set(kinds) == {"fact", "time", "locomo", "friendsqa"}
    assert kinds["friendsqa"] == pytest.approx(len(data.train) / 2, abs=2)  # weights 1 : 1 : 2
    assert {e.kind for e in data.dev} == {"fact", "time", "locomo", "friendsqa"}
    assert any(not e.answerable for e in data.train) and any(not e.answerable for e in data.dev)
    assert any(e.category == 5 for e in data.dev)  # LoCoMo's adversarial questions, dev ones held out too
    with pytest.raises(ConfigError, match="friendsqa_path"):
        build_data(load_config("smollm2-135m-answer", **{**overrides, "data.friendsqa_path": None}), HashEmbedder())
    with pytest.raises(ConfigError, match="weights"):
        load_config("smollm2-135m-answer", **{"data.weights": {"friendsQA": 1}})
    with pytest.raises(ConfigError, match="unanswerable"):
        load_config("smollm2-135m-answer", **{"data.unanswerable": -1})
    with pytest.raises(ConfigError, match="Answer Agent"):
        load_config("smollm2-135m-manager", **{"data.unanswerable": 0.2})


def test_answer_scores_split_the_ceiling_and_abstention():
    from edge.train.episodes import AnswerEpisode, StoredMemory
    from edge.train.dev_scores import score_answer_replies

    memory = [StoredMemory("m0", "episodic", "Jon is reading The Lean Startup these days")]
    asked = AnswerEpisode("e0", "What book is Jon reading?", "The Lean Startup", memory)
    never = AnswerEpisode("e1", "When did Jon go skydiving?", UNKNOWN, memory)
    replies = ['{"answer": "Startup"}', '{"answer": "unknown"}']
    scores = score_answer_replies([asked, never], replies)
    assert scores["best_offered_f1"] == 1.0 and scores["gold_offered"] == 1.0
    assert scores["taken"] == pytest.approx(2 / 3)  # F1 of "Startup" against "The Lean Startup" (articles dropped)
    assert scores["abstained"] == 1.0 and scores["false_unknown"] == 0.0 and scores["n_unanswerable"] == 1
    wrong = score_answer_replies([asked, never], ['{"answer": "unknown"}', '{"answer": "Jon"}'])
    assert wrong["abstained"] == 0.0 and wrong["false_unknown"] == 1.0 and wrong["taken"] == 0.0


def test_an_answerable_question_no_offered_span_words_is_not_trained_on():
    """Its best span is "unknown": training on it would teach abstaining on a question that has an answer."""
    if not CONV_26.is_file():
        pytest.skip("LoCoMo data not found")
    from edge.train.config import load_config
    from edge.train.episodes import learnable
    from edge.train.recipe import build_data

    config = load_config("smollm2-135m-answer", **{"data.source": "locomo", "data.locomo_path": str(CONV_26),
                                                   "data.embedder": "hash", "data.answer_k": 8,
                                                   "data.time_questions": 0})
    data = build_data(config, HashEmbedder())
    assert all(learnable(e) for e in data.train)
    taught = [json.loads(e.gold_reply())["answer"] for e in data.train]
    assert all(answer != UNKNOWN for answer, e in zip(taught, data.train) if e.answerable)
    assert any(not learnable(e) for e in data.dev)  # dev keeps them: they measure what was shown
    dropped = [e for e in data.dev if not learnable(e)]
    assert all(e.answerable and e.best_offered()[1] == 0 for e in dropped)
