"""Answer checks: every verdict reason with answers that should and should not trip it, and cleaning."""

from __future__ import annotations

import pytest

from captioning.validate import REASONS, ValidationConfig, check_caption, clean_caption, find_camera_motion

GOOD = (
    "Shoppers with umbrellas crowd a narrow market street as light rain begins to fall. A vendor in a red apron "
    "pulls a plastic sheet over his fruit stall."
)


def reason(text, finish_reason="stop", **config):
    verdict = check_caption(text, finish_reason, ValidationConfig(**config))
    assert verdict.ok == (verdict.reason is None)
    assert verdict.reason is None or verdict.reason in REASONS
    assert verdict.message  # a sentence for people, always
    return verdict.reason


@pytest.mark.parametrize(
    "text",
    [
        GOOD,
        "A street musician plays the violin while a small crowd gathers and a boy drops coins into the open case",
        "Two cyclists wait at a red light; when it turns green they ride off and a bus pulls in behind them.",
        'A shop sign reading "Open" lights up as a woman unlocks the door and carries a crate of bread inside.',
        "Snow starts falling on a quiet street; a man shovels his driveway and a cat watches from a window.",
        "A sign reading 欢迎光临 hangs above a noodle shop where a cook pulls dough and customers wait outside.",
        "Crowds in Zürich stroll past a café terrace where waiters serve coffee and pigeons search for crumbs.",
    ],
)
def test_good_captions_pass(text):
    assert reason(text) is None


def test_empty():
    for text in ("", "   \n\t ", None, '""', "**Caption:**"):
        assert reason(text) == "empty"


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with describing these images.",
        "I cannot describe the video because the frames are not visible to me at the moment.",
        "As an AI language model, I do not have the ability to watch videos, but here is a guess.",
        "Sorry, the frames you sent appear to be blank, so there is nothing I could describe here.",
        "Unfortunately I am unable to view the images you attached to this message today.",
        "The model is unable to see the frames because no images were provided with the request.",
    ],
)
def test_refusals(text):
    assert reason(text) == "refusal"


@pytest.mark.parametrize(
    "text",
    [
        "A woman apologizes to a cyclist she bumped into, and the two laugh as they pick up her groceries.",
        "Pedestrians unable to cross wait at the curb while a long freight truck turns slowly into the side street.",
        "A man says sorry after his dog jumps on a child, and the child's mother smiles and waves him on.",
    ],
)
def test_not_refusals(text):
    assert reason(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "一位穿红色外套的女士走过繁忙的街道，路边的小贩正在卖水果，天空开始下雨。",
        "Женщина в красном пальто идёт по оживлённой улице, а продавцы продают фрукты.",
        "Une femme en manteau rouge marche dans une rue animée et les vendeurs vendent des fruits sur le trottoir.",
        "Eine Frau im roten Mantel geht durch eine belebte Straße und die Händler verkaufen Obst auf dem Gehweg.",
        "Una mujer con abrigo rojo camina por una calle concurrida y los vendedores venden fruta en la acera.",
    ],
)
def test_wrong_language(text):
    assert reason(text) == "wrong_language"


def test_language_check_can_be_switched_off():
    text = "Une femme en manteau rouge marche dans une rue animée et les vendeurs vendent des fruits sur le trottoir."
    assert reason(text, language=None) is None


@pytest.mark.parametrize(
    "text",
    [
        "A man walks down the street. A man walks down the street. A man walks down the street.",
        "People walk past the shops, people walk past the shops, people walk past the shops, people walk past the "
        "shops, people walk past the shops and",
        "The market is busy and the stalls are full. Vendors shout prices. The market is busy and the stalls are full.",
        "A tram arrives at the stop and very very very very very very very very very very very many people get on.",
    ],
)
def test_repetitive(text):
    assert reason(text, "length") == "repetitive"  # loops usually hit the token limit: the loop is the reason


@pytest.mark.parametrize(
    "text",
    [
        # ordinary repetition of function words and a repeated short phrase are not loops
        "A man in a red coat walks past a man in a blue coat while a woman in a green coat waits at the corner of "
        "the square near the entrance of the station.",
        "Lights come on in the windows of the houses as the sun sets behind the hills and the street lamps flicker "
        "on one by one.",
    ],
)
def test_not_repetitive(text):
    assert reason(text) is None


@pytest.mark.parametrize(
    "text, finish_reason",
    [
        (GOOD, "length"),
        ("Shoppers with umbrellas crowd a narrow market street as light rain starts to fall, and a vendor with", "stop"),
        ("Shoppers with umbrellas crowd a narrow market street as light rain begins to fall, and the", None),
        ("Shoppers with umbrellas crowd a narrow market street as light rain begins to fall, and", "stop"),
        ("Shoppers with umbrellas crowd a narrow market street as light rain begins to fall,", "stop"),
        ("Shoppers with umbrellas crowd a narrow market street as light rain begins to fall and...", "stop"),
    ],
)
def test_truncated(text, finish_reason):
    assert reason(text, finish_reason) == "truncated"


@pytest.mark.parametrize(
    "text",
    [
        # a complete sentence without its final period is accepted
        "Shoppers with umbrellas crowd a narrow market street as light rain begins to fall",
        "Two friends wave goodbye and a taxi drives off into the night",
        "A waiter clears the tables outside as the café closes for the night.",
    ],
)
def test_not_truncated(text):
    assert reason(text, "stop") is None
    assert reason(text, None) is None


