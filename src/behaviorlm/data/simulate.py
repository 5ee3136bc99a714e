"""A seeded simulator of smartphone behavior logs: the embedded default dataset.

Real behavior logs cannot ship with the project, so the demo runs on data with the structure the method
relies on rather than on uniform noise:

- **The paper's vocabulary and long tail.** The 35 behaviors of Table 3 (Appendix A) with its head, medium and
  tail: four head behaviors above 5 % ("Watching video clip" first), twelve medium ones at 1-5 % (the sixteen
  anchors), nineteen tail behaviors below 1 %. Head and medium shares are Table 3's; tail shares are raised to
  ``TAIL_FLOOR`` (0.6 %; Table 3's range from 0.016 % to 0.39 %), the difference taken from "Watching video clip"
  (35 % instead of 44 %): the paper's logs hold millions of events, the demo's about 50,000, and a behavior needs
  a few hundred events to reach training (2F samples) and the 20 held-out users of a 200-user split (see
  :func:`target_shares`).
- **Personas and routines.** Each user is a student, office worker, shift worker, retiree or homemaker with a
  work-day / day-off timetable of semantic places (home, workplace, school, commute, outdoors, restaurant,
  gym, mall) and an hourly activity curve (phone use peaks at commute, lunch and evening).
- **Context.** Each behavior's odds depend on place, hour, day type and persona (subway on the commute,
  studying at school, exercise music at the gym, videos late at night).
- **Tail behaviors follow a related anchor in a telling context** (Table 3's tail clustered around anchors,
  Figure 1(b)): each has triggers (``TRIGGERS``), an anchor just before at given places, hours and day types,
  that make it likely but not certain: a hailed taxi after paying at a restaurant in the evening, a rented car
  after taking photos outdoors on a day off, cycling after checking the weather outdoors, notes after a course
  at school or a podcast on the commute. Most of a tail behavior's events (``TRIGGER_SHARE``) come from its
  triggers, so it is predictable from place, hour, day type and the behavior before, as in real logs, while its
  share stays small. No head behavior is an anchor.
- **Habits, routines and bursts, so history carries signal.** Every user adopts most, not all, of the rare
  behaviors, has personal tastes among the anchors (log-normal weights: a gamer, a reader, a shopper), and a
  daily routine window of hours for each non-head behavior they do; within a session, each behavior raises the
  odds of itself and of its related behaviors for the next minutes (an exponentially decaying excitation). The
  head behaviors come in runs (a video-clip binge, a shopping spree).

The base odds and trigger probabilities are calibrated so that the marginal shares land near their targets: a
fixed point over the expected context mix (with the event before each event drawn from the same context), then
one correction measured on a fixed pilot population. Users are generated independently from
``(seed, user index)``: the first 40 users of a 200-user run equal a 40-user run.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from behaviorlm.config import SimulatorConfig
from behaviorlm.errors import InputError

TABLE3: dict[str, float] = {
    "Watching video clip": 0.435981, "Shopping online": 0.112217, "Editing video": 0.05937,
    "Reading books": 0.055293, "Gaming": 0.044202, "Watching video": 0.041266, "Reading news": 0.036046,
    "Taking photos": 0.035068, "Taking subway": 0.031969, "Payment": 0.029848, "Listening Music": 0.02365,
    "Checking Weather": 0.016963, "Studying for course": 0.01419, "Ordering takeout": 0.012722,
    "Listening podcast": 0.012396, "Conducting job recruitment": 0.010928, "Taking notes": 0.003915,
    "Checking calendar": 0.003591, "Hailing taxi": 0.003262, "Picking up the express delivery": 0.00261,
    "Watching Match": 0.00213, "Exercising": 0.002003, "Singing": 0.001957, "Watching Live-streaming": 0.001794,
    "Cycling": 0.001794, "Meeting online": 0.000816, "Studying for driving test": 0.000652,
    "Translating": 0.000652, "Rentaling house": 0.000652, "Watching animation": 0.000489,
    "Booking ticket": 0.000489, "Commuting check-in": 0.000323, "Cooking": 0.000323, "Drinking coffee": 0.000283,
    "Rentaling car": 0.000163,
}
"""The paper's Behavior dataset (Table 3): behavior -> share of events."""

BEHAVIORS = tuple(TABLE3)
B = {name: i for i, name in enumerate(BEHAVIORS)}
PLACES = ("home", "workplace", "school", "commute", "outdoors", "restaurant", "gym", "mall")
P = {name: i for i, name in enumerate(PLACES)}
WORK, OFF = 0, 1
START = pd.Timestamp("2024-03-04")  # a Monday; the paper's logs start in March 2024

PERSONAS = {"student": 0.25, "office worker": 0.40, "shift worker": 0.15, "retiree": 0.10, "homemaker": 0.10}
"""Persona -> share of users."""

