"""Checked exercises: ``helpers.exercises.checks.check("02.pos_weight", answer, **context)`` says whether an answer is right.

Every notebook ends its sections with exercises. A learner writes an answer in the cell and calls
:func:`helpers.exercises.checks.check`. A right answer prints a confirmation; a wrong one prints what was expected in kind (never the
value) and a hint, and returns ``False`` instead of raising, so "Run all" still reaches the end of the notebook.
An exercise left at ``None`` is reported as not attempted yet.

The reference answers live in one module per notebook (``helpers/exercises/ex02.py`` for notebook 02), each
holding a dict ``EXERCISES`` of :class:`Exercise`. Worked solutions for learners are in ``solutions/`` at the
repository root (open them only when you want to).
"""
