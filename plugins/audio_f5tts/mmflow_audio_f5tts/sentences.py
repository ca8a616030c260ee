"""Plain everyday English sentences from a seed, for a synthetic speech corpus, plus a held-out evaluation set.

Why a template grammar: the corpus must be generated offline, in any size and identically on every machine,
and a small model learns fastest from short, common words (no jargon, no digits: espeak and ASR metrics both
handle plain words best). Verbs are in the past tense or after a modal ("will", "can"...), which keeps
subject-verb agreement trivially right.

The 20 :data:`HELD_OUT_SENTENCES` each use at least one word the grammar does not know, so the generator can
never produce them; :func:`generate_sentences` also filters them out as a second guard.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from functools import lru_cache

NAMES = ("Anna", "Tom", "Sarah", "Peter", "Lucy", "David", "Emma", "Jack", "Mary", "Paul", "Kate", "Ben", "Laura",
         "Sam", "Nina", "Mark", "Helen", "Mike", "Rosa", "Jim")
PRONOUNS = ("I", "you", "we", "they", "he", "she")
PEOPLE = ("teacher", "doctor", "driver", "farmer", "baby", "friend", "sister", "brother", "mother", "father",
          "neighbor", "boy", "girl", "man", "woman", "cook", "nurse", "child")
ANIMALS = ("dog", "cat", "bird", "horse", "cow", "duck", "fish", "puppy")
OBJECTS = ("book", "cup", "box", "key", "apple", "window", "door", "letter", "bike", "phone", "coat", "chair",
           "table", "bag", "hat", "ball", "lamp", "plate", "bottle", "shirt", "picture", "basket", "blanket",
           "cake", "map", "clock", "pencil", "ticket", "umbrella", "orange", "egg", "bed")
MASS_NOUNS = ("bread", "milk", "tea", "water", "rice", "soup", "coffee", "juice", "cheese", "fruit")
ADJECTIVES = ("big", "small", "old", "new", "warm", "cold", "bright", "red", "blue", "green", "clean", "heavy",
              "soft", "little", "nice", "dark", "fresh", "yellow", "empty", "long", "short", "sweet", "wet", "dry")
"""Adjectives for things."""
PERSON_ADJECTIVES = ("happy", "tired", "quiet", "kind", "busy", "funny", "young", "old", "little", "friendly")
PLACES = ("in the kitchen", "at the park", "near the river", "on the bus", "at school", "in the garden",
          "by the sea", "at the market", "in the city", "at home", "on the beach", "in the car", "at the shop",
          "in the yard", "on the train", "at the station", "in the library", "by the window", "on the table",
          "under the bed", "at the farm", "in the village", "near the bridge", "at work")
TIMES = ("on Sunday", "after lunch", "before dinner", "in the evening", "at noon", "on Monday", "after school",
         "in the summer", "in the winter", "at night", "today", "on Friday", "every day", "every morning")
"""Times that fit any tense."""
PAST_TIMES = ("this morning", "last night", "yesterday", "last week", "a while ago", "last summer")
FUTURE_TIMES = ("tomorrow", "next week", "tonight", "later", "soon", "next summer")
# (base, past) of transitive verbs that take an object.
TRANSITIVE = (("open", "opened"), ("find", "found"), ("carry", "carried"), ("wash", "washed"),
              ("paint", "painted"), ("buy", "bought"), ("lose", "lost"), ("clean", "cleaned"), ("sell", "sold"),
              ("fix", "fixed"), ("drop", "dropped"), ("bring", "brought"), ("make", "made"), ("take", "took"),
              ("see", "saw"), ("like", "liked"), ("want", "wanted"), ("hold", "held"), ("give away", "gave away"),
              ("look for", "looked for"), ("pick up", "picked up"), ("keep", "kept"), ("need", "needed"),
              ("move", "moved"), ("close", "closed"), ("fill", "filled"), ("check", "checked"), ("hide", "hid"))
# (base, past) of intransitive verb phrases.
INTRANSITIVE = (("sleep", "slept"), ("laugh", "laughed"), ("wait", "waited"), ("smile", "smiled"),
                ("walk home", "walked home"), ("sing", "sang"), ("arrive late", "arrived late"),
                ("leave early", "left early"), ("run fast", "ran fast"), ("sit down", "sat down"),
                ("stay inside", "stayed inside"), ("play", "played"), ("rest", "rested"), ("cook", "cooked"),
                ("read", "read"), ("work hard", "worked hard"), ("get up", "got up"), ("swim", "swam"),
                ("dance", "danced"), ("come back", "came back"), ("go out", "went out"), ("talk", "talked"))
MODALS = ("will", "can", "should", "might", "must", "could", "would")
CONNECTIVES = ("and", "but", "so", "because", "and then", "while")
OPENERS = ("yes", "well", "oh", "please", "sorry", "okay", "look")
DETERMINERS = ("the", "a", "my", "your", "his", "her", "our", "their", "this", "that")
FEELINGS = ("happy", "tired", "hungry", "cold", "warm", "busy", "late", "ready", "sad", "glad", "sleepy", "quiet")
WHERE_WORDS = ("where", "why", "when", "how")

HELD_OUT_SENTENCES: tuple[str, ...] = (
    "The postman whistled a cheerful tune on his rounds.",
    "Could you pass the salt and pepper, please?",
    "My grandmother knits warm scarves for everyone in winter.",
    "The kettle is boiling, so let us make some tea.",
    "We watched the sunset from the top of the hill.",
    "Please remember to water the plants while I am away.",
    "The children built a sandcastle near the waves.",
    "He forgot his gloves on the bench outside.",
    "Our train was delayed because of the heavy snow.",
    "She painted the fence white over the weekend.",
    "The bakery on the corner sells fresh rolls every morning.",
    "I can hear the rain tapping on the roof.",
    "They planted tomatoes and beans in the backyard.",
    "The puppy chased its tail until it fell asleep.",
    "Would you like a slice of pie after supper?",
    "The library closes early on public holidays.",
    "My brother borrowed my ladder and never returned it.",
    "We wrapped the presents and hid them in the closet.",
    "The wind blew the leaves across the empty street.",
    "Turn off the lights before you leave the room.",
)
"""Plain sentences for evaluation; each contains a word outside the generator's vocabulary."""

