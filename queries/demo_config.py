"""What the demo simulates: its size, its seed and the scenario it plants.

The scenario is fixed in one place so that the generator, the manifest and the tests agree on which
effects exist (where the drift is, which branch the guideline change hits, who degrades). Only the
size, the seed and whether events are planted vary between runs.
"""

from __future__ import annotations

from datetime import date
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

from queries.errors import LabelgovError

SCALES: Final[dict[str, int]] = {"small": 20_000, "medium": 200_000, "large": 1_000_000}
MIN_ITEMS: Final = 500
MAX_ITEMS: Final = 5_000_000

TAXONOMY_FILE: Final = "demo_tree.yaml"
START: Final = date(2026, 1, 5)
WEEKS: Final = 26

# Top-level branch shares of the ordinary sources: most moderated content is fine, spam is the
# commonest violation, self-harm the rarest.
BRANCH_PRIOR: Final[dict[str, float]] = {
    "safe": 0.52,
    "spam": 0.12,
    "harassment": 0.09,
    "hate": 0.06,
    "misinformation": 0.06,
    "sexual": 0.06,
    "violence": 0.05,
    "self_harm": 0.04,
}
# Within a branch the leaves in file order get Zipf-like weights.
LEAF_ZIPF: Final = 0.7
HIGH_SEVERITY: Final = ("violence", "self_harm")

HARD_SIBLING_PAIRS: Final[tuple[tuple[str, str], ...]] = (
    ("harassment_insult", "harassment_bullying"),
    ("harassment_unwanted_advances", "harassment_sexual_remarks"),
    ("hate_dehumanisation", "hate_stereotype"),
    ("violence_credible_threat", "violence_incitement"),
    ("sexual_explicit", "sexual_suggestive"),
    ("spam_scam", "spam_phishing"),
    ("misinfo_medical", "misinfo_vaccine"),
)

SOURCES: Final[dict[str, float]] = {"web": 0.5, "app": 0.35, "partner_api": 0.15}
LANGUAGES: Final[dict[str, float]] = {"en": 0.52, "es": 0.15, "pt": 0.1, "de": 0.09, "fr": 0.08, "it": 0.06}
SPLITS: Final[dict[str, float]] = {"train": 0.8, "validation": 0.1, "test": 0.1}
DUPLICATE_SHARE: Final = 0.004

# Planted events (used only when events are on).
DRIFT_BRANCH: Final = "spam"
DRIFT_WEEK: Final = 14
DRIFT_SOURCE: Final = "live_chat"
DRIFT_EXTRA_VOLUME: Final = 0.4  # the new source adds this share of the ordinary weekly volume
DRIFT_BRANCH_BOOST: Final = 5.0  # the new source's odds of the drift branch, relative to the others
DRIFT_LEAF_BOOST: Final[dict[str, float]] = {"spam_scam": 3.0, "spam_phishing": 3.0}
GUIDELINE_BRANCH: Final = "harassment"
GUIDELINE_WEEK: Final = 10
GUIDELINE_ACCURACY_FACTOR: Final = 0.65
DEGRADE_FROM_WEEK: Final = 12
DEGRADE_START_ACCURACY: Final = 0.92
DEGRADE_END_ACCURACY: Final = 0.45

# Crowd answering.
CROWD_ITEMS_PER_WORKER: Final = 250
CROWD_MIN: Final = 40
CROWD_MAX: Final = 2000
SPAMMER_SHARE: Final = 0.03
CROWD_ACCURACY_RANGE: Final = (0.55, 0.95)
HARD_PAIR_ACCURACY_FACTOR: Final = 0.8
COARSE_SHARE: Final = 0.05
CONFIDENCE_REPORTER_SHARE: Final = 0.5

# Adaptive routing. A high-redundancy operation: nine first-round answers, two more when they split,
# which gives about ten answers per item (the large scale is about ten million answers) and room for
# the cost-versus-quality curve to replay k = 1..11.
K_INITIAL: Final = 9
K_EXTENDED: Final = 11
EXTEND_SHARE: Final = 0.5
CONFIDENCE_THRESHOLD: Final = 0.5
GAP_THRESHOLD: Final = 0.3
MANUAL_SHARE: Final = 0.004
EXPERTS_MIN: Final = 16
EXPERTS_MAX: Final = 40
EXPERT_ACCURACY_RANGE: Final = (0.95, 0.98)
EXPERT_OUT_OF_AREA_ACCURACY: Final = 0.85
GOLD_SHARE: Final = 0.05

# Pay: a piece rate per annotation by tier (duration does not change pay).
COST_RATE: Final[dict[str, float]] = {"crowd-standard": 0.05, "crowd-trusted": 0.08, "expert": 0.9}

# The moderation model.
MODEL: Final = "moderation-classifier"
MODEL_V2_WEEK: Final = 18
MODEL_SIGNAL: Final[dict[str, float]] = {"v1": 2.6, "v2": 3.2}
SIBLING_SIGNAL_SHARE: Final = 0.35
HARD_PAIR_SIGNAL_SHARE: Final = 0.75
MISCALIBRATED: Final[dict[str, float]] = {"hate": 0.6, "misinformation": 0.5}
MIN_PROBABILITY: Final = 1e-3
# Above this many items only a sample is scored, to keep the large build within its time budget.
PREDICTION_FULL_UP_TO: Final = 500_000
PREDICTION_SAMPLE_SHARE: Final = 0.5


class DemoConfig(BaseModel):
    """One demo build: the manifest records these so a warehouse says how it was made."""

    model_config = ConfigDict(frozen=True)

    scale: str
    items: int = Field(ge=MIN_ITEMS, le=MAX_ITEMS)
    seed: int = Field(ge=0)
    events: bool = True


def demo_config(scale: str = "small", seed: int = 7, events: bool = True) -> DemoConfig:
    """Resolve ``small|medium|large|N`` into a config, with one clear message for anything else."""
    text = scale.strip().lower()
    if text in SCALES:
        items = SCALES[text]
    elif text.isdigit():
        items = int(text)
        if not MIN_ITEMS <= items <= MAX_ITEMS:
            raise LabelgovError(f"--scale {scale}: a number of items must be between {MIN_ITEMS:,} and {MAX_ITEMS:,}")
    else:
        raise LabelgovError(f"--scale {scale!r}: use small, medium, large or a number of items")
    if seed < 0:
        raise LabelgovError(f"--seed {seed}: use a non-negative integer")
    return DemoConfig(scale=text, items=items, seed=seed, events=events)
