"""Real data sets for the book, loaded offline (chapter 6 onwards).

Backend-neutral: NumPy arrays and pandas tables, no torch. Each loader reads data already installed
on the machine (nothing is downloaded at run time): MovieLens (chapters 6 and 7); for chapter 11
the King James Bible as a word2vec corpus, Google's analogy questions and a pretrained token table
(all-MiniLM-L6-v2's), read from its safetensors file by embedlib's own reader; for chapter 12 BERT's
WordPiece tokenizer and the 8 x 8 handwritten digits (shipped with embedlib).
"""
from embedlib.datasets.analogies import AnalogySection, load_analogies
from embedlib.datasets.corpus import TextCorpus, tokenize
from embedlib.datasets.digits import load_digits
from embedlib.datasets.kjv import load_kjv
from embedlib.datasets.minilm import load_minilm_token_table
from embedlib.datasets.movielens import MovieLens, load_movielens, rated_movies, train_test_split
from embedlib.datasets.safetensors import SafetensorsError, read_safetensors
from embedlib.datasets.wordpiece import WordPieceTokenizer

__all__ = [
    "AnalogySection",
    "MovieLens",
    "SafetensorsError",
    "TextCorpus",
    "WordPieceTokenizer",
    "load_analogies",
    "load_digits",
    "load_kjv",
    "load_minilm_token_table",
    "load_movielens",
    "rated_movies",
    "read_safetensors",
    "tokenize",
    "train_test_split",
]
