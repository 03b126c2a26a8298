"""The embedded base model: its architecture, its training on the procedural world, its quality.

* :mod:`.spec`: the architecture (Stable Diffusion's component classes, small);
* :mod:`.training`: :class:`~.training.BaseModelTrainer`, every stage from tokenizer to export,
  resumable and seeded (``scripts/train_basemodel.py``);
* :mod:`.quality`: the model card's measurements and the controllability probe
  (``scripts/evaluate_basemodel.py``).

Nothing in the library imports this package at run time: the shipped weights are an ordinary
diffusers folder (:func:`noiseclr.model.embedded_model_path`).
"""