_NOT_IMPERATIVE = frozenset({"like", "want", "need", "see", "lose", "find", "drop"})
_WORD = re.compile(r"[A-Za-z']+")


def words_of(sentence: str) -> list[str]:
    """Lower-case words of a sentence, punctuation dropped."""
    return [w.lower() for w in _WORD.findall(sentence)]


def word_count(sentence: str) -> int:
    return len(_WORD.findall(sentence))


@lru_cache(maxsize=1)
def vocabulary() -> frozenset[str]:
    """Every word the grammar can produce (lower case)."""
    pools: list[Sequence] = [NAMES, PRONOUNS, PEOPLE, ANIMALS, OBJECTS, MASS_NOUNS, ADJECTIVES, PERSON_ADJECTIVES,
                             PLACES, TIMES, PAST_TIMES, FUTURE_TIMES, MODALS, CONNECTIVES, OPENERS, DETERMINERS,
                             FEELINGS, WHERE_WORDS, _FIXED_WORDS]
    words = {w for pool in pools for phrase in pool for w in words_of(phrase)}
    words |= {w for pair in (*TRANSITIVE, *INTRANSITIVE) for phrase in pair for w in words_of(phrase)}
    return frozenset(words)


# Function words the templates below spell out literally.
_FIXED_WORDS = ("a", "an", "the", "some", "fresh", "is", "was", "did", "very", "too", "please")


def _article(determiner: str, phrase: str) -> str:
    """``a`` → ``an`` before a vowel sound (the vocabulary avoids words where spelling misleads)."""
    if determiner == "a" and (phrase[0] in "aeio" or phrase.startswith("umb")):
        return f"an {phrase}"
    return f"{determiner} {phrase}"


