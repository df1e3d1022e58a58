"""The words of the simulated world: topics, kinds of writing, and sentence templates.

Plain data and two small writers. Templates take the topic as an object (``about {t}``), never as
the subject of a verb, so "coffee" and "city parks" both read right without grammar rules.

Two families of sentences, kept apart on purpose:
- ``PROSE`` is what the template responder writes first. Some of it carries temptations (commas,
  capital letters, words like "very" that ``keyword_avoid`` may forbid), so that instructions break
  naturally and the fixers have real work.
- The fixers' sentences (``FILLERS``, ``KEYWORD_SENTENCES``, ...) are clean: no commas, no word
  from ``AVOIDABLE``, no placeholder or highlight unless that is their job. A fixer's addition must
  never break another instruction; ``tests/test_simulate_instructions.py`` checks this.
"""

from __future__ import annotations

import random
import re
import zlib

from redline.simulate.text import pattern

# ----------------------------------------------------------------------------- topics

TOPICS: tuple[str, ...] = (
    # food and drink
    "coffee", "tea", "chocolate", "cheese", "bread baking", "pasta", "rice", "apples", "oranges",
    "mushrooms", "spices", "honey", "olive oil", "bakeries", "breakfast", "picnics", "street food",
    "soup", "pancakes", "lemonade", "tomatoes", "potatoes", "strawberries", "dumplings", "noodles",
    # hobbies and crafts
    "chess", "gardening", "board games", "jazz", "photography", "origami", "rock climbing",
    "sailing", "astronomy", "beekeeping", "birdwatching", "camping", "knitting", "pottery",
    "calligraphy", "meditation", "running", "swimming", "yoga", "hiking", "skiing", "surfing",
    "fishing", "cooking", "woodworking", "painting", "drawing", "poetry", "juggling", "magic tricks",
    "puzzles", "crosswords", "kites", "model trains", "stamp collecting", "quilting", "dancing",
    "singing", "choirs", "guitars", "pianos", "violins", "drums", "podcasts", "comic books",
    # nature
    "volcanoes", "honeybees", "rainforests", "the moon", "thunderstorms", "snowflakes", "deserts",
    "oceans", "rivers", "lakes", "mountains", "islands", "caves", "glaciers", "forests", "wetlands",
    "coral reefs", "whales", "dolphins", "octopuses", "penguins", "owls", "wolves", "foxes",
    "elephants", "cats", "dogs", "horses", "rabbits", "turtles", "butterflies", "ants", "spiders",
    "frogs", "sharks", "parrots", "crows", "squirrels", "hedgehogs", "jellyfish", "mosses", "ferns",
    "oak trees", "sunflowers", "tulips", "cactuses", "seashells", "tides", "rainbows", "comets",
    "eclipses", "auroras", "fog", "autumn leaves", "spring rain", "winter mornings", "summer nights",
    "meadows", "waterfalls", "sand dunes", "fossils", "earthquakes", "tornadoes", "planets", "stars",
    # places and things people build
    "city parks", "public libraries", "lighthouses", "castles", "museums", "theaters", "cinemas",
    "bookstores", "farmers markets", "bridges", "trains", "airports", "subways", "harbors",
    "skyscrapers", "windmills", "canals", "roads", "bicycles", "electric cars", "sailboats",
    "hot air balloons", "rockets", "satellites", "telescopes", "microscopes", "clocks", "maps",
    "compasses", "umbrellas", "lanterns", "candles", "chairs", "kitchens", "attics", "gardens",
    "playgrounds", "schools", "hospitals", "post offices", "train stations", "zoos", "aquariums",
    "campfires", "tents", "backpacks", "notebooks", "fountain pens", "typewriters", "radios",
    # ideas, work and daily life
    "solar panels", "wind turbines", "recycling", "composting", "robots", "computers", "smartphones",
    "video games", "spreadsheets", "passwords", "email", "online shopping", "remote work",
    "volunteering", "teamwork", "friendship", "kindness", "patience", "curiosity", "habits",
    "sleep", "naps", "daydreams", "walking", "commuting", "moving house", "first jobs",
    "job interviews", "birthdays", "weddings", "holidays", "family dinners", "grandparents",
    "neighbors", "pets", "houseplants", "laundry", "cleaning", "budgets", "savings", "taxes",
    "languages", "dictionaries", "handwriting", "letters", "diaries", "museum tours", "road trips",
    "train journeys", "summer camps", "science fairs", "spelling bees", "marathons", "the olympics",
    "chess clubs", "book clubs", "tool libraries", "community gardens", "flea markets",
    "thrift stores", "repair cafes", "bus rides", "ferries", "fire stations", "weather forecasts",
    "calendars", "sundials", "mathematics", "geometry", "history", "archaeology", "geography",
    "chemistry", "physics", "biology", "inventions", "vaccines", "hand washing", "first aid",
)

