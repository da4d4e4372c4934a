"""Checkers for the book's exercises: call one on your own function and it says what is wrong.

Each checker runs your function on hidden random cases (seeded, so the report is the same every
time), compares with embedlib's reference and stops at the first problem: an exception, a wrong
shape, wrong values, or an input changed in place. The result is True when your function passed,
and prints as a report naming the case, its inputs and, for known mistakes, a hint::

    from embedlib.exercises import check_one_hot
    check_one_hot(my_one_hot)          # ✓ my_one_hot passed all 9 hidden cases (...)

Functions are called with the same arguments, in the same order, as embedlib's own functions of
the same name. ``backend="torch"`` passes torch tensors instead of NumPy arrays and also checks the
gradient with respect to the weight. Importing this module does not import torch.
"""
from embedlib.exercises._harness import CheckResult
from embedlib.exercises.bag import check_embedding_bag
from embedlib.exercises.compositional import check_qr_lookup
from embedlib.exercises.factorization import check_factorization_step
from embedlib.exercises.gradient import check_embedding_bag_backward, check_numerical_gradient, check_sparse_sgd_step
from embedlib.exercises.kernels import check_gather_kernel, check_lines_touched, check_scatter_add_kernel
from embedlib.exercises.lookup import check_lookup, check_lookup_backward
from embedlib.exercises.neighbors import check_nearest_neighbors
from embedlib.exercises.onehot import check_one_hot, check_onehot_matmul
from embedlib.exercises.practice import check_expected_collisions, check_pad_batch, check_vocabulary
from embedlib.exercises.quantization import check_quantize_rows
from embedlib.exercises.ranking import check_ndcg_at_k, check_recall_at_k
from embedlib.exercises.sharding import check_balanced_rows, check_rowwise_traffic
from embedlib.exercises.tokens import check_image_patches, check_sinusoidal_positions
from embedlib.exercises.torch_layers import check_embedding_layer
from embedlib.exercises.words import check_analogy, check_softmax_gradient

__all__ = [
    "CheckResult",
    "check_analogy",
    "check_balanced_rows",
    "check_embedding_bag",
    "check_embedding_bag_backward",
    "check_embedding_layer",
    "check_expected_collisions",
    "check_factorization_step",
    "check_gather_kernel",
    "check_image_patches",
    "check_lines_touched",
    "check_lookup",
    "check_lookup_backward",
    "check_nearest_neighbors",
    "check_numerical_gradient",
    "check_one_hot",
    "check_onehot_matmul",
    "check_ndcg_at_k",
    "check_pad_batch",
    "check_qr_lookup",
    "check_quantize_rows",
    "check_recall_at_k",
    "check_rowwise_traffic",
    "check_scatter_add_kernel",
    "check_sinusoidal_positions",
    "check_softmax_gradient",
    "check_sparse_sgd_step",
    "check_vocabulary",
]
