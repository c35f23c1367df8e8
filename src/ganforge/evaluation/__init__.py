"""Evaluation of generators: the runner (`Evaluator`), the scores of generated images against
cached reference statistics (`scores.evaluate`), the reference cache (`reference`) and what
identifies a dataset's images without reading them (`identity`). The maths and the Inception
network live in `ganforge.metrics`."""

from ganforge.evaluation.runner import Evaluator, flat_metrics

__all__ = ["Evaluator", "flat_metrics"]
