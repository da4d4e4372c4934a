"""Real data sets for the book, loaded offline (chapter 6 onwards).

Backend-neutral: NumPy arrays and pandas tables, no torch. Each loader reads data already installed
on the machine (nothing is downloaded at run time).
"""
from embedlib.datasets.movielens import MovieLens, load_movielens, rated_movies, train_test_split

__all__ = ["MovieLens", "load_movielens", "rated_movies", "train_test_split"]
