"""Synthetic dating-profile pairs, deterministic for a seed, with tunable realistic difficulty.

Every statement speaks about one or two *items* (smoking, hiking, having kids, ...), each with a *stance*:

    +2 strong pro ("I smoke every day")        +1 hedged pro ("I enjoy smoking once in a while")
     0 tolerant ("I'm totally fine with smoking")
    -1 hedged con ("I'm not really one for smoking")  -2 strong con ("I'd never date a smoker")

The label rule, applied to the (item, stance) pairs the two texts carry (``stances_1``/``stances_2`` in
every record):

    label = 0 (incompatible) if some item appears in both texts with opposite signs and at least one side
            strong (|stance| = 2); else 1.

So "I smoke now and then" / "I'm not a big fan of smoking" is compatible (two hedges meet), and "I smoke
now and then" / "I'd never date a smoker" is not. Tolerant statements ("I don't mind
smoking", "I wouldn't rule out a smoker") carry negation words but never conflict, and opposite lifestyles
without a refusal (a homebody and a party animal) are compatible: both are traps for a model that learned
"negation" or "contrast" instead of the rule.

Pair types (the report groups errors by them):
- incompatible: ``opposite_stance`` (strong vs strong), ``hedged_conflict`` (hedge vs opposite strong),
  ``multi_conflict`` (a two-clause statement, the other text contradicting one of its clauses);
- compatible: ``same_stance``, ``different_topic`` (two items of one category), ``hedged_compatible``
  (tolerant, or hedge vs hedge), ``contrast`` (opposite lifestyles, no refusal), ``multi_agree`` (a
  two-clause statement with mixed stances, the other text agreeing with one clause), ``multi_other`` (the
  other text on a third item).

Difficulty knobs (params ``generate.difficulty``): the share of pairs with a two-clause statement, of
hedged stances, of opposite-lifestyle pairs among the compatible ones, of texts written informally (a
speaker prefix, lower case, "ur", "dont", ...), and of labels flipped (annotator disagreement, in every
split: a ceiling on any model's eval AUC of about 1 - label_noise). Flipped pairs say so
(``label_flipped``), so the report can tell a model error from a label error.

Splits are made of (sentence template x item) *cells*: each cell (say "Swipe left if you're {person}" x
smoking) belongs to exactly one of train, dev and eval. Every eval sentence is therefore a combination
never seen in training -- its frame was seen with other topics, its topic in other frames -- so eval
measures compositional generalisation rather than memory of sentences, and no text (hence no pair) can
appear in two splits (checked on every run). Two stricter splits were tried and are documented in the
docs/your-data.md: whole items held out and whole templates held out; neither is learnable from 1,475 pairs.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pairtune.params import Difficulty

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
    ("lifestyle", "quiet nights in", "a homebody", ("stay in most evenings with tea and a book", "would rather cook at home than go out", "spend my weekends at home")),
    ("lifestyle", "country life", "a country person", ("live on a farm miles from town", "love the quiet of the countryside", "grew up and still live in a small village")),
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

STRONG_PRO = (
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
HEDGED_PRO = (
    "I'm into {activity} now and then.",
    "I enjoy {activity} once in a while.",
    "I'm fine with {activity} in moderation.",
    "I like {activity}, but it's not my whole life.",
    "Every so often I'm up for {activity}.",
    "I'd say I'm a casual fan of {activity}.",
)
TOLERANT = (
    "I don't mind {activity}.",
    "I'm totally fine with {activity}.",
    "Dating {person} would be fine by me.",
    "I'm easygoing about {activity}.",
    "No problem with {person} here.",
    "I wouldn't rule out {person}.",
)
HEDGED_CON = (
    "I'm not really one for {activity}.",
    "I'm not a big fan of {activity}.",
    "Ideally my partner isn't {person}.",
    "I'd prefer someone who isn't big on {activity}.",
    "I'm not really into {activity}.",
    "I could take or leave {activity}, mostly leave.",
)
STRONG_CON = (
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
SINGLE = {2: STRONG_PRO, 1: HEDGED_PRO, 0: TOLERANT, -1: HEDGED_CON, -2: STRONG_CON}  # stance -> templates
TWO_CLAUSE = (  # (template, stance of item a, stance of item b): multi-clause statements, some mixed
    ("I {pro_a}, and I also {pro_b}.", 2, 2),
    ("Two things about me: I {pro_a}, and I {pro_b}.", 2, 2),
    ("My life is all about {activity_a} and {activity_b}.", 2, 2),
    ("I {pro_a}, but I can't stand {activity_b}.", 2, -2),
    ("I love {activity_a}, though for me {activity_b} would be a dealbreaker.", 2, -2),
    ("I {pro_a}, but I would never date {person_b}.", 2, -2),
    ("I value {activity_a}, but I'm not a big fan of {activity_b}.", 2, -1),
    ("I {pro_a}; I'm not really one for {activity_b}.", 2, -1),
    ("I {pro_a}, and I don't mind {activity_b}.", 2, 0),
    ("I'm into {activity_a} now and then, but I can't stand {activity_b}.", 1, -2),
)
CONTRASTS = (  # opposite lifestyles: compatible by the rule (no refusal), close in topic
    ("getting up at dawn", "staying up all night"), ("a vegan diet", "eating meat"),
    ("saving every penny", "spontaneous spending"), ("partying", "quiet nights in"),
    ("big-city living", "country life"), ("travelling", "living near family"), ("dogs", "cats"),
    ("moving abroad", "living near family"), ("a career-first life", "having children"),
)
PREFIXES = ("Me: ", "About me: ", "Bio: ", "ok so ", "tbh ", "Real talk: ", "Quick heads up: ", "Him: ", "Her: ")
SLANG = (("you're", "ur"), ("you", "u"), ("i'm", "im"), ("don't", "dont"), ("can't", "cant"), ("isn't", "isnt"),
         ("won't", "wont"), ("i'd", "id"), ("i would", "id"), ("really", "rly"), ("with", "w/"),
         ("because", "cuz"), ("going to", "gonna"))
SUFFIXES = ("", "", " lol", " haha", "!!", " :)")

PAIR_TYPE_WORDS = {  # pair type -> what it is, in words the report can print
    "opposite_stance": "a firm yes against a firm no",
    "hedged_conflict": "a hedge against a firm refusal",
    "multi_conflict": "a two-clause statement contradicted on one clause",
    "same_stance": "the same firm stance on one thing",
    "different_topic": "two things of one category",
    "hedged_compatible": "a tolerant or hedged stance",
    "contrast": "opposite lifestyles without a refusal",
    "multi_agree": "a two-clause statement agreed with on one clause",
    "multi_other": "a two-clause statement and a third topic",
}
NEGATIVE_TYPES = ("opposite_stance", "hedged_conflict", "multi_conflict")
POSITIVE_TYPES = ("same_stance", "different_topic", "hedged_compatible", "contrast", "multi_agree", "multi_other")
PAIR_TYPES = NEGATIVE_TYPES + POSITIVE_TYPES
SPLITS = ("train", "dev", "eval")
TEMPLATE_SHARE = (0.68, 0.16, 0.16)  # share of the template x item cells in train / dev / eval


@dataclass(frozen=True)
class Item:
    category: str
    activity: str
    person: str
    pros: tuple[str, ...]


def items() -> list[Item]:
    """All items, in declaration order."""
    return [Item(c, a, p, pros) for c, a, p, pros in ITEMS]


def conflict(a: int, b: int) -> bool:
    """Two stances on one item clash: opposite signs, at least one of them strong."""
    return a * b < 0 and max(abs(a), abs(b)) == 2


def label_of(stances_1: dict[str, int], stances_2: dict[str, int]) -> int:
    """The documented rule: 0 if some item the two texts share has clashing stances, else 1."""
    return 0 if any(conflict(s, stances_2[i]) for i, s in stances_1.items() if i in stances_2) else 1


def vocabulary_text() -> str:
    """Every fixed word the generator can emit (items, templates, prefixes, slang): for test tokenizers."""
    parts = [" ".join((a, p, *pros)) for _, a, p, pros in ITEMS]
    parts += [t for ts in SINGLE.values() for t in ts] + [t for t, _, _ in TWO_CLAUSE]
    parts += [*PREFIXES, *(s for _, s in SLANG), *SUFFIXES]
    return re.sub(r"\{[A-Za-z_]+\}", " ", " ".join(parts))


def _fill(template: str, item: Item, pro: str = "") -> str:
    return template.format(pro=pro, activity=item.activity, person=item.person)


@dataclass(frozen=True)
class Cells:
    """The template x item cells of one split."""
    single: frozenset[tuple[int, str, str]]  # (stance, template, item activity)
    two: frozenset[tuple[str, str, str]]  # (template, first item, second item)


def statements(item: Item, stance: int, cells: Cells) -> list[str]:
    """Every statement of `item` with `stance` in the split's cells, in a fixed order."""
    return [_fill(t, item, p) for t in SINGLE[stance] if (stance, t, item.activity) in cells.single
            for p in (item.pros if "{pro}" in t else ("",))]