# Timetables: (first hour, end hour, {place: weight}); one place is drawn per block and day.
_OFF_DAY = [
    (0, 10, {"home": 1}),
    (10, 13, {"home": .5, "outdoors": .2, "mall": .15, "gym": .15}),
    (13, 18, {"outdoors": .3, "mall": .3, "home": .25, "restaurant": .15}),
    (18, 21, {"restaurant": .4, "home": .4, "mall": .2}),
    (21, 24, {"home": 1}),
]
_RETIREE_DAY = [
    (0, 6, {"home": 1}),
    (6, 9, {"outdoors": .5, "gym": .2, "home": .3}),
    (9, 12, {"home": .5, "mall": .3, "outdoors": .2}),
    (12, 14, {"home": .6, "restaurant": .4}),
    (14, 18, {"home": .6, "outdoors": .2, "mall": .2}),
    (18, 24, {"home": 1}),
]
TIMETABLES: dict[str, tuple[list, list]] = {  # persona -> (work day, day off)
    "office worker": ([
        (0, 7, {"home": 1}), (7, 9, {"commute": .8, "home": .2}), (9, 12, {"workplace": 1}),
        (12, 13, {"restaurant": .6, "workplace": .4}), (13, 18, {"workplace": 1}),
        (18, 20, {"commute": .6, "restaurant": .15, "mall": .1, "gym": .15}), (20, 24, {"home": 1}),
    ], _OFF_DAY),
    "student": ([
        (0, 7, {"home": 1}), (7, 8, {"commute": .8, "home": .2}), (8, 12, {"school": 1}),
        (12, 13, {"restaurant": .5, "school": .5}), (13, 17, {"school": 1}),
        (17, 19, {"commute": .5, "gym": .2, "mall": .15, "restaurant": .15}), (19, 24, {"home": 1}),
    ], [(0, 11, {"home": 1}), (11, 18, {"home": .4, "outdoors": .25, "mall": .2, "gym": .15}),
        (18, 21, {"restaurant": .4, "home": .6}), (21, 24, {"home": 1})]),
    "shift worker": ([
        (0, 10, {"home": 1}), (10, 13, {"home": .6, "mall": .2, "gym": .2}), (13, 14, {"commute": 1}),
        (14, 18, {"workplace": 1}), (18, 19, {"restaurant": .5, "workplace": .5}), (19, 23, {"workplace": 1}),
        (23, 24, {"commute": .8, "home": .2}),
    ], _OFF_DAY),
    "retiree": (_RETIREE_DAY, _RETIREE_DAY),
    "homemaker": ([
        (0, 7, {"home": 1}), (7, 9, {"commute": .5, "home": .5}), (9, 12, {"home": .5, "mall": .4, "outdoors": .1}),
        (12, 17, {"home": .7, "mall": .15, "outdoors": .15}), (17, 24, {"home": 1}),
    ], _OFF_DAY),
}

# Phone activity per hour of day (relative), and persona tweaks {hour: factor}.
ACTIVITY = np.array([.5, .3, .15, .1, .1, .2, .6, 1.2, 1.4, 1., .9, 1., 1.5, 1.2, .9, .9, .9, 1.1, 1.3, 1.4, 1.6,
                     1.8, 1.7, 1.1])
ACTIVITY_TWEAKS = {
    "shift worker": {0: 2.5, 1: 2.5, 2: 2, 7: .4, 8: .4, 23: 1.5},
    "retiree": {5: 2, 6: 2, 7: 1.3, 22: .5, 23: .3, 0: .3, 1: .3},
    "student": {0: 1.5, 1: 1.5, 7: .8},
}

TAIL_FLOOR = 0.006
"""Smallest share the simulator gives a behavior (see :func:`target_shares`)."""

