"""Reusable code for the course "Explainable deep learning for lung disease".

Each module holds one concern and names the notebook that teaches it:

- ``config``: mode (``XAI_COURSE_MODE``), paths, device, seeding (00_setup)
- ``synthetic``, ``datasets``, ``download``: built-in synthetic data in the real formats, where data lives (00, 01)
- ``dicom``, ``rsna``, ``kermany``, ``preprocess``: DICOM to a training-ready uint8 store (01)
- ``models``, ``augment``, ``train``: ResNet18 for one-channel X-rays and a fast training loop (02)
- ``metrics``, ``plots``, ``widgets``: evaluation, figures and interactive explorers (03)
- ``cam``: CAM, Grad-CAM, guided backpropagation, Guided Grad-CAM (04, 05)
- ``localisation``, ``sanity``, ``faithfulness``: checking explanations (05)
- ``audio``, ``icbhi``: breath sounds, log-mel patches, ICBHI files (06)
- ``pipeline``: makes whatever a notebook needs from an earlier one (data, store, checkpoint) and caches it

Import the submodules you need (``from helpers import cam``); importing ``helpers`` itself is cheap.
"""

__version__ = "0.1.0"
