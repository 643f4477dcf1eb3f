"""Interactive explorers built with ipywidgets (the only part of ``helpers`` that touches IPython).

One module per explorer: ``augment`` (notebook 01), ``threshold`` (03), ``gradcam`` (05), ``breath`` (06).
Each builder returns an ``ipywidgets.VBox`` whose controls redraw a figure; the notebooks always show a static
figure first, so that a notebook read without a live kernel (nbval, an HTML export, GitHub) still shows it.

Written for ipywidgets 7.7 (Colab) and 8.x alike: only APIs present in both are used (``observe`` on
``value``, ``Output``, ``FloatSlider``, ``IntSlider``, ``Dropdown``, ``ToggleButtons``, ``HTML``, ``VBox``,
``HBox``, ``Layout``); no ``Dropdown(options=dict)`` ordering assumptions, no ``Tab.titles``, no
``description_allow_html``.
"""
