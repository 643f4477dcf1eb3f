"""Reusable code for the course "Explainable deep learning for lung disease".

A table of contents: this file imports nothing. Import a module from where it lives, e.g.
``from helpers.explain import cam`` or ``from helpers.training.loop import fit``. Each subpackage follows
a lesson, and each module names the notebook that teaches it.

Shared by everything:

- ``config``: the mode (``XAI_COURSE_MODE``), paths, device, seeding, usable CPUs (00_setup)
- ``files``: atomic writes, resumable folders, the one rule for worker processes (spawn)
- ``progress``: progress bars that obey ``TQDM_DISABLE``
- ``model_state``: ``eval_mode(model)``, which restores every submodule's train/eval flag

The lessons:

- ``data/``: getting the data. ``datasets`` (which data is in use; generates the synthetic sets on first use),
  ``synthetic`` + ``synthetic_xray`` (RSNA-like DICOMs, Kermany-like JPEGs), ``synthetic_audio`` (ICBHI-like
  WAVs), ``real_tables`` (the real RSNA tables shipped in torchxrayvision), ``download`` with
  ``http_download``, ``archives``, ``kaggle`` (the real data sets; ``data_download.py``) (00, 01)
- ``xray/``: from DICOM to a training-ready store. ``dicom``, ``rsna``, ``kermany``, ``eda``, ``preprocess``,
  ``store``, ``augment``, ``plots`` (01)
- ``training/``: ``models`` (ResNet18 and the breath CNN, each carrying its input standardisation),
  ``device_data``, ``loop`` (``train_step``, ``train_one_epoch``, ``evaluate``, ``fit``), ``checkpoints``,
  ``distributed`` (the same loop on several processes under ``torchrun``, 08),
  ``inference`` (``predict``, ``predict_split``), ``plots`` (02, 03)
- ``evaluate/``: ``metrics``, ``bootstrap`` (NumPy and scikit-learn only), ``plots`` (03)
- ``explain/``: ``cam`` (CAM, Grad-CAM, guided backprop, Guided Grad-CAM), ``cam_family`` (Grad-CAM++,
  HiResCAM, Score-CAM, Eigen-CAM), ``gradients`` (saliency, SmoothGrad, Integrated Gradients, occlusion),
  ``localisation``, ``sanity``, ``faithfulness``, ``overlays`` (04, 05). Takes a model and tensors; imports no data or training code.
- ``breath/``: ``audio`` (the paper's log-mel front end, patches), ``icbhi`` (the files), ``dataset`` (the patch
  data set, heat per mel band), ``plots`` (06)
- ``widgets/``: ipywidgets explorers (the only code that touches IPython) (01, 03, 05, 06)
- ``exercises/``: ``checks.check`` and the reference answers, one module per notebook
- ``course/``: lesson plumbing. ``pipeline`` (makes what a notebook needs from an earlier one, cached),
  ``prepare`` (pre-build everything before a workshop), ``run_notebooks`` (the course headless), ``colab``
  (badges and setup cells), ``shortcut`` (the shortcut-learning experiment of 05)

Rules (checked by ``tests/test_architecture.py``): no import cycles; ``explain/`` imports neither ``training/``
nor ``data/`` nor ``xray/``; ``data/``, ``xray/``, ``training/``, ``evaluate/`` and ``breath/`` draw only in their
``plots`` module; library code never imports ``course/``, ``widgets/`` or ``exercises/``.
"""

__version__ = "0.1.0"
