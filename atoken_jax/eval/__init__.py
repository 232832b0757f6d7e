"""Evaluation: the paper's reconstruction and understanding protocols on any `Tokenizer`.

    from atoken_jax.eval import evaluate, Evaluator
    report = evaluate(tokenizer, get_config("tiny"), output_dir="eval/")

Command line: `atoken eval --config experiments/eval_paper.py:ARG --checkpoint CKPT`
(`atoken_jax.eval.cli`). See docs/eval.md.
"""
from atoken_jax.eval.retrieval import (average_frame_embeddings, class_embeddings, recall_at_k,
                                       retrieval_metrics, top_k_accuracy, zero_shot_accuracy)
from atoken_jax.eval.runner import KINDS, Evaluator, evaluate

__all__ = ["KINDS", "Evaluator", "average_frame_embeddings", "class_embeddings", "evaluate",
           "recall_at_k", "retrieval_metrics", "top_k_accuracy", "zero_shot_accuracy"]
