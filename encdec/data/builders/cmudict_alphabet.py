"""The symbols of CMUdict: the graphemes of kept words and the ARPAbet phonemes (no TFDS
import, so a task can name its vocabulary without loading the builder)."""

GRAPHEMES = "abcdefghijklmnopqrstuvwxyz'"
# The 39 ARPAbet phonemes of CMUdict; vowels take a stress digit 0/1/2 in the raw dictionary.
VOWELS = ("AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW")
CONSONANTS = ("B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S",
              "SH", "T", "TH", "V", "W", "Y", "Z", "ZH")
PHONEMES = tuple(sorted(VOWELS + CONSONANTS))
STRESSED_PHONEMES = tuple(sorted(CONSONANTS + tuple(v + s for v in VOWELS
                                                    for s in ("", "0", "1", "2"))))