FORMS: tuple[str, ...] = (
    "blog post", "essay", "story", "letter", "product description", "speech", "email",
    "diary entry", "news report", "review", "advertisement", "guide", "toast", "newsletter item",
)


def topic_word(topic: str) -> str:
    """The stem that marks a response as on-topic: the last word, without a plural ending.

    "public libraries" → "librar" (matches library and libraries), "volcanoes" → "volcano",
    "cleaning" → "clean".
    """
    word = topic.split()[-1].lower()
    if word.endswith("ing") and len(word) > 5:  # cleaning → clean, running → run
        word = word[:-3]
        return word[:-1] if word[-1] == word[-2] and word[-1] not in "ls" else word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3]
    if word.endswith("oes") and len(word) > 4:
        return word[:-2]
    if word.endswith("es") and len(word) > 4 and word[-3] in "sxz":
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def mentions(text: str, topic: str) -> bool:
    """Whether ``text`` names the topic: its stem plus at most 4 letters, as a whole word."""
    stem = topic_word(topic)
    return pattern(rf"\b{re.escape(stem)}\w{{0,4}}\b", re.IGNORECASE).search(text) is not None


def title_case(text: str) -> str:
    small = {"a", "an", "the", "of", "on", "and", "for", "to", "in", "with"}
    out = [w if (i and w in small) else w[:1].upper() + w[1:] for i, w in enumerate(text.split())]
    return " ".join(out)


def pick(options: tuple[str, ...] | list[str], *keys: object) -> str:
    """A deterministic choice keyed by ``keys`` (no RNG: fixers must be pure functions)."""
    key = "\x1f".join(str(k) for k in keys)
    return options[zlib.crc32(key.encode()) % len(options)]


def rotated(options: tuple[str, ...], *keys: object) -> list[str]:
    """All options, starting at a place keyed by ``keys``, so that different topics vary."""
    key = "\x1f".join(str(k) for k in keys)
    start = zlib.crc32(key.encode()) % len(options)
    return list(options[start:] + options[:start])


# ----------------------------------------------------------------------------- words the instructions use

# Keywords to include or repeat: ordinary words that no template uses, so including them is work.
KEYWORDS: tuple[str, ...] = (
    "budget", "morning", "history", "community", "balance", "season", "neighbor", "tradition",
    "journey", "memory", "weekend", "future", "craft", "silence", "routine", "surprise", "practice",
    "window", "evening", "kitchen", "village", "promise", "courage", "river", "lantern", "harvest",
    "festival", "schedule", "patience", "laughter",
)

# Words a prompt may forbid, with what the fixer puts in their place ("" deletes the word).
AVOIDABLE: dict[str, str] = {
    "very": "",
    "really": "",
    "just": "",
    "actually": "",
    "basically": "",
    "important": "vital",
    "great": "fine",
    "nice": "pleasant",
    "amazing": "remarkable",
    "good": "sound",
    "interesting": "curious",
    "simple": "plain",
}

END_PHRASES: tuple[str, ...] = (
    "Is there anything else I can help with?",
    "Let me know if you have additional questions.",
    "Thank you for reading.",
    "That is all for now.",
    "Hope this helps!",
    "Any other questions?",
)

