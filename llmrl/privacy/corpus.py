"""A synthetic clinical-notes corpus with planted canaries: the project's demo of a sensitive corpus.

No real patient data: names, ages, diagnoses and prescriptions are drawn from short lists. A few
*canaries* (a made-up patient's record number, a secret of random digits) are planted in the train
split, each ``canary_repeats`` times, so the attacks in ``llmrl.privacy.attacks`` can measure how
much of a secret a fine-tuned model gives away. The test split has no canaries (held-out rows for
validation perplexity and as the non-members of membership inference).

>>> rows = clinical_notes_dataset(split="train", n=None, seed=0, size=20, num_canaries=1, canary_repeats=2)
>>> sum(r.startswith(canaries(0, 1)[0].prefix) for r in rows["text"])
2
"""
from __future__ import annotations

import random
from dataclasses import dataclass

FIRST = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Jun", "Kofi", "Lena", "Mateo",
         "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tara"]
LAST = ["Smith", "Garcia", "Kim", "Okafor", "Novak", "Rossi", "Silva", "Tanaka", "Weber", "Young"]
CONDITIONS = [("hypertension", "lisinopril", [10, 20]), ("type 2 diabetes", "metformin", [500, 1000]),
              ("asthma", "albuterol", [2, 4]), ("hyperlipidemia", "atorvastatin", [20, 40]),
              ("hypothyroidism", "levothyroxine", [50, 75]), ("depression", "sertraline", [50, 100]),
              ("GERD", "omeprazole", [20, 40]), ("migraine", "sumatriptan", [50, 100])]
FREQ = ["once daily", "twice daily", "at night", "as needed"]
FOLLOW = ["Follow up in 2 weeks.", "Follow up in 3 months.", "Labs ordered.", "Stable, no changes.",
          "Patient counseled on diet.", "Refer to specialist."]


@dataclass(frozen=True)
class Canary:
    """A planted secret: the model sees ``prefix + secret``; exposure asks how it ranks ``secret``
    against random strings of the same ``pattern`` after ``prefix``."""

    prefix: str
    secret: str
    pattern: str = "ddddddd"  # d = a random digit

    def random_candidate(self, rng: random.Random) -> str:
        return "".join(str(rng.randrange(10)) if c == "d" else c for c in self.pattern)


def canaries(seed: int, num: int) -> list[Canary]:
    """The canaries the corpus of ``seed`` plants (the attacker's side knows the prefix and format)."""
    rng = random.Random(f"canary-{seed}")
    out = []
    for i in range(num):
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        c = Canary(prefix=f"Patient {name}, record number ", secret="")
        out.append(Canary(prefix=c.prefix, secret=c.random_candidate(rng)))
    return out


def note(rng: random.Random) -> str:
    cond, drug, doses = rng.choice(CONDITIONS)
    return (f"Patient {rng.choice(FIRST)} {rng.choice(LAST)}, age {rng.randint(18, 90)}. Dx: {cond}. "
            f"Rx: {drug} {rng.choice(doses)} mg {rng.choice(FREQ)}. {rng.choice(FOLLOW)}")


def clinical_notes_dataset(*, split: str, n: int | None, seed: int, size: int = 2000, test_size: int = 400,
                           num_canaries: int = 4, canary_repeats: int = 4):
    """Synthetic notes as a ``datasets.Dataset`` with a ``text`` column (``data.name: clinical_notes``).

    ``size`` train rows include ``num_canaries * canary_repeats`` canary rows; the test split
    (``test_size`` rows) holds none. ``n`` caps the rows (canaries are placed first so a cap
    never drops them)."""
    from datasets import Dataset

    if split not in ("train", "test"):
        raise ValueError(f"clinical_notes: split must be 'train' or 'test', got {split!r}")
    rng = random.Random(f"notes-{split}-{seed}")
    if split == "test":
        texts = [note(rng) for _ in range(test_size if n is None else min(n, test_size))]
    else:
        planted = [c.prefix + c.secret + "." for c in canaries(seed, num_canaries) for _ in range(canary_repeats)]
        total = size if n is None else min(n, size)
        if total < len(planted):
            raise ValueError(f"data.args.size: {total} rows cannot hold {len(planted)} canary rows")
        texts = planted + [note(rng) for _ in range(total - len(planted))]
        rng.shuffle(texts)
    return Dataset.from_dict({"text": texts})