def _deal(rng: random.Random, cells: list) -> list[frozenset]:
    rng.shuffle(cells)
    n_train = round(TEMPLATE_SHARE[0] * len(cells))
    n_dev = round(TEMPLATE_SHARE[1] * len(cells))
    return [frozenset(cells[:n_train]), frozenset(cells[n_train:n_train + n_dev]), frozenset(cells[n_train + n_dev:])]


def split_cells(seed: int) -> dict[str, Cells]:
    """Deal every template x item cell to train/dev/eval by a seeded shuffle, one stance family at a time."""
    rng = random.Random(seed)
    acts = [it.activity for it in items()]
    cats = {it.activity: it.category for it in items()}
    single: list[set] = [set(), set(), set()]
    for stance, templates in SINGLE.items():
        for i, dealt in enumerate(_deal(rng, [(stance, t, a) for t in templates for a in acts])):
            single[i] |= dealt
    two = _deal(rng, [(t, a, b) for t, _, _ in TWO_CLAUSE for a in acts for b in acts if cats[a] != cats[b]])
    return {split: Cells(frozenset(single[i]), two[i]) for i, split in enumerate(SPLITS)}


def _pick(rng: random.Random, options: list[str]) -> str | None:
    return rng.choice(options) if options else None


def _one(rng: random.Random, item: Item, stance: int, cells: Cells) -> tuple[str | None, dict[str, int]]:
    return _pick(rng, statements(item, stance, cells)), {item.activity: stance}