PLACE_AFFINITY: dict[str, dict[str, float]] = {
    "home": {"Watching video clip": 1.5, "Watching video": 2, "Gaming": 1.5, "Ordering takeout": 1.5,
             "Reading books": 1.3, "Editing video": 1.5, "Shopping online": 1.3, "Conducting job recruitment": 3,
             "Studying for course": 4, "Taking subway": .05, "Hailing taxi": .3, "Commuting check-in": .05,
             "Exercising": .3, "Cycling": .1, "Drinking coffee": .5, "Taking photos": .6, "Payment": .4},
    "workplace": {"Watching video clip": .4, "Conducting job recruitment": 4, "Reading news": 1.3,
                  "Ordering takeout": 2, "Gaming": .3, "Watching video": .3, "Watching Match": .3, "Singing": .05,
                  "Cooking": .02, "Taking subway": .05, "Exercising": .1, "Cycling": .05, "Editing video": .5,
                  "Watching animation": .3, "Studying for driving test": .3},
    "school": {"Watching video clip": .4, "Studying for course": 10, "Reading books": 2, "Gaming": .6, "Singing": .1,
               "Cooking": .02, "Taking subway": .05, "Conducting job recruitment": .5, "Meeting online": .3},
    "commute": {"Watching video clip": .6, "Taking subway": 20, "Listening Music": 3, "Listening podcast": 4,
                "Reading news": 2, "Reading books": 1.3, "Checking Weather": 2, "Gaming": 1.2, "Editing video": .3,
                "Cooking": .01, "Singing": .2, "Watching video": .7, "Meeting online": .2, "Rentaling house": .3},
    "outdoors": {"Watching video clip": .4, "Taking photos": 5, "Checking Weather": 3, "Taking subway": 1.5,
                 "Listening Music": 2, "Editing video": 1.5, "Cooking": .01, "Reading books": .3, "Gaming": .4,
                 "Studying for course": .1, "Watching video": .4, "Meeting online": .1},
    "restaurant": {"Payment": 5, "Taking photos": 3, "Editing video": 1.2, "Ordering takeout": .3, "Reading books": .4,
                   "Cooking": .01, "Meeting online": .1},
    "gym": {"Listening Music": 5, "Listening podcast": 2, "Watching video clip": .3, "Shopping online": .5,
            "Reading books": .1, "Gaming": .1, "Cooking": .01, "Meeting online": .05},
    "mall": {"Watching video clip": .6, "Payment": 6, "Shopping online": 1.5, "Taking photos": 2, "Cooking": .01,
             "Reading books": .4, "Studying for course": .1, "Meeting online": .1},
}
"""place -> {behavior: odds multiplier}. Tail behaviors appear here only where they (almost) never happen: their
places are part of their triggers (``TRIGGERS``)."""
HOUR_AFFINITY: list[tuple[str, tuple[int, ...], float]] = [
    ("Checking Weather", (6, 7, 8, 9), 3), ("Reading news", (6, 7, 8, 9), 2), ("Reading news", (21, 22, 23), 1.3),
    ("Ordering takeout", (11, 12, 17, 18, 19), 3), ("Ordering takeout", (22, 23), 1.5),
    ("Gaming", (20, 21, 22, 23), 1.5), ("Gaming", (12,), 1.3),
    ("Conducting job recruitment", tuple(range(9, 18)), 1.5),
    ("Conducting job recruitment", (20, 21, 22), 1.2), ("Studying for course", tuple(range(8, 17)), 1.5),
    ("Studying for course", (19, 20, 21), 1.5), ("Listening podcast", (7, 8, 17, 18), 1.5),
    ("Watching video clip", (22, 23, 0, 1), 2.5), ("Shopping online", (20, 21, 22), 1.3),
    ("Meeting online", (0, 1, 2, 3, 4, 5, 6, 7, 20, 21, 22, 23), .2),
]
OFF_DAY_AFFINITY = {
    "Taking photos": 1.4, "Conducting job recruitment": .4, "Meeting online": .2, "Commuting check-in": .05,
    "Checking calendar": .6, "Studying for course": .6, "Taking subway": .6,
}
PERSONA_AFFINITY: dict[str, dict[str, float]] = {
    "student": {"Gaming": 2, "Studying for course": 4, "Watching animation": 4, "Studying for driving test": 3,
                "Taking notes": 2, "Translating": 2, "Singing": 1.5, "Editing video": 1.3,
                "Conducting job recruitment": .6, "Meeting online": .5, "Rentaling car": .3, "Rentaling house": .8,
                "Drinking coffee": .7, "Reading news": .5},
    "office worker": {"Conducting job recruitment": 1.3, "Meeting online": 2, "Checking calendar": 1.5,
                      "Drinking coffee": 1.5, "Reading news": 1.2, "Listening podcast": 1.5,
                      "Studying for course": .3, "Watching animation": .5},
    "shift worker": {"Hailing taxi": 2, "Ordering takeout": 1.5, "Gaming": 1.3, "Commuting check-in": 1.5,
                     "Conducting job recruitment": 1.2, "Picking up the express delivery": 1.3,
                     "Studying for course": .2, "Meeting online": .3},
    "retiree": {"Reading news": 2.5, "Watching video": 2, "Cooking": 3, "Exercising": 2, "Singing": 1.5,
                "Watching Match": 1.5, "Gaming": .3, "Studying for course": .05, "Conducting job recruitment": .05,
                "Meeting online": .1, "Watching animation": .1, "Studying for driving test": .05,
                "Editing video": .5, "Shopping online": .7, "Rentaling house": .2, "Translating": .3},
    "homemaker": {"Shopping online": 1.4, "Cooking": 3, "Ordering takeout": 1.3, "Picking up the express delivery": 2,
                  "Watching Live-streaming": 2, "Meeting online": .3, "Conducting job recruitment": .5,
                  "Studying for course": .5, "Commuting check-in": .1, "Taking subway": .7},
}

