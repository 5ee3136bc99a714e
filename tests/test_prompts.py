from collections import Counter
from datetime import datetime

from behaviorlm.data.types import Event, Sample
from behaviorlm.prompts import FORMATS, ROLE, TASK, format_for, render, render_sample

HISTORY = (
    Event(datetime(2024, 3, 4, 16), "home", "Exercising"),  # a Monday
    Event(datetime(2024, 3, 4, 20), "home", "Gaming"),
)
CANDIDATES = ["Gaming", "Music", "Watching video"]


def test_prompt_has_the_five_parts():
    prompt = render(HISTORY, datetime(2024, 3, 5, 8), "workplace", CANDIDATES, format_id=0, answer="Music")
    assert prompt.system == f"{ROLE} {TASK}"
    assert "(Monday, 16, home, Exercising), (Monday, 20, home, Gaming)" in prompt.user
    assert "(Tuesday, 8, workplace)" in prompt.user  # next-intent-info
    assert "Gaming, Music, Watching video" in prompt.user
    assert prompt.user.endswith("The answer is")
    messages = prompt.messages(with_answer=True)
    assert [m["role"] for m in messages] == ["system", "user", "assistant"] and messages[-1]["content"] == "Music"
    assert [m["role"] for m in prompt.messages()] == ["system", "user"]


def test_the_three_instruction_formats_differ_and_end_before_the_answer():
    users = {render(HISTORY, datetime(2024, 3, 5, 8), "home", CANDIDATES, format_id=i).user for i in range(3)}
    assert len(users) == len(FORMATS) == 3
    assert {u.rsplit(" ", 1)[-1] for u in users} == {"is"}


def test_format_is_random_per_sample_but_reproducible():
    ids = [f"u:{i}" for i in range(300)]
    drawn = [format_for(i, seed=0) for i in ids]
    assert drawn == [format_for(i, seed=0) for i in ids]
    assert drawn != [format_for(i, seed=1) for i in ids]
    assert min(Counter(drawn).values()) > 60  # all three are used, roughly evenly


def test_missing_places_are_left_out_of_history_items():
    history = (Event(datetime(2024, 3, 9, 12), "", "Park"),)
    sample = Sample("s1", "u", history, Event(datetime(2024, 3, 9, 13), "", "Cafe"))
    prompt = render_sample(sample, ["Cafe", "Park"])
    assert "(Saturday, 12, Park)" in prompt.user and "(Saturday, 13, unknown place)" in prompt.user
    assert prompt.answer == "Cafe" and render_sample(sample, ["Cafe"], with_answer=False).answer is None


def test_parse_reads_back_every_format_the_project_renders():
    from behaviorlm.prompts import parse, render_packed

    history = (Event(datetime(2024, 3, 4, 16), "home, sweet home", "Eating, out"),  # commas in names
               Event(datetime(2024, 3, 4, 20), "", "Gaming"),
               Event(datetime(2024, 3, 12, 9), "office", "Gaming"))
    candidates = ["Eating, out", "Gaming", "Music"]
    for format_id in range(len(FORMATS)):
        for place in ("gym", ""):
            text = render(history, datetime(2024, 3, 13, 8), place, candidates, format_id=format_id).user
            parsed = parse(text, candidates)
            assert [e.behavior for e in parsed.history] == ["Eating, out", "Gaming", "Gaming"]
            assert [e.place for e in parsed.history] == ["home, sweet home", "", "office"]
            assert parsed.candidates == candidates and parsed.next_place == place
            # weekdays and hours survive (dates do not exist in the text), so it renders to the same text
            again = render(parsed.history, parsed.next_time, parsed.next_place, parsed.candidates, format_id=format_id)
            assert again.user == text
    for events in (history, ()):
        text = render_packed(events, datetime(2024, 3, 13, 8), "gym", candidates).user
        parsed = parse(text, candidates)
        assert render_packed(parsed.history, parsed.next_time, parsed.next_place, parsed.candidates).user == text


def test_parse_says_what_is_wrong():
    import pytest

    from behaviorlm.prompts import parse

    good = render(HISTORY, datetime(2024, 3, 5, 8), "home", CANDIDATES).user
    cases = [("hello", "not a behavior prompt"),
             (good.replace("Watching video", "Skiing"), "unknown behavior 'Skiing' in the candidate set"),
             (good.replace("(Monday, 16, home, Exercising)", "(Someday, 16, home, Exercising)"), "history item 1"),
             (good.replace("home, Gaming", "home, Chess"), "does not end with a known behavior")]
    for text, message in cases:
        with pytest.raises(ValueError, match=message):
            parse(text, ["Exercising", *CANDIDATES])