def _two(rng: random.Random, pool: list[Item], cells: Cells) -> tuple[str | None, dict[str, int]]:
    """A two-clause statement about items of two categories, with the template's stances."""
    template, sa, sb = rng.choice(TWO_CLAUSE)
    c1, c2 = rng.sample(sorted({it.category for it in pool}), 2)
    a = rng.choice([it for it in pool if it.category == c1])
    b = rng.choice([it for it in pool if it.category == c2])
    if (template, a.activity, b.activity) not in cells.two:
        return None, {}
    text = template.format(pro_a=rng.choice(a.pros), pro_b=rng.choice(b.pros), activity_a=a.activity,
                           activity_b=b.activity, person_b=b.person)
    return text, {a.activity: sa, b.activity: sb}


def _strong(rng: random.Random) -> int:
    return rng.choice((2, -2))


def _any_stance(rng: random.Random, d: Difficulty) -> int:
    return rng.choice((1, 0, -1)) if rng.random() < d.hedged else _strong(rng)


def pair_type_for(rng: random.Random, label: int, d: Difficulty) -> str:
    """Draw a pair type for a wanted label, in the shares the difficulty knobs set."""
    if rng.random() < d.multi_clause:
        return "multi_conflict" if label == 0 else rng.choice(("multi_agree", "multi_other"))
    if label == 0:
        return "hedged_conflict" if rng.random() < d.hedged else "opposite_stance"
    if rng.random() < d.contrast:
        return "contrast"
    if rng.random() < d.hedged:
        return "hedged_compatible"
    return "same_stance" if rng.random() < 0.25 else "different_topic"


