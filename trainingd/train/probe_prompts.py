"""The forgetting probe: general chat turns the gate scores every candidate on (KL against the base).

Short everyday questions with plain answers, unlike any training file: a candidate whose distribution on them has
moved far from the base's has forgotten how to talk, however well it does on the held-out set. Changing this list
changes ``probe_sha256`` and so invalidates every stored champion score (the champion is scored again once).
"""

from __future__ import annotations

_PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many days are there in a week?", "There are seven days in a week."),
    ("What colour is the sky on a clear day?", "On a clear day the sky is blue."),
    ("Name a fruit that is yellow.", "A banana is a yellow fruit."),
    ("What do bees make?", "Bees make honey."),
    ("What is two plus three?", "Two plus three is five."),
    ("Which animal is known for saying moo?", "A cow says moo."),
    ("What do you use to write on paper?", "You can write on paper with a pen or a pencil."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is frozen water called?", "Frozen water is called ice."),
    ("Say hello in a friendly way.", "Hello! It is nice to meet you."),
    ("What season comes after winter?", "Spring comes after winter."),
    ("Where do fish live?", "Fish live in water, in rivers, lakes and the sea."),
    ("What is the largest planet in our solar system?", "Jupiter is the largest planet in our solar system."),
    ("Give me a word that rhymes with cat.", "Hat rhymes with cat."),
    ("What do plants need to grow?", "Plants need light, water and air to grow."),
    ("How many hours are there in a day?", "There are twenty-four hours in a day."),
    ("What is the first letter of the alphabet?", "The first letter of the alphabet is A."),
    ("Tell me one thing a dog can do.", "A dog can fetch a ball."),
    ("What do we call a baby cat?", "A baby cat is called a kitten."),
    ("Which is heavier, a kilogram of iron or a kilogram of feathers?",
     "They weigh the same: each is one kilogram."),
    ("What language is spoken in Spain?", "Spanish is spoken in Spain."),
    ("Thank you for your help.", "You are welcome. I am glad I could help."),
]

PROBE: list[dict] = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
                     for q, a in _PAIRS]