class SentenceGenerator:
    """An endless, seeded stream of plain sentences of ``min_words``–``max_words`` words.

    Args:
        seed: Any int or str; the same seed always gives the same sentences (Python's ``random`` seeds
            strings through SHA-512, so this holds across processes and runs).
        min_words / max_words: Word-count range; each sentence aims at a length drawn uniformly from it.
    """

    def __init__(self, seed: int | str = 0, min_words: int = 3, max_words: int = 20) -> None:
        if not 3 <= min_words <= max_words:
            raise ValueError(f"need 3 <= min_words <= max_words, got {min_words}, {max_words}")
        self.rng = random.Random(seed)
        self.min_words, self.max_words = min_words, max_words

    # ---- noun phrases --------------------------------------------------------------------------------------
    def _maybe_adjective(self, noun: str, chance: float = 0.4, pool: Sequence[str] = ADJECTIVES) -> str:
        return f"{self.rng.choice(pool)} {noun}" if self.rng.random() < chance else noun

    def subject(self) -> str:
        kind = self.rng.random()
        if kind < 0.3:
            return self.rng.choice(NAMES)
        if kind < 0.55:
            return self.rng.choice(PRONOUNS)
        noun = self._maybe_adjective(self.rng.choice(PEOPLE + ANIMALS), 0.3, PERSON_ADJECTIVES)
        return _article(self.rng.choice(("the", "my", "our", "your", "the", "a")), noun)

    def thing(self) -> str:
        if self.rng.random() < 0.2:
            return _article(self.rng.choice(("some", "the", "my", "fresh")), self.rng.choice(MASS_NOUNS))
        return _article(self.rng.choice(DETERMINERS), self._maybe_adjective(self.rng.choice(OBJECTS)))

    def _adjunct(self, tense: str = "any") -> str:
        """Optional place and/or time (one that fits ``tense``: past, future or any), so lengths vary."""
        parts = []
        if self.rng.random() < 0.5:
            parts.append(self.rng.choice(PLACES))
        if self.rng.random() < 0.4:
            extra = PAST_TIMES if tense == "past" else FUTURE_TIMES if tense == "future" else ()
            parts.append(self.rng.choice(TIMES + extra))
        self.rng.shuffle(parts)
        return (" " + " ".join(parts)) if parts else ""

    # ---- clauses -------------------------------------------------------------------------------------------
    def clause(self) -> str:
        """One declarative clause, without final punctuation."""
        form = self.rng.random()
        if form < 0.3:
            return f"{self.subject()} {self.rng.choice(TRANSITIVE)[1]} {self.thing()}{self._adjunct('past')}"
        if form < 0.5:
            return f"{self.subject()} {self.rng.choice(INTRANSITIVE)[1]}{self._adjunct('past')}"
        if form < 0.7:
            if self.rng.random() < 0.6:
                verb, obj = self.rng.choice(TRANSITIVE)[0], f" {self.thing()}"
            else:
                verb, obj = self.rng.choice(INTRANSITIVE)[0], ""
            return f"{self.subject()} {self.rng.choice(MODALS)} {verb}{obj}{self._adjunct('future')}"
        if form < 0.85:
            copula = self.rng.choice(("was", "is"))
            degree = self.rng.choice(("very ", "too ", "", ""))
            tense = "past" if copula == "was" else "any"
            noun = _article("the", self.rng.choice(OBJECTS))
            return f"{noun} {copula} {degree}{self.rng.choice(ADJECTIVES)}{self._adjunct(tense)}"
        return f"{self.rng.choice(NAMES)} was {self.rng.choice(FEELINGS)}{self._adjunct('past')}"

    def _statement(self) -> str:
        text = self.clause()
        while self.rng.random() < 0.45:
            text += f"{',' if self.rng.random() < 0.5 else ''} {self.rng.choice(CONNECTIVES)} {self.clause()}"
        if self.rng.random() < 0.15:
            text = f"{self.rng.choice(OPENERS)}, {text}"
        return text + "."

    def _question(self) -> str:
        form = self.rng.random()
        if form < 0.35:
            return f"did {self.subject()} {self.rng.choice(TRANSITIVE)[0]} {self.thing()}{self._adjunct('past')}?"
        if form < 0.6:
            verb = self.rng.choice(INTRANSITIVE)[0]
            return f"{self.rng.choice(MODALS)} {self.subject()} {verb}{self._adjunct('future')}?"
        if form < 0.8:
            return f"{self.rng.choice(WHERE_WORDS)} did {self.subject()} {self.rng.choice(INTRANSITIVE)[0]}?"
        return f"where is {self.thing()}?"

    def _request(self) -> str:
        verb = self.rng.choice([base for base, _ in TRANSITIVE if base not in _NOT_IMPERATIVE])
        polite = "please " if self.rng.random() < 0.5 else ""
        return f"{polite}{verb} {self.thing()}{self._adjunct('future')}."

    def _candidate(self) -> str:
        kind = self.rng.random()
        text = self._statement() if kind < 0.7 else self._question() if kind < 0.87 else self._request()
        text = " ".join(text.split())
        return text[0].upper() + text[1:]

    def sentence(self) -> str:
        """The next sentence: of a few candidates, the one closest to a length drawn from the range."""
        target = self.rng.randint(self.min_words, self.max_words)
        best, best_gap = None, None
        for _ in range(24):
            text = self._candidate()
            count = word_count(text)
            if not self.min_words <= count <= self.max_words:
                continue
            gap = abs(count - target)
            if best_gap is None or gap < best_gap:
                best, best_gap = text, gap
            if gap <= 1:
                break
        if best is None:  # practically unreachable with the ranges allowed; still, never loop forever
            best = " ".join(["Yes"] * self.min_words) + "."
        return best

    def __iter__(self) -> Iterator[str]:
        held_out = set(HELD_OUT_SENTENCES)
        while True:
            text = self.sentence()
            if text not in held_out:
                yield text


def generate_sentences(
    count: int, seed: int | str = 0, min_words: int = 3, max_words: int = 20, unique: bool = True
) -> list[str]:
    """``count`` sentences from ``seed`` (distinct when ``unique``), never one of :data:`HELD_OUT_SENTENCES`."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    out: list[str] = []
    seen: set[str] = set()
    stream = iter(SentenceGenerator(seed, min_words, max_words))
    while len(out) < count:
        text = next(stream)
        if unique and text in seen:
            continue
        seen.add(text)
        out.append(text)
    return out