# ----------------------------------------------------------------------------- sentences

# The responder's first draft. {t} is the topic, {T} the topic with a capital letter.
PROSE: tuple[str, ...] = (
    "People have argued about {t} for a very long time.",
    "At first glance, {t} can seem simple.",
    "There is more to {t} than first meets the eye.",
    "What makes {t} interesting is the way it rewards attention.",
    "Most people meet {t} early in life, but few think about it carefully.",
    "I have always had a soft spot for {t}.",
    "Talk to anyone who loves {t} and you will hear a story.",
    "It is really worth asking why some people care so much about {t}.",
    "The history behind {t} is full of small surprises.",
    "A good way to understand {t} is to start small.",
    "Nobody becomes an expert on {t} overnight.",
    "Some of the best conversations I have had were about {t}.",
    "There are two common myths about {t}, and both are wrong.",
    "Anyone curious about {t} can learn a lot in a single afternoon.",
    "The details are what make {t} worth the effort.",
    "For beginners, {t} can feel overwhelming at first.",
    "It is important to remember that no two places treat {t} the same way.",
    "Ask ten people about {t} and you will get ten answers.",
    "I think we give {t} far less credit than we should.",
    "The best part of {t} is the sense of discovery.",
    "Over time, small choices about {t} add up.",
    "Writers, painters and scientists have all been drawn to {t}.",
    "There is a great deal of quiet skill involved in {t}.",
    "My first real encounter with {t} happened by accident.",
    "It would be a mistake to treat {t} as a passing trend.",
    "You do not need special training to enjoy {t}.",
    "Even experts admit that there are surprises left in {t}.",
    "Spending time with {t} tends to slow people down in a good way.",
    "Every culture seems to have its own take on {t}.",
    "The story of {t} is really a story about people.",
    "Some days, nothing calms me quite like {t}.",
    "Much of what we know about {t} came from patient observation.",
    "It is amazing how much {t} can teach us about ourselves.",
    "Learning about {t} changed how I see ordinary things.",
    "When you look closely, the world of {t} turns out to be full of variety.",
    "Nothing about {t} is as obvious as it first appears.",
    "Basically, it all comes down to paying attention to {t}.",
    "People who care about {t} tend to share what they know.",
    "There is no single right way to approach {t}.",
    "I keep coming back to {t} for the same reason every time.",
    "Few subjects reward a second look as generously as {t}.",
    "The simplest facts about {t} are often the most striking.",
    "In my experience, few things bring people together like {t}.",
    "It is nice to see {t} getting more attention lately.",
    "Just thinking about {t} puts me in a better mood.",
    "Children often ask the sharpest questions about {t}.",
)

# Clean sentences the fixers add for length: no commas, no avoidable word, no markup.
FILLERS: tuple[str, ...] = (
    "There is always more to learn about {t}.",
    "A closer look at {t} shows how much care it asks for.",
    "Many people find that a love of {t} grows over the years.",
    "Each new encounter with {t} teaches something.",
    "The quiet rewards of {t} are easy to miss at first.",
    "It helps to approach {t} with an open mind.",
    "Friends who share an interest in {t} often learn from each other.",
    "Small habits make a real difference when it comes to {t}.",
    "The more time you give to {t} the more it gives back.",
    "Questions about {t} rarely have a single answer.",
    "Stories about {t} travel from one generation to the next.",
    "Anyone can start exploring {t} today.",
    "Patience pays off with {t} more than with most things.",
    "Those who know {t} well tend to speak about it with warmth.",
    "Paying attention to {t} changes the way a day feels.",
    "Local guides can point you toward the best of {t}.",
    "Books about {t} fill whole shelves in some libraries.",
    "The first steps with {t} are often the most memorable.",
    "Over the years fans of {t} have turned up in every corner of the world.",
    "A notebook is a fine companion for anyone studying {t}.",
    "Some of the oldest records mention {t} in passing.",
    "There is real joy in sharing {t} with someone new.",
    "Mistakes are part of getting to know {t}.",
    "The language people use for {t} is rich and specific.",
    "Weekends are a fine time to spend on {t}.",
    "Seasons change the character of {t} in small ways.",
    "Experts still debate the finer points of {t}.",
    "A short walk is enough to start noticing {t}.",
    "Children and adults alike can enjoy {t}.",
    "The best advice about {t} is to keep going.",
    "Few things are as absorbing as {t} on a slow afternoon.",
    "It is worth writing down what you notice about {t}.",
    "Company makes {t} even more rewarding.",
    "Nobody has the last word on {t}.",
    "There is a quiet pride in knowing {t} well.",
    "Each person brings something different to {t}.",
    "A single question can open up the whole world of {t}.",
    "Photographs of {t} rarely capture the full picture.",
    "Time spent on {t} is seldom wasted.",
    "Curiosity is the surest way into {t}.",
)

