"""Synthetic dating-profile pairs, deterministic for a seed.

Every statement is about one *item* (smoking, hiking, having kids, ...) with a *stance*: +1 (I do / like
it) or -1 (I refuse / can't stand it). The label rule, applied to the items and stances a pair's two
texts mention:

    label = 0 (incompatible) if some item appears in both texts with opposite stances, else 1.

Pair types, chosen so that a topic-tracking model is inverted:
- ``opposite_stance`` (0): same item, opposite stance ("I smoke every day" / "I'd never date a smoker").
- ``same_stance`` (1): same item, same stance (two people who both hike).
- ``different_topic`` (1): two different items of one category, no conflict.
- ``mixed_conflict`` (0): a statement mixing two categories, one of which the other text opposes.
- ``mixed_compatible`` (1): a statement mixing two categories, the other text on a third, unrelated item.

Splits are made of (sentence template x item) *cells*: each cell (say "Swipe left if you're {person}" x
smoking) belongs to exactly one of train, dev and eval. Every eval sentence is therefore a combination
never seen in training -- its frame was seen with other topics, its topic in other frames -- so eval
measures compositional generalisation rather than memory of sentences, and no text (hence no pair) can
appear in two splits. Two stricter splits were tried and are documented in the README: whole items held out
(stance on unseen topics) and whole templates held out (unseen negation frames); with 12 frames per stance
neither is learnable from 1,475 pairs (full fine-tuning reached eval AUC 0.71-0.78).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

# Each item: category, activity (a noun phrase for "I can't stand ..."), person (for "I'd never date ..."),
# pro phrases (first person, continuing "I ...").
ITEMS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    # lifestyle
    ("lifestyle", "smoking", "a smoker", ("smoke every day", "go through a pack of cigarettes a day", "enjoy a cigarette with my coffee")),
    ("lifestyle", "heavy drinking", "a big drinker", ("drink most nights of the week", "love a few beers after work", "never say no to another round")),
    ("lifestyle", "partying", "a party animal", ("go clubbing every weekend", "stay out dancing until sunrise", "host a house party most Saturdays")),
    ("lifestyle", "a vegan diet", "a vegan", ("eat a strictly vegan diet", "have not touched animal products in years", "cook plant-based meals every day")),
    ("lifestyle", "getting up at dawn", "an early riser", ("wake up at five every morning", "am in bed by nine and up before sunrise", "do my best work at dawn")),
    ("lifestyle", "staying up all night", "a night owl", ("rarely go to sleep before three", "come alive after midnight", "stay up all night most weekends")),
    ("lifestyle", "daily workouts", "a gym rat", ("lift weights six days a week", "never miss a workout", "spend two hours at the gym every day")),
    ("lifestyle", "dogs", "a dog owner", ("share my flat with two big dogs", "take my dog everywhere I go", "foster rescue dogs")),
    ("lifestyle", "cats", "a cat person", ("live with three cats", "let my cats sleep on the bed", "volunteer at a cat shelter")),
    ("lifestyle", "big-city living", "a city person", ("live right in the middle of downtown", "love the noise of a busy city", "could never leave the city")),
    ("lifestyle", "a messy home", "a messy person", ("leave dishes in the sink for days", "am happy living in a cluttered flat", "never make my bed")),
    ("lifestyle", "eating meat", "a meat lover", ("eat steak several times a week", "grill burgers every weekend", "could not live without bacon")),
    # interests
    ("interests", "hiking", "a hiker", ("go hiking every weekend", "spend my Sundays on mountain trails", "plan my holidays around long hikes")),
    ("interests", "video games", "a gamer", ("play video games every evening", "stream my gaming sessions online", "spend whole weekends gaming")),
    ("interests", "reading", "a bookworm", ("read a novel every week", "spend my evenings with a good book", "run a monthly book club")),
    ("interests", "travelling", "a frequent traveller", ("travel abroad every few months", "have visited over forty countries", "live out of a suitcase half the year")),
    ("interests", "watching football", "a football fan", ("watch every match my team plays", "have a season ticket at the stadium", "plan my weekends around football")),
    ("interests", "camping", "a camper", ("go camping every summer", "sleep in a tent whenever I can", "spend long weekends camping in the woods")),
    ("interests", "horror movies", "a horror fan", ("watch horror movies every Friday", "collect old horror films", "love a scary movie marathon")),
    ("interests", "dancing", "a dancer", ("take salsa classes twice a week", "dance whenever there is music", "compete in ballroom dancing")),
    ("interests", "gardening", "a keen gardener", ("spend every spare hour in my garden", "grow my own vegetables", "fill my balcony with plants")),
    ("interests", "live concerts", "a concert goer", ("go to a live concert every month", "follow my favourite bands on tour", "never miss a music festival")),
    ("interests", "board games", "a board game geek", ("host board game nights every week", "own more than a hundred board games", "play strategy games all weekend")),
    ("interests", "cooking", "a home cook", ("cook elaborate dinners every night", "love trying new recipes", "bake bread every weekend")),
    # values
    ("values", "having children", "someone who wants kids", ("want to have children soon", "dream of a big family", "hope to be a parent one day")),
    ("values", "religion", "a religious person", ("go to church every Sunday", "pray every day", "build my life around my faith")),
    ("values", "marriage", "someone who wants to marry", ("want to get married in the next few years", "am looking for a husband or wife", "see marriage as the goal of dating")),
    ("values", "political activism", "a political activist", ("march at protests most months", "volunteer for political campaigns", "talk about politics all the time")),
    ("values", "a career-first life", "a workaholic", ("work seventy hours a week", "put my career before everything", "answer work emails at midnight")),
    ("values", "an open relationship", "someone in open relationships", ("prefer open relationships", "date several people at once", "do not believe in monogamy")),
    ("values", "saving every penny", "a big saver", ("save most of what I earn", "track every penny I spend", "never buy anything on impulse")),
    ("values", "living near family", "a family-centred person", ("see my parents every weekend", "want to live close to my family", "have Sunday dinner with my whole family")),
    ("values", "spontaneous spending", "a big spender", ("spend my money as soon as I get it", "love expensive shopping sprees", "book luxury trips on a whim")),
    ("values", "a traditional lifestyle", "a traditional person", ("believe in traditional gender roles", "live by old-fashioned values", "want a very traditional household")),
    ("values", "volunteering", "a volunteer", ("volunteer at a food bank every week", "give most weekends to charity work", "coach kids for free on Saturdays")),
    ("values", "moving abroad", "someone moving abroad", ("plan to move to another country next year", "want to settle overseas", "am about to relocate abroad")),
    # dealbreakers
    ("dealbreakers", "recreational drugs", "someone who does drugs", ("smoke weed most evenings", "take party drugs at festivals", "use recreational drugs regularly")),
    ("dealbreakers", "gambling", "a gambler", ("bet on sports every weekend", "spend my nights at the casino", "play poker for money every week")),
    ("dealbreakers", "tattoos", "someone with tattoos", ("am covered in tattoos", "get a new tattoo every year", "have full sleeve tattoos on both arms")),
    ("dealbreakers", "riding motorcycles", "a biker", ("ride my motorcycle to work every day", "spend weekends on motorbike trips", "race motorcycles on track days")),
    ("dealbreakers", "hunting", "a hunter", ("go hunting every autumn", "hunt deer with my father", "keep hunting rifles at home")),
    ("dealbreakers", "owning guns", "a gun owner", ("own several guns", "go to the shooting range every week", "keep a handgun at home")),
    ("dealbreakers", "a long-distance relationship", "someone far away", ("am happy to date long distance", "live six hours from the nearest city", "want a partner in another country")),
    ("dealbreakers", "social media fame", "an influencer", ("post on social media ten times a day", "am building an influencer career", "film everything I do for my followers")),
    ("dealbreakers", "strict dieting", "a constant dieter", ("count every calorie I eat", "am always on a strict diet", "weigh my food at every meal")),
    ("dealbreakers", "extreme sports", "an adrenaline junkie", ("go skydiving every month", "love base jumping and free climbing", "spend my holidays on extreme sports")),
    ("dealbreakers", "living with roommates", "someone with roommates", ("share a house with five roommates", "love living with lots of flatmates", "never want to live alone")),
    ("dealbreakers", "conspiracy theories", "a conspiracy theorist", ("believe the moon landing was faked", "read conspiracy forums every night", "do not trust anything the news says")),
)

PRO_TEMPLATES = (
    "I {pro}.",
    "Honestly, I {pro}.",
    "Fair warning: I {pro}.",
    "You should know that I {pro}.",
    "These days I {pro}.",
    "Something about me: I {pro}.",
    "I'm the kind of person who loves {activity}.",
    "My life revolves around {activity}.",
    "I'm passionate about {activity}.",
    "My friends would describe me as {person}.",
    "I'm proudly {person}.",
    "Life without {activity} isn't for me.",
)
CON_TEMPLATES = (
    "I would never date {person}.",
    "For me, {activity} would be a dealbreaker.",
    "I can't stand {activity}.",
    "Please don't message me if you're into {activity}.",
    "I'm looking for someone who isn't into {activity}.",
    "Anything involving {activity} is a hard no for me.",
    "I could never be with {person}.",
    "Swipe left if you're {person}.",
    "I have zero tolerance for {activity}.",
    "No {activity}, please.",
    "I refuse to date {person}.",
    "If you're {person}, we won't work out.",
)
MIXED_TEMPLATES = (  # a statement about two items, both pro
    "I {pro_a}, and I also {pro_b}.",
    "I {pro_a} and {pro_b}.",
    "Two things about me: I {pro_a}, and I {pro_b}.",
    "I love {activity_a} and {activity_b}.",
    "My life is all about {activity_a} and {activity_b}.",
    "I {pro_a}; when I'm not doing that, I {pro_b}.",
)

PAIR_TYPES = {  # pair type -> (label, share of the split)
    "opposite_stance": (0, 0.34),
    "mixed_conflict": (0, 0.16),
    "different_topic": (1, 0.30),
    "same_stance": (1, 0.10),
    "mixed_compatible": (1, 0.10),
}
SPLITS = ("train", "dev", "eval")
TEMPLATE_SHARE = (0.68, 0.16, 0.16)  # share of the template x item cells in train / dev / eval


@dataclass(frozen=True)
class Item:
    category: str
    activity: str
    person: str
    pros: tuple[str, ...]


def _fill(template: str, item: Item, pro: str = "") -> str:
    return template.format(pro=pro, activity=item.activity, person=item.person,
                           Activity=item.activity[0].upper() + item.activity[1:])


def items() -> list[Item]:
    """All items, in declaration order."""
    return [Item(c, a, p, pros) for c, a, p, pros in ITEMS]


@dataclass(frozen=True)
class Cells:
    """The template x item cells of one split."""
    pro: frozenset[tuple[str, str]]  # (template, item activity)
    con: frozenset[tuple[str, str]]
    mixed: frozenset[tuple[str, str, str]]  # (template, first item, second item)


def statements(item: Item, stance: int, cells: Cells) -> list[str]:
    """Every statement of `item` with `stance` (+1 pro, -1 con) in the split's cells, in a fixed order."""
    if stance > 0:
        return [_fill(t, item, p) for t in PRO_TEMPLATES if (t, item.activity) in cells.pro
                for p in (item.pros if "{pro}" in t else ("",))]
    return [_fill(t, item) for t in CON_TEMPLATES if (t, item.activity) in cells.con]


