"""The platform's vocabulary: the categorical values the simulator writes (re-declared here on
purpose: the simulator is the outside world and does not import the lakehouse contract;
tests/test_vocabulary.py holds them to lakehouse/contract.py) and the catalogue's make-up per
discipline (what kind of classes exist, not what users like)."""

from __future__ import annotations

import numpy as np

PLATFORMS = ("bike", "tread", "app")
BIKE, TREAD, APP = 0, 1, 2
EQUIPMENT = ("bike", "tread", "none")
DISCIPLINES = (
    "cycling",
    "running",
    "walking",
    "strength",
    "yoga",
    "stretching",
    "meditation",
    "cardio",
    "pilates",
)
D = {name: i for i, name in enumerate(DISCIPLINES)}
BODY_FOCUS = ("lower", "upper", "full", "core", "mind")
BF = {name: i for i, name in enumerate(BODY_FOCUS)}
FITNESS_LEVELS = ("beginner", "intermediate", "advanced")
GENRES = ("pop", "hip hop", "rock", "electronic", "latin", "country", "indie", "r&b", "ambient")
G = {name: i for i, name in enumerate(GENRES)}
DURATIONS = np.array([5, 10, 15, 20, 30, 45, 60, 75, 90])

# equipment a discipline needs; a class is offered on platforms whose equipment it needs, and
# equipment-free classes everywhere; the app offers everything (non-connected hardware).
DISCIPLINE_EQUIPMENT = np.array([0, 1, 1, 2, 2, 2, 2, 2, 2])
PLATFORM_OFFERS = {  # platform -> equipment codes it offers
    BIKE: (0, 2),
    TREAD: (1, 2),
    APP: (0, 1, 2),
}

# share of instructors whose primary discipline it is
INSTRUCTOR_DISCIPLINE_P = np.array([0.28, 0.14, 0.05, 0.16, 0.12, 0.05, 0.06, 0.08, 0.06])
# what else an instructor teaches (besides the primary discipline)
SECONDARY = {
    "cycling": ("stretching", "strength"),
    "running": ("stretching", "walking", "strength"),
    "walking": ("running", "stretching"),
    "strength": ("stretching", "cardio", "pilates"),
    "yoga": ("meditation", "stretching", "pilates"),
    "meditation": ("yoga", "stretching"),
    "stretching": ("yoga", "strength"),
    "cardio": ("strength", "stretching"),
    "pilates": ("strength", "yoga", "stretching"),
}
PRIMARY_SHARE = 0.75  # of an instructor's classes in the primary discipline
# how many classes an instructor of this discipline releases (relative)
OUTPUT_RATE = np.array([1.6, 1.2, 0.8, 1.1, 1.0, 0.8, 0.8, 0.9, 0.8])

# duration distribution per discipline over DURATIONS
DURATION_P = np.array(
    [
        [0.03, 0.07, 0.10, 0.18, 0.30, 0.20, 0.10, 0.01, 0.01],  # cycling
        [0.03, 0.10, 0.15, 0.22, 0.30, 0.15, 0.05, 0.00, 0.00],  # running
        [0.00, 0.10, 0.15, 0.25, 0.30, 0.15, 0.05, 0.00, 0.00],  # walking
        [0.08, 0.22, 0.22, 0.22, 0.18, 0.08, 0.00, 0.00, 0.00],  # strength
        [0.05, 0.15, 0.20, 0.20, 0.25, 0.10, 0.05, 0.00, 0.00],  # yoga
        [0.30, 0.40, 0.20, 0.10, 0.00, 0.00, 0.00, 0.00, 0.00],  # stretching
        [0.25, 0.35, 0.20, 0.12, 0.08, 0.00, 0.00, 0.00, 0.00],  # meditation
        [0.00, 0.20, 0.25, 0.25, 0.20, 0.10, 0.00, 0.00, 0.00],  # cardio
        [0.00, 0.20, 0.25, 0.25, 0.20, 0.10, 0.00, 0.00, 0.00],  # pilates
    ]
)
# body focus per discipline over BODY_FOCUS
BODY_FOCUS_P = np.array(
    [
        [0.85, 0.00, 0.15, 0.00, 0.00],
        [0.80, 0.00, 0.20, 0.00, 0.00],
        [0.80, 0.00, 0.20, 0.00, 0.00],
        [0.30, 0.30, 0.25, 0.15, 0.00],
        [0.10, 0.10, 0.50, 0.15, 0.15],
        [0.45, 0.20, 0.35, 0.00, 0.00],
        [0.00, 0.00, 0.00, 0.00, 1.00],
        [0.20, 0.00, 0.60, 0.20, 0.00],
        [0.15, 0.00, 0.30, 0.55, 0.00],
    ]
)
# music genre per discipline over GENRES
GENRE_P = np.array(
    [
        [0.24, 0.18, 0.14, 0.18, 0.08, 0.06, 0.06, 0.06, 0.00],
        [0.24, 0.20, 0.14, 0.18, 0.08, 0.06, 0.06, 0.04, 0.00],
        [0.25, 0.10, 0.12, 0.08, 0.08, 0.15, 0.14, 0.08, 0.00],
        [0.20, 0.28, 0.18, 0.16, 0.06, 0.04, 0.04, 0.04, 0.00],
        [0.08, 0.00, 0.00, 0.06, 0.04, 0.04, 0.25, 0.13, 0.40],
        [0.15, 0.05, 0.05, 0.05, 0.05, 0.05, 0.25, 0.15, 0.20],
        [0.00, 0.00, 0.00, 0.05, 0.00, 0.00, 0.10, 0.05, 0.80],
        [0.25, 0.25, 0.10, 0.20, 0.12, 0.02, 0.02, 0.04, 0.00],
        [0.18, 0.08, 0.05, 0.08, 0.08, 0.04, 0.20, 0.19, 0.10],
    ]
)
DIFFICULTY_MEAN = np.array([6.0, 6.0, 3.0, 5.5, 4.0, 2.0, 1.0, 6.0, 5.0])

TITLE_WORD = {
    "cycling": "Ride",
    "running": "Run",
    "walking": "Walk",
    "strength": "Strength",
    "yoga": "Yoga Flow",
    "stretching": "Stretch",
    "meditation": "Meditation",
    "cardio": "Cardio",
    "pilates": "Pilates",
}
BODY_TITLE = {"lower": "Lower Body", "upper": "Upper Body", "full": "Full Body", "core": "Core", "mind": ""}
FIRST_NAMES = (
    "Alex", "Robin", "Sam", "Jess", "Cody", "Ally", "Denis", "Emma", "Hannah", "Leanne",
    "Matt", "Olivia", "Ben", "Christine", "Tunde", "Kendall", "Adrian", "Selena", "Rebecca", "Jermaine",
    "Susie", "Andy", "Marcel", "Mariana", "Camila", "Logan", "Erik", "Nico", "Kirra", "Bradley",
)  # fmt: skip
LAST_NAMES = (
    "Toussaint", "Arzon", "Yasumura", "Lee", "Rigsby", "Love", "Morton", "Ransom", "Corne",
    "Wilpers", "Jenkins", "Alldis", "Oyeyemi", "Bourne", "Williams", "Kim", "Garcia", "Chen",
    "Novak", "Singh", "Okafor", "Ricci", "Schulz", "Dubois", "Haddad", "Moreno", "Larsen", "Ito",
)  # fmt: skip
COUNTRIES = ("US", "CA", "GB", "DE", "AU")
COUNTRY_P = (0.62, 0.09, 0.13, 0.07, 0.09)