_ANY = (WORK, OFF)
_AWAKE = tuple(range(6, 24))
_OUT = ("workplace", "school", "commute", "outdoors", "restaurant", "gym", "mall")
TRIGGERS: dict[str, list[tuple[str, tuple[str, ...], tuple[int, ...], tuple[int, ...]]]] = {
    "Taking notes": [("Studying for course", ("school",), _AWAKE, _ANY),
                     ("Listening podcast", ("commute", "home", "gym"), _AWAKE, _ANY)],
    "Checking calendar": [("Checking Weather", ("commute", "workplace", "school"), _AWAKE, (WORK,)),
                          ("Reading news", ("home",), (6, 7, 8, 9, 10, 11), (WORK,))],
    "Hailing taxi": [("Payment", ("restaurant", "mall", "outdoors"), (17, 18, 19, 20, 21, 22, 23, 0, 1), _ANY)],
    "Picking up the express delivery": [("Ordering takeout", PLACES, _AWAKE, _ANY)],
    "Watching Match": [("Reading news", ("home", "restaurant"), _AWAKE, (OFF,))],
    "Exercising": [("Listening Music", ("gym", "outdoors"), _AWAKE, _ANY)],
    "Singing": [("Listening Music", ("restaurant", "mall", "commute"), _AWAKE, _ANY)],
    "Watching Live-streaming": [("Listening Music", ("home",), _AWAKE, _ANY)],
    "Cycling": [("Checking Weather", ("home", "outdoors", "gym", "mall", "restaurant"), _AWAKE, _ANY)],
    "Meeting online": [("Conducting job recruitment", ("workplace", "school"), _AWAKE, _ANY)],
    "Studying for driving test": [("Studying for course", tuple(x for x in PLACES if x != "school"), _AWAKE, _ANY)],
    "Translating": [("Reading news", ("school", "workplace"), tuple(range(12, 19)), (WORK,))],
    "Rentaling house": [("Conducting job recruitment", tuple(x for x in PLACES if x not in ("workplace", "school")),
                         _AWAKE, _ANY), ("Taking photos", ("home",), _AWAKE, _ANY)],
    "Watching animation": [("Gaming", ("home",), _AWAKE, _ANY)],
    "Booking ticket": [("Watching video", _OUT, _AWAKE, _ANY)],
    "Commuting check-in": [("Taking subway", _OUT, _AWAKE, _ANY)],
    "Cooking": [("Watching video", ("home",), _AWAKE, _ANY)],
    "Drinking coffee": [("Reading news", ("workplace", "school", "commute"), (6, 7, 8, 9, 10, 11), (WORK,))],
    "Rentaling car": [("Taking photos", _OUT, _AWAKE, (OFF,))],
}
"""tail behavior -> [(anchor, places, hours, day types)]: what makes each tail behavior likely. When a user who does
the behavior at all has just done the anchor (at most ``TRIGGER_MINUTES`` before) at one of the places, hours and
day types, the next event is the tail behavior with a probability calibrated so that the triggers produce
``TRIGGER_SHARE`` of its events (at most ``TRIGGER_MAX``; lower for personas with an affinity below 1). The rest
come from its ordinary odds, which only rule out implausible contexts (no cooking at the gym): the anchor and the
context together make it likely, each alone does not. Tail behaviors that share an anchor differ in place, hours
or day type; every anchor is a medium behavior, so a head behavior's own contexts are not taken over."""

RELATED: dict[str, dict[str, float]] = {
    "Watching video clip": {"Watching video clip": 2.0, "Watching video": .3, "Editing video": .3},
    "Watching video": {"Watching video": .5, "Watching video clip": .2},
    "Editing video": {"Editing video": 3.0, "Taking photos": .4, "Watching video clip": .2},
    "Taking photos": {"Taking photos": .4, "Editing video": .8},
    "Shopping online": {"Shopping online": 3.0, "Payment": .5},
    "Payment": {"Payment": .2, "Shopping online": .3, "Ordering takeout": .3},
    "Taking subway": {"Taking subway": .2, "Listening podcast": .4, "Listening Music": .3},
    "Checking Weather": {"Checking Weather": .3},
    "Listening Music": {"Listening Music": .5, "Listening podcast": .3},
    "Listening podcast": {"Listening podcast": .5, "Listening Music": .3},
    "Reading books": {"Reading books": 3.0, "Reading news": .2},
    "Reading news": {"Reading news": .4, "Checking Weather": .3},
    "Studying for course": {"Studying for course": .5},
    "Conducting job recruitment": {"Conducting job recruitment": .5},
    "Ordering takeout": {"Payment": .3},
    "Gaming": {"Gaming": .7},
    "Drinking coffee": {"Payment": .3, "Reading news": .2},
    "Commuting check-in": {"Checking Weather": .3, "Reading news": .3},
    "Picking up the express delivery": {"Shopping online": .3},
    "Watching Match": {"Watching video": .4, "Watching video clip": .2},
    "Singing": {"Listening Music": .5},
    "Rentaling house": {"Conducting job recruitment": .3},
    "Watching Live-streaming": {"Shopping online": .3, "Watching video clip": .2},
    "Watching animation": {"Watching video": .3, "Gaming": .3},
    "Cooking": {"Ordering takeout": .2},
    "Exercising": {"Listening Music": .4},
    "Cycling": {"Taking photos": .3},
    "Booking ticket": {"Checking Weather": .3},
    "Meeting online": {"Conducting job recruitment": .3},
    "Taking notes": {"Studying for course": .3},
    "Translating": {"Reading books": .3},
    "Hailing taxi": {"Listening Music": .3},
}
"""behavior -> {behavior whose odds it raises next: excitation}; the short-term structure of a session. Tail
behaviors follow their anchors through ``TRIGGERS`` instead."""