def _mix(rng: random.Random, a: Item, b: Item, cells: Cells) -> str | None:
    options = [t for t in MIXED_TEMPLATES if (t, a.activity, b.activity) in cells.mixed]
    if not options:
        return None
    return rng.choice(options).format(
        pro_a=rng.choice(a.pros), pro_b=rng.choice(b.pros), activity_a=a.activity, activity_b=b.activity)


def _deal(rng: random.Random, cells: list) -> list[frozenset]:
    rng.shuffle(cells)
    n_train = round(TEMPLATE_SHARE[0] * len(cells))
    n_dev = round(TEMPLATE_SHARE[1] * len(cells))
    return [frozenset(cells[:n_train]), frozenset(cells[n_train:n_train + n_dev]), frozenset(cells[n_train + n_dev:])]


def split_cells(seed: int) -> dict[str, Cells]:
    """Deal every template x item cell to train/dev/eval by a seeded shuffle."""
    rng = random.Random(seed)
    acts = [it.activity for it in items()]
    cats = {it.activity: it.category for it in items()}
    pro = _deal(rng, [(t, a) for t in PRO_TEMPLATES for a in acts])
    con = _deal(rng, [(t, a) for t in CON_TEMPLATES for a in acts])
    mixed = _deal(rng, [(t, a, b) for t in MIXED_TEMPLATES for a in acts for b in acts if cats[a] != cats[b]])
    return {split: Cells(pro[i], con[i], mixed[i]) for i, split in enumerate(SPLITS)}