CAMERA_MOTION = [
    "The camera pans left to reveal a café where a waiter sets out chairs on the terrace.",
    "The camera slowly moves forward along the sidewalk as shoppers pass by with bags.",
    "Camera tilts up toward the skyscraper while office workers stream out of the lobby.",
    "The view pans across the square where pigeons scatter as a child runs through them.",
    "A street performer juggles fire as the shot zooms in on his hands and the crowd claps.",
    "A panning shot of the harbor shows fishing boats unloading their catch at dawn.",
    "Smooth camera movement along a canal lined with bicycles and small flower boxes.",
    "POV moves forward through the crowd toward a stage where a band is playing.",
    "We walk forward past a row of shops while a bus stops to let passengers off.",
    "The viewer turns right onto a side street where laundry hangs between the houses.",
    "The camera follows a cyclist who weaves between taxis on a wide avenue.",
    "The camera continues down the street as the rain gets heavier and people run for cover.",
    "The camera is moving forward while vendors open their stalls in the morning market.",
    "The perspective shifts to the right as a red bus passes and people board it.",
    "A tracking shot follows a tram rolling through a tree-lined boulevard at sunset.",
    "The camera remains stationary while a parade of drummers passes through the square.",
    "Then the camera gradually turns to face the river where rowers glide under a bridge.",
    "The video pans over the rooftops as the evening lights come on across the city.",
    "The person filming walks past a bakery where a baker sets out trays of fresh bread.",
    "As we move closer, the fountain sprays water and children splash in the basin.",
    "The first-person view advances toward the bridge while joggers pass on both sides.",
    "The camera's view rotates to the left, showing a flower market with colorful stalls.",
    "The shot tilts down to the pavement where a chalk artist is finishing a drawing.",
]

NOT_CAMERA_MOTION = [
    "A man holding a camera walks by a fountain while children feed the ducks nearby.",
    "Cameras flash as a celebrity steps out of a black car in front of the theater.",
    "A tourist points her camera at the fountain while her friend poses on the steps.",
    "A security camera above the door blinks red as a courier drops off a parcel.",
    "Pots and pans hang in a shop window while the owner sweeps the doorstep outside.",
    "A tilted sign swings in the wind above a bakery as customers queue outside.",
    "Cars zoom past the intersection while a police officer directs the busy traffic.",
    "A man holding the camera turns around and smiles while friends wave behind him.",
    "The camera shop on the corner opens its shutters as the morning rush begins.",
    "A couple walks forward hand in hand past a row of lantern-lit food stalls.",
    "The crowd turns to watch a street musician, and the traffic light turns green.",
    "A child runs toward the camera and waves while her father locks his bicycle.",
    "A woman tilts her head back and laughs as confetti falls over the wedding party.",
    "A worker pushes a hand dolly loaded with boxes into a grocery store entrance.",
    "Scooters zoom around the square as a fruit seller arranges oranges in a pyramid.",
    "The scene changes as rain begins to fall and shop owners pull in their awnings.",
    "People look at the camera as they pass a brightly painted mural of a tiger.",
]


@pytest.mark.parametrize("text", CAMERA_MOTION)
def test_camera_motion_is_caught(text):
    assert find_camera_motion(text) is not None, text
    assert reason(text) == "camera_motion"


@pytest.mark.parametrize("text", NOT_CAMERA_MOTION)
def test_camera_false_positives_pass(text):
    assert find_camera_motion(text) is None, find_camera_motion(text)
    assert reason(text) is None


def test_camera_message_quotes_the_phrase():
    verdict = check_caption("A bus stops at the corner while the camera pans left past the bakery.", "stop")
    assert verdict.reason == "camera_motion" and "camera as subject: 'the camera pans'" in verdict.message
    found = find_camera_motion("Dusk falls; the view slowly pans over the bay.")
    assert found == ("view as subject", "the view slowly pans")


def test_length_limits():
    assert reason("A dog barks at a passing bus.") == "too_short"  # 7 words
    assert reason("A dog barks loudly at a passing red bus.") is None  # 9 words
    assert reason("A dog barks at a passing bus.", min_words=5) is None
    assert len(GOOD.split()) == 28
    assert reason(GOOD, max_words=27) == "too_long"
    assert reason(GOOD, max_words=28) is None
    assert ValidationConfig().max_words == 120


@pytest.mark.parametrize(
    "raw, cleaned",
    [
        ("  A man\n walks   past\tthe shop.  ", "A man walks past the shop."),
        ('"A man walks past the shop."', "A man walks past the shop."),
        ("“A man walks past the shop.”", "A man walks past the shop."),
        ("'A man's dog walks past the shop.'", "A man's dog walks past the shop."),
        ("**A man walks past the shop.**", "A man walks past the shop."),
        ("Caption: A man walks past the shop.", "A man walks past the shop."),
        ('**Caption:** "A man walks past the shop."', "A man walks past the shop."),
        ("Event description - A man walks past the shop.", "A man walks past the shop."),
        ("Here is the caption: A man walks past the *small* shop.", "A man walks past the small shop."),
        ('"Open" signs glow over the "Cafe"', '"Open" signs glow over the "Cafe"'),  # not one quoted text
        ("The caption of the sign: none.", "The caption of the sign: none."),  # no leading label
    ],
)
def test_cleaning(raw, cleaned):
    assert clean_caption(raw) == cleaned
    assert check_caption(raw).cleaned == cleaned


def test_verdict_carries_the_cleaned_text_on_failure_too():
    verdict = check_caption('Caption: "The camera pans left over a busy street full of people and bicycles."')
    assert verdict.reason == "camera_motion"
    assert verdict.cleaned == "The camera pans left over a busy street full of people and bicycles."


@pytest.mark.parametrize("kwargs", [{"min_words": 0}, {"min_words": 50, "max_words": 10}, {"language": "fr"},
                                    {"max_repeat_ratio": 0}])
def test_config_is_checked(kwargs):
    with pytest.raises(ValueError):
        ValidationConfig(**kwargs)