BURST_GAIN = 5.0        # odds multiplier per unit of excitation
SELF_EXCITATION = 0.8   # every behavior raises its own odds next (app sessions are sticky)
BURST_MINUTES = 15.0    # excitation decays by e every 15 minutes: bursts live within a session
SESSION_MEAN = 2.5      # events per phone session (geometric)
GAP_MINUTES = 3.0       # mean extra minutes between events of a session (after one minute)
HABIT_SIGMA = (0.3, 0.6, 0.4)  # spread of users' taste for the top behavior / other anchors / tail (log-normal)
ROUTINE_GAIN = 8.0      # odds multiplier of a behavior in the user's routine hours for it
ROUTINE_HOURS = 2       # width of a routine window
RATE_SIGMA = 0.4        # spread of users' daily activity (log-normal, mean 1)
BURST_DECAY = 0.8       # mean decayed excitation left from the event just before, for the calibration
ITERATIONS = 150        # at most, of the expected-value calibration (it converges in about 30)
PILOT_USERS, PILOT_DAYS, PILOT_SEED = 600, 7, 2 ** 31 - 1  # the population that corrects the calibration
TRIGGER_MINUTES = 20.0  # a trigger's anchor must be the event just before, at most this long ago
PRECEDED = 0.63         # share of events with an event of the same user at most TRIGGER_MINUTES before (measured)
TRIGGER_SHARE = 0.75    # share of a tail behavior's events its triggers aim to produce
TRIGGER_MAX = 0.9       # cap on a trigger's probability: the context makes the behavior likely, never certain
TAIL_ADOPTION = 0.8     # share of users who do a given tail behavior at all


def target_shares() -> np.ndarray:
    """The calibration target: Table 3's shares, tail behaviors raised to ``TAIL_FLOOR``.

    The paper's logs hold millions of events; the demo's about 50,000, where a 0.016 % behavior would occur
    8 times and never reach a 20-user test split. Every share below the floor is raised to it (all still under
    1 %: the tail stays the tail), and the mass this adds is taken from the top behavior, so every other share
    is Table 3's.
    """
    shares = np.array([TABLE3[b] for b in BEHAVIORS])
    shares = shares / shares.sum()
    raised = np.maximum(shares, TAIL_FLOOR)
    raised[0] -= raised.sum() - 1.0
    return raised


def _timetable_matrix(blocks: list) -> np.ndarray:
    """(24, places) probabilities of each place at each hour."""
    out = np.zeros((24, len(PLACES)))
    for start, end, options in blocks:
        weights = np.zeros(len(PLACES))
        for place, w in options.items():
            weights[P[place]] = w
        out[start:end] = weights / weights.sum()
    return out


def _activity(persona: str) -> np.ndarray:
    curve = ACTIVITY.copy()
    for hour, factor in ACTIVITY_TWEAKS.get(persona, {}).items():
        curve[hour] *= factor
    return curve / curve.sum()


def _adoption(share: float) -> float:
    """Probability that a user does a behavior at all: tail behaviors appeal to fewer users."""
    return 1.0 if share > 0.01 else TAIL_ADOPTION


def _habit_sigma(share: float) -> float:
    return HABIT_SIGMA[0] if share > 0.2 else HABIT_SIGMA[1] if share > 0.01 else HABIT_SIGMA[2]


@dataclass
class _Model:
    """Everything users share: context odds, excitation, calibrated base odds and trigger probabilities."""

    context: np.ndarray         # (persona, day type, hour, place, behavior) odds multipliers
    related: np.ndarray         # (behavior, behavior) excitation of the second by the first
    shares: np.ndarray          # (behavior,) target shares
    base: np.ndarray            # (behavior,) calibrated base odds
    trigger_tail: np.ndarray    # (trigger,) behavior index
    trigger_anchor: np.ndarray  # (trigger,) behavior index
    trigger_gate: np.ndarray    # (trigger, day type, hour, place) where the trigger applies
    trigger_p: np.ndarray       # (persona, trigger) probability, for users who do the behavior


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """The affinity tables as arrays: context odds (persona, day type, hour, place, behavior), excitation."""
    n_b = len(BEHAVIORS)
    place = np.ones((len(PLACES), n_b))
    for name, table in PLACE_AFFINITY.items():
        for behavior, w in table.items():
            place[P[name], B[behavior]] = w
    hour = np.ones((24, n_b))
    for behavior, hours, w in HOUR_AFFINITY:
        hour[list(hours), B[behavior]] *= w
    day = np.ones((2, n_b))
    for behavior, w in OFF_DAY_AFFINITY.items():
        day[OFF, B[behavior]] = w
    persona = np.ones((len(PERSONAS), n_b))
    for i, name in enumerate(PERSONAS):
        for behavior, w in PERSONA_AFFINITY[name].items():
            persona[i, B[behavior]] = w
    context = (persona[:, None, None, None, :] * day[None, :, None, None, :] * hour[None, None, :, None, :]
               * place[None, None, None, :, :])
    related = np.zeros((n_b, n_b))
    for source, targets in RELATED.items():
        for target, w in targets.items():
            related[B[source], B[target]] = w
    np.fill_diagonal(related, np.maximum(np.diag(related), SELF_EXCITATION))
    return context, related