KEYWORD_SENTENCES: tuple[str, ...] = (
    "It is worth saying a word about {k} as well.",
    "Here {k} plays a part that is easy to miss.",
    "Anyone who cares about {t} will end up thinking about {k}.",
    "The link between {t} and {k} deserves a closer look.",
    "Even {k} has a place in this picture.",
    "That is where {k} comes into the story.",
    "No account of {t} is complete without {k}.",
    "For me {k} is part of the appeal.",
    "Think of {k} as a thread running through it all.",
    "Some people would say {k} matters most of all.",
)

PLACEHOLDER_SENTENCES: tuple[str, ...] = (
    "Send your questions to [email].",
    "You can find us at [address].",
    "Ask [name] for the details.",
    "Call [phone number] to book a visit.",
    "More notes are posted at [website].",
    "Join us on [date] to see it for yourself.",
    "Sign your reply as [your name].",
    "Bring your own ideas to [location] any weekday.",
)

BULLET_ITEMS: tuple[str, ...] = (
    "Start small with {t}.",
    "Keep notes on what you learn about {t}.",
    "Ask someone who knows {t} well.",
    "Set aside time each week for {t}.",
    "Share what you find about {t} with a friend.",
    "Notice the small changes in {t} over time.",
    "Read one book about {t}.",
    "Try something new with {t} this month.",
)

POSTSCRIPTS: tuple[str, ...] = (
    "I would love to hear what you think about {t}.",
    "More on {t} soon.",
    "Write back with your own stories about {t}.",
    "There is a lot more to say about {t} another time.",
)

TITLES: tuple[str, ...] = ("{T}", "Notes on {T}", "A Few Words on {T}", "In Praise of {T}", "Thinking About {T}")

TOPIC_SENTENCES: tuple[str, ...] = (
    "All of this comes back to {t}.",
    "This piece is about {t}.",
    "The subject here is {t}.",
)

OPENERS: tuple[str, ...] = (
    "Let me tell you about {t}.",
    "Here are a few thoughts on {t}.",
    "Few subjects are as close to my heart as {t}.",
    "This one is about {t}.",
    "I want to share something about {t}.",
)


def fill(template: str, topic: str, keyword: str = "") -> str:
    return template.format(t=topic, T=topic[:1].upper() + topic[1:], k=keyword)


def write_prose(topic: str, rng: random.Random, paragraphs: int | None = None) -> str:
    """An on-topic first draft: 1–4 paragraphs of 2–5 sentences from ``PROSE``, no repeats."""
    paragraphs = paragraphs or rng.randint(1, 4)
    pool = list(PROSE)
    rng.shuffle(pool)
    out = []
    for p in range(paragraphs):
        n = rng.randint(2, 5)
        sentences = [fill(pool.pop(), topic) for _ in range(min(n, len(pool)))]
        if p == 0 and rng.random() < 0.5:
            sentences.insert(0, fill(rng.choice(OPENERS), topic))
        out.append(" ".join(sentences))
    return "\n\n".join(out)
