"""Benchmark of botnodes against aiogram's FSM and a one-GET-one-SET floor (issue 5).

Run it with `python bench/run.py` (or `bash bench/run.sh`, which also prepares a venv).
"""