def _texts(rng: random.Random, pool: list[Item], cells: Cells, pair_type: str, d: Difficulty):
    """(text, stances) twice, or None where this split has no sentence for what was drawn."""
    by_name = {it.activity: it for it in pool}
    if pair_type == "opposite_stance":
        it, s = rng.choice(pool), _strong(rng)
        return _one(rng, it, s, cells), _one(rng, it, -s, cells)
    if pair_type == "hedged_conflict":
        it, s = rng.choice(pool), rng.choice((1, -1))
        return _one(rng, it, s, cells), _one(rng, it, -2 * s, cells)
    if pair_type == "same_stance":
        it, s = rng.choice(pool), _strong(rng)
        return _one(rng, it, s, cells), _one(rng, it, s, cells)
    if pair_type == "hedged_compatible":
        it = rng.choice(pool)
        s1, s2 = rng.choice(((0, 2), (0, -2), (0, 1), (0, -1), (0, 0), (1, -1), (1, 2), (-1, -2)))
        return _one(rng, it, s1, cells), _one(rng, it, s2, cells)
    if pair_type == "different_topic":
        cat = rng.choice(sorted({it.category for it in pool}))
        a, b = rng.sample([it for it in pool if it.category == cat], 2)
        sign = rng.choice((1, -1))  # one shared direction: "can't stand smoking" / "drink every night" is a
        # judgement call people label both ways, so the demo does not ask a model to call it compatible
        return (_one(rng, a, sign * abs(_any_stance(rng, d)), cells),
                _one(rng, b, sign * abs(_any_stance(rng, d)), cells))
    if pair_type == "contrast":
        a, b = (by_name[x] for x in rng.choice(CONTRASTS))
        return _one(rng, a, rng.choice((2, 2, 1)), cells), _one(rng, b, rng.choice((2, 2, 1)), cells)
    two = _two(rng, pool, cells)
    if two[0] is None:
        return None
    mentioned = [by_name[i] for i in two[1]]
    if pair_type == "multi_other":
        c = rng.choice([it for it in pool if it not in mentioned])
        return two, _one(rng, c, _any_stance(rng, d), cells)
    if pair_type == "multi_conflict":  # the other text clashes with a clause that takes a side
        it = rng.choice([m for m in mentioned if two[1][m.activity]])
        options = [t for t in (2, 1, -1, -2) if conflict(two[1][it.activity], t)]
    else:  # multi_agree: the other text sides with one clause (anything goes with a tolerant one)
        it = rng.choice(mentioned)
        s = two[1][it.activity]
        options = [t for t in (2, 1, 0, -1, -2) if t * s > 0 or not s]
    return two, _one(rng, it, rng.choice(options), cells)


def informal(rng: random.Random, text: str) -> str:
    """The same statement as people type it: a speaker prefix and/or lower case, slang, no full stop."""
    slang, prefix = rng.random() < 0.6, rng.random() < 0.6
    if not (slang or prefix):
        slang = True
    if slang:
        text = text.lower().rstrip(".")
        for word, short in SLANG:
            text = re.sub(rf"(?<![\w']){re.escape(word)}(?![\w'])", short, text)
        text += rng.choice(SUFFIXES)
    if prefix and ":" not in text:  # one speaker prefix at most ("Something about me:" is one already)
        text = rng.choice(PREFIXES) + text
    return text