def _pick(rng: random.Random, options: list[str]) -> str | None:
    return rng.choice(options) if options else None


def _one_pair(rng: random.Random, pool: list[Item], cells: Cells, pair_type: str) -> dict[str, Any] | None:
    """Draw one pair of `pair_type`; None when the drawn items have no sentence of that kind in this split."""
    cats = sorted({it.category for it in pool})
    if pair_type in ("opposite_stance", "same_stance"):
        it = rng.choice(pool)
        s1 = rng.choice((1, -1))
        s2 = -s1 if pair_type == "opposite_stance" else s1
        texts = (_pick(rng, statements(it, s1, cells)), _pick(rng, statements(it, s2, cells)))
        used, cat = [it.activity], it.category
    elif pair_type == "different_topic":
        cat = rng.choice(cats)
        a, b = rng.sample([it for it in pool if it.category == cat], 2)
        stance = rng.choice((1, -1))  # one shared stance: see "Compatible pairs" in the module docstring
        texts = (_pick(rng, statements(a, stance, cells)), _pick(rng, statements(b, stance, cells)))
        used = [a.activity, b.activity]
    else:  # mixed: one text mixes two items of different categories, both pro
        c1, c2 = rng.sample(cats, 2)
        a = rng.choice([it for it in pool if it.category == c1])
        b = rng.choice([it for it in pool if it.category == c2])
        if pair_type == "mixed_conflict":
            other = _pick(rng, statements(rng.choice((a, b)), -1, cells))
            used = [a.activity, b.activity]
        else:
            c = rng.choice([it for it in pool if it not in (a, b)])
            other = _pick(rng, statements(c, 1, cells))
            used = [a.activity, b.activity, c.activity]
        texts = (_mix(rng, a, b, cells), other)
        if rng.random() < 0.5:
            texts = texts[::-1]
        cat = "mixed"
    if None in texts:
        return None
    return {"text_1": texts[0], "text_2": texts[1], "category": cat, "pair_type": pair_type, "items": used}


