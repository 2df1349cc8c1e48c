"""Ablation studies, comparisons, visualisation, prediction and export."""