def _trigger_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``TRIGGERS`` as arrays: tail behavior, anchor, and gate (day type, hour, place) of each trigger."""
    tails, anchors, gates = [], [], []
    for tail, triggers in TRIGGERS.items():
        for anchor, places, hours, day_types in triggers:
            gate = np.zeros((2, 24, len(PLACES)), dtype=bool)
            gate[np.ix_(list(day_types), list(hours), [P[x] for x in places])] = True
            tails.append(B[tail])
            anchors.append(B[anchor])
            gates.append(gate)
    return np.array(tails), np.array(anchors), np.array(gates)


def _expected_model() -> _Model:
    """The model with base odds and trigger probabilities calibrated on expectations (a fixed point).

    Expected share of events in each context: persona mix x day-type mix x activity x timetable. An event is
    preceded within its session (share ``PRECEDED``) by one drawn from the same context's distribution, whose
    excitation (decayed by ``BURST_DECAY``) and triggers shape its odds; otherwise it follows the plain context
    odds. Base odds and trigger probabilities are adjusted until the expected marginals match the targets.
    """
    context, related = _tables()
    tails, anchors, gates = _trigger_arrays()
    n_b, n_t = len(BEHAVIORS), len(tails)
    # A trigger fires for users who do its behavior, less often for personas that rarely do it.
    persona_p = np.ones((len(PERSONAS), n_t))  # (persona, trigger)
    for i, name in enumerate(PERSONAS):
        for t, tail in enumerate(tails):
            persona_p[i, t] = min(1.0, PERSONA_AFFINITY[name].get(BEHAVIORS[tail], 1.0))

    occupancy = np.zeros(context.shape[:4])
    for i, name in enumerate(PERSONAS):
        for d, (share_days, blocks) in enumerate(zip((5 / 7, 2 / 7), TIMETABLES[name])):
            occupancy[i, d] = PERSONAS[name] * share_days * _activity(name)[:, None] * _timetable_matrix(blocks)
    occupancy = occupancy.reshape(-1) / occupancy.sum()
    cells = np.flatnonzero(occupancy)  # the (persona, day type, hour, place) contexts that occur
    occupancy = occupancy[cells]
    odds_of_cell = context.reshape(-1, n_b)[cells]
    persona_of_cell = cells // (context[0].size // n_b)
    gate_of_cell = np.tile(gates.reshape(n_t, -1), (1, len(PERSONAS))).T[cells]  # (cell, trigger)
    opportunity = TAIL_ADOPTION * gate_of_cell * persona_p[persona_of_cell]  # (cell, trigger)
    to_tail = np.zeros((n_t, n_b))
    to_tail[np.arange(n_t), tails] = 1
    from_anchor = np.zeros((n_b, n_t))
    from_anchor[anchors, np.arange(n_t)] = 1
    excite = 1 + BURST_GAIN * BURST_DECAY * related  # (previous, behavior)

    target = target_shares()
    base = target.copy()
    cond = odds_of_cell * base  # (cell, behavior): the expected distribution in each context
    cond /= cond.sum(axis=1, keepdims=True)
    for _ in range(ITERATIONS):
        odds = odds_of_cell * base
        plain = odds / odds.sum(axis=1, keepdims=True)
        after = odds[:, None, :] * excite[None]  # (cell, previous, behavior)
        after /= after.sum(axis=2, keepdims=True)
        chance = opportunity * (PRECEDED * cond[:, anchors])  # (cell, trigger): its anchor just before, in its gate
        opportunities = (occupancy @ chance) @ to_tail  # per tail behavior, over all its triggers
        q = np.minimum(TRIGGER_MAX, TRIGGER_SHARE * target[tails] / opportunities[tails])
        fire = opportunity * q  # (cell, trigger): probability given its anchor just before
        kept = cond * (1 - fire @ from_anchor.T)  # (cell, previous): the previous event fires no trigger
        followed = np.einsum("ca,cab->cb", kept, after) + (cond[:, anchors] * fire) @ to_tail
        cond = (1 - PRECEDED) * plain + PRECEDED * followed
        expected = occupancy @ cond
        base *= target / expected
        base /= base.sum()
        if np.abs(np.log(target / expected)).max() < 1e-4:
            break
    return _Model(context=context, related=related, shares=target, base=base, trigger_tail=tails,
                  trigger_anchor=anchors, trigger_gate=gates, trigger_p=persona_p * q)


@lru_cache(maxsize=1)
def _model() -> _Model:
    """The expected-value calibration, corrected once on a pilot population.

    The expectations miss what users' differences do (a heavy gamer's extra games crowd out other behaviors less
    than proportionally), so a fixed pilot population is simulated and every behavior's odds (and its triggers'
    probability) are scaled by how far its share fell from the target. Tail behaviors, too rare in the pilot to
    measure one by one, share one correction.
    """
    model = _expected_model()
    counts = np.ones(len(BEHAVIORS))
    for index in range(PILOT_USERS):
        counts += np.bincount(_simulate_user(index, PILOT_DAYS, PILOT_SEED, 16.0, model)[2], minlength=len(BEHAVIORS))
    ratio = model.shares / (counts / counts.sum())
    tail = model.shares < 0.01
    ratio[tail] = np.exp(np.log(ratio[tail]).mean())
    model.base = model.base * ratio / (model.base * ratio).sum()
    model.trigger_p = np.minimum(TRIGGER_MAX, model.trigger_p * ratio[model.trigger_tail])
    return model


def _routines(rng: np.random.Generator, context: np.ndarray, persona: str, habit: np.ndarray,
              shares: np.ndarray) -> np.ndarray:
    """(24, behaviors) odds multipliers: each non-head behavior a user does has a routine window of hours.

    The window is drawn where the persona plausibly does the behavior (activity x place x hour odds on a
    work day) and its odds rise ``ROUTINE_GAIN``-fold there, scaled so the user's overall rate is unchanged:
    the behavior moves in time rather than growing, so the marginals stay calibrated.
    """
    routine = np.ones((24, len(shares)))
    where = _activity(persona)[:, None] * _timetable_matrix(TIMETABLES[persona][WORK])  # (hour, place)
    for b in np.flatnonzero((habit > 0) & (shares <= 0.05)):
        weight = (where * context[WORK, :, :, b]).sum(axis=1)
        weight /= weight.sum()
        start = int(rng.choice(24, p=weight))
        window = [(start + k) % 24 for k in range(ROUTINE_HOURS)]
        scale = 1 / (1 + (ROUTINE_GAIN - 1) * weight[window].sum())
        routine[:, b] = scale
        routine[window, b] = scale * ROUTINE_GAIN
    return routine


def _simulate_user(index: int, days: int, seed: int, events_per_day: float,
                   model: _Model | None = None) -> tuple[np.ndarray, list, list]:
    """One user's (minutes since START, place indices, behavior indices)."""
    rng = np.random.default_rng([seed, index])
    model = model or _model()
    personas = list(PERSONAS)
    p = int(rng.choice(len(personas), p=list(PERSONAS.values())))
    persona = personas[p]
    shares = model.shares
    adopt_p = np.array([_adoption(s) for s in shares])
    habit = (rng.random(len(shares)) < adopt_p) / adopt_p
    sigma = np.array([_habit_sigma(s) for s in shares])
    habit *= rng.lognormal(-sigma ** 2 / 2, sigma)
    routine = _routines(rng, model.context[p], persona, habit, shares)
    odds = model.context[p] * (model.base * habit) * routine[None, :, None, :]  # (day type, hour, place, behavior)
    cumulative = np.cumsum(odds, axis=-1)
    rate = events_per_day * rng.lognormal(-RATE_SIGMA ** 2 / 2, RATE_SIGMA)
    activity = _activity(persona)
    blocks = [[(start, end, list(options), np.cumsum(list(options.values())) / sum(options.values()))
               for start, end, options in table] for table in TIMETABLES[persona]]
    days_off = {5, 6} if persona != "shift worker" else set(rng.choice(7, size=2, replace=False).tolist())
    # This user's triggers, by anchor: (tail behavior, gate, probability).
    by_anchor: dict[int, list] = {}
    for t, (tail, anchor) in enumerate(zip(model.trigger_tail, model.trigger_anchor)):
        if habit[tail] > 0:
            by_anchor.setdefault(int(anchor), []).append((int(tail), model.trigger_gate[t], model.trigger_p[p, t]))

    minutes_out: list[float] = []
    places_out: list[int] = []
    behaviors_out: list[int] = []
    n_b = len(shares)
    gain_related = BURST_GAIN * model.related  # excitation is kept pre-multiplied by the gain
    gain_mass = gain_related.max(axis=1)
    excitation = np.zeros(n_b)
    level = 0.0  # an upper bound of max(excitation), tracked without touching the array
    last_minute = -1e9
    last = -1
    for d in range(days):
        day_type = OFF if (persona == "retiree" or (START.weekday() + d) % 7 in days_off) else WORK
        plan = np.empty(24, dtype=int)  # one place per timetable block for the whole day
        for start, end, names, cum in blocks[day_type]:
            plan[start:end] = P[names[int(np.searchsorted(cum, rng.random(), side="right"))]]
        n_events = int(rng.poisson(rate * (1.1 if day_type == OFF else 1.0)))
        if n_events == 0:
            continue
        # Sessions: a start drawn from the activity curve, then events a few minutes apart.
        hours = rng.choice(24, size=n_events, p=activity)
        lengths = rng.geometric(1 / SESSION_MEAN, size=n_events)
        session_of = np.repeat(np.arange(n_events), lengths)[:n_events]
        gaps = 1 + rng.exponential(GAP_MINUTES, size=n_events)
        first = np.r_[True, session_of[1:] != session_of[:-1]]
        gaps[first] = 0
        offset = np.cumsum(gaps) - np.maximum.accumulate(np.where(first, np.cumsum(gaps), 0))
        minute = hours[session_of] * 60 + rng.random(n_events)[session_of] * 60 + offset
        keep = minute < 24 * 60
        minute, place = minute[keep], plan[hours[session_of][keep]]
        order = np.argsort(minute, kind="stable")
        draws = rng.random((len(order), 2))
        for k, i in enumerate(order):
            t, where = float(minute[i]), int(place[i])
            absolute = d * 1440 + t
            hour = int(t // 60)
            b = -1  # the behavior: a trigger's, or drawn from the odds
            if absolute - last_minute <= TRIGGER_MINUTES and last in by_anchor:
                for tail, gate, chance in by_anchor[last]:
                    if gate[day_type, hour, where] and draws[k, 1] < chance:
                        b = tail
                        break
            decay = math.exp(-(absolute - last_minute) / BURST_MINUTES)
            last_minute = absolute
            level *= decay
            if level > 1e-3:
                excitation *= decay
            else:  # bursts have faded: the user's plain context odds
                level = 0.0
                excitation[:] = 0.0
            if b < 0:
                row = ((odds[day_type, hour, where] * (1.0 + excitation)).cumsum() if level > 0
                       else cumulative[day_type, hour, where])
                b = min(int(row.searchsorted(draws[k, 0] * row[-1], side="right")), n_b - 1)
            excitation += gain_related[b]
            level += gain_mass[b]
            last = b
            minutes_out.append(absolute)
            places_out.append(where)
            behaviors_out.append(b)
    # Whole minutes, strictly increasing: two events never share a timestamp (they would read as duplicates).
    whole = np.floor(np.array(minutes_out)).astype(np.int64)
    steps = np.arange(len(whole))
    return np.maximum.accumulate(whole - steps) + steps, places_out, behaviors_out


def simulate(users: int = 200, days: int = 14, seed: int = 0, events_per_day: float = 16.0) -> pd.DataFrame:
    """A canonical event table of ``users`` simulated users over ``days`` days (deterministic in ``seed``)."""
    if users < 1 or days < 1:
        raise InputError(f"the simulator needs at least 1 user and 1 day (got users={users}, days={days})")
    width = max(4, len(str(users)))
    frames = []
    places, behaviors = np.array(PLACES, dtype=object), np.array(BEHAVIORS, dtype=object)
    for index in range(users):
        minutes, place, behavior = _simulate_user(index, days, seed, events_per_day)
        frames.append(pd.DataFrame({
            "user_id": f"u{index + 1:0{width}d}",
            "timestamp": START + pd.to_timedelta(minutes, unit="min"),
            "location": places[np.asarray(place, dtype=int)],
            "behavior": behaviors[np.asarray(behavior, dtype=int)],
        }))
    events = pd.concat(frames, ignore_index=True).astype({"user_id": str, "location": str, "behavior": str})
    events["timestamp"] = events["timestamp"].astype("datetime64[ns]")
    return events.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True)


