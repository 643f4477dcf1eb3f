"""Reusable code for the course "Explainable deep learning for lung disease".

Each module holds one concern and names the notebook that teaches it:

- ``config``: mode (``XAI_COURSE_MODE``), paths, device, seeding (00_setup)
- ``synthetic`` (+ ``synthetic_xray``, ``synthetic_audio``), ``datasets``: built-in synthetic data in the real
  formats, and where the data in use lives (00, 01)
- ``download`` (+ ``http_download``, ``archives``, ``kaggle``): the real data sets (``data_download.py``)
- ``dicom``, ``rsna``, ``kermany``, ``preprocess``, ``store``, ``eda``: DICOM to a training-ready uint8 store (01)
- ``models``, ``augment``, ``train`` (+ ``device_data``, ``checkpoints``): ResNet18 and a fast training loop (02)
- ``metrics``, ``bootstrap``: evaluation (03)
- ``cam``: CAM, Grad-CAM, guided backpropagation, Guided Grad-CAM (04, 05)
- ``localisation``, ``sanity``, ``faithfulness``, ``shortcut``: checking explanations (05)
- ``audio``, ``icbhi``, ``breath_data``: breath sounds, log-mel patches, ICBHI files (06)
- ``plots``, ``eda_plots``, ``breath_plots``, ``widgets``: figures and interactive explorers (read results only)
- ``pipeline``: makes whatever a notebook needs from an earlier one (data, store, checkpoint) and caches it
- ``exercises``: checked exercises; ``run_notebooks``: the whole course headless

Import the submodules you need (``from helpers import cam``); importing ``helpers`` itself is cheap.
"""

__version__ = "0.1.0"