def make_split(rng: random.Random, pool: list[Item], cells: Cells, n: int) -> list[dict[str, Any]]:
    """`n` unique pairs (in either order) from `pool`, in the shares of PAIR_TYPES."""
    counts = {t: round(share * n) for t, (_, share) in PAIR_TYPES.items()}
    counts["opposite_stance"] += n - sum(counts.values())
    seen: set[frozenset[str]] = set()
    out: list[dict[str, Any]] = []
    for pair_type, k in counts.items():
        made, tries = 0, 0
        while made < k:
            tries += 1
            if tries > 200 * k + 1000:
                raise ValueError(f"cannot draw {k} unique {pair_type} pairs from {len(pool)} items")
            pair = _one_pair(rng, pool, cells, pair_type)
            if pair is None:
                continue
            key = frozenset((pair["text_1"], pair["text_2"]))
            if len(key) < 2 or key in seen:
                continue
            seen.add(key)
            pair["label"] = PAIR_TYPES[pair_type][0]
            out.append(pair)
            made += 1
    rng.shuffle(out)
    return out


def generate(seed: int, sizes: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """Generate every split; same seed and sizes give identical output."""
    cells = split_cells(seed)
    rng = random.Random(seed + 1)
    return {split: make_split(rng, items(), cells[split], sizes[split]) for split in SPLITS}


def summary(splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Sizes, class balance, counts per category and pair_type, and the overlap checks."""
    out: dict[str, Any] = {}
    keys = {s: {frozenset((p["text_1"], p["text_2"])) for p in ps} for s, ps in splits.items()}
    texts = {s: {t for p in ps for t in (p["text_1"], p["text_2"])} for s, ps in splits.items()}
    for split, ps in splits.items():
        out[split] = {
            "pairs": len(ps),
            "positives": sum(p["label"] == 1 for p in ps),
            "positive_share": round(sum(p["label"] == 1 for p in ps) / max(len(ps), 1), 4),
            "duplicates": len(ps) - len(keys[split]),
            "category": dict(sorted(Counter(p["category"] for p in ps).items())),
            "pair_type": dict(sorted(Counter(p["pair_type"] for p in ps).items())),
        }
    names = list(splits)
    out["overlap"] = {
        f"{a}_{b}_pairs": len(keys[a] & keys[b]) for i, a in enumerate(names) for b in names[i + 1:]
    } | {f"{a}_{b}_texts": len(texts[a] & texts[b]) for i, a in enumerate(names) for b in names[i + 1:]}
    return out