def simulate_config(config: SimulatorConfig) -> pd.DataFrame:
    return simulate(config.users, config.days, config.seed, config.events_per_day)


def share_table(events: pd.DataFrame) -> pd.DataFrame:
    """Simulated share per behavior vs Table 3 and the simulator's target (for checks and the CLI summary)."""
    counts = events["behavior"].value_counts()
    table = pd.DataFrame({"table3": pd.Series(TABLE3)})
    table["table3"] /= table["table3"].sum()
    table["target"] = target_shares()
    table["simulated"] = (counts / counts.sum()).reindex(table.index).fillna(0.0)
    table["events"] = counts.reindex(table.index).fillna(0).astype(int)
    return table


# ---------------------------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    defaults = SimulatorConfig()
    parser.add_argument("--users", type=int, default=defaults.users, help="number of simulated users")
    parser.add_argument("--days", type=int, default=defaults.days, help="days of behavior per user")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed (same seed, same log)")
    parser.add_argument("--events-per-day", type=float, default=defaults.events_per_day,
                        help="mean events per user and day")
    parser.add_argument("--out", required=True, help="output file: .csv, .parquet or .jsonl (format by extension)")


def run(args: argparse.Namespace) -> int:
    from behaviorlm.data.events import write_events

    config = SimulatorConfig(users=args.users, days=args.days, seed=args.seed, events_per_day=args.events_per_day)
    events = simulate_config(config)
    path = write_events(events, args.out)
    table = share_table(events)
    print(f"wrote {len(events)} events of {config.users} users x {config.days} days to {path}")
    print(f"{'behavior':<32} {'share':>7} {'target':>7} {'Table 3':>8}")
    for name, row in table.head(8).iterrows():
        print(f"{name:<32} {row.simulated:7.2%} {row.target:7.2%} {row.table3:8.2%}")
    anchors = int((table["simulated"] > 0.01).sum())
    print(f"... {len(table) - 8} more; {anchors} behaviors above 1% (Table 3: 16); "
          f"{int((table.table3 < TAIL_FLOOR).sum())} tail behaviors raised to {TAIL_FLOOR:.1%}", file=sys.stdout)
    return 0
