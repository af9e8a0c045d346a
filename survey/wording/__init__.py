"""The survey's wording, in versions: the question, the reasons, their labels
and follow-ups, and the consent sentence, per language."""
