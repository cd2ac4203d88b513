"""The concerns simulated people weigh, with the phrases that express and reveal them.

Each consideration has phrases arguing that the proposal (the question's affirming statement)
is good on that ground ("pro"), bad on it ("con"), or that merely acknowledge it ("neutral").
The rater in population.py reads a statement's cues back from its words, so every phrase
carries at least one of its consideration's cues; tests check that round trip.

Cues are matched as whole lower-case word sequences ("fair" does not match "unfair").
"""
import dataclasses


@dataclasses.dataclass(frozen=True)
class Consideration:
  name: str
  topic_words: tuple[str, ...]  # mention without a direction
  pro_cues: tuple[str, ...]  # the proposal helps on this ground
  con_cues: tuple[str, ...]  # the proposal hurts on this ground
  pro_phrases: tuple[str, ...]
  con_phrases: tuple[str, ...]
  neutral_phrases: tuple[str, ...]


CONSIDERATIONS: tuple[Consideration, ...] = (
    Consideration(
        name="fairness",
        topic_words=("fairness", "equality", "justice", "equal treatment"),
        pro_cues=("fairer", "more equal", "more just"),
        con_cues=("unfair", "unequal", "unjust"),
        pro_phrases=("it would make things fairer for everyone",
                     "it leads to a more equal society",
                     "it is the more just choice"),
        con_phrases=("it would be unfair to many people",
                     "it creates unequal outcomes",
                     "it would be unjust to those affected"),
        neutral_phrases=("whatever we do must respect fairness",
                         "we have to think about equality for all")),
    Consideration(
        name="cost",
        topic_words=("cost", "costs", "money", "budget", "spending"),
        pro_cues=("saves money", "cheaper", "affordable", "good value"),
        con_cues=("too expensive", "costly", "waste of money", "burden on taxpayers"),
        pro_phrases=("in the long run it saves money",
                     "it is cheaper than the alternatives",
                     "it is affordable and good value"),
        con_phrases=("it would be far too expensive",
                     "it is a costly waste of money",
                     "it places a heavy burden on taxpayers"),
        neutral_phrases=("the costs need to be weighed carefully",
                         "we should be honest about the budget")),
    Consideration(
        name="liberty",
        topic_words=("liberty", "freedom", "personal choice", "rights"),
        pro_cues=("more freedom", "protects freedom", "free to choose"),
        con_cues=("restricts freedom", "infringes", "government overreach"),
        pro_phrases=("it gives people more freedom",
                     "it protects freedom and leaves people free to choose"),
        con_phrases=("it restricts freedom for ordinary people",
                     "it infringes on personal rights",
                     "it is a case of government overreach"),
        neutral_phrases=("individual liberty matters here",
                         "personal choice has to be respected")),
    Consideration(
        name="safety",
        topic_words=("safety", "security", "risk", "risks"),
        pro_cues=("safer", "protects people", "reduces harm"),
        con_cues=("dangerous", "puts people at risk", "less safe"),
        pro_phrases=("it would make our streets safer",
                     "it protects people and reduces harm"),
        con_phrases=("it could be dangerous",
                     "it puts people at risk",
                     "it would leave us less safe"),
        neutral_phrases=("public safety has to come first",
                         "the risks must be taken seriously")),
    Consideration(
        name="environment",
        topic_words=("environment", "climate", "nature", "planet"),
        pro_cues=("greener", "good for the environment", "sustainable"),
        con_cues=("harms the environment", "pollution", "unsustainable"),
        pro_phrases=("it is better for the planet and greener",
                     "it is sustainable and good for the environment"),
        con_phrases=("it harms the environment",
                     "it would increase pollution",
                     "it is unsustainable"),
        neutral_phrases=("the impact on the environment must be considered",
                         "the climate has to be part of this")),
    Consideration(
        name="community",
        topic_words=("community", "communities", "neighbours", "social cohesion"),
        pro_cues=("brings people together", "strengthens communities", "stronger communities"),
        con_cues=("divides people", "divisive", "weakens communities"),
        pro_phrases=("it brings people together",
                     "it strengthens communities"),
        con_phrases=("it divides people",
                     "it is divisive and weakens communities"),
        neutral_phrases=("the effect on local communities matters",
                         "we should listen to our neighbours")),
    Consideration(
        name="health",
        topic_words=("health", "wellbeing", "mental health"),
        pro_cues=("healthier", "improves health", "better wellbeing"),
        con_cues=("unhealthy", "harms health", "damages wellbeing"),
        pro_phrases=("people would be healthier",
                     "it improves health and leads to better wellbeing"),
        con_phrases=("it is unhealthy for many people",
                     "it harms health and damages wellbeing"),
        neutral_phrases=("health and wellbeing should be part of the picture",
                         "mental health deserves attention")),
    Consideration(
        name="economy",
        topic_words=("economy", "jobs", "employment", "business"),
        pro_cues=("creates jobs", "boosts the economy", "economic growth"),
        con_cues=("destroys jobs", "hurts the economy", "hurts business"),
        pro_phrases=("it creates jobs and boosts the economy",
                     "it supports economic growth"),
        con_phrases=("it destroys jobs",
                     "it hurts the economy and hurts business"),
        neutral_phrases=("the economy and jobs must be part of the discussion",
                         "we need to consider employment")),
    Consideration(
        name="tradition",
        topic_words=("tradition", "traditions", "heritage", "values"),
        pro_cues=("honours our values", "respects tradition", "preserves our heritage"),
        con_cues=("undermines tradition", "erodes our values", "disrespects heritage"),
        pro_phrases=("it honours our values",
                     "it respects tradition and preserves our heritage"),
        con_phrases=("it undermines tradition",
                     "it erodes our values"),
        neutral_phrases=("our traditions and heritage deserve respect",
                         "shared values should guide us")),
    Consideration(
        name="future_generations",
        topic_words=("future generations", "children", "long term"),
        pro_cues=("better future", "benefits our children", "invests in the future"),
        con_cues=("burdens our children", "short sighted", "mortgages the future"),
        pro_phrases=("it builds a better future",
                     "it benefits our children and invests in the future"),
        con_phrases=("it burdens our children",
                     "it is short sighted and mortgages the future"),
        neutral_phrases=("we must think about future generations",
                         "the long term matters as much as today")),
)

NUM_CONSIDERATIONS = len(CONSIDERATIONS)