def _one_pair(rng: random.Random, pool: list[Item], cells: Cells, pair_type: str, d: Difficulty) -> dict | None:
    drawn = _texts(rng, pool, cells, pair_type, d)
    if drawn is None or drawn[0][0] is None or drawn[1][0] is None:
        return None
    (t1, s1), (t2, s2) = drawn
    if t1 == t2:  # one sentence twice (an informal rewrite would only disguise it): not a pair people write
        return None
    if rng.random() < 0.5:
        (t1, s1), (t2, s2) = (t2, s2), (t1, s1)
    label = label_of(s1, s2)
    assert label == (0 if pair_type in NEGATIVE_TYPES else 1), (pair_type, s1, s2)  # the rule and the types agree
    t1, t2 = (informal(rng, t) if rng.random() < d.informal else t for t in (t1, t2))
    its = list(dict.fromkeys([*s1, *s2]))
    if len(s1) > 1 or len(s2) > 1:
        category = "mixed"
    else:
        category = next(it.category for it in pool if it.activity == its[0])
    return {"text_1": t1, "text_2": t2, "label": label, "category": category, "pair_type": pair_type,
            "items": its, "stances_1": s1, "stances_2": s2}


def make_split(rng: random.Random, pool: list[Item], cells: Cells, n: int, d: Difficulty) -> list[dict[str, Any]]:
    """`n` unique pairs (in either order), half of them compatible, then `d.label_noise` of labels flipped."""
    seen: set[frozenset[str]] = set()
    out: list[dict[str, Any]] = []
    for k in range(n):
        pair_type = pair_type_for(rng, k % 2, d)  # drawn once: retrying until a cell exists keeps the shares
        for _ in range(5000):
            pair = _one_pair(rng, pool, cells, pair_type, d)
            if pair is None:
                continue
            key = frozenset((pair["text_1"], pair["text_2"]))
            if len(key) == 2 and key not in seen:
                break
        else:
            raise ValueError(f"cannot draw {n} unique pairs from this split's sentences")
        seen.add(key)
        out.append(pair)
    rng.shuffle(out)
    flipped = set(rng.sample(range(n), round(d.label_noise * n)))
    for i, pair in enumerate(out):
        pair["label_flipped"] = i in flipped
        if i in flipped:
            pair["label"] = 1 - pair["label"]
    return out


def generate(seed: int, sizes: dict[str, int], difficulty: Difficulty) -> dict[str, list[dict[str, Any]]]:
    """Generate every split; same seed, sizes and difficulty give identical output."""
    cells = split_cells(seed)
    rng = random.Random(seed + 1)
    out = {split: make_split(rng, items(), cells[split], sizes[split], difficulty) for split in SPLITS}
    texts = {s: {t for p in ps for t in (p["text_1"], p["text_2"])} for s, ps in out.items()}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            shared = texts[a] & texts[b]
            if shared:  # cells make this impossible; an informal rewrite colliding would be a bug
                raise ValueError(f"text in both {a} and {b}: {sorted(shared)[0]!r}")
    return out


def summary(splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Sizes, class balance, flipped labels, counts per category and pair_type, and the overlap checks."""
    out: dict[str, Any] = {}
    keys = {s: {frozenset((p["text_1"], p["text_2"])) for p in ps} for s, ps in splits.items()}
    texts = {s: {t for p in ps for t in (p["text_1"], p["text_2"])} for s, ps in splits.items()}
    for split, ps in splits.items():
        out[split] = {
            "pairs": len(ps),
            "positives": sum(p["label"] == 1 for p in ps),
            "positive_share": round(sum(p["label"] == 1 for p in ps) / max(len(ps), 1), 4),
            "label_flipped": sum(bool(p.get("label_flipped")) for p in ps),
            "duplicates": len(ps) - len(keys[split]),
            "category": dict(sorted(Counter(p["category"] for p in ps).items())),
            "pair_type": dict(sorted(Counter(p["pair_type"] for p in ps).items())),
        }
    names = list(splits)
    out["overlap"] = {
        f"{a}_{b}_pairs": len(keys[a] & keys[b]) for i, a in enumerate(names) for b in names[i + 1:]
    } | {f"{a}_{b}_texts": len(texts[a] & texts[b]) for i, a in enumerate(names) for b in names[i + 1:]}
    return out
